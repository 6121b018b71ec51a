"""Built-in networks (cfgs shipped inside the package) and resolving a name or path to a cfg file."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from foldkit.errors import FoldkitError

BUILTIN_MODELS = {
    "darknet53": "darknet53.cfg",
    "yolov3": "yolov3.cfg",
    "yolov3-tiny": "yolov3-tiny.cfg",
}


def builtin_cfg_path(name: str) -> Path:
    """Path of a built-in network's cfg, shipped inside the package."""
    if name not in BUILTIN_MODELS:
        raise FoldkitError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    return Path(str(resources.files("foldkit.models").joinpath(BUILTIN_MODELS[name])))


def resolve_cfg(model: str | os.PathLike) -> Path:
    """A built-in name or a path to a ``.cfg`` file → the cfg's path."""
    if str(model) in BUILTIN_MODELS:
        return builtin_cfg_path(str(model))
    path = Path(model)
    if path.is_file():
        return path
    raise FoldkitError(
        f"{model}: not a built-in model ({', '.join(BUILTIN_MODELS)}) and no such cfg file"
    )
