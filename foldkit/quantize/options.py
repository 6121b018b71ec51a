"""What ``quantize_onnx`` is asked to do, in one object: data, the steps to try, the target, the output.

One object rather than sixteen keyword arguments: the steps are a tuple of names (each tried,
measured, and kept only where it wins by more than the judgement's noise), so adding a step adds
a name, not another boolean to every caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foldkit.errors import FoldkitError
from foldkit.quantize.calibration import Preprocess

# The optional steps, in the order the pass tries them (each on top of the best so far).
WEIGHTS_7BIT = "7bit"  # 7-bit weights: tried only where ORT's u8×s8 kernels saturate (foldkit.cpu)
EQUALIZE = "equalize"  # cross-layer equalization
MSE_CLIP = "clip"  # MSE-optimal activation ranges from histograms
ADAROUND = "adaround"  # learned rounding of the conv weights (AdaRound)
BIAS_CORRECTION = "bias"  # bias correction from the quantized model's own activations
MIXED_U16 = "u16"  # u16 for the activations that int8 rounds worst, within the latency budget
FLOAT_LAYERS = "float"  # the most sensitive layers in float, within the latency budget
STEPS = (WEIGHTS_7BIT, EQUALIZE, MSE_CLIP, ADAROUND, BIAS_CORRECTION, MIXED_U16, FLOAT_LAYERS)
SENSITIVITY_MODES = ("auto", "always", "never")  # auto: when the SNR is low or a target is missed

HELD_OUT_VARIANTS = 3  # seeded variants (crop, mirror, stretch) of each folder image that judge the result
# A step that takes layers off the int8 kernels (u16, float) may cost up to this × float p50: int8 that is not
# clearly faster than float is not worth its error (on an AMX Xeon plain int8 yolov3-tiny runs at 0.56-0.58x).
LATENCY_BUDGET = 0.6
# A step that takes layers off the int8 kernels (u16, layers in float) must buy at least this much; measured on the
# trained yolov3-tiny on an AMX Xeon, one conv in float bought +0.63 dB for 0.56x -> 0.78x the float p50.
OFF_INT8_MIN_GAIN_DB = 1.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class QuantizeOptions:
    """Everything ``quantize_onnx`` takes besides the model and the output path.

    Calibration: ``calib`` (a folder of images or an ``.npy`` batch) or ``calib_random`` seeded
    random inputs (smoke tests only). A folder calibrates on every image and is judged on
    ``held_out_variants`` seeded variants of each; an explicit ``held_out`` count instead keeps
    that many inputs apart. ``preprocess`` turns an image file into the network input (default:
    the letterbox of :func:`foldkit.quantize.calibration.default_preprocess`).
    ``steps``: which of :data:`STEPS` to try. ``sensitivity``: ``auto`` ranks layers when an
    output's SNR is low or ``target_snr`` is missed. ``latency_budget``: the most a u16 or float-layers
    step may cost, × the float p50. ``latency_rounds=0`` skips timing. ``step_models``: a folder to keep
    each step's int8 model in.
    """

    calib: str | os.PathLike | None = None
    calib_random: int | None = None
    held_out: int | None = None
    held_out_variants: int = HELD_OUT_VARIANTS
    preprocess: Preprocess | None = None
    seed: int = 0
    method: str = "minmax"
    steps: tuple[str, ...] = STEPS
    target_snr: float | None = None
    exclude: Sequence[str] = ()
    sensitivity: str = "auto"
    latency_budget: float = LATENCY_BUDGET
    latency_rounds: int = 10
    step_models: str | os.PathLike | None = None
    progress: Progress | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise FoldkitError(f"unknown quantize step(s) {', '.join(map(repr, unknown))}; "
                               f"choose from {', '.join(STEPS)}")
        if self.sensitivity not in SENSITIVITY_MODES:
            raise FoldkitError(f"sensitivity must be one of {', '.join(SENSITIVITY_MODES)}, not {self.sensitivity!r}")
        if self.held_out_variants < 0:
            raise FoldkitError(f"held_out_variants must be ≥ 0, got {self.held_out_variants}")

    def tries(self, step: str) -> bool:
        return step in self.steps
