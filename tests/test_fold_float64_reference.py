"""The fold arithmetic against BatchNorm's own definition, computed in float64.

ε is chosen large against tiny variances (ε = 1e-3, σ² down to 1e-6), so where ε sits decides the
answer: γ/√(σ²+ε) and γ/(√σ² + ε) differ 15-fold in such a channel, and dropping ε divides by
√1e-6. The reference is BatchNorm as written, never the fold's formula, so a fold that places ε
anywhere else, forgets the mean, or scales the wrong axis cannot agree with it. Float64 end to end
leaves rounding at ~1e-16, far below the 1e-9 tolerance.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx_graphs import make_model

from foldkit.fold.affine import fold_batchnorm
from foldkit.fold.onnx import fold_onnx

EPS = float(np.float32(1e-3))  # exactly as ONNX stores the epsilon attribute (a float32), so both tests agree


def norm_params(channels: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.standard_normal(channels),
            "mean": rng.standard_normal(channels), "var": np.geomspace(1e-6, 4.0, channels)}


def batchnorm(y: np.ndarray, p: dict[str, np.ndarray], axis: int) -> np.ndarray:
    """BatchNorm at inference as defined: γ·(y − μ)/√(σ² + ε) + β, per channel on ``axis``."""
    shape = [1] * y.ndim
    shape[axis] = -1
    g, b, m, v = (p[k].reshape(shape) for k in ("gamma", "beta", "mean", "var"))
    return g * (y - m) / np.sqrt(v + EPS) + b


def test_the_fold_is_batchnorm_as_defined():
    rng = np.random.default_rng(7)
    weight, bias, x = rng.standard_normal((6, 5)), rng.standard_normal(6), rng.standard_normal((9, 5))
    p = norm_params(6, rng)
    folded = fold_batchnorm(weight, bias, (p["gamma"], p["beta"], p["mean"], p["var"]), EPS, dtype=np.float64)
    expected = batchnorm(x @ weight.T + bias, p, axis=1)
    np.testing.assert_allclose(x @ folded.weight.T + folded.bias, expected, rtol=1e-9, atol=1e-9)


def test_the_onnx_fold_is_batchnorm_as_defined():
    rng = np.random.default_rng(8)
    channels = 4
    p = norm_params(channels, rng)
    weights = {"W": rng.standard_normal((channels, 3, 3, 3)), "B": rng.standard_normal(channels), **p}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=EPS)]
    model = make_model(nodes, [("x", np.float64, [1, 3, 6, 6])], [("y", np.float64, None)], weights)
    folded, report = fold_onnx(model)
    assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"], report.format()
    x = rng.standard_normal((1, 3, 6, 6))
    conv = ReferenceEvaluator(make_model(nodes[:1], [("x", np.float64, [1, 3, 6, 6])], [("c", np.float64, None)],
                                         {"W": weights["W"], "B": weights["B"]})).run(None, {"x": x})[0]
    got = ReferenceEvaluator(folded).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, batchnorm(conv, p, axis=1), rtol=1e-9, atol=1e-9)
