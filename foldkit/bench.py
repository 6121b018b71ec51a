"""Timing ONNX Runtime sessions honestly: warm-up first, then interleaved rounds.

Variants are timed in rounds (A B C, A B C, …) so that drift in the machine's speed (turbo,
thermal limits, other processes) hits every variant alike instead of whichever ran last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from foldkit.runtime import create_session

# (name, folded?, opt level, disabled optimizers): what a row of the comparison runs.
STANDARD_VARIANTS = {
    "unfolded/ort-disable-all": (False, "disable", ()),
    "unfolded/ort-all-no-convbn": (False, "all", ("ConvBNFusion",)),
    "unfolded/ort-all (ORT fuses BN)": (False, "all", ()),
    "folded/ort-disable-all": (True, "disable", ()),
    "folded/ort-all": (True, "all", ()),
}


@dataclass
class Timing:
    name: str
    samples_ms: np.ndarray
    session_ms: float

    @property
    def median(self) -> float:
        return float(np.median(self.samples_ms))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))


def interleaved_timings(
    sessions: dict[str, ort.InferenceSession], feeds: dict[str, np.ndarray], *, warmup: int = 3, rounds: int = 20
) -> dict[str, np.ndarray]:
    """Latency samples in milliseconds per session, after ``warmup`` runs each, interleaved."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feeds)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(values) for name, values in samples.items()}


def time_variants(
    folded_path: str, unfolded_path: str, feeds: dict[str, np.ndarray], *, providers: str = "auto",
    threads: int | None = None, warmup: int = 3, rounds: int = 20,
) -> list[Timing]:
    """The standard folded/unfolded × ORT-settings comparison, one :class:`Timing` per variant."""
    sessions, creation = {}, {}
    for name, (folded, level, disabled) in STANDARD_VARIANTS.items():
        start = time.perf_counter()
        sessions[name] = create_session(
            folded_path if folded else unfolded_path, providers=providers, opt_level=level,
            disabled_optimizers=disabled, threads=threads,
        )
        creation[name] = (time.perf_counter() - start) * 1e3
    samples = interleaved_timings(sessions, feeds, warmup=warmup, rounds=rounds)
    return [Timing(name, samples[name], creation[name]) for name in STANDARD_VARIANTS]


def format_timings(timings: list[Timing], baseline: str | None = None) -> str:
    base = next((t for t in timings if t.name == baseline), timings[0]).median
    lines = [f"  {'variant':<34} {'session ms':>10} {'p50 ms':>9} {'p90 ms':>9} {'vs ' + (baseline or timings[0].name)[:20]:>12}"]
    for t in timings:
        lines.append(
            f"  {t.name:<34} {t.session_ms:>10.1f} {t.median:>9.2f} {t.percentile(90):>9.2f} {t.median / base:>11.2f}x"
        )
    return "\n".join(lines)
