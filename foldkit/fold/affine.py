"""The one fold arithmetic, shared by the PyTorch pass and every ONNX pattern.

A linear op (Conv, ConvTranspose, Gemm, MatMul, Linear) followed by a per-channel affine map
``y ↦ y·s + t`` is the same op with weight ``W·s`` (scaled along its output-channel axis) and
bias ``b·s + t``. BatchNorm at inference is such a map with ``s = γ/√(σ²+ε)`` and ``t = β − μ·s``.
Everything is computed in float64 and cast exactly once to the target dtype, so a folded fp16
weight is the correctly rounded fold, not the product of rounded steps.

A fold must never write a number the model did not already compute with: parameters that are not
a normalization (variance + ε ≤ 0, NaN or Inf anywhere) raise :class:`UnsafeFoldError` when the
map is read, and a fold whose result is not finite (NaN/Inf in the weights, or an overflow of the target
dtype) carries the reason in :attr:`AffineFold.refusal` (:func:`fold_batchnorm` raises it instead).
The PyTorch pass and the Darknet converter fold through :func:`fold_batchnorm`; the ONNX pass
reads the map once per node and refuses any plan whose fold carries a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np


class UnsafeFoldError(ValueError):
    """The parameters are not a finite normalization: folding them would write NaN or Inf."""


@dataclass
class AffineFold:
    """A folded weight and bias, with what the fold did to the numbers."""

    weight: np.ndarray
    bias: np.ndarray
    max_amplification: float  # max |s|: how much the fold magnified any filter
    warnings: list[str] = field(default_factory=list)
    refusal: str = ""  # why these values must not be written (NaN/Inf in them); '' when they are safe


def batchnorm_scale_shift(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float,
    *, eps_outside_sqrt: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm's inference map as ``(s, t)`` in float64: ``y = x·s + t``.

    ``eps_outside_sqrt`` gives pjreddie Darknet's CPU variant, ``γ/(√σ² + ε)``. Raises
    :class:`UnsafeFoldError` when a parameter is NaN/Inf or the denominator is not positive
    (variance + ε ≤ 0): such a norm computes NaN/Inf itself, and a fold would hide that in the weights.
    """
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in (gamma, beta, mean, var))
    for role, values in (("scale (gamma)", gamma), ("bias (beta)", beta), ("mean", mean), ("variance", var)):
        if not np.isfinite(values).all():
            raise UnsafeFoldError(
                f"its {role} is not finite ({_first_non_finite(values)}); the fold would write NaN/Inf"
            )
    if not np.isfinite(eps):
        raise UnsafeFoldError(f"its epsilon {eps} is not finite; the fold would write NaN/Inf")
    with np.errstate(invalid="ignore"):  # a negative variance is reported below, channel by channel
        denominator = np.sqrt(var) + eps if eps_outside_sqrt else np.sqrt(var + eps)
    bad = np.flatnonzero(~(denominator > 0))
    if bad.size:
        form = "√variance + epsilon" if eps_outside_sqrt else "variance + epsilon"
        raise UnsafeFoldError(
            f"its {form} is not positive in {bad.size} channel(s) (channel {bad[0]}: variance {var[bad[0]]:g}, "
            f"epsilon {eps:g}), so it divides by zero or takes the root of a negative number"
        )
    scale = gamma / denominator
    shift = beta - mean * scale
    if not (np.isfinite(scale).all() and np.isfinite(shift).all()):
        raise UnsafeFoldError("its scale γ/√(σ²+ε) or shift overflows float64; the fold would write Inf")
    return scale, shift


def _first_non_finite(values: np.ndarray) -> str:
    bad = np.flatnonzero(~np.isfinite(values))
    return f"{bad.size} value(s), first at channel {bad[0]}: {values.reshape(-1)[bad[0]]}"


def channel_scale(scale: np.ndarray, weight_shape: tuple[int, ...], axis: int, groups: int = 1) -> np.ndarray:
    """Broadcast a per-output-channel ``scale`` onto a weight of ``weight_shape``.

    ``axis=0``: the weight's first axis is the output channel (Conv ``[C_out, C_in/g, k…]``,
    Linear ``[C_out, C_in]``, Gemm ``B`` with transB=1).
    ``axis=1``: the second axis holds output channels *within a group* (ConvTranspose
    ``[C_in, C_out/g, k…]``, Gemm/MatMul ``B`` of shape ``[K, N]``); with ``groups`` g, input row i
    belongs to group ``i // (C_in/g)`` and column j is output channel ``group·(C_out/g) + j``.
    """
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    trailing = (1,) * (len(weight_shape) - axis - 1)
    if axis == 0:
        return scale.reshape((-1,) + trailing)
    if axis != 1:
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    rows, per_group = weight_shape[0], weight_shape[1]
    group_of_row = np.arange(rows) // (rows // groups)
    table = scale.reshape(groups, per_group)[group_of_row]  # [rows, C_out/g]
    return table.reshape((rows, per_group) + trailing)


def output_channels(weight_shape: tuple[int, ...], axis: int, groups: int = 1) -> int:
    """How many output channels a weight of this shape has, for ``channel_scale``'s layouts."""
    return weight_shape[0] if axis == 0 else weight_shape[1] * groups


def cast_once(values: np.ndarray, dtype: np.dtype, what: str) -> tuple[np.ndarray, list[str]]:
    """Cast float64 ``values`` to ``dtype`` and say what the cast lost: overflow, total underflow.

    Only 16-bit floats get the element-wise underflow count; for wider types one pass over the
    result shows whether anything overflowed.
    """
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore"):  # overflow is reported below, per tensor
        cast = values.astype(dtype)
    if (dtype.kind != "f" and dtype.name != "bfloat16") or values.size == 0:
        return cast, []
    if dtype.itemsize > 2 and np.isfinite(cast).all():
        return cast, []
    warnings: list[str] = []
    as64 = cast.astype(np.float64)
    overflow = int(np.count_nonzero(np.isinf(as64) & np.isfinite(values)))
    if overflow:
        warnings.append(f"{what}: {overflow} value(s) overflow {dtype.name} and became ±inf")
    underflow = int(np.count_nonzero((as64 == 0) & (values != 0)))
    if underflow:
        warnings.append(f"{what}: {underflow} non-zero value(s) underflow {dtype.name} to 0")
    return cast, warnings


def fold_affine(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    *,
    axis: int = 0,
    groups: int = 1,
    dtype: np.dtype | None = None,
) -> AffineFold:
    """Fold ``y ↦ y·scale + shift`` (per output channel) into ``weight`` and ``bias``.

    Returns ``W·s`` and ``b·s + t`` computed in float64 and cast once to ``dtype`` (default: the
    weight's dtype); a missing bias counts as zero.
    """
    dtype = np.dtype(dtype if dtype is not None else weight.dtype)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    shift = np.asarray(shift, dtype=np.float64).reshape(-1)
    channels = output_channels(weight.shape, axis, groups)
    if scale.size != channels or shift.size != channels:
        raise ValueError(f"scale/shift have {scale.size}/{shift.size} values for {channels} output channels")
    # one pass: the product is formed in float64 straight from the stored weights
    weight64 = np.multiply(weight, channel_scale(scale, weight.shape, axis, groups), dtype=np.float64)
    # A bias broadcasts with channels on its last axis: Conv's [C], Gemm's C of shape [N], [1, N], [M, N]…
    bias64 = shift if bias is None else np.asarray(bias, dtype=np.float64) * scale + shift
    return _finish(weight64, bias64, scale, dtype)


def fold_batchnorm(
    weight: np.ndarray,
    bias: np.ndarray | None,
    norm: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    eps: float,
    *,
    axis: int = 0,
    groups: int = 1,
    dtype: np.dtype | None = None,
) -> AffineFold:
    """Fold a BatchNorm (``norm`` = γ, β, μ, σ²) into the linear op before it; only finite results.

    Raises :class:`UnsafeFoldError` with the reason when the parameters are not a normalization or
    the folded weight or bias would not be finite, so a caller can never write such a fold.
    """
    scale, shift = batchnorm_scale_shift(*norm, eps=eps)
    result = fold_affine(weight, bias, scale, shift, axis=axis, groups=groups, dtype=dtype)
    if result.refusal:
        raise UnsafeFoldError(result.refusal)
    return result


def fold_affine_input(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    *,
    groups: int = 1,
    dtype: np.dtype | None = None,
) -> AffineFold:
    """Fold ``x ↦ x·scale + shift`` on a conv's *input* channels (BatchNorm before a conv).

    ``conv(x·s + t) = conv_{W·s}(x) + Σ W·t``: the weight is scaled along its input-channel axis
    and each output's bias gains the sum of its filter times the shift. This is exact only when
    the conv does not pad, since padded zeros are not shifted; the caller checks that.
    """
    dtype = np.dtype(dtype if dtype is not None else weight.dtype)
    shape = weight.shape
    weight64 = weight.astype(np.float64)
    if np.asarray(scale).size != shape[1] * groups:
        raise ValueError(f"scale has {np.asarray(scale).size} values for {shape[1] * groups} input channels")
    per_input = channel_scale(scale, shape, axis=1, groups=groups)
    bias64 = (weight64 * channel_scale(shift, shape, axis=1, groups=groups)).reshape(shape[0], -1).sum(axis=1)
    if bias is not None:
        bias64 = bias64 + np.asarray(bias, dtype=np.float64).reshape(-1)
    return _finish(weight64 * per_input, bias64, np.asarray(scale, dtype=np.float64), dtype)


# Above this, a fold into a 16-bit weight can lose more than conv+norm would have.
AMPLIFICATION_WARNING = 100.0


def _finish(weight64: np.ndarray, bias64: np.ndarray, scale: np.ndarray, dtype: np.dtype) -> AffineFold:
    new_weight, weight_warnings = cast_once(weight64, dtype, "weight")
    new_bias, bias_warnings = cast_once(bias64, dtype, "bias")
    amplification = float(np.max(np.abs(scale))) if scale.size else 0.0
    warnings = weight_warnings + bias_warnings
    if dtype.itemsize <= 2 and amplification > AMPLIFICATION_WARNING:
        warnings.append(
            f"the fold multiplies some filters by up to {amplification:.0f} (tiny BN variance); in "
            f"{dtype.name} the folded weights can be less accurate than conv + norm were"
        )
    refusal = "; ".join(_non_finite(new, exact, dtype, what)
                        for new, exact, what in ((new_weight, weight64, "weight"), (new_bias, bias64, "bias"))
                        if not np.isfinite(new).all())
    return AffineFold(new_weight, new_bias, amplification, warnings, refusal)


def _non_finite(cast: np.ndarray, exact: np.ndarray, dtype: np.dtype, what: str) -> str:
    """Why the folded ``what`` is not finite: non-finite inputs (NaN/Inf spread), or the cast overflowed.

    NaN and Inf survive every product and sum of the fold, so a non-finite float64 value means an
    input (weight, bias, scale or shift) was already non-finite.
    """
    inherited = int(np.count_nonzero(~np.isfinite(exact)))
    if inherited:
        return (f"the folded {what} would hold {inherited} NaN/Inf value(s): the weight, the bias or the "
                "per-channel map is not finite")
    overflow = int(np.count_nonzero(~np.isfinite(np.asarray(cast, dtype=np.float64))))
    largest = float(np.max(np.abs(exact)))
    return (f"the folded {what} would overflow {dtype.name} in {overflow} value(s) (largest |value| {largest:.4g}, "
            f"{dtype.name} max {float(ml_dtypes.finfo(dtype).max):.4g})")
