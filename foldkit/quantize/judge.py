"""Judge a quantized model against the float model on held-out inputs, as ONNX Runtime deploys it.

Both run at ORT's default graph optimization level, so the int8 model is measured as it will run
(ORT fuses QDQ pairs into int8 kernels, whose rounding differs slightly from the QDQ graph's).
The float outputs are computed once; every candidate is compared output by output, with signal
and noise accumulated over every held-out input (an output's SNR is Σ signal² / Σ noise² over all
of them, not the worst single input), and kept per input so that the noise of the judgement
itself can be measured (:mod:`foldkit.quantize.significance`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from foldkit.parity import compare_outputs
from foldkit.runtime import create_session


@dataclass
class OutputError:
    """One output of the quantized model against the float model, over all held-out inputs."""

    name: str
    snr_db: float
    max_abs: float
    max_rel: float  # max|a − b| / max|b|: relative to the output's range, as parity's min_rtol


@dataclass
class Judgement:
    """A candidate's error per output, its raw outputs, and per input and output Σref² and Σ(ref − cand)²."""

    errors: list[OutputError]
    outputs: dict[str, np.ndarray]
    signal: np.ndarray  # inputs × outputs, float64
    noise: np.ndarray

    @property
    def min_snr_db(self) -> float:
        return min_snr(self.errors)


class HeldOutJudge:
    """Float outputs on the held-out inputs, and the error of any candidate model against them."""

    def __init__(self, float_model: str | os.PathLike, held_out: np.ndarray, input_name: str) -> None:
        self.held_out = held_out
        self.input_name = input_name
        self.reference = self._outputs(float_model)

    def _outputs(self, model: str | os.PathLike) -> dict[str, np.ndarray]:
        session = create_session(model, providers="cpu", opt_level="all")
        names = [o.name for o in session.get_outputs()]
        runs = [session.run(names, {self.input_name: sample[None]}) for sample in self.held_out]
        return {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}

    def input_noise_snr(self, float_model: str | os.PathLike, step: float, seed: int = 0) -> float:
        """The float model's own min output SNR when its input carries uniform rounding noise of ``step``.

        int8 rounds the input to 1/255 of its range at the very first layer, so this is near the best
        any int8 model of this network can do: it measures how much the network amplifies noise.
        """
        noise = np.random.default_rng(seed).uniform(-step / 2, step / 2, self.held_out.shape).astype(np.float32)
        session = create_session(float_model, providers="cpu", opt_level="all")
        names = [o.name for o in session.get_outputs()]
        runs = [session.run(names, {self.input_name: sample[None]}) for sample in self.held_out + noise]
        noisy = {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}
        return min(o.snr_db for o in compare_outputs(noisy, self.reference).outputs)

    def judge(self, candidate: str | os.PathLike) -> Judgement:
        outputs = self._outputs(candidate)
        report = compare_outputs(outputs, self.reference, candidate_name=str(candidate), reference_name="float")
        errors = [OutputError(o.name, o.snr_db, o.max_abs, o.min_rtol) for o in report.outputs]
        signal, noise = (np.stack([_per_input(values) for values in columns], axis=1) for columns in (
            [self.reference[name] for name in outputs],
            [outputs[name].astype(np.float64) - self.reference[name] for name in outputs]))
        return Judgement(errors, outputs, signal, noise)

    def errors(self, candidate: str | os.PathLike) -> list[OutputError]:
        return self.judge(candidate).errors


def _per_input(values: np.ndarray) -> np.ndarray:
    """Σ value² per input (the first axis), in float64; non-finite stays non-finite."""
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.square(flat).sum(axis=1)


def min_snr(errors: list[OutputError]) -> float:
    return min(e.snr_db for e in errors)


def mean_snr(errors: list[OutputError]) -> float:
    return float(np.mean([e.snr_db for e in errors]))
