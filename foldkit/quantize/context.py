"""What every step of the quantize pass works with: the best candidate so far and the shared context.

A step (:mod:`foldkit.quantize.steps` and the modules it registers) takes the context and the
best candidate, makes its own candidates, and returns the one to build on; :meth:`Context.weigh`
records each try in the report and keeps it only when it wins by more than the judgement's
noise, and :meth:`Context.within_budget` adds the latency budget for steps that take layers off
the int8 kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from foldkit.cpu import Int8Capability
from foldkit.quantize.calibration import CalibrationData
from foldkit.quantize.draws import CANDIDATE_DRAWS, equivalent_draws
from foldkit.quantize.judge import HeldOutJudge, Judgement
from foldkit.quantize.latency import measure_latency
from foldkit.quantize.options import OFF_INT8_MIN_GAIN_DB, QuantizeOptions
from foldkit.quantize.report import QuantizeReport, Step
from foldkit.quantize.significance import significant_gain
from foldkit.quantize.static import StaticQuantizer

BUDGET_LATENCY_ROUNDS = 5  # interleaved rounds timing a candidate against the latency budget
# Below this σ_draw (dB) a candidate's own draws are not worth their quantizations: on seeded yolov3-tiny,
# 8 held-out inputs unlike each other gave σ_draw 0.02 dB against a bootstrap σ of 0.04-0.06 dB.
NEGLIGIBLE_DRAW_DB = 0.1


@dataclass
class Candidate:
    """A float model's quantizer, the QDQ model it made with ``exclude`` float, its judgement, and the
    judgements of equivalent models of it (:mod:`foldkit.quantize.draws`; none where not redrawn)."""

    quantizer: StaticQuantizer
    exclude: list[str]
    path: Path
    judgement: Judgement
    draws: list[Judgement] = field(default_factory=list)


@dataclass
class Context:
    """What every step needs: the data, the judge, the options, the CPU, and the report to add to."""

    data: CalibrationData
    input_name: str
    judge: HeldOutJudge
    options: QuantizeOptions
    cpu: Int8Capability
    report: QuantizeReport

    @property
    def draw_sigma(self) -> float:
        """σ of the SNR over equivalent models, the rounding's luck (significance): 0 until it is measured."""
        return self.report.draw_noise_db or 0.0

    def candidate(self, quantizer: StaticQuantizer, exclude: list[str], draws: int | None = None) -> Candidate:
        """The model ``quantizer`` makes with ``exclude`` float, judged, and ``draws`` equivalent models of it
        (by default :data:`CANDIDATE_DRAWS` where the rounding's luck is worth averaging, none where the
        baseline's draws moved its SNR by less than :data:`NEGLIGIBLE_DRAW_DB`)."""
        if draws is None:
            draws = CANDIDATE_DRAWS if self.draw_sigma >= NEGLIGIBLE_DRAW_DB else 0
        path = quantizer.quantize(exclude)
        redrawn = equivalent_draws(quantizer, exclude, self.judge, self.options.seed, draws) if draws else []
        return Candidate(quantizer, list(exclude), path, self.judge.judge(path), redrawn)

    def derived(self, model: onnx.ModelProto, best: Candidate, name: str, *, reduce_range: bool | None = None
                ) -> StaticQuantizer:
        """A quantizer for another float model, with the best one's weight bits and activation overrides."""
        return StaticQuantizer(model, best.quantizer.folder, name, self.data, self.input_name, self.options.method,
                               reduce_range=best.quantizer.reduce_range if reduce_range is None else reduce_range,
                               overrides=best.quantizer.overrides)

    def weigh(self, name: str, best: Candidate, candidate: Candidate, note: str = "", min_gain: float = 0.0
              ) -> Candidate:
        """Record the step; return the candidate when it wins by more than the judgement's noise (and ``min_gain``)."""
        gain, sigma, significant = self._gain(best, candidate)
        kept = significant and gain >= min_gain
        means = (f" (means over {1 + len(candidate.draws)} and {1 + len(best.draws)} equivalent models)"
                 if candidate.draws or best.draws else "")
        text = f"{gain:+.2f} dB ± {sigma:.2f} (σ){means}" + (f"; {note}" if note else "")
        self.report.steps.append(Step(name, candidate.judgement.errors, kept, note=text,
                                      model_file=str(candidate.path), noise_db=sigma))
        return candidate if kept else best

    def _gain(self, before: Candidate, after: Candidate) -> tuple[float, float, bool]:
        return significant_gain(before.judgement, after.judgement, self.options.seed, self.draw_sigma,
                                before.draws, after.draws)

    def within_budget(self, name: str, chosen: Candidate, candidate: Candidate, note: str) -> Candidate:
        """:meth:`weigh`, and a win is kept only when it buys :data:`OFF_INT8_MIN_GAIN_DB` and its p50 is
        within ``latency_budget`` × the float p50 (timed only when it wins: timing is the slow part)."""
        gain, _, significant = self._gain(chosen, candidate)
        if not significant or gain < OFF_INT8_MIN_GAIN_DB:
            return self.weigh(name, chosen, candidate, note=note, min_gain=OFF_INT8_MIN_GAIN_DB)
        ratio = measure_latency(chosen.quantizer.float_path, candidate.path, self.data.held_out[:1],
                                self.input_name, rounds=BUDGET_LATENCY_ROUNDS).ratio
        budget = self.options.latency_budget
        within = ratio <= budget
        note += f"; p50 {ratio:.2f}× float (budget {budget:g}×){'' if within else ': over budget'}"
        kept = self.weigh(name, chosen, candidate, note=note, min_gain=OFF_INT8_MIN_GAIN_DB)
        if not within:
            self.report.steps[-1].kept = False
            return chosen
        return kept
