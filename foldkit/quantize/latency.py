"""int8 vs float latency, measured interleaved in one run at ORT's defaults.

Rounds alternate the two models (float, int8, float, int8, …) so that drift in the machine's
speed, other jobs on a shared host above all, hits both alike; the ratio of the medians is the
number that matters. Idle ORT threads do not spin between runs, so one model's threads do not
steal the cores from the other's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from foldkit.runtime import create_session

SETTINGS = (f"onnxruntime CPUExecutionProvider, graph optimizations 'all' (defaults), {os.cpu_count()} cores visible, "
            "interleaved rounds")


@dataclass
class Latency:
    float_p50_ms: float
    int8_p50_ms: float
    rounds: int
    settings: str
    float_ms: list[float] = field(default_factory=list)
    int8_ms: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """int8 p50 / float p50: below 1 is faster."""
        return self.int8_p50_ms / self.float_p50_ms


def time_interleaved(models: Mapping[str, str | os.PathLike], sample: np.ndarray, input_name: str, *,
                     rounds: int = 10, warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds per run of each model on one ``sample``: ``rounds`` rounds, each running every model once."""
    sessions = {key: create_session(path, providers="cpu", opt_level="all", spinning=False)
                for key, path in models.items()}
    feeds = {input_name: sample}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feeds)
    samples: dict[str, list[float]] = {key: [] for key in sessions}
    for _ in range(rounds):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            samples[key].append((time.perf_counter() - start) * 1e3)
    return samples


def measure_latency(float_model: str | os.PathLike, int8_model: str | os.PathLike, sample: np.ndarray,
                    input_name: str, *, rounds: int = 10, warmup: int = 2) -> Latency:
    """Median latency of each model on one ``sample`` (1×C×H×W), ``rounds`` interleaved runs each."""
    samples = time_interleaved({"float": float_model, "int8": int8_model}, sample, input_name, rounds=rounds,
                               warmup=warmup)
    return Latency(float(np.median(samples["float"])), float(np.median(samples["int8"])), rounds, SETTINGS,
                   samples["float"], samples["int8"])
