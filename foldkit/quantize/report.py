"""What ``foldkit quantize`` did and what it cost, as data: strict JSON, printed separately.

Per output: SNR (dB) and max abs/rel error against the float model on held-out inputs; what
each step (ORT's quantizer, the optional steps, target SNR) bought and its bootstrap noise; the sensitivity
table; which layers stayed float and why; int8 vs float latency from one interleaved run.
An output below :data:`LOW_SNR_DB` is flagged with the layers most responsible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from foldkit import strict_json
from foldkit.quantize.adaround_model import AdaRoundReport
from foldkit.quantize.bias_correction import BiasCorrectionReport
from foldkit.quantize.detections import DetectionAgreement
from foldkit.quantize.draws import JITTER, TIE_BAND
from foldkit.quantize.equalize import EqualizationReport
from foldkit.quantize.judge import OutputError, mean_snr, min_snr
from foldkit.quantize.latency import Latency
from foldkit.quantize.sensitivity import LayerSensitivity
from foldkit.strict_json import finite_or_none

LOW_SNR_DB = 20.0  # below this, int8 noise is a tenth of the signal's amplitude: flag it
RESPONSIBLE_SHOWN = 5  # layers named in a low-SNR flag


@dataclass
class Step:
    """One step of the pass and the held-out error after it."""

    name: str
    outputs: list[OutputError]
    kept: bool  # whether the pass kept it: only a gain above twice its noise is
    note: str = ""
    model_file: str = ""  # where its int8 model was kept (quantize_onnx's step_models), if anywhere
    noise_db: float | None = None  # σ of its gain over the step before: bootstrap and rounding draw (significance)

    @property
    def min_snr_db(self) -> float:
        return min_snr(self.outputs)

    @property
    def mean_snr_db(self) -> float:
        return mean_snr(self.outputs)


@dataclass
class FloatLayer:
    node: str
    reason: str


@dataclass
class QuantizeReport:
    model: str
    output: str
    method: str
    calibration: str
    synthetic_calibration: bool
    fold_summary: str = ""
    batchnorm_left: list[str] = field(default_factory=list)
    equalization: EqualizationReport | None = None
    bias_correction: BiasCorrectionReport | None = None
    adaround: AdaRoundReport | None = None
    steps: list[Step] = field(default_factory=list)
    outputs: list[OutputError] = field(default_factory=list)  # the written model's
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    float_layers: list[FloatLayer] = field(default_factory=list)
    input_noise_snr_db: float | None = None  # the float model with u8 rounding noise on its input
    draw_noise_db: float | None = None  # σ of the baseline's SNR over equivalent models (foldkit.quantize.draws)
    target_snr_db: float | None = None
    target_reached: bool | None = None
    target_tries: list[tuple[int, float]] = field(default_factory=list)
    latency: Latency | None = None
    latency_all_int8: Latency | None = None  # when layers stayed float: what the all-int8 model ran at
    notes: list[str] = field(default_factory=list)
    cpu: str = ""  # the CPU and its int8 path (foldkit.cpu)
    detections: DetectionAgreement | None = None  # the written model's, for YOLO models judged on images

    @property
    def min_snr_db(self) -> float:
        return min_snr(self.outputs)

    @property
    def passed(self) -> bool:
        """False only when a target SNR was asked for and not reached (the CLI exits 1)."""
        return self.target_reached is not False

    @property
    def flags(self) -> list[str]:
        """Outputs below LOW_SNR_DB, with the layers whose float copy helps them most."""
        low = [o for o in self.outputs if o.snr_db < LOW_SNR_DB]
        if not low:
            return []
        responsible = [f"{s.node} (+{s.gain_db:.1f} dB)" for s in self.sensitivity[:RESPONSIBLE_SHOWN] if s.gain_db > 0]
        who = ("most responsible: " + ", ".join(responsible) if responsible else
               "no single layer kept in float helps" if self.sensitivity
               else "run the sensitivity analysis to see which layers")
        return [f"LOW SNR: {o.name} {o.snr_db:.1f} dB < {LOW_SNR_DB:g} dB; {who}" for o in low]

    def to_dict(self) -> dict:
        data = asdict(self) | {"min_snr_db": self.min_snr_db, "passed": self.passed, "flags": self.flags,
                               "steps": [asdict(s) | {"min_snr_db": s.min_snr_db, "mean_snr_db": s.mean_snr_db}
                                         for s in self.steps]}
        for key in ("latency", "latency_all_int8"):
            value = getattr(self, key)
            if value is not None:
                data[key]["ratio"] = value.ratio
        if self.detections is not None:
            data["detections"]["f1"] = self.detections.f1
        return finite_or_none(data)

    def to_json(self) -> str:
        return strict_json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        lines = [f"quantize: {self.model} → {self.output}",
                 f"  calibration: {self.calibration} ({self.method})"]
        if self.synthetic_calibration:
            lines.append("  WARNING: synthetic calibration inputs: for smoke tests only, not deployment accuracy")
        lines.append(f"  fold: {self.fold_summary}")
        if self.cpu:
            lines.append(f"  CPU: {self.cpu}")
        if self.batchnorm_left:
            lines.append(f"  BatchNormalization left unfolded: {', '.join(self.batchnorm_left)}")
        if self.equalization:
            lines.append(f"  {self.equalization.summary()}")
        if self.bias_correction:
            lines.append(f"  {self.bias_correction.summary()}")
        if self.adaround:
            lines.append(f"  {self.adaround.summary()}")
        if self.input_noise_snr_db is not None:
            lines.append(f"  float model with u8 rounding noise on its input: {self.input_noise_snr_db:.1f} dB min SNR "
                         "(the network's own noise amplification; int8 can hardly beat it)")
        if self.draw_noise_db is not None:
            lines.append(f"  rounding draw: σ {self.draw_noise_db:.2f} dB over equivalent models (every range jittered "
                         f"±{JITTER:.1%}, conv weights within ±{TIE_BAND:.0%} of a step of a tie flipped at random), "
                         "part of each step's σ; gains compare means over equivalent models")
        lines.append("  steps (held-out SNR vs float, min / mean over outputs):")
        lines += [f"    {s.name:<34} {s.min_snr_db:7.1f} dB {s.mean_snr_db:7.1f} dB  "
                  f"{'kept' if s.kept else 'dropped'}{'  ' + s.note if s.note else ''}" for s in self.steps]
        lines.append(f"  {'output':<14} {'SNR dB':>8} {'max abs':>10} {'max rel':>10}")
        lines += [f"  {o.name:<14} {o.snr_db:>8.1f} {o.max_abs:>10.3e} {o.max_rel:>10.3e}" for o in self.outputs]
        if self.detections is not None:
            lines.append(f"  {self.detections.summary()}")
        if self.sensitivity:
            lines.append("  sensitivity (layer kept float, all else int8 → min output SNR):")
            lines += [f"    {s.node:<32} {s.op:<6} {s.snr_db:7.1f} dB  {s.gain_db:+6.1f} dB" for s in self.sensitivity]
        if self.float_layers:
            lines.append("  kept in float:")
            lines += [f"    {layer.node}: {layer.reason}" for layer in self.float_layers]
        if self.target_snr_db is not None:
            lines.append(f"  target {self.target_snr_db:g} dB: {'reached' if self.target_reached else 'NOT reached'} "
                         f"(min {self.min_snr_db:.1f} dB)")
        for name, value in (("latency", self.latency), ("all-int8 latency", self.latency_all_int8)):
            if value is not None:
                lines.append(f"  {name}: int8 p50 {value.int8_p50_ms:.1f} ms vs float {value.float_p50_ms:.1f} ms "
                             f"= {value.ratio:.2f}× ({value.rounds} interleaved rounds, {value.settings})")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {flag}" for flag in self.flags]
        return "\n".join(lines)
