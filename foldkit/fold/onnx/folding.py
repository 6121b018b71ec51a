"""The ONNX fold pass: every node offered to the registered patterns, every norm reported.

Patterns (one file each under :mod:`.patterns`):

* Conv → BatchNormalization, ConvTranspose → BatchNormalization (groups included),
  Gemm → BatchNormalization (alpha, beta, transA/transB, any broadcastable C),
  MatMul [→ Add] → BatchNormalization with a constant 2-D matrix;
* BatchNormalization → Conv, only when the conv does not pad (padding would not be shifted);
* Conv/ConvTranspose → Mul or Add by a per-output-channel constant (what tf2onnx writes for BN).

Every ``BatchNormalization``, every per-sample norm and every per-channel ``Mul``/``Add`` after a
conv ends up in the report, folded or with the reason it is not. A fold whose numbers are not
finite (see :mod:`foldkit.fold.affine`) is refused here, once, whichever pattern planned it.
Weights shared with another node are folded into a private copy, so the other node's result never
changes. The pass edits a model in memory; reading and writing files is :mod:`foldkit.pipeline`'s.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import onnx

from foldkit.fold.constants import fold_constants, remove_unused_initializers
from foldkit.fold.onnx.batchnorm import batchnorm_map
from foldkit.fold.onnx.graph import GraphView, Refusal
from foldkit.fold.onnx.layout import LAYOUTS
from foldkit.fold.onnx.patterns import PATTERNS
from foldkit.fold.onnx.plan import Pattern, Plan
from foldkit.fold.report import FOLDED, NOT_FOLDABLE, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.lazy import LazyModel
from foldkit.onnxio.store import TensorStore

PER_SAMPLE_NORMS = {
    "InstanceNormalization": "InstanceNormalization normalizes each sample and channel with its own statistics "
    "(ONNX's has no running statistics); there is no fixed per-channel map to fold",
    "LayerNormalization": "LayerNormalization normalizes each sample with its own statistics; there is no "
    "fixed per-channel map to fold",
    "GroupNormalization": "GroupNormalization normalizes each sample with its own statistics over channel groups; "
    "there is no fixed per-channel map to fold",
}


def fold_onnx(
    model: onnx.ModelProto | LazyModel,
    *,
    allow_initializer_inputs: bool = False,
    inplace: bool = False,
    store: TensorStore | None = None,
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every normalization and per-channel affine op that folds exactly; report every one.

    ``model`` is a ModelProto (copied unless ``inplace``) or a :class:`~foldkit.onnxio.lazy.LazyModel`
    (folded in place, its tensors read from and kept for its file). Opset imports and IR version
    are kept, unused initializers removed. ``allow_initializer_inputs`` treats initializers that
    are also listed as graph inputs as constants (as onnxsim does); by default they are inputs a
    caller may override, so nothing that reads them folds. ``store`` is where tensor values are
    read and written (default: inside the TensorProtos, or the lazy model's store).
    """
    if isinstance(model, LazyModel):
        model, store = model.model, model.store
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"fold_onnx takes an onnx.ModelProto or a LazyModel, not {type(model).__name__}; "
                        "read files with foldkit.pipeline.open_for_fold or foldkit.onnxio.files.load_onnx")
    elif not inplace:
        model = copy.deepcopy(model)
    store = store or TensorStore()
    report = FoldReport()
    evaluated = fold_constants(model, initializer_inputs_are_constant=allow_initializer_inputs, store=store)
    if evaluated:
        report.notes.append(f"evaluated {evaluated} constant node(s) into initializers")
    graph = GraphView(model, allow_initializer_inputs, store)
    for node in list(model.graph.node):
        if id(node) in graph.removed:
            continue
        if node.op_type in PER_SAMPLE_NORMS:
            report.add(FoldEntry(node.name, node.op_type, NOT_FOLDABLE, PER_SAMPLE_NORMS[node.op_type]))
        else:
            _fold_node(graph, node, report)
    graph.commit()
    remove_unused_initializers(model)
    return model, report


def _fold_node(graph: GraphView, node: onnx.NodeProto, report: FoldReport) -> None:
    """Offer ``node`` to every pattern anchored on its op type; apply the first plan, else report why not."""
    patterns = [p for p in PATTERNS if node.op_type in p.anchors]
    if not patterns:
        return
    entry = None
    if node.op_type == "BatchNormalization":  # every BN is reported, and its own refusals come first
        entry = report.add(FoldEntry(node.name or node.output[0], node.op_type, SKIPPED))
        norm = batchnorm_map(graph, node)
        if isinstance(norm, Refusal):
            entry.reason = norm.reason
            return
    refusals: list[tuple[Pattern, Refusal]] = []
    for pattern in patterns:
        outcome = pattern.match(graph, node)
        if isinstance(outcome, Plan) and outcome.result.refusal:
            outcome = Refusal(outcome.result.refusal)  # numbers that must not be written: refused, per node
        if isinstance(outcome, Refusal):
            refusals.append((pattern, outcome))
        elif outcome is not None:
            entry = entry or report.add(FoldEntry(node.name or node.output[0], node.op_type, SKIPPED))
            _record(entry, outcome, pattern.apply(graph, outcome))
            return
    if entry is None and not refusals:
        return  # a Mul/Add that is no per-channel map after a conv: an ordinary op
    entry = entry or report.add(FoldEntry(node.name or node.output[0], node.op_type, SKIPPED))
    entry.reason = _reason(graph, node, refusals)


def _reason(graph: GraphView, node: onnx.NodeProto, refusals: list[tuple[Pattern, Refusal]]) -> str:
    """Why nothing folded: the pattern before the node, then (for a norm) the one after it."""
    before = [r.reason for p, r in refusals if not p.norm_first]
    after = [r.reason for p, r in refusals if p.norm_first]
    if before:
        first = before[0]
    elif (source := graph.producer.get(node.input[0])) is None:
        first = f"its input '{node.input[0]}' is a graph input, not the output of a linear op"
    else:
        first = f"its input comes from {source.op_type} '{source.name}', not from {'/'.join(LAYOUTS)}"
    return "; and after it: ".join([first, *after])


def _record(entry: FoldEntry, plan: Plan, notes: list[str]) -> None:
    linear = plan.linear
    entry.status, entry.pattern = FOLDED, plan.pattern
    entry.target = linear.name or linear.output[0]
    if plan.weight_owner is not None:
        entry.target = f"{plan.weight_owner.name or plan.weight_owner.output[0]} + {entry.target}"
    entry.max_amplification = plan.result.max_amplification
    entry.warnings.extend(plan.result.warnings)
    entry.reason = "; ".join(notes)


def node_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the main graph has."""
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.op_type] += 1
    return dict(sorted(counts.items()))
