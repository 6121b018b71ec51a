"""The built-in networks as Darknet .cfg files (this folder ships as the package foldkit.models)."""
