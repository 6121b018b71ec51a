"""Benchmark folded vs unfolded inference, honestly, and say exactly what ran.

ONNX Runtime folds Conv+BatchNormalization on its own (``ConvBNFusion``) at ``basic`` and above,
so an "unfolded" model run with default settings is secretly folded. Every row here names its
model (folded by foldkit or not), runtime, graph optimization level and disabled rewrites, and
the graph ORT really ran is saved and counted, so a row that claims BatchNorm nodes has them.

Method: warm-up, then interleaved rounds (A B C, A B C, …) so that drift in the machine's speed
hits every variant alike; raw samples are kept; a wide spread is flagged as noise.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from foldkit.errors import FoldkitError
from foldkit.runtime import CONV_BN_FUSION, create_session, resolve_providers

# name → (runtime, folded, ORT level, disabled rewrites)
VARIANTS: dict[str, tuple[str, bool, str, tuple[str, ...]]] = {
    "ort-unfolded-noopt": ("ort", False, "disable", ()),
    "ort-unfolded-nofusion": ("ort", False, "all", (CONV_BN_FUSION,)),
    "ort-unfolded-default": ("ort", False, "all", ()),
    "ort-folded-disable": ("ort", True, "disable", ()),
    "ort-folded-basic": ("ort", True, "basic", ()),
    "ort-folded-extended": ("ort", True, "extended", ()),
    "ort-folded-all": ("ort", True, "all", ()),
    "torch-unfolded": ("torch", False, "", ()),
    "torch-folded": ("torch", True, "", ()),
}
DESCRIPTIONS = {
    "ort-unfolded-noopt": "unfolded, every ORT graph optimization off",
    "ort-unfolded-nofusion": "unfolded, ORT all but ConvBNFusion disabled",
    "ort-unfolded-default": "unfolded, ORT defaults (ORT fuses Conv+BN itself)",
    "ort-folded-disable": "folded by foldkit, ORT optimizations off",
    "ort-folded-basic": "folded by foldkit, ORT basic",
    "ort-folded-extended": "folded by foldkit, ORT extended",
    "ort-folded-all": "folded by foldkit, ORT all",
    "torch-unfolded": "PyTorch eager, unfolded",
    "torch-folded": "PyTorch eager, folded by foldkit",
}
NOISE_SPREAD = 0.25  # (p90 − p10) / p50 above this: the machine was not quiet


@dataclass
class Row:
    """One variant on one provider at one batch size."""

    variant: str
    description: str
    provider_requested: str
    provider_used: str
    batch: int
    samples_ms: list[float]
    session_ms: float
    model_bytes: int
    model_ops: dict[str, int]
    ran_ops: dict[str, int]  # the graph ORT actually ran (its optimized model), or the torch module's
    peak_rss_mb: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None  # p50 / baseline's p50 at the same provider and batch
    warnings: list[str] = field(default_factory=list)

    def summarize(self) -> None:
        s = np.asarray(self.samples_ms)
        p10, p50, p90, p99 = np.percentile(s, [10, 50, 90, 99])
        self.stats = {
            "min_ms": float(s.min()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(s.max()), "mean_ms": float(s.mean()), "images_per_s": float(self.batch * 1e3 / p50),
        }
        if p50 > 0 and (p90 - p10) / p50 > NOISE_SPREAD:
            self.warnings.append(f"noisy: p10–p90 spread is {100 * (p90 - p10) / p50:.0f}% of the median")


@dataclass
class BenchConfig:
    model: str
    variants: list[str]
    batches: list[int]
    providers: list[str]
    img_size: int | None = None
    weights: str | None = None
    threads: int | None = None
    warmup: int = 3
    rounds: int = 20
    seed: int = 0
    opset: int = 17
    baseline: str | None = None
    measure_memory: bool = True


@dataclass
class BenchResult:
    config: dict
    environment: dict
    rows: list[Row]
    notes: list[str]

    def to_dict(self) -> dict:
        return {"config": self.config, "environment": self.environment, "notes": self.notes,
                "rows": [asdict(r) for r in self.rows]}


def available_providers() -> list[str]:
    """CPU always, then CUDA and TensorRT where this onnxruntime build has them."""
    import onnxruntime

    present = onnxruntime.get_available_providers()
    return ["CPUExecutionProvider"] + [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in present]


def parse_variants(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(VARIANTS)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise FoldkitError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return names


def _prepare_models(config: BenchConfig, folder: Path, notes: list[str]):
    """(unfolded.onnx, folded.onnx, torch unfolded, torch folded or None) for the benchmarked network."""
    if Path(config.model).suffix.lower() == ".onnx":
        from foldkit.onnxio.files import load_onnx, save_onnx
        from foldkit.fold.onnx import fold_onnx

        if config.weights:
            raise FoldkitError("--weights goes with a .cfg or built-in model, not an .onnx file")
        unfolded = Path(config.model)
        folded_model, report = fold_onnx(load_onnx(unfolded), inplace=True)
        folded = folder / "folded.onnx"
        save_onnx(folded_model, folded)
        notes.append(f"folded side: {report.summary()}")
        torch_rows = [v for v in config.variants if VARIANTS[v][0] == "torch"]
        if torch_rows:
            raise FoldkitError(f"{config.model}: variants {', '.join(torch_rows)} need a .cfg or built-in model")
        return unfolded, folded, None, None
    from foldkit.darknet.build import build_model
    from foldkit.export import export_onnx
    from foldkit.fold.torch import fold_module
    from foldkit.synthetic import randomize_batchnorm

    model = build_model(config.model, config.img_size, seed=config.seed)
    shape = (1, model.info.channels, model.info.height, model.info.width)
    if config.weights:
        from foldkit.darknet.weights import load_weights

        load_weights(model, config.weights)
    else:
        randomize_batchnorm(model, (2, *shape[1:]), seed=config.seed)
        notes.append(f"no --weights: seeded random weights and BN statistics (seed {config.seed})")
    paths = {}
    for fold in (False, True):
        paths[fold] = folder / f"{'folded' if fold else 'unfolded'}.onnx"
        export_onnx(model, paths[fold], input_shape=shape, fold=fold, dynamic_batch=True, opset=config.opset)
    return paths[False], paths[True], model, fold_module(model)[0]


def _input_shape(path: Path) -> list:
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FoldkitError(f"{path}: bench needs a model with one input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    return [inputs[0].name, inputs[0].type.tensor_type.elem_type, [d.dim_value if d.HasField("dim_value") else None for d in dims]]


def _feeds(path: Path, batch: int, seed: int) -> dict[str, np.ndarray]:
    name, elem_type, dims = _input_shape(path)
    if dims and dims[0] not in (None, batch):
        raise FoldkitError(f"{path}: the model's batch size is fixed at {dims[0]}; cannot run batch {batch}")
    shape = [batch if i == 0 else (d or 1) for i, d in enumerate(dims)]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return {name: np.random.default_rng(seed).random(shape).astype(dtype)}


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _ort_runner(path: Path, level: str, disabled, provider: str, threads, folder: Path, key: str):
    """A session timed at creation, and the op counts of the graph ORT really runs."""
    providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
    start = time.perf_counter()
    session = create_session(path, providers=providers, opt_level=level, disabled_optimizers=disabled, threads=threads,
                             spinning=False)
    session_ms = (time.perf_counter() - start) * 1e3
    optimized = folder / f"{key}.optimized.onnx"
    create_session(path, providers=providers, opt_level=level, disabled_optimizers=disabled, threads=threads,
                   optimized_model_path=optimized)
    ran = _op_counts(onnx.load(str(optimized))) if optimized.exists() else {}
    return session, session_ms, ran, session.get_providers()[0]


def _peak_rss_child(queue, kind: str, source: str, level: str, disabled, provider: str, threads, feeds, warmup: int):
    """In a fresh process: create the runner, warm it up, report the process's peak RSS in MB."""
    if kind == "ort":
        session = create_session(source, providers=[provider], opt_level=level, disabled_optimizers=disabled,
                                 threads=threads)
        run = lambda: session.run(None, feeds)  # noqa: E731
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
        module = torch.load(source, weights_only=False)
        x = torch.from_numpy(next(iter(feeds.values())))
        run = lambda: module(x)  # noqa: E731
        torch.set_grad_enabled(False)
    for _ in range(max(1, warmup)):
        run()
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


def _measure_peak_rss(*args) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_rss_child, args=(queue, *args))
    process.start()
    process.join()
    return float(queue.get()) if process.exitcode == 0 and not queue.empty() else float("nan")


def environment(config: BenchConfig) -> dict:
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                "numpy": np.__version__}
    if "torch" in sys.modules or any(VARIANTS[v][0] == "torch" for v in config.variants):
        import torch

        versions["torch"] = torch.__version__
    from foldkit import __version__

    versions["foldkit"] = __version__
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions,
            "available_providers": onnxruntime.get_available_providers()}


def run_benchmark(config: BenchConfig, progress=None) -> BenchResult:
    """Run every variant × provider × batch; ``progress(done, total, label)`` is called as it goes."""
    if not config.batches or min(config.batches) < 1:
        raise FoldkitError(f"batch sizes must be at least 1, got {config.batches}")
    baseline = config.baseline or config.variants[0]
    if baseline not in config.variants:
        raise FoldkitError(f"baseline {baseline!r} is not among the variants {', '.join(config.variants)}")
    providers = [resolve_providers(p)[0] for p in config.providers]
    notes: list[str] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        unfolded, folded, torch_unfolded, torch_folded = _prepare_models(config, folder, notes)
        files = {False: unfolded, True: folded}
        torch_modules = {False: torch_unfolded, True: torch_folded}
        torch_files = {}
        if torch_unfolded is not None and config.measure_memory:
            import torch

            for fold, module in torch_modules.items():
                torch_files[fold] = folder / f"torch-{fold}.pt"
                torch.save(module, torch_files[fold])
        total = len(providers) * len(config.batches) * (config.rounds + 1)
        done = 0
        for provider in providers:
            torch_here = provider == "CPUExecutionProvider"
            for batch in config.batches:
                runners, batch_rows = {}, []
                feeds = _feeds(unfolded, batch, config.seed)
                for name in config.variants:
                    kind, fold, level, disabled = VARIANTS[name]
                    if kind == "torch" and not torch_here:
                        continue
                    path = files[fold]
                    if kind == "ort":
                        session, session_ms, ran, used = _ort_runner(
                            path, level, disabled, provider, config.threads, folder, f"{name}-{provider}-{batch}")
                        runners[name] = lambda s=session, f=feeds: s.run(None, f)
                    else:
                        runners[name], session_ms, ran, used = _torch_runner(torch_modules[fold], feeds, config.threads)
                    row = Row(name, DESCRIPTIONS[name], provider, used, batch, [],
                              session_ms, path.stat().st_size, _op_counts(onnx.load(str(path), load_external_data=False)),
                              ran)
                    if kind == "ort" and used != provider:
                        row.warnings.append(f"asked for {provider}, ONNX Runtime ran on {used}")
                    batch_rows.append(row)
                for run in runners.values():
                    for _ in range(config.warmup):
                        run()
                done += 1
                _report(progress, done, total, f"{provider} batch {batch}: warm-up")
                for r in range(config.rounds):
                    for row in batch_rows:
                        start = time.perf_counter()
                        runners[row.variant]()
                        row.samples_ms.append((time.perf_counter() - start) * 1e3)
                    done += 1
                    _report(progress, done, total, f"{provider} batch {batch}: round {r + 1}/{config.rounds}")
                for row in batch_rows:
                    row.summarize()
                    if config.measure_memory:
                        kind, fold, level, disabled = VARIANTS[row.variant]
                        source = str(files[fold]) if kind == "ort" else str(torch_files[fold])
                        row.peak_rss_mb = _measure_peak_rss(kind, source, level, disabled, provider, config.threads,
                                                            feeds, config.warmup)
                base = next((r for r in batch_rows if r.variant == baseline), None)
                for row in batch_rows:
                    row.ratio = row.stats["p50_ms"] / base.stats["p50_ms"] if base else None
                rows.extend(batch_rows)
    settings = asdict(config) | {"baseline": baseline, "providers": providers}
    return BenchResult(settings, environment(config), rows, notes)


def _torch_runner(module, feeds, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    x = torch.from_numpy(next(iter(feeds.values())))
    start = time.perf_counter()
    module = copy.deepcopy(module).eval()
    session_ms = (time.perf_counter() - start) * 1e3

    def run():
        with torch.no_grad():
            module(x)

    ran = dict(sorted(Counter(type(m).__name__ for m in module.modules() if not list(m.children())).items()))
    return run, session_ms, ran, "torch-cpu"


def _report(progress, done: int, total: int, label: str) -> None:
    if progress is not None:
        progress(done, total, label)


def bn_nodes_ran(row: Row) -> int:
    """How many BatchNorms the runtime really executed as separate nodes.

    ORT's NCHWc layout pass (CPU, level 'all') rewrites an unfused BatchNormalization into a
    1×1 depthwise Conv, so a BN that ran shows up either under its own name or as an extra Conv.
    """
    named = row.ran_ops.get("BatchNormalization", 0) + row.ran_ops.get("BatchNorm2d", 0)
    extra_convs = row.ran_ops.get("Conv", 0) - row.model_ops.get("Conv", 0)
    return named + max(0, extra_convs) if not row.variant.startswith("torch") else named


def format_table(result: BenchResult) -> str:
    lines = []
    for provider in result.config["providers"]:
        for batch in result.config["batches"]:
            rows = [r for r in result.rows if r.provider_requested == provider and r.batch == batch]
            lines.append(f"{provider}, batch {batch} (ratio: p50 / {result.config['baseline']}'s p50)")
            lines.append(f"  {'variant':<24} {'BN ran':>6} {'session ms':>10} {'min':>8} {'p50':>8} {'p90':>8} "
                         f"{'p99':>8} {'max':>8} {'img/s':>8} {'ratio':>6} {'peak MB':>8}")
            for r in rows:
                s = r.stats
                bn = bn_nodes_ran(r)
                rss = f"{r.peak_rss_mb:>8.0f}" if r.peak_rss_mb is not None else f"{'-':>8}"
                lines.append(
                    f"  {r.variant:<24} {bn:>6} {r.session_ms:>10.1f} {s['min_ms']:>8.2f} {s['p50_ms']:>8.2f} "
                    f"{s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f} {s['images_per_s']:>8.1f} "
                    f"{r.ratio:>5.2f}x {rss}")
                lines += [f"      warning: {w}" for w in r.warnings]
    env = result.environment
    lines.append(f"machine: {env['cpu']}, {env['cores']} cores; " +
                 ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    lines.append(f"settings: threads {result.config['threads'] or 'ORT/torch default'} (ORT thread spinning off),"
                 f" warm-up {result.config['warmup']},"
                 f" {result.config['rounds']} interleaved rounds, opset {result.config['opset']}, seed {result.config['seed']}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def write_json(result: BenchResult, path) -> None:
    from foldkit.onnxio.files import write_text_atomic

    write_text_atomic(path, json.dumps(result.to_dict(), indent=2))


def write_csv(result: BenchResult, path) -> None:
    """One line per timed sample: every raw number, ready for a spreadsheet or pandas."""
    import csv
    import io

    from foldkit.onnxio.files import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["variant", "provider_requested", "provider_used", "batch", "round", "latency_ms", "session_ms",
                     "peak_rss_mb"])
    for r in result.rows:
        for i, sample in enumerate(r.samples_ms):
            writer.writerow([r.variant, r.provider_requested, r.provider_used, r.batch, i, f"{sample:.6f}",
                             f"{r.session_ms:.3f}", "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.1f}"])
    write_text_atomic(path, buffer.getvalue())


def write_plot(result: BenchResult, path) -> None:
    """Latency distributions per variant (one panel per provider × batch) and the ratios."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FoldkitError("--plot needs matplotlib: pip install 'foldkit[bench]'") from None
    from foldkit.onnxio.files import write_atomic

    groups = [(p, b) for p in result.config["providers"] for b in result.config["batches"]]
    fig, axes = plt.subplots(2, len(groups), figsize=(max(7, 6 * len(groups)), 9), squeeze=False)
    for column, (provider, batch) in enumerate(groups):
        rows = [r for r in result.rows if r.provider_requested == provider and r.batch == batch]
        names = [r.variant for r in rows]
        top, bottom = axes[0][column], axes[1][column]
        top.boxplot([r.samples_ms for r in rows], vert=False, tick_labels=names, showfliers=True)
        top.set_xlabel("latency (ms), lower is better")
        top.set_title(f"{Path(result.config['model']).name}: {provider.replace('ExecutionProvider', '')}, batch {batch}")
        bottom.barh(names, [r.ratio for r in rows], color=["tab:blue" if "unfolded" in n else "tab:green" for n in names])
        bottom.axvline(1.0, color="black", linewidth=0.8)
        bottom.set_xlabel(f"p50 / {result.config['baseline']} p50 (lower is faster)")
        for y, r in enumerate(rows):
            bottom.text(r.ratio, y, f" {r.ratio:.2f}x", va="center")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
