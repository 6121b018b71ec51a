"""Compare two sets of outputs, per output, in the spirit of Polygraphy's comparator.

For each output: the largest absolute error, the largest element-wise relative error, the mean
absolute error, the smallest tolerances that would pass, and PASSED/FAILED. An output passes when
``max|a − b| ≤ atol + rtol · max|b|``: the relative tolerance is taken against the reference
output's largest magnitude, which keeps near-zero elements (where element-wise relative errors
explode without meaning) from deciding the verdict.

NaN and Inf never pass: an output with a non-finite value on either side fails, and the report
says how many each side has (two models that both print NaN everywhere prove nothing).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    import torch

from foldkit.defaults import DEFAULT_ATOL, DEFAULT_RTOL
from foldkit.errors import FoldkitError
from foldkit.strict_json import finite_or_none


@dataclass
class OutputComparison:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float  # element-wise |a−b| / |b|, over elements where |b| > 0
    mean_abs: float
    ref_max: float  # max |b|
    atol: float
    rtol: float
    passed: bool
    nonfinite_candidate: int = 0  # NaN/Inf elements in the candidate output
    nonfinite_reference: int = 0
    snr_db: float = float("inf")  # 10·log10(Σb² / Σ(a−b)²); inf when a == b exactly
    min_snr: float | None = None  # when set, the output passes on SNR alone (see compare_outputs)

    @property
    def min_rtol(self) -> float:
        """The smallest rtol (with atol 0) that passes: max|a−b| / max|b|."""
        return self.max_abs / self.ref_max if self.ref_max > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    @property
    def min_atol(self) -> float:
        """The smallest atol (with rtol 0) that passes."""
        return self.max_abs


@dataclass
class ParityReport:
    """All outputs of one comparison, with names for what was compared."""

    candidate: str
    reference: str
    outputs: list[OutputComparison] = field(default_factory=list)
    settings: str = ""  # how the outputs were produced (runtime, provider, optimization level)
    runtimes: list[dict] = field(default_factory=list)  # what ran each side: runtime, device, precision, threads

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {
            "candidate": self.candidate, "reference": self.reference, "passed": self.passed, "settings": self.settings,
            "runtimes": self.runtimes,
            "outputs": [asdict(o) | {"min_rtol": o.min_rtol, "min_atol": o.min_atol, "snr_db": finite_or_none(o.snr_db)}
                        for o in self.outputs],
        }

    def format(self) -> str:
        header = f"parity: {self.candidate}  vs  {self.reference} (reference)"
        if self.settings:
            header += f"\n  ran on {self.settings}"
        columns = (f"  {'output':<14} {'shape':<20} {'max abs':>10} {'max rel':>10} {'mean abs':>10} {'min rtol':>10}"
                   f" {'SNR dB':>8}  result")
        rows = [
            f"  {o.name:<14} {'x'.join(map(str, o.shape)):<20} {o.max_abs:>10.3e} {o.max_rel:>10.3e} "
            f"{o.mean_abs:>10.3e} {o.min_rtol:>10.3e} {o.snr_db:>8.1f}  {'PASSED' if o.passed else 'FAILED'}"
            + (f" (SNR ≥ {o.min_snr:g} dB)" if o.min_snr is not None else f" (atol={o.atol:g}, rtol={o.rtol:g})")
            + _nonfinite_note(o)
            for o in self.outputs
        ]
        passed = sum(o.passed for o in self.outputs)
        verdict = f"  {'PASSED' if self.passed else 'FAILED'}: {passed}/{len(self.outputs)} outputs within tolerance"
        return "\n".join([header, columns, *rows, verdict])


def _nonfinite_note(output: OutputComparison) -> str:
    if not (output.nonfinite_candidate or output.nonfinite_reference):
        return ""
    return (f"; NaN/Inf: {output.nonfinite_candidate} in the candidate, {output.nonfinite_reference} in the "
            "reference (non-finite values never pass)")


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

    ``min_snr`` (dB) judges each output by its signal-to-noise ratio instead of atol/rtol: the
    gate for a lossy candidate (int8 vs float), where element-wise tolerances mean nothing.
    """
    if isinstance(candidate, dict) != isinstance(reference, dict):
        raise TypeError("pass both outputs as dicts or both as lists")
    pairs: list[tuple[str, np.ndarray, np.ndarray]]
    if isinstance(candidate, dict) and isinstance(reference, dict):
        if set(candidate) != set(reference):
            raise FoldkitError(
                f"{candidate_name} and {reference_name} have different outputs: "
                f"{sorted(candidate)} vs {sorted(reference)}"
            )
        pairs = [(name, candidate[name], reference[name]) for name in reference]
    else:
        if len(candidate) != len(reference):
            raise FoldkitError(f"{candidate_name} has {len(candidate)} outputs, {reference_name} {len(reference)}")
        pairs = [(f"output{i}", np.asarray(a), np.asarray(b))
                 for i, (a, b) in enumerate(zip(candidate, reference, strict=True))]
    report = ParityReport(candidate_name, reference_name)
    for name, a, b in pairs:
        comparison = _compare(name, np.asarray(a), np.asarray(b), atol, rtol, candidate_name, reference_name)
        if min_snr is not None:
            comparison.min_snr = min_snr
            nonfinite = comparison.nonfinite_candidate or comparison.nonfinite_reference
            comparison.passed = comparison.snr_db >= min_snr and not nonfinite
        report.outputs.append(comparison)
    return report


def output_snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``candidate`` against ``reference`` in dB: 10·log10(Σref² / Σ(ref−cand)²).

    ``inf`` when they are equal; ``-inf`` when the candidate is not finite where the reference is,
    or the reference is all zeros and the candidate is not.
    """
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    noise = float(np.square(ref - cand).sum())
    if not np.isfinite(noise):
        return float("-inf")
    signal = float(np.square(ref).sum())
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def _compare(name, a, b, atol, rtol, candidate_name, reference_name) -> OutputComparison:
    if a.shape != b.shape:
        raise FoldkitError(f"output '{name}': {candidate_name} has shape {a.shape}, {reference_name} {b.shape}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite_a, finite_b = np.isfinite(a64), np.isfinite(b64)
    both = finite_a & finite_b
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":  # exact: float64 merges integers above 2**53
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
    else:
        diff = np.abs(np.where(both, a64, 0.0) - np.where(both, b64, 0.0))
    magnitude = np.abs(np.where(finite_b, b64, 0.0))
    nonzero = both & (magnitude > 0)
    nonfinite_a, nonfinite_b = int(a64.size - finite_a.sum()), int(b64.size - finite_b.sum())
    max_abs = float(diff.max()) if diff.size else 0.0
    if nonfinite_a or nonfinite_b:
        max_abs = math.inf
    ref_max = float(magnitude.max()) if magnitude.size else 0.0
    return OutputComparison(
        name=name, shape=tuple(a.shape), max_abs=max_abs,
        max_rel=float((diff[nonzero] / magnitude[nonzero]).max()) if nonzero.any() else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0, ref_max=ref_max, atol=atol, rtol=rtol,
        passed=not (nonfinite_a or nonfinite_b) and bool(max_abs <= atol + rtol * ref_max),
        nonfinite_candidate=nonfinite_a, nonfinite_reference=nonfinite_b,
        snr_db=output_snr_db(b, a),
    )


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
    reference_providers: str | None = None,
    precision: str = "fp32",
) -> ParityReport:
    """Run two ONNX models (files or ModelProtos) on the same seeded inputs; compare every output.

    Both run at ``opt_level`` (default: every ORT graph optimization off, so each model runs as
    written and ORT's own Conv+BN fusion cannot hide a difference). ``min_snr`` (dB): see
    :func:`compare_outputs`. ``reference_providers`` (default: ``providers``) runs the reference
    elsewhere, e.g. the candidate on ``openvino`` against ORT's ``cpu``; ``precision`` is
    OpenVINO's inference precision hint (fp32 unless asked: parity needs float32 throughout).
    """
    from foldkit.onnxio.files import load_onnx
    from foldkit.runtime import open_backend, ran_on, random_inputs

    labels = names or (str(candidate), str(reference))
    backends = []
    for model, label, requested in zip((candidate, reference), labels, (providers, reference_providers or providers),
                                       strict=True):
        proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
        try:
            backends.append(open_backend(proto, requested, opt_level=opt_level,
                                         disabled_optimizers=disabled_optimizers, precision=precision))
        except FoldkitError as exc:
            raise FoldkitError(f"{label}: {str(exc).split(': ', 1)[-1]}") from None
    feeds = random_inputs(backends[1], seed=seed, batch=batch)
    _check_same_inputs(backends[0], backends[1], labels)
    outputs = [b.run(feeds) for b in backends]
    report = compare_outputs(
        outputs[0], outputs[1], atol=atol, rtol=rtol, candidate_name=labels[0], reference_name=labels[1],
        min_snr=min_snr,
    )
    report.runtimes = [b.record() for b in backends]
    report.settings = f"{ran_on(report.runtimes)}, seed {seed}, batch {batch}"
    return report


def _check_same_inputs(candidate, reference, labels: tuple[str, str]) -> None:
    """Both sessions take the same inputs: names, types, ranks, and every dimension fixed in both equal."""
    def described(session) -> dict[str, tuple[str, list]]:
        return {arg.name: (arg.type, list(arg.shape)) for arg in session.get_inputs()}

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
