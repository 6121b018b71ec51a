"""A deployment record: how a model was measured to run fastest on this machine, kept in the model.

``foldkit optimize`` writes it into the chosen model's metadata (and beside it as JSON for people);
the predictor — and so ``detect``, the Ray engine and anything built on it — reads it back and runs
the model exactly as it was measured: the same runtime, precision hint, optimization level and
threads. A record made on another CPU is still followed, with a warning, since what was fastest
there (bf16 on AMX, int8 on VNNI) may not be here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from foldkit.cpu import cpu_model_and_flags
from foldkit.errors import FoldkitError

# The flags that decide which precision is fast: int8 dot products and bf16 arithmetic.
DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


# CPU flags with which OpenVINO's CPU plugin runs bf16 by default (its "default" precision hint).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class RecordWarning(UserWarning):
    """A deployment record that a runtime or server configuration cannot follow exactly."""


@dataclass(frozen=True)
class CpuSignature:
    """The CPU a measurement was made on: its model name and the flags that decide precision speed."""

    model: str
    flags: tuple[str, ...]

    @classmethod
    def here(cls, cpuinfo: str | None = None) -> CpuSignature:
        model, flags = cpu_model_and_flags(cpuinfo)
        return cls(model, tuple(f for f in DECIDING_FLAGS if f in flags))

    def differs_from(self, other: CpuSignature) -> str | None:
        """Why a measurement made on ``other`` may not hold here, or None when the CPUs decide alike."""
        if self.flags == other.flags and self.model == other.model:
            return None
        gained = sorted(set(self.flags) - set(other.flags))
        lost = sorted(set(other.flags) - set(self.flags))
        change = "; ".join(part for part in (f"here also {', '.join(gained)}" if gained else "",
                                             f"here without {', '.join(lost)}" if lost else "") if part)
        return f"measured on {other.model}, running on {self.model}" + (f" ({change})" if change else "")


@dataclass(frozen=True)
class DeploymentRecord:
    """How to run a model: ``backend`` (an ORT provider's name or ``OpenVINO``), its settings, and the evidence."""

    backend: str
    precision: str = "fp32"  # OpenVINO's precision hint (fp32, default, bf16, fp16); fp32 for ORT
    opt_level: str = "all"  # ONNX Runtime's graph optimization level
    threads: int | None = None
    candidate: str = ""  # the name of the candidate that won
    cpu: CpuSignature = field(default_factory=CpuSignature.here)
    table: list[dict[str, Any]] = field(default_factory=list)  # every candidate as measured

    def backend_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`foldkit.runtime.choice.open_backend` that run the model as measured."""
        return {"providers": [self.backend], "precision": self.precision, "opt_level": self.opt_level,
                "threads": self.threads}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> DeploymentRecord:
        try:
            data = json.loads(text)
            cpu = data.pop("cpu")
            record = cls(**data, cpu=CpuSignature(str(cpu["model"]), tuple(map(str, cpu["flags"]))))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FoldkitError(f"{where}: malformed deployment record ({exc})") from None
        problem = record._problem()
        if problem:
            raise FoldkitError(f"{where}: malformed deployment record ({problem})")
        return record

    def _problem(self) -> str:
        """What makes a record read back from a file unusable, or ""."""
        from foldkit.defaults import OPENVINO_PRECISIONS, OPT_LEVEL_NAMES

        if not isinstance(self.backend, str) or not self.backend:
            return f"backend must be a runtime's name, not {self.backend!r}"
        if self.precision not in OPENVINO_PRECISIONS:
            return f"precision must be one of {', '.join(OPENVINO_PRECISIONS)}, not {self.precision!r}"
        if self.opt_level not in OPT_LEVEL_NAMES:
            return f"opt_level must be one of {', '.join(OPT_LEVEL_NAMES)}, not {self.opt_level!r}"
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            return f"threads must be a positive integer, not {self.threads!r}"
        return ""

    def cpu_warning(self) -> str | None:
        """A sentence for the user when this machine's CPU is not the one the record was measured on."""
        why = CpuSignature.here().differs_from(self.cpu)
        return None if why is None else (f"this model's deployment record ({self.candidate}) was {why}; "
                                         "run `foldkit optimize` again on this machine to measure it here")


def deployment_record(metadata: dict[str, str], where: str) -> DeploymentRecord | None:
    """The deployment record in a model's foldkit metadata, if it has one (``where`` names it in errors)."""
    from foldkit.onnxio.metadata import DEPLOYMENT_KEY

    text = metadata.get(DEPLOYMENT_KEY)
    return None if text is None else DeploymentRecord.from_json(text, where)


def model_deployment_record(model: str | os.PathLike) -> DeploymentRecord | None:
    """The deployment record an ONNX file carries, read without its weights."""
    from foldkit.onnxio.files import load_onnx
    from foldkit.onnxio.metadata import read_metadata

    return deployment_record(read_metadata(load_onnx(model, load_external_data=False)), str(model))
