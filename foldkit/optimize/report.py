"""What `foldkit optimize` measured and chose: data first, printing apart."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from foldkit.strict_json import finite_or_none


@dataclass
class CandidateResult:
    """One candidate's row: why it did not run, or its timing, accuracy and verdict."""

    name: str
    description: str
    skipped: str | None = None  # why it could not run here
    create_ms: float | None = None
    p50_ms: float | None = None
    rounds: int = 0
    min_snr_db: float | None = None
    f1: float | None = None
    passed: bool = False
    why_failed: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # what really ran (runtime, device, precision, threads)

    def ratio(self, baseline: CandidateResult | None) -> float | None:
        if baseline is None or baseline.p50_ms is None or self.p50_ms is None:
            return None
        return self.p50_ms / baseline.p50_ms


@dataclass
class OptimizeReport:
    model: str
    gate: str  # e.g. "min SNR ≥ 30 dB over 21 held-out inputs"
    cpu: str
    results: list[CandidateResult]
    chosen: str | None = None
    written: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def result(self, name: str) -> CandidateResult | None:
        return next((r for r in self.results if r.name == name), None)

    def table(self) -> list[dict[str, Any]]:
        """Every candidate as a JSON-ready row (also what the deployment record keeps)."""
        baseline = self.result("ort-fp32")
        return [{"candidate": r.name, "description": r.description, "skipped": r.skipped,
                 "create_ms": finite_or_none(r.create_ms), "p50_ms": finite_or_none(r.p50_ms), "rounds": r.rounds,
                 "p50_vs_ort_fp32": finite_or_none(r.ratio(baseline)), "min_snr_db": finite_or_none(r.min_snr_db),
                 "f1": finite_or_none(r.f1), "passed": r.passed, "why_failed": r.why_failed, "ran": r.record}
                for r in self.results]

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "gate": self.gate, "cpu": self.cpu, "chosen": self.chosen,
                           "candidates": self.table(), "written": self.written}, indent=1, allow_nan=False)

    def format(self) -> str:
        baseline = self.result("ort-fp32")
        lines = [f"foldkit optimize {self.model} on {self.cpu}", f"gate: {self.gate}", "",
                 f"{'candidate':<18} {'p50 ms':>9} {'× ORT fp32':>10} {'create ms':>9} {'min SNR':>8} {'F1':>6}  "
                 "verdict"]
        for r in self.results:
            if r.skipped is not None:
                lines.append(f"{r.name:<18} {'—':>9} {'—':>10} {'—':>9} {'—':>8} {'—':>6}  not here: {r.skipped}")
                continue
            ratio = r.ratio(baseline)
            verdict = ("CHOSEN" if r.name == self.chosen else "passes") if r.passed else f"FAILS: {r.why_failed}"
            lines.append(f"{r.name:<18} {_num(r.p50_ms, '.1f'):>9} {_num(ratio, '.2f', '×'):>10} "
                         f"{_num(r.create_ms, '.0f'):>9} {_num(r.min_snr_db, '.1f', ' dB'):>8} "
                         f"{_num(r.f1, '.3f'):>6}  {verdict}")
        lines.append("")
        lines.append(self._verdict(baseline))
        lines.extend(f"wrote {path}" for path in self.written)
        return "\n".join(lines)

    def _verdict(self, baseline: CandidateResult | None) -> str:
        if self.chosen is None:
            return "nothing passes the gate: nothing written"
        winner = self.result(self.chosen)
        assert winner is not None
        faster = [r for r in self.results if r.p50_ms is not None and winner.p50_ms is not None
                  and r.p50_ms < winner.p50_ms and not r.passed]
        why = f"chosen: {winner.name}, the fastest candidate that passes the gate"
        ratio = winner.ratio(baseline)
        if ratio is not None:
            why += f" ({ratio:.2f}× ORT fp32's p50)"
        if faster:
            why += "; faster but failing: " + ", ".join(f"{r.name} ({r.why_failed})" for r in faster)
        return why


def _num(value: float | None, spec: str, unit: str = "") -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "-inf" + unit if value < 0 else "inf" + unit
    return f"{value:{spec}}{unit}"
