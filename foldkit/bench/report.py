"""Benchmark results for people and programs: a text table, JSON, CSV (every raw sample) and a PNG."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from foldkit.bench.results import BenchResult, Row, bn_nodes_ran
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import write_atomic, write_text_atomic
from foldkit.runtime import describe


def session_spread(row: Row) -> str:
    """Session creation as ``median (min–max)`` in ms."""
    s = row.stats
    return f"{s['session_p50_ms']:.0f} ({s['session_min_ms']:.0f}–{s['session_max_ms']:.0f})"


def format_table(result: BenchResult) -> str:
    """One table per provider and batch size, then the machine, the settings and the notes."""
    lines = []
    memory = any(r.peak_rss_mb is not None for r in result.rows)  # no column of '-' when memory was not measured
    for provider in result.config["providers"]:
        for batch in result.config["batches"]:
            rows = [r for r in result.rows if r.provider_requested == provider and r.batch == batch]
            lines.append(f"{provider}, batch {batch} (ratio: p50 / {result.config['baseline']}'s p50)")
            lines.append(f"  {'variant':<24} {'BN ran':>6} {'session ms (min–max)':>20} {'min':>8} {'p50':>8} "
                         f"{'p90':>8} {'p99':>8} {'max':>8} {'img/s':>8} {'ratio':>6}" + (f" {'peak MB':>8}" * memory))
            for r in rows:
                s = r.stats
                rss = (f" {r.peak_rss_mb:>8.0f}" if r.peak_rss_mb is not None else f" {'-':>8}") if memory else ""
                lines.append(
                    f"  {r.variant:<24} {bn_nodes_ran(r):>6} {session_spread(r):>20} {s['min_ms']:>8.2f} "
                    f"{s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f} "
                    f"{s['images_per_s']:>8.1f} {r.ratio:>5.2f}x{rss}")
                lines += [f"      ran: {describe(r.runtime)}"] if r.runtime.get("runtime") == "openvino" else []
                lines += [f"      warning: {w}" for w in r.warnings]
    env, config = result.environment, result.config
    lines.append(f"machine: {env['cpu']}, {env['cores']} cores; " +
                 ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    threads = config["threads"] or "each runtime's default"
    lines.append(f"settings: threads {threads} (ORT thread spinning off),"
                 f" warm-up {config['warmup']}, {config['rounds']} interleaved rounds (latency and session creation),"
                 f" opset {config['opset']}, seed {config['seed']}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _inputs(result: BenchResult) -> list[str | None]:
    """The files the benchmark read (model, weights, int8 model): no report may replace them."""
    return [result.config.get(key) for key in ("model", "weights", "int8_model")]


def write_json(result: BenchResult, path: str | os.PathLike) -> None:
    """Every setting, the machine, and every raw sample."""
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2), _inputs(result))


def write_csv(result: BenchResult, path: str | os.PathLike) -> None:
    """One line per timed round: that round's latency and session creation, ready for a spreadsheet or pandas."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["variant", "provider_requested", "provider_used", "batch", "round", "latency_ms", "session_ms",
                     "peak_rss_mb"])
    for r in result.rows:
        for i, (sample, session) in enumerate(zip(r.samples_ms, r.session_samples_ms, strict=True)):
            writer.writerow([r.variant, r.provider_requested, r.provider_used, r.batch, i, f"{sample:.6f}",
                             f"{session:.3f}", "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.1f}"])
    write_text_atomic(path, buffer.getvalue(), _inputs(result))


def write_plot(result: BenchResult, path: str | os.PathLike) -> None:
    """Latency distributions per variant (one panel per provider × batch) and the ratios."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FoldkitError("--plot needs matplotlib: pip install 'foldkit[bench]'") from None

    groups = [(p, b) for p in result.config["providers"] for b in result.config["batches"]]
    fig, axes = plt.subplots(2, len(groups), figsize=(max(7, 6 * len(groups)), 9), squeeze=False)
    for column, (provider, batch) in enumerate(groups):
        rows = [r for r in result.rows if r.provider_requested == provider and r.batch == batch]
        names = [r.variant for r in rows]
        ratios = [r.ratio or 0.0 for r in rows]
        top, bottom = axes[0][column], axes[1][column]
        top.boxplot([r.samples_ms for r in rows], orientation="horizontal", tick_labels=names, showfliers=True)
        top.set_xlabel("latency (ms), lower is better")
        device = provider.replace("ExecutionProvider", "")
        top.set_title(f"{Path(result.config['model']).name}: {device}, batch {batch}")
        bottom.barh(names, ratios, color=["tab:blue" if "unfolded" in n else "tab:green" for n in names])
        bottom.axvline(1.0, color="black", linewidth=0.8)
        bottom.set_xlabel(f"p50 / {result.config['baseline']} p50 (lower is faster)")
        for y, ratio in enumerate(ratios):
            bottom.text(ratio, y, f" {ratio:.2f}x", va="center")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90), _inputs(result))
    plt.close(fig)
