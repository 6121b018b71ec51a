"""Inputs that can find a difference between two models: the probes every parity proof runs.

A proof on one kind of input proves only that kind: on U[0,1) alone a ReLU equals an Identity,
and a dynamic H×W tried only at 1×1 hides every spatial mistake. So each proof runs several
value distributions (the input's own range, then signed and large values) at more than one size
of every dynamic dimension, a batch of two or more included. ``check``, ``fold --check`` and the
random calibration of ``quantize`` draw from here.

The probes are data (:class:`Probe`: a label and the feeds); running and judging them is
:mod:`foldkit.parity`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from foldkit.errors import FoldkitError
from foldkit.limits import ensure_fits

# A value distribution: (rng, shape, (lo, hi) of the input's own range) -> float64 values.
Draw = Callable[[np.random.Generator, tuple[int, ...], tuple[float, float]], np.ndarray]

IN_RANGE = "uniform [{lo:g},{hi:g})"  # over the input's own range
LARGE_MAGNITUDE = 100.0  # the signed probe's half-width: large enough to leave every "[0,1]-only" shortcut
DISTRIBUTIONS: dict[str, Draw] = {
    IN_RANGE: lambda rng, shape, span: rng.uniform(span[0], span[1], shape),
    "normal(0,1)": lambda rng, shape, span: rng.standard_normal(shape),
    f"uniform [-{LARGE_MAGNITUDE:g},{LARGE_MAGNITUDE:g})":
        lambda rng, shape, span: rng.uniform(-LARGE_MAGNITUDE, LARGE_MAGNITUDE, shape),
}
DEFAULT_RANGE = (0.0, 1.0)  # an image scaled to [0,1], as every Darknet letterbox and foldkit export takes
SPATIAL_SIZES = (32, 64)  # the two sizes of a dynamic non-batch dimension when the model declares none
# ONNX Runtime's type names for the inputs foldkit can generate
ORT_TYPES: dict[str, type] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
_RANGE_PATTERN = re.compile(r"\[\s*(-?[\d.]+(?:e-?\d+)?)\s*,\s*(-?[\d.]+(?:e-?\d+)?)\s*\]")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, numpy type and shape (an int where fixed, a name or None where dynamic)."""

    name: str
    dtype: type
    shape: tuple[int | str | None, ...]


@dataclass
class Probe:
    """One input set: what it is (``label``), whether it stays in the input's range, and the arrays."""

    label: str
    in_range: bool
    feeds: dict[str, np.ndarray]


def input_specs(reference, candidate=None) -> list[InputSpec]:
    """The reference session's inputs; a dimension fixed in either session is fixed for both."""
    others = {arg.name: list(arg.shape) for arg in candidate.get_inputs()} if candidate is not None else {}
    specs = []
    for arg in reference.get_inputs():
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise FoldkitError(f"input '{arg.name}' has type {arg.type}, which foldkit cannot generate")
        other = others.get(arg.name, [None] * len(arg.shape))
        shape = tuple(mine if _fixed(mine) else theirs if _fixed(theirs) else mine
                      for mine, theirs in zip(arg.shape, other, strict=False))
        specs.append(InputSpec(arg.name, dtype, shape))
    return specs


def known_range(metadata: dict[str, str]) -> tuple[float, float] | None:
    """The input's value range when the model's metadata states one (foldkit writes "NCHW RGB [0,1]")."""
    for key, value in metadata.items():
        if key.endswith("input_layout") or key.endswith("input_range"):
            match = _RANGE_PATTERN.search(value)
            if match:
                lo, hi = float(match.group(1)), float(match.group(2))
                if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
                    return lo, hi
    return None


def make_probes(
    specs: Sequence[InputSpec], *, seed: int = 0, batch: int = 1, value_range: tuple[float, float] | None = None,
    declared: Sequence[int] | None = None, strides: Sequence[int] | None = None,
) -> list[Probe]:
    """Every distribution at every shape plan, seeded per probe (a failure names its probe and reproduces).

    ``batch`` is the first size of a dynamic leading (batch) dimension; ``batch + 1`` is tried too.
    ``declared`` is the model's own input shape when it states one (metadata): its sizes are tried
    first for dynamic non-batch dimensions. ``strides`` (per axis, metadata ``foldkit.stride``) makes
    every size of a dynamic dimension a multiple of its stride: a network with routes runs at no other.
    """
    if batch < 1:
        raise FoldkitError(f"the batch size must be at least 1, got {batch}")
    span = value_range or DEFAULT_RANGE
    if len(span) != 2 or not (np.isfinite(span).all() and span[0] < span[1]):
        raise FoldkitError(f"the input range must be two finite numbers LO < HI, got {list(span)}")
    probes = []
    for plan_index, plan in enumerate(_shape_plans(specs, batch, declared, strides)):
        for dist_index, (name, draw) in enumerate(DISTRIBUTIONS.items()):
            rng = np.random.default_rng([seed, plan_index, dist_index])
            label = name.format(lo=span[0], hi=span[1]) + (" (the input's range)" if name == IN_RANGE else "")
            feeds = {spec.name: _values(spec, plan[spec.name], draw, rng, span) for spec in specs}
            shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())
            probes.append(Probe(f"{label}; {shapes}", name == IN_RANGE, feeds))
    return probes


def draw_uniform(rng: np.random.Generator, shape: tuple[int, ...], span: tuple[float, float] = DEFAULT_RANGE,
                 dtype: type = np.float32) -> np.ndarray:
    """In-range values, as the first probe draws them (the random calibration of ``quantize`` uses this)."""
    return DISTRIBUTIONS[IN_RANGE](rng, shape, span).astype(dtype)


def _fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _shape_plans(specs: Sequence[InputSpec], batch: int, declared: Sequence[int] | None,
                 strides: Sequence[int] | None = None) -> list[dict]:
    """One or two concrete shapes per input: two when any dimension is dynamic, so each dynamic one gets two sizes.

    A dynamic dimension named the same in several inputs gets the same size in each.
    """
    dynamic = any(not _fixed(d) for spec in specs for d in spec.shape)
    plans = []
    for which in range(2 if dynamic else 1):
        by_name: dict[str, int] = {}
        plan = {}
        for spec in specs:
            shape = []
            for axis, dim in enumerate(spec.shape):
                stride = strides[axis] if strides and axis < len(strides) and axis > 0 else 1
                size = dim if isinstance(dim, int) and dim > 0 else (
                    _dynamic_size(axis, which, batch, declared) if stride == 1
                    else _stride_size(axis, which, declared, stride))
                if isinstance(dim, str) and dim:
                    size = by_name.setdefault(dim, size)
                shape.append(size)
            plan[spec.name] = tuple(shape)
        plans.append(plan)
    return plans


def _dynamic_size(axis: int, which: int, batch: int, declared: Sequence[int] | None) -> int:
    if axis == 0:
        return batch + which
    declared_size = declared[axis] if declared and axis < len(declared) and _fixed(declared[axis]) else None
    if declared_size is None:
        return SPATIAL_SIZES[which]
    return declared_size if which == 0 else next(s for s in (*SPATIAL_SIZES, declared_size + 1) if s != declared_size)


def _stride_size(axis: int, which: int, declared: Sequence[int] | None, stride: int) -> int:
    """A multiple of ``stride``: the declared size (else two strides) first; then, so the second probe is
    rectangular, one stride less on the first such axis (height) and one more on the others (width)."""
    declared_size = declared[axis] if declared and axis < len(declared) and _fixed(declared[axis]) else None
    first = declared_size if declared_size and declared_size % stride == 0 else 2 * stride
    if which == 0:
        return first
    return first - stride if axis == 2 and first > stride else first + stride


def _values(spec: InputSpec, shape: tuple[int, ...], draw: Draw, rng: np.random.Generator,
            span: tuple[float, float]) -> np.ndarray:
    ensure_fits(float(np.prod(shape, dtype=np.float64)) * 8, f"input '{spec.name}' of shape {list(shape)}")
    kind = np.dtype(spec.dtype).kind
    if kind == "f":
        return draw(rng, shape, span).astype(spec.dtype)
    if kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 2, shape).astype(spec.dtype)  # indices and flags: 0 and 1 are valid for any of them
