"""Seeded synthetic weights for networks that have no trained ones.

Two regimes, both seeded and both built for tests and benchmarks:

- :func:`randomize_batchnorm` gives every BatchNorm realistic, non-trivial statistics, including
  nearly dead channels (variance near 1e-4), so folding really changes the weights. Deep residual
  networks drift in scale under it: a hard case, kept on purpose.
- :func:`condition_weights` makes a network behave like a trained one for numerics: each conv and
  linear layer is scaled so its output has unit mean square on a calibration input, and each
  BatchNorm's running statistics are the ones it actually sees, so activations stay O(1) through
  any depth (plain He init lets residual streams grow until float32 noise or int8 ranges break).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

_BATCHNORMS = nn.modules.batchnorm._BatchNorm
_LINEARS = (nn.modules.conv._ConvNd, nn.Linear)


@torch.no_grad()
def randomize_batchnorm(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    seed: int = 0,
    tiny_variance_fraction: float = 0.05,
    calibration_batches: int = 2,
) -> nn.Module:
    """Give every BatchNorm realistic, non-trivial statistics, in place, and return ``model``.

    Freshly built BatchNorms have γ=1, β=0, μ=0, σ²=1, so folding them changes nothing and proves
    nothing. This draws γ and β at random, makes a fraction of each conv's filters nearly dead
    (weights scaled by 1e-2, so their output variance lands near 1e-4, as in trained networks),
    then measures the running mean and variance on seeded random inputs, layer by layer, so the
    network stays well scaled at any depth. The model is left in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    conv_before_bn = _convs_before_batchnorms(model)
    for bn in _batchnorms(model):
        channels = bn.num_features
        bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=generator) * 0.2)
        conv = conv_before_bn.get(bn)
        if conv is not None:
            tiny = torch.rand(channels, generator=generator) < tiny_variance_fraction
            tiny[torch.randint(channels, (1,), generator=generator)] = True  # at least one per layer
            conv.weight[tiny] *= 1e-2
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(calibration_batches):
        model(torch.rand(*input_shape, generator=generator))
    for bn in _batchnorms(model):
        bn.momentum = 0.1
    return model.eval()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BATCHNORMS)]


def _convs_before_batchnorms(model: nn.Module) -> dict[nn.Module, nn.modules.conv._ConvNd]:
    """Map each BatchNorm to the conv registered right before it (the block structure)."""
    pairs: dict[nn.Module, nn.modules.conv._ConvNd] = {}
    previous: nn.Module | None = None
    for module in model.modules():
        if isinstance(module, _BATCHNORMS) and isinstance(
            previous, nn.modules.conv._ConvNd
        ) and previous.out_channels == module.num_features:
            pairs[module] = previous
        if not isinstance(module, (nn.Sequential, nn.ModuleList)):
            previous = module
    return pairs


@torch.no_grad()
def condition_weights(model: nn.Module, sample: torch.Tensor, *, seed: int = 0) -> nn.Module:
    """Scale ``model`` in place so activations stay O(1) on ``sample``; return it in eval mode.

    The pass runs in float64 and the model is cast back to its dtype once at the end, so the
    statistics are those of the network's exact arithmetic, not of one CPU's float32 kernels.

    One forward pass in eval mode, layer by layer in execution order: each conv or linear layer's
    weight and bias are divided by the root mean square of its output (so later layers see the
    rescaled activations), and each BatchNorm gets γ ~ U(0.5, 1.5), β ~ N(0, 0.2²) and the
    per-channel mean and variance of the input it receives as its running statistics. A module
    called more than once is conditioned at its first call only.
    """
    generator = torch.Generator().manual_seed(seed)
    done: set[nn.Module] = set()

    def scale_output(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if module in done:
            return output
        done.add(module)
        layer = cast("nn.modules.conv._ConvNd | nn.Linear", module)
        mean_square = float(output.double().square().mean())
        if not math.isfinite(mean_square) or mean_square <= 0.0:
            return output
        factor = 1.0 / math.sqrt(mean_square)
        layer.weight.mul_(factor)
        if layer.bias is not None:
            layer.bias.mul_(factor)
        return output * factor

    def measure_statistics(module: nn.Module, inputs: tuple) -> None:
        if module in done:
            return
        done.add(module)
        norm = cast(_BATCHNORMS, module)
        x = inputs[0].double()
        axes = [d for d in range(x.dim()) if d != 1]
        channels = norm.num_features
        cast(torch.Tensor, norm.running_mean).copy_(x.mean(dim=axes))
        cast(torch.Tensor, norm.running_var).copy_(x.var(dim=axes, unbiased=False))
        if norm.affine:
            norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
            norm.bias.copy_(torch.randn(channels, generator=generator) * 0.2)

    handles = []
    for module in model.modules():
        if isinstance(module, _LINEARS):
            handles.append(module.register_forward_hook(scale_output))
        elif isinstance(module, _BATCHNORMS) and module.track_running_stats:
            handles.append(module.register_forward_pre_hook(measure_statistics))
    dtype = next(model.parameters()).dtype
    model.eval().double()  # measured in float64, cast once: the statistics do not depend on the CPU's kernels
    try:
        model(sample.double())
    finally:
        for handle in handles:
            handle.remove()
        model.to(dtype)
    return model
