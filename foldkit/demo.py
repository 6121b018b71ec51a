"""The main job on a built-in network: export folded and unfolded, prove parity, time both.

The built-in networks ship without trained weights, so BatchNorm statistics are drawn (seeded)
to be realistic, some variances near 1e-4 included: folding then really changes the weights, and
parity really tests the fold.
"""

from __future__ import annotations

import os
from pathlib import Path

from foldkit.bench import BenchConfig, format_table, run_benchmark
from foldkit.darknet.build import build_model
from foldkit.export import export_onnx
from foldkit.onnxio.metadata import network_metadata
from foldkit.synthetic import randomize_batchnorm
from foldkit.parity import compare_outputs, torch_outputs
from foldkit.runtime import create_session, random_inputs, resolve_providers, run


def run_demo(
    model_name: str = "yolov3-tiny", *, img_size: int = 416, out: Path = Path("foldkit-demo"),
    rounds: int = 20, threads: int | None = None, seed: int = 0,
) -> int:
    """Print each step's result; return 0 when every parity check passed, else 1."""
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(model_name, img_size, seed=seed)
    shape = (1, model.info.channels, model.info.height, model.info.width)
    randomize_batchnorm(model, (2, *shape[1:]), seed=seed)
    print(f"{model_name}: {len(model.layers)} layers, input {'x'.join(map(str, shape))}, "
          f"weights and BN statistics drawn with seed {seed}")

    paths = {}
    for folded in (True, False):
        path = out / f"{model_name}-{'folded' if folded else 'unfolded'}.onnx"
        result = export_onnx(model, path, input_shape=shape, fold=folded, metadata=network_metadata(model.info, shape))
        paths[folded] = path
        print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        if result.fold_report:
            print(result.fold_report.format())

    providers = resolve_providers("auto")
    print(f"onnxruntime providers: {', '.join(providers)}")
    sessions = {folded: create_session(paths[folded], providers=providers, opt_level="disable") for folded in paths}
    feeds = random_inputs(sessions[True], seed=seed)
    outputs = {folded: run(session, feeds) for folded, session in sessions.items()}
    truth = dict(zip(outputs[True], torch_outputs(model, next(iter(feeds.values())), float64=True)))
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
    return 0 if all(r.passed for r in checks) else 1
