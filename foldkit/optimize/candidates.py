"""The artifacts `foldkit optimize` can try: a runtime, a precision, and which model file it runs.

Each candidate says why it cannot run here (OpenVINO not installed, no bf16 instructions, no CUDA
in this onnxruntime) instead of silently disappearing from the table.
"""

from __future__ import annotations

from dataclasses import dataclass

# The model files a candidate can run: the folded float model, foldkit's int8 (QDQ as ORT runs it), and that
# int8 model with no Q/DQ pair between a conv and its activation (foldkit.quantize.fused_form: OpenVINO's form).
FLOAT, INT8, INT8_FUSED = "float", "int8", "int8-fused"
INT8_FILES = (INT8, INT8_FUSED)


@dataclass(frozen=True)
class Candidate:
    """One way to run the network: ``backend`` is an ORT provider's name or ``OpenVINO``."""

    name: str
    description: str
    backend: str
    model: str  # FLOAT, INT8 or INT8_FUSED
    precision: str = "fp32"  # OpenVINO's precision hint; fp32 for ONNX Runtime

    @property
    def is_openvino(self) -> bool:
        from foldkit.runtime import OPENVINO

        return self.backend == OPENVINO


def all_candidates() -> tuple[Candidate, ...]:
    from foldkit.runtime import OPENVINO

    return (
        Candidate("ort-fp32", "ONNX Runtime CPU, folded float32, all graph optimizations", "CPUExecutionProvider",
                  FLOAT),
        Candidate("ort-int8", "ONNX Runtime CPU, foldkit's int8 (QDQ)", "CPUExecutionProvider", INT8),
        Candidate("openvino-fp32", "OpenVINO CPU, folded float32", OPENVINO, FLOAT),
        Candidate("openvino-bf16", "OpenVINO CPU, bf16 inference precision", OPENVINO, FLOAT, precision="bf16"),
        Candidate("openvino-int8", "OpenVINO CPU, foldkit's int8 (QDQ)", OPENVINO, INT8),
        Candidate("openvino-int8-fused", "OpenVINO CPU, foldkit's int8, each conv fused with its activation "
                  "(rounded once, after it)", OPENVINO, INT8_FUSED),
        Candidate("ort-cuda-fp32", "ONNX Runtime CUDA, folded float32", "CUDAExecutionProvider", FLOAT),
        Candidate("ort-tensorrt-fp32", "ONNX Runtime TensorRT, folded float32", "TensorrtExecutionProvider", FLOAT),
    )


def candidate_names() -> tuple[str, ...]:
    return tuple(c.name for c in all_candidates())


def why_not_here(candidate: Candidate) -> str | None:
    """Why ``candidate`` cannot run on this machine, or None when it can."""
    if candidate.is_openvino:
        from foldkit.runtime import openvino_available

        if not openvino_available():
            return "OpenVINO is not installed (pip install 'foldkit[openvino]')"
        if candidate.precision == "bf16" and "BF16" not in _openvino_capabilities():
            return "this CPU has no bf16 instructions (AVX-512 BF16 or AMX): OpenVINO would not run bf16 natively"
        return None
    import onnxruntime as ort

    if candidate.backend not in ort.get_available_providers():
        return f"this onnxruntime has no {candidate.backend}"
    return None


def _openvino_capabilities() -> list[str]:
    """OpenVINO's own word on what its CPU plugin can run fast here (FP32, INT8, BF16, FP16 …)."""
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
