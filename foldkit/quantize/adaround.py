"""AdaRound: learn, per weight, whether to round down or up, to minimise a layer's output error.

Nearest rounding minimises each weight's own error, not the layer's: the errors of a conv's
weights add up in its output, and choosing for some weights the other neighbour on the grid
can cancel much of that sum. Following Nagel et al. (2020), "Up or Down? Adaptive Rounding for
Post-Training Quantization": with the grid fixed (per-channel scale s, as ORT's symmetric s8
quantization computes it), a weight becomes s·(⌊w/s⌋ + h(v)) where h is the rectified sigmoid
clip(σ(v)·(ζ − γ) + γ, 0, 1). The v are trained (Adam) to minimise the output error on
calibration activations plus a regularizer λ·Σ(1 − |2h − 1|^β) whose β is annealed from 20 to 2,
which pushes every h to 0 or 1; the learned integers are then ⌊w/s⌋ + [h ≥ ½].

Here the layer is seen as the matrix product it is, on sampled input patches (im2col rows):
the prediction uses the patches the int8 model feeds the layer (its own quantized upstream), the
target the float model's patches and weights (Nagel's asymmetric reconstruction), so upstream
error is partly compensated too. The weights whose magnitude sets the channel's scale (±qmax)
are not learned: they keep the scale ORT will compute from the rounded weights, so writing
s·q as float weights makes ORT's quantizer reproduce q exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (Nagel et al. 2020)
BETA_START, BETA_END = 20.0, 2.0  # the regularizer's exponent, annealed
WARMUP = 0.2  # fraction of the iterations without the regularizer
REGULARIZER = 10.0  # λ on the mean over weights, against the output error normalised by nearest rounding's
LEARNING_RATE = 3e-2  # few iterations (CPU time): Nagel's 1e-3 over 10⁴ would not move here
ITERATIONS = 300
BATCH = 256  # sampled positions per iteration


@dataclass(frozen=True)
class Grid:
    """The symmetric per-output-channel int8 grid ORT's quantizer puts a weight on: q ∈ [−qmax, qmax]."""

    scale: np.ndarray  # (out channels,) float32, as ORT stores it
    qmax: int  # 127, or 64 for ORT's reduce_range

    @classmethod
    def of(cls, weight: np.ndarray, reduce_range: bool) -> Grid:
        """ORT's per-channel symmetric s8 grid for ``weight`` (out channels first): absmax·2/(qmax − qmin)."""
        qmax = 64 if reduce_range else 127
        absmax = np.abs(weight.reshape(len(weight), -1).astype(np.float64)).max(axis=1)
        scale = (absmax * 2 / (2 * qmax)).astype(np.float32)
        return cls(np.where(scale > 0, scale, np.float32(1.0)), qmax)

    def ratio(self, weight: np.ndarray) -> np.ndarray:
        return weight.reshape(len(weight), -1).astype(np.float64) / self.scale[:, None].astype(np.float64)

    def nearest(self, weight: np.ndarray) -> np.ndarray:
        """The integers ORT's quantizer writes for ``weight`` (round half to even, clipped)."""
        return np.clip(np.round(self.ratio(weight)), -self.qmax, self.qmax).astype(np.int64)

    def weights(self, integers: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Float weights exactly on the grid: ORT's quantizer of them gives back ``integers``."""
        return (integers.astype(np.float32) * self.scale[:, None]).reshape(shape)


@dataclass
class Rounding:
    """One layer's learned integers and what they bought on the sampled patches."""

    integers: np.ndarray  # (out channels, inputs per output) int64
    nearest_mse: float  # output MSE with nearest rounding (the bias shift removed as below)
    learned_mse: float  # output MSE with the learned rounding
    bias_shift: np.ndarray  # (out channels,) mean output residual with the learned rounding: subtract from the bias
    flipped: float  # fraction of weights rounded away from their nearest neighbour


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def learn_rounding(weight: np.ndarray, grid: Grid, patches: np.ndarray, target: np.ndarray, *,
                   iterations: int = ITERATIONS, batch: int = BATCH, seed: int = 0) -> Rounding:
    """Learned integers for ``weight`` (C_out × …) on ``grid``, fitting ``patches @ W_qᵀ`` to ``target``.

    ``patches``: (N, inputs per output) as the int8 model feeds the layer; ``target``: (N, C_out),
    the float layer's output without bias on the same positions.
    """
    ratio = torch.from_numpy(grid.ratio(weight)).float()
    base = torch.floor(ratio)
    fixed = torch.from_numpy(np.abs(grid.nearest(weight)) >= grid.qmax)  # these set the scale: keep them
    nearest = torch.from_numpy(grid.nearest(weight)).float()
    scale = torch.from_numpy(grid.scale).float()[:, None]
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    start = ((ratio - base - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.log(start / (1 - start)).requires_grad_(True)  # h(v) = the fractional part: W̃ = W at first
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    norm = float(_mse(x, nearest * scale, y)) or 1.0
    free = (~fixed).float()
    for step in range(iterations):
        rows = torch.randint(0, len(x), (min(batch, len(x)),), generator=generator)
        h = rectified_sigmoid(v)
        loss = _mse(x[rows], torch.where(fixed, nearest, base + h) * scale, y[rows]) / norm
        progress = (step / iterations - WARMUP) / (1 - WARMUP)
        if progress >= 0:
            beta = BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + np.cos(np.pi * progress))
            loss = loss + REGULARIZER * ((1 - (2 * h - 1).abs().pow(beta)) * free).sum() / free.sum().clamp(min=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        learned = torch.where(fixed, nearest, base + (rectified_sigmoid(v) >= 0.5).float())
        shift = (x @ (learned * scale).T - y).mean(dim=0)
        return Rounding(learned.long().numpy(), float(_mse(x, nearest * scale, y, centred=True)),
                        float(_mse(x, learned * scale, y, centred=True)), shift.double().numpy(),
                        float((learned != nearest).float().mean()))


def _mse(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """Mean squared output error; ``centred``: after removing each channel's mean (what a bias absorbs)."""
    residual = x @ weight.T - y
    if centred:
        residual = residual - residual.mean(dim=0)
    return residual.square().mean()
