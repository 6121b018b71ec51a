"""Darknet's activations, each written once, for every backend.

Darknet defines its activations in C (activations.h/.c, AlexeyAB's fork adds the newer ones).
foldkit computes them in two places: PyTorch modules (:mod:`foldkit.nn`) and ONNX nodes written
directly (:mod:`foldkit.darknet.to_onnx`). So that a formula or a rounded constant fixed in one
place cannot stay wrong in the other, each activation is one formula here, written against a
small set of primitives (:class:`Ops`) that each backend implements: the PyTorch backend calls
torch functions, the ONNX backend emits one node per primitive. Arithmetic (``+ − × ÷`` with
floats) is written with Python's operators, which torch tensors and the ONNX backend's symbolic
tensors both overload.

Framework-free: this module imports neither torch nor onnx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from foldkit.errors import FoldkitError

# Darknet's rounded constants (activations.h), kept rather than the exact SELU/GELU ones so outputs match it.
LEAKY_SLOPE = 0.1  # also keras-yolo3's LeakyReLU(alpha=0.1)
RELIE_SLOPE = 0.01
SELU_LAMBDA, SELU_ALPHA = 1.0507, 1.6732
GELU_C1, GELU_C3 = 0.797885, 0.035677  # 0.5·x·(1 + tanh(C1·x + C3·x³))
NORMALIZE_CHANNELS_EPS = 0.0001  # added to the per-pixel sum by normalize_channels*


class Ops(Protocol):
    """The primitives a backend provides; ``x`` is the backend's tensor (NCHW for the channel reductions)."""

    def relu(self, x: Any) -> Any: ...
    def leaky(self, x: Any, slope: float) -> Any: ...
    def sigmoid(self, x: Any) -> Any: ...
    def tanh(self, x: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def floor(self, x: Any) -> Any: ...
    def clip(self, x: Any, low: float, high: float) -> Any: ...
    def elu(self, x: Any, alpha: float) -> Any: ...
    def mish(self, x: Any) -> Any: ...  # x·tanh(softplus(x)), softplus linear above 20 as Darknet's CPU code
    def channel_sum(self, x: Any) -> Any: ...  # over axis 1, kept
    def channel_max(self, x: Any) -> Any: ...


Formula = Callable[[Any, Ops], Any]


def _soft_clip(x: Any, o: Ops, low: float, high: float, slope: float, scale: float, offset: float) -> Any:
    """``scale·clip(x, low, high) + offset + slope·(x − clip(x))``: Darknet's plse and lhtan."""
    clipped = o.clip(x, low, high)
    return clipped * scale + offset + (x - clipped) * slope


def _stair(x: Any, o: Ops) -> Any:
    """``floor(x/2)``, plus ``x − n`` when ``n = floor(x)`` is odd (Darknet's stair_activate)."""
    n = o.floor(x)
    odd = n - o.floor(n * 0.5) * 2.0
    return o.floor(x * 0.5) + odd * (x - n)


def _normalize(values: Any, o: Ops) -> Any:
    """Each pixel's values divided by their sum over channels plus Darknet's epsilon."""
    return values / (o.channel_sum(values) + NORMALIZE_CHANNELS_EPS)


FORMULAS: dict[str, Formula] = {
    "linear": lambda x, o: x,
    "leaky": lambda x, o: o.leaky(x, LEAKY_SLOPE),
    "revleaky": lambda x, o: o.leaky(x, LEAKY_SLOPE),  # Darknet computes it exactly as leaky
    "relie": lambda x, o: o.leaky(x, RELIE_SLOPE),
    "relu": lambda x, o: o.relu(x),
    "relu6": lambda x, o: o.clip(x, 0.0, 6.0),  # AlexeyAB's GPU formula (its CPU build outputs zeros)
    "logistic": lambda x, o: o.sigmoid(x),
    "tanh": lambda x, o: o.tanh(x),
    "mish": lambda x, o: o.mish(x),
    "swish": lambda x, o: x * o.sigmoid(x),  # no β: exactly SiLU
    "elu": lambda x, o: o.elu(x, 1.0),
    "selu": lambda x, o: o.elu(x, SELU_ALPHA) * SELU_LAMBDA,
    "gelu": lambda x, o: x * 0.5 * (o.tanh(x * GELU_C1 + x * x * x * GELU_C3) + 1.0),
    "ramp": lambda x, o: o.relu(x) + x * 0.1,
    "loggy": lambda x, o: o.sigmoid(x) * 2.0 - 1.0,
    "plse": lambda x, o: _soft_clip(x, o, -4.0, 4.0, 0.01, 0.125, 0.5),
    "lhtan": lambda x, o: _soft_clip(x, o, 0.0, 1.0, 0.001, 1.0, 0.0),
    "hardtan": lambda x, o: o.clip(x, -1.0, 1.0),
    "stair": _stair,
    "hard_mish": lambda x, o: x * o.clip(x + 2.0, 0.0, 2.0) * 0.5,
    "normalize_channels": lambda x, o: _normalize(o.relu(x), o),
    "normalize_channels_softmax": lambda x, o: _normalize(o.exp(x), o),
    "normalize_channels_softmax_maxval": lambda x, o: _normalize(o.exp(x - o.channel_max(x)), o),
}


# Every activation Darknet defines (AlexeyAB activations.c, get_activation), all built.
ACTIVATION_NAMES = tuple(FORMULAS)


def formula(name: str) -> Formula:
    """The formula of Darknet activation ``name``; an unknown name is a :class:`FoldkitError`."""
    try:
        return FORMULAS[name]
    except KeyError:
        raise FoldkitError(f"unknown activation {name!r}; known: {', '.join(FORMULAS)}") from None
