"""Darknet ``.cfg`` networks in PyTorch: parse the text (:mod:`.cfg`), build the module (:mod:`.build`)."""
