"""How much of a measured SNR gain is the luck of the held-out inputs: a paired bootstrap.

Two candidates are judged on the same held-out inputs. Resampling those inputs with replacement
(the same resample for both) and recomputing each one's worst-output SNR from the per-input signal
and noise gives the spread the gain would show on another draw of similar inputs. A step is kept
only when its gain exceeds ``KEEP_SIGMAS`` times that spread: with 2σ, a step that does nothing
is kept by chance about 2 times in 100.
"""

from __future__ import annotations

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


def significant_gain(before: Judgement, after: Judgement, seed: int = 0) -> tuple[float, float, bool]:
    """(gain in dB, its bootstrap σ, whether the gain exceeds ``KEEP_SIGMAS``·σ)."""
    gain = after.min_snr_db - before.min_snr_db
    sigma = gain_noise_db(before, after, seed)
    return gain, sigma, bool(gain > KEEP_SIGMAS * sigma and gain > 0)
