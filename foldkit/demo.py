"""The main job on a built-in network: export folded and unfolded, prove parity, time both.

The built-in networks ship without trained weights, so the export draws seeded weights with
realistic BatchNorm statistics, some variances near 1e-4 included: folding then really changes
the weights, and parity really tests the fold.
"""

from __future__ import annotations

import os
from pathlib import Path

from foldkit.bench import BenchConfig, format_table, run_benchmark
from foldkit.darknet.export import export_darknet, load_network
from foldkit.parity import compare_outputs, torch_outputs
from foldkit.runtime import create_session, random_inputs, resolve_providers, run


def run_demo(
    model_name: str = "yolov3-tiny", *, img_size: int | tuple[int, int] = 416, out: Path = Path("foldkit-demo"),
    rounds: int = 20, threads: int | None = None, seed: int = 0,
) -> bool:
    """Print each step's result; return whether every parity check passed."""
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(model_name).stem  # a cfg path's files still land in ``out``
    paths = {folded: out / f"{stem}-{'folded' if folded else 'unfolded'}.onnx" for folded in (True, False)}
    for folded, path in paths.items():
        result = export_darknet(model_name, path, seed=seed, img_size=img_size, fold=folded)
        print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB), {result.weights_source}")
        if result.fold_report:
            print(result.fold_report.format())

    # the same seeded network in PyTorch, as the float64 ground truth
    model, _ = load_network(model_name, seed=seed, img_size=img_size)

    providers = resolve_providers("auto")
    print(f"onnxruntime providers: {', '.join(providers)}")
    sessions = {folded: create_session(path, providers=providers, opt_level="disable")
                for folded, path in paths.items()}
    feeds = random_inputs(sessions[True], seed=seed)
    outputs = {folded: run(session, feeds) for folded, session in sessions.items()}
    truth = dict(zip(outputs[True], torch_outputs(model, next(iter(feeds.values())), float64=True), strict=True))
    checks = [
        compare_outputs(outputs[True], outputs[False], candidate_name="folded ONNX",
                        reference_name="unfolded ONNX (ORT_DISABLE_ALL)"),
        compare_outputs(outputs[True], truth, candidate_name="folded ONNX", reference_name="float64 PyTorch"),
        compare_outputs(outputs[False], truth, candidate_name="unfolded ONNX", reference_name="float64 PyTorch"),
    ]
    for report in checks:
        print(report.format())

    print(f"latency, batch 1, {rounds} interleaved rounds after warm-up:")
    variants = ["ort-unfolded-noopt", "ort-unfolded-nofusion", "ort-unfolded-default", "ort-folded-disable",
                "ort-folded-all"]
    # the unfolded file just written; the benchmark folds it for its folded side
    config = BenchConfig(model=str(paths[False]), variants=variants, batches=[1], providers=[providers[0]],
                         threads=threads, rounds=rounds, seed=seed, measure_memory=False)
    print(format_table(run_benchmark(config)))
    print("ORT at 'all' fuses Conv+BN itself (ConvBNFusion), so the unfolded default row is secretly folded"
          " (its 'BN ran' is 0); the rows with fusion off show what folding saves.")
    return all(r.passed for r in checks)
