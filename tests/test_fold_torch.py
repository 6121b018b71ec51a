"""The PyTorch fold: exact on a grid of conv shapes, and never silent when it refuses."""

import copy

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

from foldkit import ConvNormAct, fold_module
from foldkit.fold.report import FOLDED, NOT_FOLDABLE, SKIPPED

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _randomize(bn: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        c = bn.num_features
        bn.weight.copy_(torch.rand(c, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=generator))
        bn.running_mean.copy_(torch.randn(c, generator=generator))
        var = torch.rand(c, generator=generator) * 2 + 0.1
        var[0] = 1e-4  # a near-dead channel: the fold amplifies its filter by 1/√(1e-4+ε)
        bn.running_var.copy_(var)
        bn.weight[0] = 1.0


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


GRID = [
    # dims, stride, padding, dilation, groups, conv bias, eps, channels (in, out)
    (1, 1, 0, 1, 1, False, 1e-5, (3, 7)),
    (1, 2, 1, 2, 1, True, 1e-3, (5, 10)),
    (2, 1, 1, 1, 1, False, 1e-5, (3, 13)),
    (2, 2, 0, 1, 1, True, 1e-4, (6, 9)),
    (2, 1, 2, 2, 3, False, 1e-3, (6, 9)),
    (2, 2, 1, 1, 11, False, 1e-5, (11, 11)),  # depthwise
    (2, 1, 1, 1, 11, True, 1e-5, (11, 22)),  # depthwise multiplier 2
    (3, 1, 1, 1, 1, False, 1e-5, (2, 5)),
    (3, 2, 1, 2, 5, True, 1e-3, (5, 15)),
]


@pytest.mark.parametrize("dims,stride,padding,dilation,groups,bias,eps,channels", GRID)
@pytest.mark.parametrize("transposed", [False, True])
def test_fold_is_exact_on_conv_grid(dims, stride, padding, dilation, groups, bias, eps, channels, transposed):
    generator = torch.Generator().manual_seed(hash((dims, stride, groups, transposed)) % 2**31)
    cin, cout = channels
    conv_type = TRANSPOSED[dims] if transposed else CONV[dims]
    conv = conv_type(cin, cout, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    bn = BN[dims](cout, eps=eps)
    _randomize(bn, generator)
    model = nn.Sequential(conv, bn).eval()
    x = torch.rand(2, cin, *([9] * dims), generator=generator)

    folded, report = fold_module(model)

    assert [e.status for e in report.entries] == [FOLDED]
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    assert report.entries[0].max_amplification > 30  # the 1e-4 variance channel: 1/√(1e-4+ε) ≥ 30.1
    with torch.no_grad():
        assert _max_rel(folded(x), model(x)) <= 1e-5
    assert isinstance(model[1], BN[dims]), "the input model must be left untouched"


def test_linear_then_batchnorm1d_folds():
    generator = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(7, 5), nn.BatchNorm1d(5)).eval()
    _randomize(model[1], generator)
    folded, report = fold_module(model)
    x = torch.randn(4, 7, generator=generator)
    assert report.entries[0].status == FOLDED
    with torch.no_grad():
        assert _max_rel(folded(x), model(x)) <= 1e-5


class _TwoReaders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv(self.bn1(self.conv(x))))


class _TiedWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.a(x)) + self.b(x)


def test_training_mode_is_refused_with_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    folded, report = fold_module(model)
    assert report.entries[0].status == SKIPPED and "training mode" in report.entries[0].reason
    assert any("training mode" in n for n in report.notes)
    assert isinstance(folded[1], nn.BatchNorm2d)


def test_batchnorm_without_running_stats_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    _, report = fold_module(model)
    assert report.entries[0].status == SKIPPED and "no running statistics" in report.entries[0].reason


def test_conv_output_with_other_readers_is_refused():
    model = _TwoReaders().eval()
    folded, report = fold_module(model)
    entry = report.entries[0]
    assert entry.status == SKIPPED and "also read by" in entry.reason
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_conv_used_in_two_places_is_refused():
    model = _SharedConv().eval()
    _randomize(model.bn1, torch.Generator().manual_seed(0))
    _randomize(model.bn2, torch.Generator().manual_seed(1))
    folded, report = fold_module(model)
    by_node = {e.node: e for e in report.entries}
    assert by_node["bn2"].status == SKIPPED and "used in 2 places" in by_node["bn2"].reason
    assert by_node["bn1"].status == SKIPPED  # its input is conv, which is shared too
    x = torch.rand(1, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_tied_weights_are_refused():
    model = _TiedWeights().eval()
    _randomize(model.bn, torch.Generator().manual_seed(0))
    folded, report = fold_module(model)
    assert "shares its weight" in report.entries[0].reason
    x = torch.rand(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("norm,status,words", [
    ("group", NOT_FOLDABLE, "GroupNorm normalizes each sample"),
    ("layer", NOT_FOLDABLE, "GroupNorm normalizes each sample"),  # LayerNorm over C,H,W is GroupNorm(1, C)
    ("instance", NOT_FOLDABLE, "InstanceNorm without running statistics"),
    ("batch", FOLDED, None),
])
def test_block_norm_variants_report_whether_they_fold(norm, status, words):
    block = ConvNormAct(3, 8, 3, norm=norm, activation="mish").eval()
    _, report = fold_module(block)
    assert [e.status for e in report.entries] == [status]
    if words is None:  # folded: into the block's conv, with nothing to explain
        assert (report.entries[0].target, report.entries[0].reason) == ("conv", "")
    else:
        assert words in report.entries[0].reason and report.entries[0].target is None


def test_nn_layernorm_is_not_foldable():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)).eval()
    _, report = fold_module(model)
    assert report.entries[0].status == NOT_FOLDABLE and "LayerNorm" in report.entries[0].reason


def test_instance_norm_with_running_stats_folds_in_eval_mode():
    norm = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), norm).eval()
    with torch.no_grad():
        norm.running_var.uniform_(0.5, 2)
        norm.running_mean.normal_()
        norm.weight.uniform_(0.5, 1.5)
    folded, report = fold_module(model)
    assert report.entries[0].status == FOLDED
    x = torch.rand(2, 3, 7, 7)
    with torch.no_grad():
        assert _max_rel(folded(x), model(x)) <= 1e-5


@pytest.mark.parametrize("name", ["leaky", "relu", "logistic", "tanh", "mish", "swish", "linear"])
def test_activations_follow_darknet_formulas(name):
    block = ConvNormAct(1, 1, 1, norm="none", activation=name)
    x = torch.linspace(-25, 25, 101)
    expected = {
        "leaky": torch.where(x > 0, x, 0.1 * x),
        "relu": x.clamp(min=0),
        "logistic": 1 / (1 + torch.exp(-x)),
        "tanh": 2 / (1 + torch.exp(-2 * x)) - 1,
        "mish": x * torch.tanh(torch.where(x > 20, x, torch.log1p(torch.exp(x)))),
        "swish": x * torch.sigmoid(x),
        "linear": x,
    }[name]
    torch.testing.assert_close(block.act(x), expected, rtol=1e-6, atol=1e-6)


def test_fold_in_float16_and_bfloat16():
    for dtype in (torch.float16, torch.bfloat16):
        model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)).eval()
        _randomize(model[1], torch.Generator().manual_seed(5))
        model[1].running_var[0] = 1e-5  # |s| = 1/√(2e-5) ≈ 224
        folded, report = fold_module(model.to(dtype))
        assert folded[0].weight.dtype == dtype and folded[0].bias.dtype == dtype
        assert report.entries[0].status == FOLDED
        assert any("less accurate" in w for w in report.entries[0].warnings)




@pytest.mark.parametrize("dtype,numpy_dtype", [(torch.float16, np.float16), (torch.bfloat16, ml_dtypes.bfloat16)])
def test_16_bit_folds_write_the_float64_fold_rounded_once(dtype, numpy_dtype):
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)).eval()
    _randomize(model[1], torch.Generator().manual_seed(6))
    model = model.to(dtype)
    folded, report = fold_module(model)
    assert report.entries[0].status == FOLDED
    conv, bn = (m.to(torch.float64) for m in copy.deepcopy(model))
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected_w = (conv.weight * s[:, None, None, None]).detach().numpy().astype(numpy_dtype).astype(np.float32)
    expected_b = ((conv.bias - bn.running_mean) * s + bn.bias).detach().numpy().astype(numpy_dtype).astype(np.float32)
    np.testing.assert_array_equal(folded[0].weight.float().detach().numpy(), expected_w)
    np.testing.assert_array_equal(folded[0].bias.float().detach().numpy(), expected_b)
    assert np.abs(expected_w).min() > 0 and np.abs(expected_b).max() > 0.1  # a zeroed fold cannot pass
