"""The one registry of Darknet section types foldkit builds, and the check that every route covers them.

Each section type maps to the plan classes (:mod:`.specs`) its planner may produce. Four tables
are keyed by it: the planner's (section type → describer), the ``.weights`` layout's, the
PyTorch builder's and the ONNX writer's (plan class → their function). Each of those modules
calls :func:`require_all` when imported, so a type added here but forgotten in one of them fails
at import, naming the type and the route; and each dispatch goes through :func:`lookup`, which
names the type instead of falling through to a silent pass-through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from foldkit.darknet import specs

SECTION_TYPES: dict[str, tuple[type, ...]] = {
    "convolutional": (specs.Conv,),
    "local": (specs.Local,),
    "connected": (specs.Connected,),
    "maxpool": (specs.MaxPool, specs.DepthMaxPool),
    "local_avgpool": (specs.LocalAvgPool,),
    "avgpool": (specs.AvgPool,),
    "route": (specs.Route,),
    "shortcut": (specs.Shortcut,),
    "scale_channels": (specs.ScaleChannels,),
    "sam": (specs.Sam,),
    "crop": (specs.Crop,),
    "reorg": (specs.Reorg,),
    "reorg3d": (specs.Reorg,),
    "upsample": (specs.Upsample,),
    "softmax": (specs.Softmax,),
    "activation": (specs.Activation,),
    "dropout": (specs.Passthrough,),
    "cost": (specs.Passthrough,),  # training-only losses: Darknet's inference never reads their (zero) outputs
    "contrastive": (specs.Passthrough,),
    "detection": (specs.Detection,),
    "yolo": (specs.YoloHead,),
    "gaussian_yolo": (specs.GaussianYoloHead,),
    "region": (specs.RegionHead,),
}

# Every plan class, once, in registry order.
LAYER_TYPES: tuple[type, ...] = tuple(dict.fromkeys(kind for kinds in SECTION_TYPES.values() for kind in kinds))

K = TypeVar("K")
V = TypeVar("V")


class RegistryError(Exception):
    """A route of foldkit lacks a layer type the registry lists: a bug in foldkit, not in the user's input."""


def require_all(table: Mapping[K, object], keys: Iterable[K], route: str) -> None:
    """Raise :class:`RegistryError` naming every registered type ``table`` (``route``'s dispatch) lacks."""
    missing = [getattr(key, "__name__", str(key)) for key in keys if key not in table]
    if missing:
        raise RegistryError(f"internal error: the {route} has no entry for Darknet layer type(s) "
                            f"{', '.join(missing)}")


def lookup(table: Mapping[type, V], params: object, route: str) -> V:
    """``route``'s entry for the exact class of ``params`` (subclasses are registered on their own)."""
    try:
        return table[type(params)]
    except KeyError:
        raise RegistryError(f"internal error: the {route} has no entry for Darknet layer type "
                            f"{type(params).__name__}") from None
