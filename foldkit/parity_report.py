"""A parity proof's result as data (per output, per input tried) and its text for people.

What decides PASS leads every table: the largest error ``max|a − b|`` against what the tolerance
allows, ``atol + rtol · max|reference|``, and the share of that allowance used (PASS when ≤ 1);
or the SNR against its floor when a lossy candidate is judged by SNR. The element-wise relative
error is not shown: near zero it explodes without meaning (a 1e-9 error on a 1e-9 value is
"100 %") and it never decides anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from foldkit.strict_json import finite_or_none


@dataclass
class OutputComparison:
    """One output compared: floats against a tolerance, integers, booleans and strings exactly."""

    name: str
    shape: tuple
    max_abs: float
    mean_abs: float
    ref_max: float  # max |b| over finite elements
    atol: float
    rtol: float
    passed: bool
    nonfinite_candidate: int = 0  # NaN/Inf elements in the candidate output
    nonfinite_reference: int = 0
    snr_db: float = float("inf")  # 10·log10(Σb² / Σ(a−b)²); inf when a == b exactly
    min_snr: float | None = None  # when set, the output passes on SNR alone (see compare_outputs)
    exact: bool = False  # integer, boolean or string output: compared element by element for equality
    mismatches: int = 0  # elements that differ (exact outputs)
    problem: str = ""  # a difference in kind (shape, type) that fails the output before any number
    probe: str = ""  # the input on which this (the worst) comparison was made

    @property
    def allowed(self) -> float:
        """The largest error the tolerance allows: atol + rtol · max|reference| (0 for exact outputs)."""
        return 0.0 if self.exact else self.atol + self.rtol * self.ref_max

    @property
    def used(self) -> float:
        """max|a − b| as a share of :attr:`allowed`: the output passes its tolerance when this is ≤ 1."""
        if self.max_abs == 0:
            return 0.0
        return self.max_abs / self.allowed if self.allowed > 0 else math.inf

    @property
    def badness(self) -> float:
        """What ranks two comparisons of one output: the share used, or the SNR when that decides."""
        return -self.snr_db if self.min_snr is not None else self.used

    @property
    def min_rtol(self) -> float:
        """The smallest rtol (with atol 0) that passes: max|a−b| / max|b|."""
        return self.max_abs / self.ref_max if self.ref_max > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    @property
    def min_atol(self) -> float:
        """The smallest atol (with rtol 0) that passes."""
        return self.max_abs


@dataclass
class ProbeOutcome:
    """One input set tried: compared (passed or not) or skipped, with the reason."""

    label: str
    status: str  # "passed", "failed" or "skipped"
    note: str = ""


@dataclass
class ParityReport:
    """All outputs of one comparison (the worst over every input tried), with names for what was compared."""

    candidate: str
    reference: str
    outputs: list[OutputComparison] = field(default_factory=list)
    settings: str = ""  # how the outputs were produced (runtime, provider, optimization level)
    runtimes: list[dict] = field(default_factory=list)  # what ran each side: runtime, device, precision, threads
    problems: list[str] = field(default_factory=list)  # outputs missing on one side, a model that fails to run
    probes: list[ProbeOutcome] = field(default_factory=list)  # the inputs tried, when the report ran models

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and not self.problems and all(o.passed for o in self.outputs)

    def merge(self, other: ParityReport, probe: str) -> None:
        """Fold in the comparison made on one more input: each output keeps its worst comparison."""
        self.problems += [p for p in other.problems if p not in self.problems]
        worst = {o.name: i for i, o in enumerate(self.outputs)}
        for output in other.outputs:
            output.probe = probe
            if output.name not in worst:
                worst[output.name] = len(self.outputs)
                self.outputs.append(output)
                continue
            current = self.outputs[worst[output.name]]
            if (not output.passed, output.badness) > (not current.passed, current.badness):
                self.outputs[worst[output.name]] = output

    def to_dict(self) -> dict:
        return {
            "candidate": self.candidate, "reference": self.reference, "passed": self.passed, "settings": self.settings,
            "runtimes": self.runtimes, "problems": self.problems, "inputs": [asdict(p) for p in self.probes],
            "outputs": [{key: finite_or_none(value) if isinstance(value, float) else value for key, value in
                         (asdict(o) | {"allowed": o.allowed, "used": o.used, "min_rtol": o.min_rtol,
                                       "min_atol": o.min_atol}).items()}
                        for o in self.outputs],
        }

    def format(self) -> str:
        return format_report(self)


def format_report(report: ParityReport) -> str:
    """The verdict's reasons first: per output, the error against its allowance (or the SNR), then the inputs."""
    lines = [f"parity: {report.candidate}  vs  {report.reference} (reference)"]
    if report.settings:
        lines.append(f"  ran on {report.settings}")
    if report.probes:
        lines.append(f"  inputs tried ({len(report.probes)}):")
        lines += [f"    {i}. {p.label}: {p.status}" + (f" ({p.note})" if p.note else "")
                  for i, p in enumerate(report.probes, 1)]
    lines += [f"  FAILED: {problem}" for problem in report.problems]
    width = max([len("output"), *(len(o.name) for o in report.outputs)])
    lines.append(f"  {'output':<{width}} {'shape':<16} {'max|a-b|':>10} {'allowed':>10} {'used':>8} {'SNR dB':>8}  "
                 "result")
    lines += [f"  {o.name:<{width}} {'x'.join(map(str, o.shape)):<16} {_row(o)}" for o in report.outputs]
    passed = sum(o.passed for o in report.outputs)
    everywhere = " on every input tried" if len(report.probes) > 1 else ""
    lines.append(f"  {'PASSED' if report.passed else 'FAILED'}: {passed}/{len(report.outputs)} outputs within "
                 f"tolerance{everywhere}")
    lines.append(_legend(report))
    return "\n".join(lines)


def _row(o: OutputComparison) -> str:
    result = "PASSED" if o.passed else "FAILED"
    if o.problem:
        return f"{'-':>10} {'-':>10} {'-':>8} {'-':>8}  {result}: {o.problem}"
    if o.exact:
        what = f"exact: {o.mismatches} element(s) differ" if o.mismatches else "exact: equal"
        return f"{o.max_abs:>10.3e} {0:>10} {'-':>8} {'-':>8}  {result} ({what})"
    allowed = f"SNR≥{o.min_snr:g}" if o.min_snr is not None else f"{o.allowed:.3e}"
    row = f"{o.max_abs:>10.3e} {allowed:>10} {o.used:>8.3g} {o.snr_db:>8.1f}  {result}"
    if o.nonfinite_candidate or o.nonfinite_reference:
        row += (f" (NaN/Inf: {o.nonfinite_candidate} in the candidate, {o.nonfinite_reference} in the reference; "
                "non-finite values never pass)")
    return row + (f"  worst on input: {o.probe}" if o.probe and not o.passed else "")


def _legend(report: ParityReport) -> str:
    if report.outputs and report.outputs[0].min_snr is not None:
        return (f"  (SNR mode: an output passes when its SNR ≥ {report.outputs[0].min_snr:g} dB; max|a-b| is shown "
                "for information)")
    tol = f"atol={report.outputs[0].atol:g}, rtol={report.outputs[0].rtol:g}" if report.outputs else "atol, rtol"
    return (f"  (an output passes when max|a-b| ≤ allowed = atol + rtol·max|reference|, {tol};\n"
            "   used = max|a-b| / allowed, a pass up to 1; integer, boolean and string outputs must be equal)")
