"""ONNX Runtime's ``quantize_static``, called the one way foldkit uses it, with ranges computed once.

QDQ format, per-channel symmetric s8 weights, u8 activations (what ORT recommends for x86 CPUs
with VNNI), one calibration method. Calibrating means running the whole float model on every
calibration input, so the ranges of one float model are cached in a file and reused by every
later quantization of it that differs only in which nodes stay float (sensitivity analysis and
the target-SNR search quantize the same model dozens of times).
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from foldkit.defaults import CALIBRATION_METHODS
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import save_onnx
from foldkit.quantize.calibration import CalibrationData

METHODS = dict(zip(CALIBRATION_METHODS, (CalibrationMethod.MinMax, CalibrationMethod.Percentile,
                                          CalibrationMethod.Entropy), strict=True))
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")  # the ops whose int8 kernels buy the speed


class StaticQuantizer:
    """Quantizes one float model (saved under ``folder`` as ``name``) with cached calibration ranges.

    ``reduce_range``: 7-bit weights. x86 CPUs without VNNI multiply u8 × s8 pairs into saturating
    16-bit sums (``vpmaddubsw``), so full-range weights on full-range inputs overflow at ORT's
    default level; 7-bit weights cannot (ORT's own advice for such CPUs; see :mod:`foldkit.cpu`).
    ``overrides``: ORT's ``TensorQuantOverrides`` per activation (a range, or u16 instead of u8).
    """

    def __init__(self, model: onnx.ModelProto, folder: Path, name: str, calibration: CalibrationData,
                 input_name: str, method: str = "minmax", *, reduce_range: bool = False,
                 overrides: Mapping[str, dict] | None = None) -> None:
        if method not in METHODS:
            raise FoldkitError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
        self.model = model
        self.folder = folder
        self.name = name
        self.float_path = folder / f"{name}.float.onnx"
        save_onnx(model, self.float_path)
        self.cache_path = folder / f"{name}.ranges.json"
        self._calibration = calibration
        self._input_name = input_name
        self._method = method
        self.reduce_range = reduce_range
        self.overrides = dict(overrides or {})
        self._count = 0

    def calibrate(self) -> dict[str, tuple[float, float]]:
        """Every calibrated tensor's (lowest, highest), calibrating first if no quantization has yet."""
        from foldkit.quantize.activations import cached_ranges

        if not self.cache_path.exists():
            self.quantize().unlink()
        return cached_ranges(self.cache_path)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Every calibrated tensor's (lowest, highest) as this quantizer quantizes it: an override's range where
        one is set, else the calibrated one."""
        return {name: (float(self.overrides[name]["rmin"]), float(self.overrides[name]["rmax"]))
                if "rmin" in self.overrides.get(name, {}) else (low, high)
                for name, (low, high) in self.calibrate().items()}

    def with_overrides(self, overrides: Mapping[str, dict], name: str) -> StaticQuantizer:
        """The same float model and calibration, with ``overrides`` added to this one's (no recalibration)."""
        other = copy.copy(self)
        other.overrides = {**self.overrides, **overrides}
        other.name = f"{self.name}-{name}"
        return other

    def equivalent(self, model: onnx.ModelProto, name: str, overrides: Mapping[str, dict]) -> StaticQuantizer:
        """A quantizer of ``model``, a float model equivalent to this one (the same graph, weights moved by
        far less than a grid step), saved as ``name``: the same settings and this one's calibrated ranges (not
        recalibrated), with ``overrides`` added to this one's."""
        other = StaticQuantizer(model, self.folder, name, self._calibration, self._input_name, self._method,
                                reduce_range=self.reduce_range, overrides={**self.overrides, **overrides})
        self.calibrate()
        shutil.copyfile(self.cache_path, other.cache_path)
        return other

    def quantizable_nodes(self) -> list[onnx.NodeProto]:
        return [node for node in self.model.graph.node if node.op_type in QUANTIZED_OPS]

    def layer_nodes(self, name: str) -> list[str]:
        """The quantizable node ``name`` and the ops that only carry its output on (activation, pool,
        pad) up to the next quantizable node: what "this layer in float" must exclude, because ORT
        also quantizes the activations around LeakyRelu, MaxPool and friends on their own."""
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.model.graph.node:
            for tensor in node.input:
                consumers.setdefault(tensor, []).append(node)
        node = next(n for n in self.model.graph.node if n.name == name)
        chain = [name]
        while len(readers := consumers.get(node.output[0], [])) == 1 and readers[0].op_type not in QUANTIZED_OPS \
                and len(readers[0].output) == 1:
            node = readers[0]
            chain.append(node.name)
        return chain

    def quantize(self, exclude: Sequence[str] = ()) -> Path:
        """The QDQ int8 model with the nodes in ``exclude`` left in float, as a file under ``folder``."""
        self._count += 1
        output = self.folder / f"{self.name}.int8-{self._count}.onnx"
        with _quiet_ort_logging(), np.errstate(divide="ignore", invalid="ignore"):
            quantize_static(
                str(self.float_path), str(output), self._calibration.reader(self._input_name),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=METHODS[self._method],
                nodes_to_exclude=list(exclude), calibration_cache_path=str(self.cache_path),
                extra_options={"TensorQuantOverrides": {name: [dict(o)] for name, o in self.overrides.items()}},
            )
        return output


@contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """ORT's quantizer logs a pre-processing hint at WARNING on every call, and numpy warns about the
    ranges of tensors it never quantizes (a −∞ pad's output); the held-out judge catches what matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def range_overrides(ranges: Mapping[str, tuple[float, float]]) -> dict[str, dict]:
    """Each tensor's (lo, hi) as the ``TensorQuantOverrides`` entry that makes ORT use that range."""
    return {name: {"rmin": np.float32(low), "rmax": np.float32(high)} for name, (low, high) in ranges.items()}
