"""Run the benchmark: warm-up, then interleaved rounds, for latency and for session creation alike.

Interleaving (A B C, A B C, …) makes drift in the machine's speed hit every variant alike; raw
samples are kept. Session creation is sampled once per round too: a single creation per variant
is dominated by whatever else the machine did at that moment.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from foldkit.bench.config import BenchConfig
from foldkit.bench.memory import peak_rss_mb
from foldkit.bench.results import BenchResult, Row, environment
from foldkit.bench.runners import Runner, input_feeds, open_runner, ran_ops, run_size
from foldkit.bench.variants import UNFOLDED, VARIANTS, ModelFiles, Variant, prepare_models, require_known
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import node_counts
from foldkit.onnxio.files import check_outputs
from foldkit.runtime import CPU_PROVIDER, OPENVINO, resolve_providers
from foldkit.runtime.openvino import INSTALL_HINT, openvino_available

Progress = Callable[[int, int, str], None]


def run_benchmark(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run every variant × provider × batch; ``progress(done, total, label)`` is called as it goes."""
    if not config.batches or min(config.batches) < 1:
        raise FoldkitError(f"batch sizes must be at least 1, got {config.batches}")
    require_known(config.variants)
    check_outputs(config.outputs, config.inputs())
    baseline = config.baseline or config.variants[0]
    if baseline not in config.variants:
        raise FoldkitError(f"baseline {baseline!r} is not among the variants {', '.join(config.variants)}")
    providers = _groups(config.providers)
    notes: list[str] = []
    rows: list[Row] = []
    ticker = _Ticker(progress, len(providers) * len(config.batches) * (2 * config.rounds + 1))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = prepare_models(config, folder, notes)
        size = run_size(files["ort", UNFOLDED], config.img_size)
        if size is not None:
            notes.append(f"input height x width: {size[0]}x{size[1]}")
        for provider in providers:
            for batch in config.batches:
                rows += _bench_group(config, files, provider, batch, baseline, folder, ticker)
    settings = config.settings() | {"baseline": baseline, "providers": providers}
    runtimes = {VARIANTS[v].runtime for v in config.variants}
    return BenchResult(settings, environment("torch" in runtimes, openvino="openvino" in runtimes), rows, notes)


def _groups(requested: list[str]) -> list[str]:
    """The ORT providers to time at, in order. ``openvino`` is the CPU group: OpenVINO runs on the CPU, and its
    rows are timed interleaved with ORT's CPU rows so that both see the same machine."""
    groups: list[str] = []
    for name in requested:
        if name.lower() == OPENVINO.lower() and not openvino_available():
            raise FoldkitError(INSTALL_HINT)
        provider = CPU_PROVIDER if name.lower() == OPENVINO.lower() else resolve_providers(name)[0]
        groups += [provider] if provider not in groups else []
    return groups


def _bench_group(config: BenchConfig, files: ModelFiles, provider: str, batch: int, baseline: str, folder: Path,
                 ticker: _Ticker) -> list[Row]:
    """Every variant at one provider and batch size: creation rounds, warm-up, latency rounds, memory."""
    variants = [VARIANTS[n] for n in config.variants if VARIANTS[n].runtime == "ort" or provider == CPU_PROVIDER]
    feeds = input_feeds(files["ort", UNFOLDED], batch, config.seed, config.img_size)
    label = f"{provider} batch {batch}"

    def open_variant(v: Variant) -> Runner:
        return open_runner(v, files[v.source, v.model], provider=provider, feeds=feeds, threads=config.threads)

    runners = {v.name: open_variant(v) for v in variants}  # also the creation warm-up: first loads are slow
    rows = [_row(config, v, files, runners[v.name], provider, batch, folder) for v in variants]
    for r in range(config.rounds):
        for v, row in zip(variants, rows, strict=True):
            start = time.perf_counter()
            open_variant(v)
            row.session_samples_ms.append((time.perf_counter() - start) * 1e3)
        ticker.tick(f"{label}: session creation {r + 1}/{config.rounds}")
    for runner in runners.values():
        for _ in range(config.warmup):
            runner.run()
    ticker.tick(f"{label}: warm-up")
    for r in range(config.rounds):
        for row in rows:
            start = time.perf_counter()
            runners[row.variant].run()
            row.samples_ms.append((time.perf_counter() - start) * 1e3)
        ticker.tick(f"{label}: round {r + 1}/{config.rounds}")
    for v, row in zip(variants, rows, strict=True):
        row.summarize()
        if config.measure_memory:
            row.peak_rss_mb = peak_rss_mb(v, files[v.source, v.model], provider=provider, feeds=feeds,
                                          threads=config.threads, warmup=config.warmup)
    base = next((r for r in rows if r.variant == baseline), None)
    for row in rows:
        row.ratio = row.stats["p50_ms"] / base.stats["p50_ms"] if base else None
    return rows


def _row(config: BenchConfig, variant: Variant, files: ModelFiles, runner: Runner, provider: str, batch: int,
         folder: Path) -> Row:
    onnx_file = files["ort", variant.model]
    row = Row(variant.name, variant.description, provider, runner.provider_used, batch, [], [],
              onnx_file.stat().st_size, node_counts(onnx.load(str(onnx_file), load_external_data=False)),
              ran_ops(variant, files[variant.source, variant.model], provider=provider, threads=config.threads,
                      folder=folder), runtime=runner.record())
    if variant.runtime == "ort" and runner.provider_used != provider:
        row.warnings.append(f"asked for {provider}, ONNX Runtime ran on {runner.provider_used}")
    return row


class _Ticker:
    """Counts steps done and passes them to the caller's progress callback, if any."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def tick(self, label: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, label)
