"""What a fold pass did: per normalization, folded or not, into what, and why.

A pass returns a :class:`FoldReport`; printing it and writing it as JSON are separate from
computing it. Nothing is skipped silently: every normalization the pass saw has an entry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum

from foldkit import strict_json


class FoldStatus(str, Enum):
    """What became of one normalization; the values are what the JSON report and the text say."""

    __str__ = str.__str__  # "folded", not "FoldStatus.FOLDED", in f-strings on every Python

    FOLDED = "folded"
    SKIPPED = "skipped"  # could fold in principle, but this instance can't (shared output, training mode, NaN…)
    NOT_FOLDABLE = "not-foldable"  # the normalization itself uses per-sample statistics


FOLDED, SKIPPED, NOT_FOLDABLE = FoldStatus.FOLDED, FoldStatus.SKIPPED, FoldStatus.NOT_FOLDABLE


@dataclass
class FoldEntry:
    """One normalization (or affine op) and its fate."""

    node: str  # the norm's module path or ONNX node name
    op: str  # BatchNorm2d, BatchNormalization, GroupNorm, Mul, …
    status: FoldStatus
    reason: str = ""
    target: str | None = None  # the conv/gemm it was folded into
    pattern: str = ""  # e.g. "Conv → BatchNormalization"
    max_amplification: float | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class FoldReport:
    """The entries of one pass, plus notes that concern the whole model."""

    entries: list[FoldEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, entry: FoldEntry) -> FoldEntry:
        self.entries.append(entry)
        return entry

    @property
    def folded(self) -> list[FoldEntry]:
        return [e for e in self.entries if e.status == FOLDED]

    @property
    def not_folded(self) -> list[FoldEntry]:
        return [e for e in self.entries if e.status != FOLDED]

    @property
    def changed(self) -> bool:
        return bool(self.folded)

    @property
    def warnings(self) -> list[str]:
        return [f"{e.node}: {w}" for e in self.entries for w in e.warnings]

    def reasons(self) -> Counter:
        """How many were left, by reason."""
        return Counter(e.reason for e in self.not_folded)

    def to_dict(self) -> dict:
        return {
            "folded": len(self.folded),
            "not_folded": len(self.not_folded),
            "notes": list(self.notes),
            "entries": [asdict(e) for e in self.entries],
        }

    def to_json(self) -> str:
        """Strict JSON that every parser reads: a NaN or Inf is written as null, never as bare NaN."""
        return strict_json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """One line: how many folded, how many left and why."""
        text = f"{len(self.folded)} folded, {len(self.not_folded)} not folded"
        if self.not_folded:
            text += " (" + "; ".join(f"{n}× {reason}" for reason, n in self.reasons().most_common()) + ")"
        return text

    def format(self, *, verbose: bool = False) -> str:
        """The summary, every entry that was not folded with its reason, and all warnings.

        ``verbose`` lists the folded entries too, with their largest weight amplification.
        """
        lines = [f"fold: {self.summary()}"]
        lines += [f"  note: {n}" for n in self.notes]
        shown = self.entries if verbose else self.not_folded
        for e in shown:
            into = f" → into {e.target}" if e.target else ""
            amp = f"  max |s|={e.max_amplification:.3g}" if e.max_amplification is not None else ""
            why = f": {e.reason}" if e.reason else ""
            lines.append(f"  {e.status:<12} {e.node} ({e.op}){into}{amp}{why}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)
