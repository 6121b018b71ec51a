"""The one interface every runtime backend offers to the predictor, check, bench and detect.

A backend is a model loaded by one runtime (ONNX Runtime with one execution provider, or
OpenVINO's own runtime) and ready to run. Its inputs are described in ONNX Runtime's spelling
(``tensor(float)``, symbolic dims as text or None), so one seeded-input generator and one input
comparison serve every backend. ``record()`` says what really ran: runtime, version, device,
precision and threads, for reports that must say where their numbers came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """One model input: its name, ONNX Runtime's type string, and its shape (fixed dims as ints)."""

    name: str
    type: str
    shape: list[Any]


class Backend(Protocol):
    """A loaded model: ``name`` is what runs it (an ORT execution provider's name, or ``OpenVINO``)."""

    name: str
    output_names: list[str]

    def get_inputs(self) -> list[TensorInfo]:
        """The model's inputs; named as ORT's ``InferenceSession.get_inputs`` so either serves where inputs are read."""
        ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; outputs by name, in the model's output order."""
        ...

    def record(self) -> dict[str, Any]:
        """What ran: runtime, version, device, precision, threads (JSON-ready values)."""
        ...


def describe(record: dict[str, Any]) -> str:
    """A record on one line, e.g. ``openvino 2026.4.1, device CPU, precision hint f32 → f32, threads 2``."""
    head = f"{record.get('runtime', '?')} {record.get('version', '')}".strip()
    details = ", ".join(f"{key.replace('_', ' ')} {_text(value)}" for key, value in record.items()
                        if key not in ("runtime", "version") and value not in (None, "", []))
    return f"{head}, {details}" if details else head


def _text(value: Any) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


def summary(record: dict[str, Any]) -> str:
    """What a parity report's header says ran: ORT's provider and optimization level, or :func:`describe`."""
    if record.get("runtime") != "onnxruntime":
        return describe(record)
    disabled = record.get("disabled_optimizers") or []
    return (f"onnxruntime {record['provider']}, graph optimizations '{record['graph_optimizations']}'"
            + (f", disabled: {', '.join(disabled)}" if disabled else ""))


def ran_on(records: list[dict[str, Any]], labels: tuple[str, str] = ("candidate", "reference")) -> str:
    """Both sides' :func:`summary`, once when they ran alike."""
    first, second = (summary(r) for r in records)
    return first if first == second else f"{labels[0]}: {first}; {labels[1]}: {second}"
