"""The ``foldkit quantize`` pass: fold, then int8 QDQ with ONNX Runtime, each extra step measured.

1. Fold (foldkit's ONNX fold); any BatchNormalization left is reported.
2. ONNX Runtime's ``quantize_static`` on the folded model: the baseline every step is judged by.
3. The optional steps of :mod:`foldkit.quantize.steps` (7-bit weights where this CPU saturates,
   equalization, MSE-optimal activation ranges, bias correction, u16 for the worst activations),
   each kept only when it raises the worst held-out output SNR by more than the judgement's own
   noise, measured as ORT runs the model on this machine (a step that does not help is reported
   as dropped, not hidden). Beside them, the float model's own SNR under u8 rounding noise on its
   input says how much the network amplifies noise: near that, int8 is as good as it can be.
4. Sensitivity (all-but-one) when a target SNR is missed, when an output's SNR is low, or when
   asked; with a target SNR, the fewest most sensitive layers stay float until it is reached.
5. For a YOLO model (foldkit's head metadata) calibrated on images: detection agreement with the
   float model on the held-out images (:mod:`foldkit.quantize.detections`).
6. int8 vs float latency, interleaved in one run at ORT's defaults.

The float reference is the folded model: foldkit's fold is exact to float32 rounding, and the
parity of fold and original is ``foldkit check``'s business.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.cpu import int8_capability
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.files import OutputTransaction, check_outputs, load_onnx, model_companions, save_onnx
from foldkit.quantize.admit import admit_float_model, require_finite_outputs
from foldkit.quantize.calibration import CalibrationData, load_calibration, model_input
from foldkit.quantize.context import Candidate, Context
from foldkit.quantize.detections import compare_detections
from foldkit.quantize.draws import DRAWS
from foldkit.quantize.judge import HeldOutJudge
from foldkit.quantize.latency import measure_latency
from foldkit.quantize.options import QuantizeOptions
from foldkit.quantize.report import LOW_SNR_DB, FloatLayer, QuantizeReport, Step
from foldkit.quantize.sensitivity import fewest_float_layers, rank_layers
from foldkit.quantize.significance import draw_noise_db
from foldkit.quantize.static import StaticQuantizer
from foldkit.quantize.steps import STEP_FUNCTIONS

PER_CHANNEL_OPSET = 13  # DequantizeLinear takes an axis (per-channel scales) from this opset on


def quantize_onnx(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike,
                  options: QuantizeOptions | None = None, *,
                  report_path: str | os.PathLike | None = None) -> QuantizeReport:
    """Fold ``model``, quantize it to QDQ int8 and write it to ``output``; return what it cost.

    ``options`` (:class:`~foldkit.quantize.options.QuantizeOptions`) says where the calibration
    data comes from and which steps to try. When ``options.target_snr`` (dB) cannot be reached,
    nothing is written and ``report.passed`` is False. ``report_path``: the report as JSON, written
    together with the model or not at all.
    """
    options = options or QuantizeOptions()
    where = "model" if isinstance(model, onnx.ModelProto) else str(model)
    source = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    inputs = [options.calib, *([] if isinstance(model, onnx.ModelProto) else [model, *model_companions(model)])]
    check_outputs([output, report_path], inputs)
    admit_float_model(source, where)
    folded, fold_report = fold_onnx(source)
    folded, upgraded = _per_channel_opset(folded, where)
    _name_unnamed_nodes(folded)
    input_name, shape = model_input(folded, where)
    data = load_calibration(shape, calib=options.calib, random_count=options.calib_random,
                            held_out=options.held_out, seed=options.seed, preprocess=options.preprocess,
                            variants=options.held_out_variants)
    unknown = sorted(set(options.exclude) - {node.name for node in folded.graph.node})
    if unknown:
        raise FoldkitError(f"{where}: --exclude names nodes that are not in the folded model: {', '.join(unknown)}")
    automatic = _unquantizable_nodes(folded)
    exclude = [*options.exclude, *(name for name in automatic if name not in options.exclude)]
    cpu = int8_capability()
    report = QuantizeReport(
        model=where, output=str(output), method=options.method, calibration=data.source,
        synthetic_calibration=data.synthetic, fold_summary=fold_report.summary(), target_snr_db=options.target_snr,
        batchnorm_left=[e.node for e in fold_report.not_folded if e.op == "BatchNormalization"],
        float_layers=[FloatLayer(name, automatic.get(name, "excluded by the caller")) for name in exclude],
        cpu=cpu.describe(), notes=[upgraded] if upgraded else [],
    )
    with tempfile.TemporaryDirectory(prefix="foldkit-quantize-") as tmp:
        quantizer = StaticQuantizer(folded, Path(tmp), "folded", data, input_name, options.method)
        judge = HeldOutJudge(quantizer.float_path, data.held_out, input_name)
        require_finite_outputs(judge.reference, where)
        context = Context(data, input_name, judge, options, cpu, report)
        best = context.candidate(quantizer, exclude, draws=DRAWS if options.steps else 0)
        report.input_noise_snr_db = judge.input_noise_snr(
            quantizer.float_path, float(data.calibration.max() - data.calibration.min()) / 255.0, options.seed)
        report.steps.append(Step("ORT quantize_static", best.judgement.errors, kept=True, model_file=str(best.path)))
        if best.draws:
            report.draw_noise_db = draw_noise_db([best.judgement, *best.draws])
        for step in options.steps:
            best = STEP_FUNCTIONS[step](context, best)
        final = _sensitivity_and_target(context, best)
        report.outputs = final.judgement.errors
        if options.calib is not None and Path(options.calib).is_dir():  # images: detections mean something
            _compare_detections(report, folded, judge, final, shape)
        written = onnx.load(str(final.path)) if report.passed else None
        if written is None:
            report.output = ""
            report.notes.append("target not reached: no model written")
        _time(report, options, data, input_name, best, final)
        _keep_step_models(report, options)
    with OutputTransaction(inputs) as staged:  # the model and its report land together or not at all
        if written is not None:
            save_onnx(written, output, staged)
        if report_path is not None:
            staged.write_text(report_path, report.to_json())
    return report


def _sensitivity_and_target(context: Context, best: Candidate) -> Candidate:
    report, options = context.report, context.options
    baseline_db = best.judgement.min_snr_db
    missed_target = options.target_snr is not None and baseline_db < options.target_snr
    ranked = bool(report.sensitivity)  # the float-layers step ranked them already
    if not ranked and (options.sensitivity == "always" or missed_target
                       or (options.sensitivity == "auto" and baseline_db < LOW_SNR_DB)):
        report.sensitivity = rank_layers(best.quantizer, context.judge, best.exclude, baseline_db,
                                         options.progress)
    if options.target_snr is None:
        return best
    return _reach_target(report, best, context.judge, options.target_snr, options)


def _compare_detections(report: QuantizeReport, folded: onnx.ModelProto, judge: HeldOutJudge, final: Candidate,
                        shape: tuple[int | None, ...]) -> None:
    """Detection agreement of the final int8 model with the float model, for a YOLO model."""
    from foldkit.deploy.yolo import heads_from_metadata
    from foldkit.onnxio.metadata import DECODED_KEY, read_metadata

    metadata = read_metadata(folded)
    heads = heads_from_metadata(metadata)
    if (heads is None and metadata.get(DECODED_KEY) != "true") or None in shape[2:]:
        return
    size = (int(shape[2] or 0), int(shape[3] or 0))
    report.detections = compare_detections(judge.reference, final.judgement.outputs, heads, size)


def _time(report: QuantizeReport, options: QuantizeOptions, data: CalibrationData, input_name: str,
          best: Candidate, final: Candidate) -> None:
    if options.latency_rounds <= 0:
        return
    sample = data.held_out[:1]
    report.latency = measure_latency(best.quantizer.float_path, final.path, sample, input_name,
                                     rounds=options.latency_rounds)
    if final is not best:
        report.latency_all_int8 = measure_latency(best.quantizer.float_path, best.path, sample, input_name,
                                                  rounds=options.latency_rounds)


def _keep_step_models(report: QuantizeReport, options: QuantizeOptions) -> None:
    for index, step in enumerate(report.steps):
        kept_file = Path(options.step_models) / f"step{index}.int8.onnx" if options.step_models else None
        if kept_file is not None:
            shutil.copyfile(step.model_file, kept_file)
        step.model_file = str(kept_file or "")


def _reach_target(report: QuantizeReport, best: Candidate, judge: HeldOutJudge, target: float,
                  options: QuantizeOptions) -> Candidate:
    if best.judgement.min_snr_db >= target:
        report.target_reached = True
        return best
    search = fewest_float_layers(best.quantizer, judge, report.sensitivity, best.exclude, target,
                                 options.progress)
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
    report.steps.append(Step(f"+ target SNR ({len(search.float_layers)} float)", search.judgement.errors,
                             kept=True, model_file=str(search.path)))
    floated = [n for layer in search.float_layers for n in best.quantizer.layer_nodes(layer)]
    return Candidate(best.quantizer, best.exclude + floated, search.path, search.judgement)


def _per_channel_opset(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, str]:
    """The model at opset ≥ :data:`PER_CHANNEL_OPSET`, and a note when it had to be converted.

    Per-channel QDQ needs DequantizeLinear's ``axis`` (opset 13); ORT's quantizer writes it into
    older models anyway, and ORT then refuses to load the result.
    """
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if opset >= PER_CHANNEL_OPSET:
        return model, ""
    try:
        converted = version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors and more, per op
        raise FoldkitError(f"{where}: opset {opset} < {PER_CHANNEL_OPSET}, which per-channel int8 needs, and "
                           f"onnx cannot convert it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return converted, f"opset {opset} converted to {PER_CHANNEL_OPSET} (per-channel DequantizeLinear needs axis)"


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
    the steps tried as in ``foldkit quantize`` (``steps=False``: ORT's quantizer alone, one
    calibration), no sensitivity, no timing.
    """
    output = Path(target)
    defaults = QuantizeOptions()
    quantize_onnx(float_model, output, QuantizeOptions(
        calib=calib, calib_random=None if calib else calib_random, method=method, seed=seed, sensitivity="never",
        latency_rounds=0, steps=defaults.steps if steps else ()))
    return output
