"""`foldkit optimize`: try every artifact this machine can run, keep the fastest that stays accurate.

Which runtime and precision is fastest depends on the CPU (bf16 on AMX, int8 on VNNI, float32 on a
plain AVX2 core), so nothing is assumed: each candidate is built (the fold, foldkit's int8), judged
against the original model on held-out inputs, and timed side by side with the others in
interleaved rounds. Only a candidate that passes the accuracy gate can be chosen; when none does,
nothing is written. The winner is written with a deployment record in its metadata, so whatever
loads it runs it as it was measured.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from foldkit.defaults import OPTIMIZE_BUDGET_S, OPTIMIZE_MIN_SNR_DB
from foldkit.errors import FoldkitError
from foldkit.optimize.candidates import (
    FLOAT,
    INT8,
    INT8_FILES,
    INT8_FUSED,
    Candidate,
    all_candidates,
    candidate_names,
    why_not_here,
)
from foldkit.optimize.judge import Accuracy, Judge, outputs_on
from foldkit.optimize.measure import open_timed, time_interleaved
from foldkit.optimize.report import CandidateResult, OptimizeReport
from foldkit.runtime import Backend, open_backend
from foldkit.runtime.deployment import CpuSignature, DeploymentRecord

MODEL_FILE, RECORD_FILE = "model.onnx", "deployment.json"  # what OUT_DIR receives


@dataclass(frozen=True)
class OptimizeOptions:
    """The calibration data (images or an .npy batch; ``calib_random`` for smoke tests), the gate, the budget.

    The gate is every output's held-out SNR ≥ ``min_snr`` dB (default ``OPTIMIZE_MIN_SNR_DB``) or,
    with ``min_f1`` and a YOLO model, detection agreement F1 ≥ ``min_f1``. ``candidates`` restricts the
    names tried (default: all); ``budget_s`` bounds the interleaved timing rounds.
    """

    calib: str | os.PathLike | None = None
    calib_random: int | None = None
    min_snr: float | None = None
    min_f1: float | None = None
    candidates: Sequence[str] | None = None
    budget_s: float = OPTIMIZE_BUDGET_S
    threads: int | None = None
    seed: int = 0
    progress: Callable[[str], None] | None = field(default=None, compare=False)

    def gate_snr(self) -> float | None:
        return self.min_snr if self.min_snr is not None or self.min_f1 is not None else OPTIMIZE_MIN_SNR_DB

    def selected(self) -> list[Candidate]:
        names = list(self.candidates or candidate_names())
        unknown = [n for n in names if n not in candidate_names()]
        if unknown:
            raise FoldkitError(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(candidate_names())}")
        return [c for c in all_candidates() if c.name in names]


def optimize_model(model: str | os.PathLike, out_dir: str | os.PathLike,
                   options: OptimizeOptions | None = None) -> OptimizeReport:
    """Build, judge and time every candidate; write the fastest that passes the gate into ``out_dir``."""
    from foldkit.onnxio.files import check_outputs, load_onnx

    options = options or OptimizeOptions()
    candidates = options.selected()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FoldkitError(f"{out}: the output must be a folder (it receives {MODEL_FILE} and {RECORD_FILE})")
    if out.is_dir():
        check_outputs([out / MODEL_FILE, out / RECORD_FILE], [model, options.calib])
    elif not out.absolute().parent.is_dir():
        raise FoldkitError(f"{out}: its parent folder does not exist")
    original = load_onnx(model)
    with tempfile.TemporaryDirectory(prefix="foldkit-optimize-") as work:
        files, absent, data, input_name = _build(original, str(model), Path(work), candidates, options)
        judge = _judge(model, original, data.held_out, input_name)
        report = OptimizeReport(str(model), _gate_text(options, len(data.held_out)), CpuSignature.here().model, [])
        backends = _open_and_judge(candidates, files, absent, judge, data.held_out, input_name, options, report)
        _time(backends, {input_name: data.held_out[:1]}, options, report)
        passing = [r for r in report.results if r.passed and r.p50_ms is not None]
        if passing:
            winner = min(passing, key=lambda r: r.p50_ms or 0.0)
            report.chosen = winner.name
            chosen = next(c for c in candidates if c.name == winner.name)
            report.written = _write(files[chosen.model], chosen, options, report, out)
    return report


def _build(original: onnx.ModelProto, where: str, work: Path, candidates: list[Candidate],
           options: OptimizeOptions):
    """The folded float model and, where an int8 candidate can run, foldkit's int8 model (and its fused form);
    why a model file is absent; the calibration data."""
    from foldkit.fold.onnx import fold_onnx
    from foldkit.quantize import QuantizeOptions, quantize_onnx
    from foldkit.quantize.calibration import load_calibration, model_input
    from foldkit.quantize.fused_form import fuse_conv_activations
    from foldkit.quantize.options import HELD_OUT_VARIANTS

    folded, _ = fold_onnx(original)
    files = {FLOAT: work / "folded.onnx"}
    onnx.save(folded, str(files[FLOAT]))
    input_name, shape = model_input(folded, where)
    data = load_calibration(shape, calib=options.calib, random_count=options.calib_random, seed=options.seed,
                            variants=HELD_OUT_VARIANTS)
    absent: dict[str, str] = {}
    if any(c.model in INT8_FILES and why_not_here(c) is None for c in candidates):
        _say(options, "quantizing to int8 (foldkit quantize)")
        files[INT8] = work / "int8.onnx"
        quantize_onnx(files[FLOAT], files[INT8], QuantizeOptions(
            calib=options.calib, calib_random=options.calib_random, seed=options.seed, latency_rounds=0,
            sensitivity="never", progress=options.progress))
        fused, convs = fuse_conv_activations(onnx.load(str(files[INT8])))
        if convs:
            files[INT8_FUSED] = work / "int8-fused.onnx"
            onnx.save(fused, str(files[INT8_FUSED]))
        else:
            absent[INT8_FUSED] = "no conv has a Q/DQ pair before a ReLU or LeakyReLU: the same model as the int8 one"
    return files, absent, data, input_name


def _judge(model: str | os.PathLike, original: onnx.ModelProto, held_out: np.ndarray, input_name: str) -> Judge:
    """The original model's outputs on the held-out inputs, run as written (every ORT optimization off)."""
    from foldkit.deploy.yolo import heads_from_metadata
    from foldkit.onnxio.metadata import DECODED_KEY, read_metadata

    reference = outputs_on(open_backend(model, "cpu", opt_level="disable"), held_out, input_name)
    metadata = read_metadata(original)
    heads = heads_from_metadata(metadata)
    detector = heads is not None or metadata.get(DECODED_KEY) == "true"
    size = (int(held_out.shape[2]), int(held_out.shape[3])) if held_out.ndim == 4 else None
    return Judge(reference, heads, size, detector)


def _open_and_judge(candidates: list[Candidate], files: dict[str, Path], absent: dict[str, str], judge: Judge,
                    held_out: np.ndarray, input_name: str, options: OptimizeOptions, report: OptimizeReport
                    ) -> dict[str, Backend]:
    """Each candidate opened (creation timed) and judged; the ones that ran, by name."""
    if options.min_f1 is not None and not judge.detector:
        raise FoldkitError(f"{report.model}: --min-f1 needs a YOLO model with foldkit metadata; use --min-snr")
    backends: dict[str, Backend] = {}
    for candidate in candidates:
        result = CandidateResult(candidate.name, candidate.description,
                                 skipped=why_not_here(candidate) or absent.get(candidate.model))
        report.results.append(result)
        if result.skipped is not None:
            continue
        _say(options, f"judging {candidate.name}")
        backend, result.create_ms = open_timed(functools.partial(
            open_backend, files[candidate.model], [candidate.backend], opt_level="all", threads=options.threads,
            precision=candidate.precision, spinning=False))
        result.record = backend.record()
        accuracy = judge.accuracy(outputs_on(backend, held_out, input_name))
        result.min_snr_db, result.f1 = accuracy.min_snr_db, accuracy.f1
        result.why_failed = _gate_failure(accuracy, options)
        result.passed = not result.why_failed
        backends[candidate.name] = backend
    return backends


def _gate_failure(accuracy: Accuracy, options: OptimizeOptions) -> str:
    """Why a candidate fails the gate, or "" when it passes (a non-finite output never passes)."""
    snr_gate = options.gate_snr()
    if not np.isfinite(accuracy.min_snr_db) and accuracy.min_snr_db != np.inf:
        return "non-finite or empty outputs"
    if snr_gate is not None and accuracy.min_snr_db < snr_gate:
        return f"SNR {accuracy.min_snr_db:.1f} dB < {snr_gate:g}"
    if options.min_f1 is not None and (accuracy.f1 is None or accuracy.f1 < options.min_f1):
        return f"F1 {accuracy.f1 if accuracy.f1 is not None else float('nan'):.3f} < {options.min_f1:g}"
    return ""


def _time(backends: dict[str, Backend], feeds: dict[str, np.ndarray], options: OptimizeOptions,
          report: OptimizeReport) -> None:
    if not backends:
        return
    _say(options, f"timing {len(backends)} candidates side by side ({options.budget_s:g} s)")
    samples = time_interleaved(backends, feeds, budget_s=options.budget_s)
    for result in report.results:
        if result.name in samples:
            result.p50_ms, result.rounds = float(np.median(samples[result.name])), len(samples[result.name])


def _write(source: Path, chosen: Candidate, options: OptimizeOptions, report: OptimizeReport, out: Path) -> list[str]:
    """The winner with its deployment record in its metadata, and the record beside it as JSON."""
    from foldkit.onnxio.files import OutputTransaction
    from foldkit.onnxio.metadata import DEPLOYMENT_KEY, add_metadata

    record = DeploymentRecord(backend=chosen.backend, precision=chosen.precision, opt_level="all",
                              threads=options.threads, candidate=chosen.name, table=report.table())
    model = onnx.load(str(source))
    add_metadata(model, {DEPLOYMENT_KEY: record.to_json()})
    targets = [out / MODEL_FILE, out / RECORD_FILE]
    with OutputTransaction() as transaction:
        transaction.make_folder(out)
        transaction.write_bytes(targets[0], model.SerializeToString())
        transaction.write_text(targets[1], record.to_json())
    return [str(t) for t in targets]


def _gate_text(options: OptimizeOptions, held_out: int) -> str:
    parts = []
    if options.gate_snr() is not None:
        parts.append(f"every output's SNR ≥ {options.gate_snr():g} dB")
    if options.min_f1 is not None:
        parts.append(f"detection F1 ≥ {options.min_f1:g}")
    return " and ".join(parts) + f" against the original model on {held_out} held-out inputs"


def _say(options: OptimizeOptions, message: str) -> None:
    if options.progress is not None:
        options.progress(message)
