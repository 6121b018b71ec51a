"""How much of a measured SNR gain is luck: of the held-out inputs, and of the rounding's draw.

Two candidates are judged on the same held-out inputs. Resampling those inputs with replacement
(the same resample for both) and recomputing each one's worst-output SNR from the per-input signal
and noise gives the spread the gain would show on another draw of similar inputs.

That is not all the luck. A change far below one u8 step (learned rounding, a corrected bias, a
range moved by half a percent) moves values across the rounding boundaries of every later
activation: the int8 model draws its rounding noise anew, and its SNR moves although nothing
better or worse was done (on the trained yolov3-tiny, flipping the s8 rounding of the conv weights
that sit within 5 % of a tie moves the worst head over 24.6–27.4 dB while the bootstrap σ is
0.1–0.25 dB). :func:`draw_noise_db` measures that spread on the baseline. A step's candidate is
judged with a few draws of its own as well, and its gain is the difference of the two means: with one
model each, a gain carried twice the draws' variance and either side's luck could decide it. Where a
candidate cannot be redrawn (learned rounding leaves no weight near a tie), its one judgement stands
for it, with a single draw's variance. A step is kept only when its gain exceeds ``KEEP_SIGMAS``
times the combined σ: with 2σ, a step that does nothing is kept by chance about 2 times in 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from foldkit.quantize.judge import Judgement

BOOTSTRAP_ROUNDS = 400
KEEP_SIGMAS = 2.0


def min_snr_of(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Worst-output SNR in dB per row of index sets: signal and noise are (resamples, inputs, outputs)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10 * np.log10(signal.sum(axis=-2) / noise.sum(axis=-2))
    return np.nan_to_num(snr, nan=-np.inf).min(axis=-1)


def gain_noise_db(before: Judgement, after: Judgement, seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS) -> float:
    """The standard deviation of ``after``'s worst-output SNR gain over ``before`` across bootstrap resamples."""
    count = len(before.signal)
    if count < 2:
        return 0.0
    picks = np.random.default_rng(seed).integers(0, count, (rounds, count))
    gains = min_snr_of(after.signal[picks], after.noise[picks]) - min_snr_of(before.signal[picks],
                                                                             before.noise[picks])
    finite = gains[np.isfinite(gains)]
    return float(finite.std()) if len(finite) == rounds else float("inf")


def draw_noise_db(draws: list[Judgement]) -> float:
    """The standard deviation of the worst-output SNR over equivalent models (one draw of rounding noise each)."""
    snrs = [draw.min_snr_db for draw in draws]
    return float(np.std(snrs, ddof=1)) if len(snrs) > 1 and np.isfinite(snrs).all() else 0.0


def mean_snr_db(judgement: Judgement, draws: Sequence[Judgement] = ()) -> float:
    """The worst-output SNR averaged over a model's judgement and its equivalent draws."""
    return float(np.mean([judgement.min_snr_db, *(draw.min_snr_db for draw in draws)]))


def significant_gain(before: Judgement, after: Judgement, seed: int = 0, draw_sigma: float = 0.0,
                     before_draws: Sequence[Judgement] = (), after_draws: Sequence[Judgement] = ()
                     ) -> tuple[float, float, bool]:
    """(gain in dB, its σ, whether the gain exceeds ``KEEP_SIGMAS``·σ).

    The gain compares the means over each model and its equivalent draws (:func:`mean_snr_db`); a mean
    over n draws carries ``draw_sigma``²/n of the rounding's luck, so σ² = bootstrap σ² +
    ``draw_sigma``²·(1/n_before + 1/n_after): 2·``draw_sigma``² for two single models.
    """
    gain = mean_snr_db(after, after_draws) - mean_snr_db(before, before_draws)
    luck = draw_sigma * np.sqrt(1 / (1 + len(before_draws)) + 1 / (1 + len(after_draws)))
    sigma = float(np.hypot(gain_noise_db(before, after, seed), luck))
    return gain, sigma, bool(gain > KEEP_SIGMAS * sigma and gain > 0)
