"""Benchmark results as data: one row per variant, provider and batch, with raw samples and statistics."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from foldkit.bench.variants import VARIANTS

NOISE_SPREAD = 0.25  # (p90 − p10) / p50 above this: the machine was not quiet


@dataclass
class Row:
    """One variant on one provider at one batch size."""

    variant: str
    description: str
    provider_requested: str
    provider_used: str
    batch: int
    samples_ms: list[float]  # one latency per timed round
    session_samples_ms: list[float]  # one session creation per timed round
    model_bytes: int
    model_ops: dict[str, int]
    ran_ops: dict[str, int]  # the graph ORT actually ran (its optimized model), or the torch module's
    peak_rss_mb: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None  # p50 / baseline's p50 at the same provider and batch
    warnings: list[str] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)  # what ran: runtime, version, device, precision, threads

    def summarize(self) -> None:
        """Latency percentiles, throughput, and session creation's median and min–max spread."""
        s = np.asarray(self.samples_ms)
        p10, p50, p90, p99 = np.percentile(s, [10, 50, 90, 99])
        sessions = np.asarray(self.session_samples_ms)
        self.stats = {
            "min_ms": float(s.min()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(s.max()), "mean_ms": float(s.mean()), "images_per_s": float(self.batch * 1e3 / p50),
            "session_p50_ms": float(np.median(sessions)), "session_min_ms": float(sessions.min()),
            "session_max_ms": float(sessions.max()),
        }
        if p50 > 0 and (p90 - p10) / p50 > NOISE_SPREAD:
            self.warnings.append(f"noisy: p10–p90 spread is {100 * (p90 - p10) / p50:.0f}% of the median")


@dataclass
class BenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[Row]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "environment": self.environment, "notes": self.notes,
                "rows": [asdict(r) for r in self.rows]}


def bn_nodes_ran(row: Row) -> int:
    """How many BatchNorms the runtime really executed as separate nodes.

    ORT's NCHWc layout pass (CPU, level 'all') rewrites an unfused BatchNormalization into a
    1×1 depthwise Conv, so a BN that ran shows up either under its own name or as an extra Conv.
    """
    named = row.ran_ops.get("BatchNormalization", 0) + row.ran_ops.get("BatchNorm2d", 0)
    if VARIANTS[row.variant].runtime != "ort":  # OpenVINO's and torch's layer names are their own
        return named
    return named + max(0, row.ran_ops.get("Conv", 0) - row.model_ops.get("Conv", 0))


def environment(with_torch: bool, *, openvino: bool = False) -> dict[str, Any]:
    """CPU, core count, platform and library versions, so a result says where it was measured."""
    import onnxruntime

    from foldkit import __version__

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                "numpy": np.__version__}
    if with_torch or "torch" in sys.modules:
        import torch

        versions["torch"] = torch.__version__
    if openvino:
        import openvino as ov

        versions["openvino"] = ov.get_version().split("-")[0]
    versions["foldkit"] = __version__
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions,
            "available_providers": onnxruntime.get_available_providers()}
