"""The one fold arithmetic: layouts, float64-then-one-cast, and its warnings."""

import ml_dtypes
import numpy as np
import pytest

from foldkit.fold.affine import batchnorm_scale_shift, channel_scale, fold_affine, fold_affine_input


def test_batchnorm_map_matches_the_formula():
    gamma, beta, mean, var = np.array([2.0, 0.5]), np.array([0.1, -1.0]), np.array([3.0, -2.0]), np.array([4.0, 0.25])
    scale, shift = batchnorm_scale_shift(gamma, beta, mean, var, eps=0.0)
    np.testing.assert_allclose(scale, [1.0, 1.0])
    np.testing.assert_allclose(shift, [0.1 - 3.0, -1.0 + 2.0])
    pj_scale, _ = batchnorm_scale_shift(gamma, beta, mean, var, eps=1e-6, eps_outside_sqrt=True)
    np.testing.assert_allclose(pj_scale, gamma / (np.sqrt(var) + 1e-6))


def test_conv_transpose_groups_scale_the_right_axis():
    # ConvTranspose weight [C_in=4, C_out/g=3, k], groups=2 → 6 output channels
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 2))
    scale = np.arange(1, 7, dtype=np.float64)
    folded = fold_affine(weight, None, scale, np.zeros(6), axis=1, groups=2, dtype=np.float64)
    for i in range(4):
        group = i // 2
        for j in range(3):
            np.testing.assert_allclose(folded.weight[i, j], weight[i, j] * scale[group * 3 + j])


def test_fp16_fold_is_the_float64_fold_rounded_once():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float16)
    bias = rng.standard_normal(8).astype(np.float16)
    scale, shift = rng.uniform(0.1, 50, 8), rng.standard_normal(8)
    folded = fold_affine(weight, bias, scale, shift)
    exact_w = weight.astype(np.float64) * scale[:, None, None, None]
    exact_b = bias.astype(np.float64) * scale + shift
    assert folded.weight.dtype == np.float16
    np.testing.assert_array_equal(folded.weight, exact_w.astype(np.float16))
    np.testing.assert_array_equal(folded.bias, exact_b.astype(np.float16))


def test_bfloat16_and_overflow_warnings():
    weight = np.array([[1.0], [60000.0]], dtype=np.float16).reshape(2, 1, 1, 1)
    folded = fold_affine(weight, None, np.array([1.0, 300.0]), np.zeros(2))
    assert np.isinf(folded.weight[1]).all()
    assert any("overflow" in w for w in folded.warnings)
    assert any("multiplies some filters by up to 300" in w for w in folded.warnings)
    bf = fold_affine(np.ones((2, 1, 1, 1), dtype=ml_dtypes.bfloat16), None, np.array([1.0, 3.0]), np.zeros(2))
    assert bf.weight.dtype == ml_dtypes.bfloat16 and float(bf.weight[1, 0, 0, 0]) == 3.0


def test_input_side_fold_matches_direct_computation():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((6, 2, 3, 3))  # groups=2: 4 input channels
    scale, shift = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    folded = fold_affine_input(weight, np.zeros(6), scale, shift, groups=2, dtype=np.float64)
    for o in range(6):
        group = o // 3
        channels = scale[group * 2:(group + 1) * 2]
        np.testing.assert_allclose(folded.weight[o], weight[o] * channels[:, None, None])
        np.testing.assert_allclose(folded.bias[o], (weight[o] * shift[group * 2:(group + 1) * 2, None, None]).sum())


def test_mismatched_channel_count_is_refused():
    with pytest.raises(ValueError, match="3 output channels"):
        fold_affine(np.ones((3, 1, 1, 1)), None, np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="6 output channels"):  # ConvTranspose [4, 3, k] in 2 groups: 6
        fold_affine(np.ones((4, 3, 1)), None, np.ones(3), np.zeros(3), axis=1, groups=2)
    with pytest.raises(ValueError, match="4 input channels"):
        fold_affine_input(np.ones((6, 2, 1, 1)), None, np.ones(3), np.zeros(3), groups=2)


def test_channel_scale_puts_output_channels_on_the_named_axis():
    scale = np.array([1.0, 2.0, 3.0])
    assert channel_scale(scale, (3, 2, 1, 1), axis=0).reshape(-1).tolist() == [1.0, 2.0, 3.0]
    assert channel_scale(scale, (3, 2, 1, 1), axis=0).shape == (3, 1, 1, 1)
    # Gemm B [K=2, N=3]: every row scaled column by column
    assert channel_scale(scale, (2, 3), axis=1).tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
