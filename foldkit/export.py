"""PyTorch → ONNX, with BatchNorm folded by foldkit (or deliberately kept), verified on write.

Both of torch's exporters fold BatchNorm on their own in eval mode (TorchScript through constant
folding, dynamo through its optimizer), which would make a "kept BN" export silently folded and
a folded one folded twice over. foldkit therefore exports with those folds off, folds (or not)
itself, evaluates the constant leftovers, and then checks that the written model has the opset
that was asked for, passes ``onnx.checker`` with full checks, and infers shapes strictly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import onnx
import torch
from torch import nn

from foldkit.defaults import DEFAULT_OPSET, HEIGHT_DIM, INPUT_NAME, WIDTH_DIM
from foldkit.errors import FoldkitError
from foldkit.fold.constants import fold_constants
from foldkit.fold.report import FoldReport
from foldkit.fold.torch import fold_module
from foldkit.onnxio.files import check_outputs, save_onnx
from foldkit.onnxio.metadata import EXPORTER_KEY, add_metadata, fold_metadata, network_metadata
from foldkit.onnxio.validate import validate_model

EXPORTERS = ("torchscript", "dynamo")


@dataclass
class ExportResult:
    """What an export wrote, and what folding did on the way.

    ``model`` is the written model, or None when its tensors were streamed into the file without
    ever being assembled in memory (the direct Darknet route). ``input_shape`` is the shape the
    model was traced with; ``dynamic_batch`` says whether its batch dimension is free.
    """

    path: Path | None
    model: onnx.ModelProto | None
    fold_report: FoldReport | None
    opset: int
    input_shape: tuple[int, ...]
    dynamic_batch: bool = False
    exporter: str = "torchscript"
    dynamic_size: bool = False  # height and width are symbolic dimensions; input_shape is the traced size
    weights_source: str | None = None  # where the weights came from, when an export chose them

    def format(self) -> str:
        """The lines ``foldkit export`` prints."""
        where = str(self.path) if self.path is not None else "<not written>"
        batch = ", dynamic batch" if self.dynamic_batch else ""
        size = f", dynamic {HEIGHT_DIM} and {WIDTH_DIM} (traced at {self.input_shape[2]}x{self.input_shape[3]})" \
            if self.dynamic_size else ""
        lines = [f"wrote {where} (opset {self.opset}, input {'x'.join(map(str, self.input_shape))}{batch}{size}, "
                 f"{self.exporter} exporter)"]
        if self.weights_source is not None:
            lines.append(f"weights: {self.weights_source}")
        lines.append(self.fold_report.format() if self.fold_report is not None
                     else "fold: off: BatchNormalization nodes kept")
        return "\n".join(lines)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike | None,
    *,
    input_shape: tuple[int, int, int, int],
    fold: bool = True,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    exporter: str = "torchscript",
    metadata: dict[str, str] | None = None,
    dynamic_size: bool = False,
    size_multiple: tuple[int, int] = (1, 1),
) -> ExportResult:
    """Export ``model`` (NCHW float32 input of ``input_shape``) to ONNX at ``path``.

    With ``fold`` the model is folded by :func:`foldkit.fold_module` first and the report is
    returned; without, every BatchNorm stays a ``BatchNormalization`` node. ``path=None`` only
    builds and validates the model. The file is written atomically. ``dynamic_size`` leaves the
    input's height and width (and every size that follows from them) free: the model must compute
    them from its input's shape, as :class:`foldkit.DarknetModel` and its decoder do;
    ``size_multiple`` (the network stride) is what the dynamo exporter is told they are multiples of.

    A model that describes its network (a :class:`foldkit.DarknetModel`, or a decoder around one,
    through its ``info``) gets the metadata deployment reads (classes, anchors, heads), so
    ``foldkit detect`` needs no extra flags for it.
    """
    if exporter not in EXPORTERS:
        raise FoldkitError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if opset < 11:
        raise FoldkitError(f"opset {opset} is too old; foldkit exports opset 11 or newer")
    check_outputs([path])
    model = model.eval()
    report = None
    if fold:
        model, report = fold_module(model)
    names_of = getattr(model, "output_names", None)
    output_names = list(names_of()) if callable(names_of) else None
    example = torch.rand(*input_shape, generator=torch.Generator().manual_seed(0))
    dims = _free_dims(dynamic_batch, dynamic_size)
    if exporter == "torchscript":
        onnx_model = _export_torchscript(model, example, opset, dims, output_names)
    else:
        onnx_model = _export_dynamo(model, example, opset, dims, output_names, size_multiple)
    fold_constants(onnx_model)
    info = getattr(model, "info", None)
    described = {} if info is None else network_metadata(
        info, tuple(input_shape), decoded=bool(getattr(model, "decodes_boxes", False)))
    add_metadata(onnx_model, fold_metadata(report) | {EXPORTER_KEY: exporter} | described | (metadata or {}))
    onnx_model.producer_name, onnx_model.producer_version = "foldkit", _version()
    validate_model(onnx_model, opset=opset, where=str(path or "<export>"), weights=False)
    if path is not None:
        save_onnx(onnx_model, path)
    return ExportResult(Path(path) if path else None, onnx_model, report, opset, tuple(input_shape),
                        dynamic_batch=dynamic_batch, exporter=exporter, dynamic_size=dynamic_size)


def _free_dims(dynamic_batch: bool, dynamic_size: bool) -> dict[int, str]:
    """The input's symbolic dimensions by axis: batch, and height and width."""
    return ({0: "batch"} if dynamic_batch else {}) | ({2: HEIGHT_DIM, 3: WIDTH_DIM} if dynamic_size else {})


def _export_torchscript(model, example, opset, dims, output_names) -> onnx.ModelProto:
    """Outputs get the batch dimension by name; their sizes that follow H and W are what torch infers."""
    buffer = io.BytesIO()
    names = output_names or [f"output{i}" for i in range(_count_outputs(model, example))]
    dynamic_axes = None
    if dims:
        dynamic_axes = {INPUT_NAME: dims} | _output_dims(model, example, names, dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices, not ours to show
        torch.onnx.export(
            model, (example,), cast(Any, buffer), dynamo=False, opset_version=opset, do_constant_folding=False,
            input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic_axes,
        )
    return onnx.load_from_string(buffer.getvalue())


def _output_dims(model: nn.Module, example: torch.Tensor, names: list[str], dims: dict[int, str]) -> dict:
    """Each output's symbolic dimensions, named after it: batch; with a free input size, the height and
    width of a spatial map (``NAME_height``) or the box count of decoded boxes (``NAME_boxes``)."""
    if not set(dims) - {0}:
        return {name: {0: "batch"} for name in names}
    with torch.no_grad():
        out = model(example)
    shapes = [o.shape for o in (out if isinstance(out, (tuple, list)) else [out])]
    axes = {}
    for name, shape in zip(names, shapes, strict=True):
        free = {0: "batch"} if 0 in dims else {}
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            free |= {2: f"{name}_{HEIGHT_DIM}", 3: f"{name}_{WIDTH_DIM}"}
        elif len(shape) == 3:
            free |= {1: f"{name}_boxes"}
        axes[name] = free
    return axes


def _export_dynamo(model, example, opset, dims, output_names, multiple: tuple[int, int]) -> onnx.ModelProto:
    """torch.export's symbolic shapes: height and width as ``stride × blocks``, which the network's
    routes need (torch.export proves every concatenation for the sizes it is told of); the input's
    dimensions are then renamed to foldkit's names."""
    try:
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ImportError:
        raise FoldkitError("the dynamo exporter needs onnxscript: pip install 'foldkit[dynamo]'") from None
    dynamic_shapes = ({axis: _dynamo_dim(name, axis, multiple) for axis, name in dims.items()},) if dims else None
    with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, optimize=False, opset_version=opset, verbose=False,
            input_names=[INPUT_NAME], output_names=output_names, dynamic_shapes=dynamic_shapes,
        )
    if program is None:
        raise FoldkitError("the dynamo exporter returned no ONNX program")
    proto = program.model_proto
    for axis, name in dims.items():
        proto.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    return proto


def _dynamo_dim(name: str, axis: int, multiple: tuple[int, int]) -> Any:
    """The batch as a free Dim; height and width as a multiple of the stride times a free block count."""
    if axis == 0:
        return torch.export.Dim(name, min=1)
    step = multiple[axis - 2]
    blocks = torch.export.Dim(f"{name}_blocks", min=1)
    return blocks * step if step > 1 else blocks


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence libraries that log tracebacks of their own fallbacks (onnxscript's version converter
    prints 22 lines before torch gives up): foldkit reports the outcome in one line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _count_outputs(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(example)
    return len(out) if isinstance(out, (tuple, list)) else 1


def _version() -> str:
    from foldkit import __version__

    return __version__
