"""Fold normalizations into the convolutions before them, in a PyTorch module.

The pass traces the model with ``torch.fx`` only to *see* its data flow (which module feeds
which, how often each is called, who else reads a conv's output); it then edits a copy of the
original module in place of each pair, so the folded model keeps its class, attributes and
forward. A conv's weight becomes ``W·s`` and it gains the bias ``b·s + t``; the norm becomes
``nn.Identity``. Every norm the trace meets gets a report entry, folded or not, with a reason.
"""

from __future__ import annotations

import copy
from collections import Counter

import ml_dtypes
import numpy as np
import torch
import torch.fx
from torch import nn

from foldkit.errors import FoldkitError
from foldkit.fold.affine import UnsafeFoldError, fold_batchnorm
from foldkit.fold.report import FOLDED, NOT_FOLDABLE, SKIPPED, FoldEntry, FoldReport

_LINEAR_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
_RUNNING_STAT_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_PER_SAMPLE_REASONS = {
    nn.GroupNorm: "GroupNorm normalizes each sample with its own statistics over channel groups; "
    "there is no fixed per-channel map to fold",
    nn.LayerNorm: "LayerNorm normalizes each sample with its own statistics; there is no fixed per-channel map to fold",
}
_NUMPY_DTYPES = {
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def fold_module(model: nn.Module, *, inplace: bool = False) -> tuple[nn.Module, FoldReport]:
    """Return ``model`` with every foldable conv→norm pair folded, and the report.

    A pair folds when the norm is a BatchNorm (or an InstanceNorm with running statistics) in
    eval mode, its input is the output of a Conv/ConvTranspose/Linear module, that output has no
    other reader, and the conv module (and its weight) is used in exactly one place. The input
    model is not modified unless ``inplace``.
    """
    report = FoldReport()
    if model.training:
        report.notes.append(
            "model is in training mode: BatchNorm normalizes with batch statistics; call model.eval() first"
        )
    folded = model if inplace else copy.deepcopy(model)
    graph = _trace(folded)
    modules = dict(folded.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    weight_owners = _parameter_owner_counts(folded)

    for node in graph.nodes:
        if node.op != "call_module":
            continue
        norm = modules[node.target]
        if not isinstance(norm, (*_RUNNING_STAT_NORMS, nn.GroupNorm, nn.LayerNorm)):
            continue
        entry = report.add(FoldEntry(node=str(node.target), op=type(norm).__name__, status=SKIPPED))
        reason = _norm_refusal(norm) or _pair_refusal(node, norm, modules, calls, weight_owners)
        if reason:
            entry.reason = reason
            entry.status = NOT_FOLDABLE if isinstance(norm, (nn.GroupNorm, nn.LayerNorm)) or (
                isinstance(norm, nn.modules.instancenorm._InstanceNorm) and not norm.track_running_stats
            ) else SKIPPED
            continue
        conv_name = str(node.args[0].target)
        if refusal := _fold_pair(modules[conv_name], norm, entry):
            entry.reason = refusal
            continue
        _replace_module(folded, str(node.target), nn.Identity())
        entry.status, entry.target = FOLDED, conv_name
        entry.pattern = f"{type(modules[conv_name]).__name__} → {entry.op}"
    return folded, report


def _trace(model: nn.Module) -> torch.fx.Graph:
    try:
        return torch.fx.Tracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise FoldkitError(
            f"cannot trace {type(model).__name__} with torch.fx to find conv→norm pairs "
            f"({type(exc).__name__}: {exc}); export it to ONNX and fold the graph instead"
        ) from None


def _norm_refusal(norm: nn.Module) -> str:
    """Why this norm cannot fold whatever precedes it; '' if it can."""
    for kind, reason in _PER_SAMPLE_REASONS.items():
        if isinstance(norm, kind):
            return reason
    if isinstance(norm, nn.modules.instancenorm._InstanceNorm) and not norm.track_running_stats:
        return ("InstanceNorm without running statistics normalizes each sample with its own "
                "per-channel statistics; there is no fixed per-channel map to fold")
    if norm.training:
        return "in training mode: it normalizes with batch statistics, not its running statistics"
    if norm.running_mean is None or norm.running_var is None:
        return "has no running statistics (track_running_stats=False): it uses batch statistics even in eval mode"
    return ""


def _pair_refusal(node: torch.fx.Node, norm: nn.Module, modules: dict, calls: Counter, weight_owners: Counter) -> str:
    """Why this norm cannot fold into the module whose output it reads; '' if it can."""
    if calls[node.target] > 1:
        return f"the norm module is called in {calls[node.target]} places"
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node) or source.op != "call_module" or not isinstance(
        modules.get(source.target), _LINEAR_TYPES
    ):
        what = f"'{source.name}' ({source.op} {source.target})" if isinstance(source, torch.fx.Node) else "a constant"
        return f"its input {what} is not the output of a Conv/ConvTranspose/Linear module"
    conv = modules[source.target]
    if calls[source.target] > 1:
        return f"conv '{source.target}' is used in {calls[source.target]} places; folding would change its other uses"
    if weight_owners[id(conv.weight)] > 1:
        return f"conv '{source.target}' shares its weight with {weight_owners[id(conv.weight)] - 1} other module(s)"
    if len(source.users) > 1:
        others = ", ".join(user.name for user in source.users if user is not node)
        return f"conv '{source.target}' output is also read by {others}; folding would change what they see"
    channels = conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels
    if channels != norm.num_features:
        return f"conv '{source.target}' has {channels} output channels, the norm {norm.num_features}"
    return ""


@torch.no_grad()
def _fold_pair(conv: nn.Module, norm: nn.Module, entry: FoldEntry) -> str:
    """Fold ``norm``'s running-statistics map into ``conv``'s weight and bias.

    Returns '' when folded; otherwise why the numbers forbid it (NaN/Inf, variance + ε ≤ 0, an
    overflow of the conv's dtype), and then nothing has been changed.
    """
    assert isinstance(conv, _LINEAR_TYPES) and isinstance(norm, _RUNNING_STAT_NORMS)  # _pair_refusal checked
    channels = norm.num_features
    gamma = norm.weight if norm.weight is not None else torch.ones(channels)
    beta = norm.bias if norm.bias is not None else torch.zeros(channels)
    transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    groups = conv.groups if isinstance(conv, nn.modules.conv._ConvTransposeNd) else 1
    dtype = conv.weight.dtype
    assert norm.running_mean is not None and norm.running_var is not None  # _norm_refusal checked
    try:
        result = fold_batchnorm(
            _float64(conv.weight), None if conv.bias is None else _float64(conv.bias),
            (_float64(gamma), _float64(beta), _float64(norm.running_mean), _float64(norm.running_var)), norm.eps,
            axis=1 if transposed else 0, groups=groups, dtype=_NUMPY_DTYPES[dtype],
        )
    except UnsafeFoldError as refusal:
        return str(refusal)
    conv.weight.copy_(_to_torch(result.weight, dtype))
    bias = _to_torch(result.bias, dtype).to(conv.weight.device)
    conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    entry.max_amplification = result.max_amplification
    entry.warnings.extend(result.warnings)
    return ""


def _float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _to_torch(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    # bfloat16 arrays have no torch counterpart in from_numpy; float32 holds every value exactly.
    if array.dtype == ml_dtypes.bfloat16:
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def _parameter_owner_counts(model: nn.Module) -> Counter:
    """How many modules hold each parameter (tied weights count more than once)."""
    owners: Counter = Counter()
    for _, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            owners[id(param)] += 1
    return owners


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)
