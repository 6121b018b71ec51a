"""onnx-simplifier after the fold, as one more change that must pass the parity proof.

onnxsim folds constants and removes dead or redundant nodes; it can also change what a graph
computes when a rewrite is wrong for a model. foldkit never trusts it on its own word: its own
check is off, and ``foldkit fold --simplify`` always proves the written result against the
original on seeded inputs (as ``--check`` does), writing nothing when parity fails.
"""

from __future__ import annotations

import onnx

from foldkit.errors import FoldkitError


def simplify_model(model: onnx.ModelProto, *, where: str) -> onnx.ModelProto:
    """``model`` simplified by onnxsim (a new model); FoldkitError naming ``where`` when onnxsim fails."""
    try:
        import onnxsim
    except ImportError:
        raise FoldkitError("--simplify needs onnx-simplifier: pip install 'foldkit[simplify]'") from None
    try:
        simplified, _ = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # onnxsim raises whatever its C++ core or onnx raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoldkitError(f"{where}: onnx-simplifier failed: {detail}") from None
    return simplified
