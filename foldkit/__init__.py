"""foldkit: fold BatchNorm into convolutions, export lean ONNX graphs, prove nothing changed.

The public API is imported lazily, so that commands working on ONNX files alone (``foldkit fold``,
``foldkit check``) start without loading PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DarknetModel": "foldkit.darknet.build",
    "build_model": "foldkit.darknet.build",
    "FoldkitError": "foldkit.errors",
    "export_onnx": "foldkit.export",
    "FoldEntry": "foldkit.fold.report",
    "FoldReport": "foldkit.fold.report",
    "fold_module": "foldkit.fold.torch",
    "fold_onnx": "foldkit.fold.onnx",
    "compare_outputs": "foldkit.parity",
    "compare_onnx_models": "foldkit.parity",
    "ConvNormAct": "foldkit.nn",
    "DarknetConv2D_BN_Leaky": "foldkit.nn",
    "randomize_batchnorm": "foldkit.synthetic",
    "condition_weights": "foldkit.synthetic",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'foldkit' has no attribute {name!r}")
