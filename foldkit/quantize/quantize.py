"""The ``foldkit quantize`` pass: fold, then int8 QDQ with ONNX Runtime, each extra step measured.

1. Fold (foldkit's ONNX fold); any BatchNormalization left is reported.
2. ONNX Runtime's ``quantize_static`` on the folded model: the baseline every step is judged by.
3. 7-bit weights, cross-layer equalization, then bias correction: each is kept only if it raises
   the lowest held-out output SNR, measured as ORT runs the model on this machine (a step that
   does not help is reported as dropped, not hidden). 7-bit weights matter on x86 CPUs without
   VNNI, whose u8×s8 kernels saturate 16-bit sums on full-range weights.
   Beside them, the float model's own SNR under u8 rounding noise on its input says how much the
   network amplifies noise: near that, int8 is as good as it can be.
4. Sensitivity (all-but-one) when a target SNR is missed, when an output's SNR is low, or when
   asked; with ``target_snr``, the fewest most sensitive layers stay float until it is reached.
5. int8 vs float latency, interleaved in one run at ORT's defaults.

The float reference is the folded model: foldkit's fold is exact to float32 rounding, and the
parity of fold and original is ``foldkit check``'s business.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.errors import FoldkitError
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.files import OutputTransaction, check_outputs, load_onnx, model_companions, save_onnx
from foldkit.quantize.admit import admit_float_model, require_finite_outputs
from foldkit.quantize.bias_correction import correct_biases
from foldkit.quantize.calibration import load_calibration, model_input
from foldkit.quantize.equalize import equalize_onnx
from foldkit.quantize.judge import HeldOutJudge, OutputError, min_snr
from foldkit.quantize.latency import measure_latency
from foldkit.quantize.report import LOW_SNR_DB, FloatLayer, QuantizeReport, Step
from foldkit.quantize.sensitivity import Progress, fewest_float_layers, rank_layers
from foldkit.quantize.static import StaticQuantizer


def quantize_onnx(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike,
    *,
    calib: str | os.PathLike | None = None,
    calib_random: int | None = None,
    held_out: int | None = None,
    seed: int = 0,
    method: str = "minmax",
    reduce_range: bool = True,
    equalize: bool = True,
    bias_correction: bool = True,
    target_snr: float | None = None,
    exclude: Sequence[str] = (),
    sensitivity: bool | None = None,
    latency_rounds: int = 10,
    step_models: str | os.PathLike | None = None,
    progress: Progress | None = None,
    report_path: str | os.PathLike | None = None,
) -> QuantizeReport:
    """Fold ``model``, quantize it to QDQ int8 and write it to ``output``; return what it cost.

    Calibration: ``calib`` (a folder of images or an ``.npy`` batch) or ``calib_random`` seeded
    random inputs (smoke tests only); ``held_out`` of them judge the result (see
    :func:`foldkit.quantize.calibration.load_calibration`). ``exclude`` names nodes to keep in float.
    ``reduce_range``, ``equalize``, ``bias_correction``: try the step (7-bit weights, which avoid the
    u8×s8 overflow of x86 CPUs without VNNI; cross-layer equalization; bias correction) and keep it
    when it raises the lowest held-out output SNR as measured on this machine.
    ``sensitivity``: True always runs the per-layer analysis; None when an output's SNR is low; a
    missed ``target_snr`` always runs it (the search keeps the most sensitive layers float).
    When ``target_snr`` (dB) cannot be reached, nothing is written and ``report.passed`` is False.
    ``latency_rounds=0`` skips the timing. ``step_models``: a folder to keep every step's int8
    model in (``step0.int8.onnx``, …; benchmarks time them), otherwise they are temporary.
    ``report_path``: the report as JSON, written together with the model or not at all.
    """
    where = "model" if isinstance(model, onnx.ModelProto) else str(model)
    source = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    inputs = [calib, *([] if isinstance(model, onnx.ModelProto) else [model, *model_companions(model)])]
    check_outputs([output, report_path], inputs)
    admit_float_model(source, where)
    folded, fold_report = fold_onnx(source)
    _name_unnamed_nodes(folded)
    input_name, shape = model_input(folded, where)
    data = load_calibration(shape, calib=calib, random_count=calib_random, held_out=held_out, seed=seed)
    unknown = sorted(set(exclude) - {node.name for node in folded.graph.node})
    if unknown:
        raise FoldkitError(f"{where}: --exclude names nodes that are not in the folded model: {', '.join(unknown)}")
    automatic = _unquantizable_nodes(folded)
    exclude = [*exclude, *(name for name in automatic if name not in exclude)]
    report = QuantizeReport(
        model=where, output=str(output), method=method, calibration=data.source,
        synthetic_calibration=data.synthetic, fold_summary=fold_report.summary(), target_snr_db=target_snr,
        batchnorm_left=[e.node for e in fold_report.not_folded if e.op == "BatchNormalization"],
        float_layers=[FloatLayer(name, automatic.get(name, "excluded by the caller")) for name in exclude],
    )
    with tempfile.TemporaryDirectory(prefix="foldkit-quantize-") as tmp:
        folder = Path(tmp)
        quantizer = StaticQuantizer(folded, folder, "folded", data, input_name, method)
        judge = HeldOutJudge(quantizer.float_path, data.held_out, input_name)
        require_finite_outputs(judge.reference, where)
        best = _quantize(quantizer, exclude, judge)
        report.input_noise_snr_db = judge.input_noise_snr(
            quantizer.float_path, float(data.calibration.max() - data.calibration.min()) / 255.0, seed)
        report.steps.append(Step("ORT quantize_static", best.errors, kept=True, model_file=str(best.path)))
        if reduce_range:
            best = _try_step(report, best, judge, "+ 7-bit weights",
                             StaticQuantizer(folded, folder, "reduced-range", data, input_name, method,
                                             reduce_range=True))
        if equalize:
            equalized, report.equalization = equalize_onnx(folded)
            if report.equalization.pairs:
                best = _try_step(report, best, judge, "+ cross-layer equalization",
                                 StaticQuantizer(equalized, folder, "equalized", data, input_name, method,
                                                 reduce_range=best.quantizer.reduce_range))
            else:
                report.notes.append("equalization: no conv pair qualified")
        if bias_correction:
            corrected, report.bias_correction = correct_biases(
                best.quantizer.model, onnx.load(str(best.path)), data.calibration, input_name)
            best = _try_step(report, best, judge, "+ bias correction",
                             StaticQuantizer(corrected, folder, "bias-corrected", data, input_name, method,
                                             reduce_range=best.quantizer.reduce_range))
        baseline_db = min_snr(best.errors)
        missed_target = target_snr is not None and baseline_db < target_snr  # the search needs the ranking
        if sensitivity or missed_target or (sensitivity is None and baseline_db < LOW_SNR_DB):
            report.sensitivity = rank_layers(best.quantizer, judge, exclude, baseline_db, progress)
        final = best
        if target_snr is not None:
            final = _reach_target(report, best, judge, target_snr, progress)
        report.outputs = final.errors
        written = onnx.load(str(final.path)) if report.passed else None
        if not report.passed:
            report.output = ""
            report.notes.append("target not reached: no model written")
        if latency_rounds > 0:
            sample = data.held_out[:1]
            report.latency = measure_latency(best.quantizer.float_path, final.path, sample, input_name,
                                             rounds=latency_rounds)
            if final is not best:
                report.latency_all_int8 = measure_latency(best.quantizer.float_path, best.path, sample, input_name,
                                                          rounds=latency_rounds)
        for index, step in enumerate(report.steps):
            kept_file = Path(step_models) / f"step{index}.int8.onnx" if step_models else None
            if kept_file is not None:
                shutil.copyfile(step.model_file, kept_file)
            step.model_file = str(kept_file or "")
    with OutputTransaction(inputs) as staged:  # the model and its report land together or not at all
        if written is not None:
            save_onnx(written, output, staged)
        if report_path is not None:
            staged.write_text(report_path, report.to_json())
    return report


@dataclass
class _Candidate:
    """A float model's quantizer, the QDQ model it made with ``exclude`` float, and its held-out error."""

    quantizer: StaticQuantizer
    exclude: list[str]
    path: Path
    errors: list[OutputError]


def _quantize(quantizer: StaticQuantizer, exclude: Sequence[str], judge: HeldOutJudge) -> _Candidate:
    path = quantizer.quantize(exclude)
    return _Candidate(quantizer, list(exclude), path, judge.errors(path))


def _try_step(report: QuantizeReport, best: _Candidate, judge: HeldOutJudge, name: str,
              quantizer: StaticQuantizer) -> _Candidate:
    """Quantize the step's float model; keep it if its lowest output SNR beats the best so far."""
    candidate = _quantize(quantizer, best.exclude, judge)
    gain = min_snr(candidate.errors) - min_snr(best.errors)
    kept = gain > 0
    report.steps.append(Step(name, candidate.errors, kept, note=f"{gain:+.2f} dB min SNR",
                             model_file=str(candidate.path)))
    return candidate if kept else best


def _reach_target(report: QuantizeReport, best: _Candidate, judge: HeldOutJudge, target: float,
                  progress: Progress | None) -> _Candidate:
    if min_snr(best.errors) >= target:
        report.target_reached = True
        return best
    search = fewest_float_layers(best.quantizer, judge, report.sensitivity, best.exclude, target, progress)
    report.target_reached = search.reached
    report.target_tries = search.tries
    if not search.reached:
        tried = max(search.tries, key=lambda t: t[1])
        report.notes.append(f"cannot reach {target:g} dB: the best was {tried[1]:.1f} dB with the {tried[0]} most "
                            f"sensitive of {len(report.sensitivity)} layers in float")
        return best
    gains = {s.node: s.gain_db for s in report.sensitivity}
    report.float_layers += [
        FloatLayer(node, f"target {target:g} dB: alone in float it adds {gains[node]:+.1f} dB"
                   + (f" (with {', '.join(best.quantizer.layer_nodes(node)[1:])})"
                      if len(best.quantizer.layer_nodes(node)) > 1 else ""))
        for node in search.float_layers]
    report.steps.append(Step(f"+ target SNR ({len(search.float_layers)} float)", search.errors, kept=True,
                             model_file=str(search.path)))
    floated = [n for layer in search.float_layers for n in best.quantizer.layer_nodes(layer)]
    return _Candidate(best.quantizer, best.exclude + floated, search.path, search.errors)


def _unquantizable_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes ORT's quantizer would break, and why: a Pad whose value is ±inf (PyTorch's export of a
    −∞-padded max pool) gets a NaN scale, and NaN flows to every output."""
    values = {init.name: init for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "Pad" and len(node.input) > 2 and node.input[2] in values:
            value = numpy_helper.to_array(values[node.input[2]])
            if not np.isfinite(value).all():
                found[node.name] = (f"Pad with value {value.ravel()[0]}: int8 cannot hold it "
                                    "(ORT would quantize it to NaN)")
    return found


def _name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """ORT's quantizer excludes nodes by name; give every nameless node one."""
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = next(f"{node.op_type}_{index}{suffix}" for suffix in ("", *map(str, range(1, 100)))
                             if f"{node.op_type}_{index}{suffix}" not in taken)
            taken.add(node.name)


def quantized_model_path(float_model: str | os.PathLike, target: str | os.PathLike, *,
                         calib: str | os.PathLike | None = None, calib_random: int | None = 16,
                         method: str = "minmax", seed: int = 0, steps: bool = True) -> Path:
    """Quantize ``float_model`` to ``target`` and return its path: ``foldkit bench``'s int8 hook.

    Default: 16 seeded random calibration inputs (speed does not depend on the calibration data);
    7-bit weights, equalization and bias correction tried as in ``foldkit quantize`` (``steps=False``:
    ORT's quantizer alone, one calibration instead of four), no sensitivity, no timing.
    """
    output = Path(target)
    quantize_onnx(float_model, output, calib=calib, calib_random=None if calib else calib_random, method=method,
                  seed=seed, sensitivity=False, latency_rounds=0, reduce_range=steps, equalize=steps,
                  bias_correction=steps)
    return output
