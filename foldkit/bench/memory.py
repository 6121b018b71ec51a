"""Peak resident memory of one variant, measured in a fresh process.

Within the benchmark's own process every variant's sessions share one heap and one high-water
mark, so each variant is opened and warmed up alone in a spawned child, which reports its peak.
"""

from __future__ import annotations

import multiprocessing
import resource
from pathlib import Path
from typing import Any

import numpy as np

from foldkit.bench.runners import open_runner
from foldkit.bench.variants import Variant


def peak_rss_mb(variant: Variant, path: Path, *, provider: str, feeds: dict[str, np.ndarray], threads: int | None,
                warmup: int) -> float:
    """The child's peak RSS in MB after opening ``variant`` and running it ``warmup`` times (NaN if it failed)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, variant, path, provider, feeds, threads, warmup))
    process.start()
    process.join()
    return float(queue.get()) if process.exitcode == 0 and not queue.empty() else float("nan")


def _child(queue: Any, variant: Variant, path: Path, provider: str, feeds: dict[str, np.ndarray],
           threads: int | None, warmup: int) -> None:
    runner = open_runner(variant, path, provider=provider, feeds=feeds, threads=threads)
    for _ in range(max(1, warmup)):
        runner.run()
    queue.put(_high_water_mark_mb())


def _high_water_mark_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
