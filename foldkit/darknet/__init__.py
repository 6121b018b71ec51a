"""Darknet ``.cfg`` networks in PyTorch: parse the text, build the module, read and write weights."""

from foldkit.darknet.build import DarknetModel, build_model, builtin_cfg_path, BUILTIN_MODELS
from foldkit.darknet.cfg import Section, parse_cfg

__all__ = ["DarknetModel", "build_model", "builtin_cfg_path", "BUILTIN_MODELS", "Section", "parse_cfg"]
