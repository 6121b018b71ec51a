"""Time candidates side by side: one session each, interleaved rounds, creation timed apart.

Rounds alternate the candidates (A, B, C, A, B, C, …) so drift in a shared machine's speed hits all
alike; the ratio of medians is what decides. Rounds continue until the time budget is spent, but
never fewer than ``MIN_ROUNDS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from foldkit.runtime import Backend

MIN_ROUNDS = 3


@dataclass
class Timing:
    """One candidate's session creation and its per-run latencies, in milliseconds."""

    create_ms: float
    run_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.run_ms))


def open_timed(opener: Callable[[], Backend]) -> tuple[Backend, float]:
    """A backend and the milliseconds its creation (load, optimize, compile) took."""
    start = time.perf_counter()
    backend = opener()
    return backend, (time.perf_counter() - start) * 1e3


def time_interleaved(backends: Mapping[str, Backend], feeds: dict[str, np.ndarray], *, budget_s: float,
                     warmup: int = 2, max_rounds: int = 200) -> dict[str, list[float]]:
    """Milliseconds per run of each backend on ``feeds``, in interleaved rounds within ``budget_s`` seconds."""
    for backend in backends.values():
        for _ in range(warmup):
            backend.run(feeds)
    samples: dict[str, list[float]] = {name: [] for name in backends}
    deadline = time.perf_counter() + budget_s
    for done in range(max_rounds):
        if done >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.run(feeds)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples
