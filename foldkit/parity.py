"""Compare two sets of outputs, per output, in the spirit of Polygraphy's comparator.

A float output passes when ``max|a − b| ≤ atol + rtol · max|b|``: the relative tolerance is
taken against the reference output's largest magnitude, which keeps near-zero elements (where
element-wise relative errors explode without meaning) from deciding the verdict. Integer,
boolean and string outputs must be equal element by element (a class id off by one is wrong,
whatever ``rtol`` says), and outputs of another kind, shape or name fail as a difference.

NaN and Inf never pass: an output with a non-finite value on either side fails, and the report
says how many each side has (two models that both print NaN everywhere prove nothing).

:func:`compare_onnx_models` runs both models on every probe of :mod:`foldkit.probe` (several
value distributions, every dynamic dimension at two sizes) and keeps each output's worst
comparison; the result is data (:mod:`foldkit.parity_report`), printed separately.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    import torch

from foldkit.defaults import DEFAULT_ATOL, DEFAULT_RTOL
from foldkit.errors import FoldkitError
from foldkit.parity_report import OutputComparison, ParityReport, ProbeOutcome

__all__ = ["OutputComparison", "ParityReport", "compare_onnx_models", "compare_outputs", "output_snr_db",
           "torch_outputs"]


def compare_outputs(
    candidate: dict[str, np.ndarray] | list[np.ndarray],
    reference: dict[str, np.ndarray] | list[np.ndarray],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    candidate_name: str = "candidate",
    reference_name: str = "reference",
    min_snr: float | None = None,
) -> ParityReport:
    """Compare outputs matched by name (dicts) or by position (lists).

    ``min_snr`` (dB) judges each float output by its signal-to-noise ratio instead of atol/rtol:
    the gate for a lossy candidate (int8 vs float), where element-wise tolerances mean nothing.
    Outputs present on one side only are listed in the report's ``problems`` and fail it.
    """
    if isinstance(candidate, dict) != isinstance(reference, dict):
        raise TypeError("pass both outputs as dicts or both as lists")
    report = ParityReport(candidate_name, reference_name)
    pairs = _pairs(candidate, reference, report)
    for name, a, b in pairs:
        comparison = _compare(name, np.asarray(a), np.asarray(b), atol, rtol, candidate_name, reference_name)
        if min_snr is not None and not (comparison.exact or comparison.problem):
            comparison.min_snr = min_snr
            nonfinite = comparison.nonfinite_candidate or comparison.nonfinite_reference
            comparison.passed = comparison.snr_db >= min_snr and not nonfinite
        report.outputs.append(comparison)
    return report


def _pairs(candidate, reference, report: ParityReport) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Outputs matched by name or position; the unmatched ones become the report's problems."""
    if isinstance(candidate, dict) and isinstance(reference, dict):
        only_candidate = sorted(set(candidate) - set(reference))
        only_reference = sorted(set(reference) - set(candidate))
        if only_candidate or only_reference:
            report.problems.append(
                f"the outputs differ in names: only {report.candidate} has {only_candidate}, only {report.reference} "
                f"has {only_reference}")
        return [(name, candidate[name], reference[name]) for name in reference if name in candidate]
    if len(candidate) != len(reference):
        report.problems.append(f"{report.candidate} has {len(candidate)} outputs, {report.reference} {len(reference)}")
    matched = zip(candidate, reference, strict=False)
    return [(f"output{i}", np.asarray(a), np.asarray(b)) for i, (a, b) in enumerate(matched)]


def output_snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``candidate`` against ``reference`` in dB: 10·log10(Σref² / Σ(ref−cand)²).

    ``inf`` when they are equal; ``-inf`` when the candidate is not finite where the reference is,
    or the reference is all zeros and the candidate is not.
    """
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # Inf − Inf: reported as a non-finite noise
        noise = float(np.square(ref - cand).sum())
    if not np.isfinite(noise):
        return float("-inf")
    signal = float(np.square(ref).sum())
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def _compare(name, a, b, atol, rtol, candidate_name, reference_name) -> OutputComparison:
    """Floats against the tolerance; anything else exactly; a difference in shape or kind fails outright."""
    float_a, float_b = a.dtype.kind == "f", b.dtype.kind == "f"
    problem = ""
    if a.shape != b.shape:
        problem = f"shape {_dims(a.shape)} in {candidate_name}, {_dims(b.shape)} in {reference_name}"
    elif float_a != float_b or not float_a and a.dtype != b.dtype:
        problem = f"type {a.dtype} in {candidate_name}, {b.dtype} in {reference_name}"
    if problem:
        return OutputComparison(name=name, shape=tuple(b.shape), max_abs=math.inf, mean_abs=math.inf, ref_max=0.0,
                                atol=atol, rtol=rtol, passed=False, snr_db=-math.inf, problem=problem)
    return _compare_floats(name, a, b, atol, rtol) if float_a else _compare_exact(name, a, b, atol, rtol)


def _dims(shape: tuple) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _compare_floats(name, a, b, atol, rtol) -> OutputComparison:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite_a, finite_b = np.isfinite(a64), np.isfinite(b64)
    both = finite_a & finite_b
    diff = np.abs(np.where(both, a64, 0.0) - np.where(both, b64, 0.0))
    magnitude = np.abs(np.where(finite_b, b64, 0.0))
    nonfinite_a, nonfinite_b = int(a64.size - finite_a.sum()), int(b64.size - finite_b.sum())
    max_abs = math.inf if nonfinite_a or nonfinite_b else (float(diff.max()) if diff.size else 0.0)
    ref_max = float(magnitude.max()) if magnitude.size else 0.0
    return OutputComparison(
        name=name, shape=tuple(a.shape), max_abs=max_abs, mean_abs=float(diff.mean()) if diff.size else 0.0,
        ref_max=ref_max, atol=atol, rtol=rtol,
        passed=not (nonfinite_a or nonfinite_b) and bool(max_abs <= atol + rtol * ref_max),
        nonfinite_candidate=nonfinite_a, nonfinite_reference=nonfinite_b, snr_db=output_snr_db(b, a),
    )


def _compare_exact(name, a, b, atol, rtol) -> OutputComparison:
    """Integers, booleans, strings: equal or not, element by element (no float64 rounding, no overflow)."""
    differs = a != b
    mismatches = int(np.count_nonzero(differs))
    numeric = a.dtype.kind in "iub"
    if numeric:
        diff = _exact_abs_difference(a, b)
        max_abs, mean_abs = float(diff.max()) if diff.size else 0.0, float(diff.mean()) if diff.size else 0.0
        ref_max = float(np.abs(b.astype(np.float64)).max()) if b.size else 0.0
        snr = output_snr_db(b.astype(np.float64), a.astype(np.float64))
    else:
        max_abs = mean_abs = math.inf if mismatches else 0.0
        ref_max, snr = 0.0, -math.inf if mismatches else math.inf
    if mismatches and snr == math.inf:  # a difference that float64 rounds away (above 2**53) is still one
        snr = -math.inf
    return OutputComparison(name=name, shape=tuple(a.shape), max_abs=max_abs, mean_abs=mean_abs, ref_max=ref_max,
                            atol=atol, rtol=rtol, passed=mismatches == 0, snr_db=snr, exact=True,
                            mismatches=mismatches)


def _exact_abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| as uint64, exact for any two int64 or uint64 values (their distance is below 2**64)."""
    wide = np.uint64 if a.dtype.kind in "ub" else np.int64
    a_wide, b_wide = a.astype(wide), b.astype(wide)
    a_bits, b_bits = a_wide.astype(np.uint64), b_wide.astype(np.uint64)  # two's complement: wraps, exactly
    return np.where(a_wide >= b_wide, a_bits - b_bits, b_bits - a_bits)


def compare_onnx_models(
    candidate: onnx.ModelProto | os.PathLike | str,
    reference: onnx.ModelProto | os.PathLike | str,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    batch: int = 1,
    providers: str = "auto",
    opt_level: str = "disable",
    disabled_optimizers: tuple[str, ...] = (),
    names: tuple[str, str] | None = None,
    min_snr: float | None = None,
    value_range: tuple[float, float] | None = None,
    reference_providers: str | None = None,
    precision: str = "fp32",
) -> ParityReport:
    """Run two ONNX models (files or ModelProtos) on the same probes (:mod:`foldkit.probe`); compare every output.

    Both run at ``opt_level`` (default: every ORT graph optimization off, so each model runs as
    written and ORT's own Conv+BN fusion cannot hide a difference). ``batch`` is the first size of
    a dynamic batch dimension (``batch + 1`` is tried too); ``value_range`` is the input's own
    range (default: the reference's metadata, else [0, 1]). A probe the reference cannot run, or
    on which it overflows to NaN/Inf (outside the input's range), is skipped and the report says
    so; one the candidate alone cannot run fails. ``min_snr`` (dB): see :func:`compare_outputs`;
    judged by SNR, only in-range probes count (an int8 model clips inputs outside its calibration).
    ``reference_providers`` (default: ``providers``) runs the reference elsewhere, e.g. the
    candidate on ``openvino`` against ORT's ``cpu``; ``precision`` is OpenVINO's inference precision
    hint (fp32 unless asked: parity needs float32 throughout).
    """
    from foldkit.onnxio.files import load_onnx
    from foldkit.onnxio.metadata import read_metadata
    from foldkit.probe import input_specs, known_range, make_probes
    from foldkit.runtime import ran_on

    labels = names or (str(candidate), str(reference))
    protos = [model if isinstance(model, onnx.ModelProto) else load_onnx(model) for model in (candidate, reference)]
    backends = [_backend(proto, label, requested, opt_level, disabled_optimizers, precision)
                for proto, label, requested in zip(protos, labels, (providers, reference_providers or providers),
                                                   strict=True)]
    _check_same_inputs(backends[0], backends[1], labels)
    metadata = read_metadata(protos[1])
    probes = make_probes(input_specs(backends[1], backends[0]), seed=seed, batch=batch,
                         value_range=value_range or known_range(metadata), declared=_declared_shape(metadata),
                         strides=_declared_strides(metadata, str(labels[1])))
    report = ParityReport(*labels)
    for probe in probes:
        if min_snr is not None and not probe.in_range:  # a quantized model clips what it was not calibrated on
            report.probes.append(ProbeOutcome(probe.label, "skipped", "judged by SNR: a quantized candidate is "
                                              "calibrated to the input's range and clips values outside it"))
            continue
        report.probes.append(_run_probe(backends, probe, report, atol=atol, rtol=rtol, min_snr=min_snr))
    if all(p.status == "skipped" for p in report.probes):
        raise FoldkitError(f"{labels[1]}: the reference model runs on none of the {len(probes)} inputs tried "
                           f"({report.probes[0].label}: {report.probes[0].note})")
    report.runtimes = [b.record() for b in backends]
    report.settings = f"{ran_on(report.runtimes)}, seed {seed}"
    return report


def _backend(proto: onnx.ModelProto, label: str, providers, opt_level: str, disabled_optimizers, precision: str):
    from foldkit.runtime import open_backend

    try:
        return open_backend(proto, providers, opt_level=opt_level, disabled_optimizers=disabled_optimizers,
                            precision=precision)
    except FoldkitError as exc:
        raise FoldkitError(f"{label}: {str(exc).split(': ', 1)[-1]}") from None


def _declared_shape(metadata: dict[str, str]) -> list[int] | None:
    """The input shape a foldkit export states in its metadata, if any (its sizes come first for dynamic dims)."""
    import json

    from foldkit.onnxio.metadata import INPUT_SHAPE_KEY

    try:
        shape = json.loads(metadata.get(INPUT_SHAPE_KEY, "null"))
    except ValueError:
        return None
    return shape if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else None


def _declared_strides(metadata: dict[str, str], where: str) -> list[int] | None:
    """Per NCHW axis, the network stride a foldkit export states (``foldkit.stride``): 1 for N and C."""
    from foldkit.onnxio.input_size import declared_stride
    from foldkit.onnxio.metadata import STRIDE_KEY

    if STRIDE_KEY not in metadata:
        return None
    return [1, 1, *declared_stride(metadata, where)]


def _run_probe(backends, probe, report: ParityReport, **tolerances) -> ProbeOutcome:
    """Run one probe through both models and merge its comparison into ``report``."""
    try:
        expected = backends[1].run(probe.feeds)
    except FoldkitError as exc:
        return ProbeOutcome(probe.label, "skipped", f"the reference cannot run this input: {_reason(exc)}")
    finite = all(np.isfinite(v).all() for v in expected.values() if v.dtype.kind == "f")
    if not finite and not probe.in_range:
        return ProbeOutcome(probe.label, "skipped", "the reference's outputs overflow to NaN/Inf on this input, "
                            "outside the input's range; not counted")
    try:
        got = backends[0].run(probe.feeds)
    except FoldkitError as exc:
        report.problems.append(f"{report.candidate} cannot run an input that {report.reference} runs "
                               f"({probe.label}): {_reason(exc)}")
        return ProbeOutcome(probe.label, "failed", _reason(exc))
    single = compare_outputs(got, expected, candidate_name=report.candidate, reference_name=report.reference,
                             **tolerances)
    report.merge(single, probe.label)
    return ProbeOutcome(probe.label, "passed" if single.passed else "failed")


def _reason(exc: FoldkitError) -> str:
    return str(exc).split(": ", 1)[-1]


def _check_same_inputs(candidate, reference, labels: tuple[str, str]) -> None:
    """Both models take the same inputs: names, types, ranks, and every dimension fixed in both equal."""
    def described(backend) -> dict[str, tuple[str, list]]:
        return {arg.name: (arg.type, list(arg.shape)) for arg in backend.get_inputs()}

    found, expected = described(candidate), described(reference)
    if sorted(found) != sorted(expected):
        raise FoldkitError(f"{labels[0]}: inputs {sorted(found)} do not match {labels[1]}'s {sorted(expected)}")
    for name, (kind, shape) in expected.items():
        other_kind, other_shape = found[name]
        compatible = kind == other_kind and len(shape) == len(other_shape) and all(
            a == b for a, b in zip(shape, other_shape, strict=True) if isinstance(a, int) and isinstance(b, int))
        if not compatible:
            raise FoldkitError(f"{labels[0]}: input '{name}' is {other_kind} {other_shape}, but {labels[1]}'s is "
                               f"{kind} {shape}")


def torch_outputs(model: torch.nn.Module, images: np.ndarray, *, float64: bool = False) -> list[np.ndarray]:
    """Run a PyTorch model on NCHW ``images``; ``float64`` runs a float64 copy as ground truth."""
    import copy

    import torch

    net = copy.deepcopy(model).double() if float64 else model
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(images).to(torch.float64 if float64 else torch.float32))
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
