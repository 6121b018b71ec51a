"""Triton Inference Server model repositories: one module per backend (onnxruntime, python)."""

from foldkit.deploy.triton.onnxruntime import triton_config, write_repository

__all__ = ["triton_config", "write_repository"]
