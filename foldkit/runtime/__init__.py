"""Runtimes that run ONNX models, one backend each, behind one small interface.

``ort`` holds ONNX Runtime (CPU, CUDA and TensorRT execution providers, sessions with explicit
graph optimization levels), ``openvino`` OpenVINO's own runtime, ``interface`` what every backend
offers, ``choice`` which backend a user's provider names mean, and ``predictor`` a deployed
model on the first backend that loads it.
"""

from __future__ import annotations

from foldkit.runtime.choice import backend_preference, open_backend
from foldkit.runtime.interface import Backend, TensorInfo, describe, ran_on, summary
from foldkit.runtime.openvino import OPENVINO, OpenVINOBackend, PrecisionWarning, openvino_available
from foldkit.runtime.ort import (
    CONV_BN_FUSION,
    CPU_PROVIDER,
    OPT_LEVELS,
    ORT_ERRORS,
    OrtBackend,
    ProviderWarning,
    create_session,
    open_ort,
    provider_preference,
    random_inputs,
    resolve_providers,
    run,
)
from foldkit.runtime.predictor import Predictor

__all__ = ["CONV_BN_FUSION", "CPU_PROVIDER", "OPENVINO", "OPT_LEVELS", "ORT_ERRORS", "Backend", "OpenVINOBackend",
           "OrtBackend", "PrecisionWarning", "Predictor", "ProviderWarning", "TensorInfo", "backend_preference",
           "create_session", "describe", "open_backend", "open_ort", "openvino_available", "provider_preference",
           "ran_on", "random_inputs", "resolve_providers", "run", "summary"]
