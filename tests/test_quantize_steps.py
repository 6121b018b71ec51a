"""The int8 methods on their own: CPU detection, histogram ranges, the judgement's noise, held-out
variants, detection agreement, and the u16/clip overrides as ORT writes them."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from foldkit.cpu import int8_capability
from foldkit.deploy.yolo import HeadSpec
from foldkit.errors import FoldkitError
from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.activations import BINS, ActivationStats, activation_stats, negative_weights
from foldkit.quantize.adaround import Grid
from foldkit.quantize.calibration import load_calibration
from foldkit.quantize.context import NEGLIGIBLE_DRAW_DB, Context
from foldkit.quantize.detections import compare_detections
from foldkit.quantize.draws import CANDIDATE_DRAWS, JITTER, TIE_BAND, equivalent_draws, flip_tie_weights
from foldkit.quantize.judge import HeldOutJudge, Judgement, OutputError
from foldkit.quantize.options import MIXED_U16, MSE_CLIP
from foldkit.quantize.report import QuantizeReport
from foldkit.quantize.significance import draw_noise_db, significant_gain
from foldkit.quantize.static import StaticQuantizer
from tests.onnx_graphs import make_model

CPUINFO = "processor\t: 0\nmodel name\t: {name}\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("flags, kind, saturates", [
    ("avx avx2 fma", "avx2", True),
    ("avx2 avx512f avx512_vnni", "vnni", False),
    ("avx2 avx_vnni", "vnni", False),
    ("avx2 avx512_vnni amx_bf16 amx_tile amx_int8", "amx", False),
    ("neon asimd", "unknown", False),
])
def test_int8_capability_from_cpuinfo_flags(flags: str, kind: str, saturates: bool) -> None:
    cpu = int8_capability(CPUINFO.format(name="Some CPU", flags=flags))
    assert (cpu.model, cpu.kind, cpu.saturates_u8s8) == ("Some CPU", kind, saturates)
    assert cpu.describe().startswith("Some CPU: ")
    assert int8_capability().kind in ("amx", "vnni", "avx2", "unknown")  # this machine, whatever it is


def test_options_refuse_unknown_steps_and_modes() -> None:
    with pytest.raises(FoldkitError, match="unknown quantize step.*'adaquant'"):
        QuantizeOptions(steps=("adaquant",))
    with pytest.raises(FoldkitError, match="sensitivity must be one of"):
        QuantizeOptions(sensitivity="sometimes")


def _stats(values: np.ndarray) -> ActivationStats:
    low, high = float(values.min()), float(values.max())
    return ActivationStats("t", low, high, np.histogram(values, bins=BINS, range=(low, high))[0])


def _u8_error(values: np.ndarray, low: float, high: float) -> float:
    """The mean squared error of ORT's asymmetric u8 quantization over [low, high], on the values themselves."""
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    return float(np.mean(np.square(values - (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale)))


@pytest.mark.parametrize("tail", ["exponential", "student-t3"])
def test_mse_range_is_as_good_as_a_search_on_the_values_themselves(tail: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(1.0, 100_000) if tail == "exponential" else np.abs(rng.standard_t(3, 100_000))
    low, high = _stats(values).mse_range()
    assert low == 0.0 and high < values.max()
    chosen = _u8_error(values, low, high)
    grid = [_u8_error(values, 0.0, h) for h in np.geomspace(values.max() / 64, values.max(), 300)]
    assert chosen <= min(grid) * 1.05 and chosen < _u8_error(values, 0.0, float(values.max()))


def test_mse_range_keeps_a_rare_far_outlier_that_would_cost_more_clipped() -> None:
    values = np.concatenate([np.random.default_rng(1).uniform(0, 1, 100_000), [100.0]])
    assert _stats(values).mse_range()[1] > 80  # clipping it to 1 would cost 99² / 100001 ≈ 0.1 > (100/255)² / 12


def _leaky(values: np.ndarray, slope: float) -> np.ndarray:
    return np.where(values < 0, slope * values, values)


def _u8_error_after(values: np.ndarray, low: float, high: float, slope: float) -> float:
    """The squared u8 error of ``values`` as a LeakyReLU(slope) behind the rounding passes it on."""
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    rounded = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
    return float(np.mean(np.square(_leaky(values, slope) - _leaky(rounded, slope))))


def test_a_pre_activation_range_is_chosen_for_what_the_leaky_relu_passes_on() -> None:
    # a conv output whose negative side is long (as the trained yolov3-tiny's are): unweighted, it takes
    # most of the 255 steps; after LeakyReLU(0.1) its errors count 1/100 as much
    rng = np.random.default_rng(4)
    values = np.concatenate([-rng.exponential(8.0, 60_000), rng.exponential(1.5, 40_000)])
    low, high = float(values.min()), float(values.max())
    counts = np.histogram(values, bins=BINS, range=(low, high))[0]
    plain = ActivationStats("t", low, high, counts).mse_range()
    weighted = ActivationStats("t", low, high, counts, negative_weight=0.01).mse_range()
    assert weighted[0] > plain[0]  # the negative end clipped harder
    chosen = _u8_error_after(values, *weighted, 0.1)
    assert chosen < 0.7 * _u8_error_after(values, *plain, 0.1)  # measured 0.60×
    grid = [_u8_error_after(values, lo, hi, 0.1) for lo in np.linspace(low, low / 64, 40)
            for hi in np.linspace(high / 4, high, 40)]
    assert chosen <= min(grid) * 1.05


def test_negative_weights_only_where_every_reader_is_one_slope_of_relu_or_leaky_relu() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c0"),
             helper.make_node("LeakyRelu", ["a"], ["b"], alpha=0.1),  # a: α² = 0.01
             helper.make_node("Relu", ["b"], ["c"]),  # b: 0
             helper.make_node("LeakyRelu", ["c"], ["d"], alpha=0.1),
             helper.make_node("LeakyRelu", ["c"], ["e"], alpha=0.2),  # c: two slopes, weight 1
             helper.make_node("LeakyRelu", ["d"], ["f"]),  # d: ONNX's default α = 0.01
             helper.make_node("LeakyRelu", ["e"], ["g"], alpha=0.1),  # e: also a graph output, weight 1
             helper.make_node("Add", ["f", "g"], ["y"])]
    model = make_model(nodes, [("x", np.float32, [1, 1, 4, 4])], [("y", np.float32, None), ("e", np.float32, None)],
                       {"w": np.ones((1, 1, 1, 1), np.float32)})
    assert negative_weights(model) == pytest.approx({"a": 0.01, "b": 0.0, "d": 1e-4})


def test_noise_to_signal_is_the_uniform_rounding_noise() -> None:
    values = np.random.default_rng(1).uniform(0, 1, 200_000)
    stats = _stats(values)
    step = (values.max() - 0.0) / 255
    expected = step**2 / 12 / np.mean(values**2)  # uniform rounding error over a step: Δ²/12
    assert stats.noise_to_signal(0.0, float(values.max())) == pytest.approx(expected, rel=0.1)


def _judgement(noise_scale: np.ndarray) -> Judgement:
    signal = np.ones((len(noise_scale), 2))
    noise = np.stack([noise_scale, noise_scale], axis=1)
    snr = float(10 * np.log10(signal.sum() / noise.sum()))
    return Judgement([OutputError("a", snr, 0, 0), OutputError("b", snr, 0, 0)], {}, signal, noise)


def test_a_gain_counts_only_beyond_the_bootstrap_noise() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 2.0, 20) * 1e-3
    assert significant_gain(_judgement(base), _judgement(base / 4))[2]  # 6 dB on every input: kept
    gain, sigma, kept = significant_gain(_judgement(base), _judgement(base * rng.uniform(0.6, 1.5, 20)))
    assert sigma > 0 and kept == (gain > 2 * sigma)
    assert not significant_gain(_judgement(base), _judgement(base))[2]  # no change: never kept


def test_the_rounding_draw_widens_the_noise_a_gain_must_beat() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 2.0, 20) * 1e-3
    better = _judgement(base / 10 ** (0.3 / 10))  # +0.3 dB on every input: the bootstrap alone sees no spread
    gain, sigma, kept = significant_gain(_judgement(base), better)
    assert gain == pytest.approx(0.3) and sigma < 0.01 and kept
    gain, sigma, kept = significant_gain(_judgement(base), better, draw_sigma=0.2)
    assert sigma == pytest.approx(np.sqrt(2) * 0.2, rel=0.05) and not kept  # two draws' difference: √2·σ
    assert significant_gain(_judgement(base), _judgement(base / 10), draw_sigma=0.2)[2]  # +10 dB still kept
    draws = [_judgement(base * factor) for factor in (1.0, 10 ** 0.02, 10 ** -0.02)]  # ±0.2 dB
    assert draw_noise_db(draws) == pytest.approx(0.2, rel=1e-6)
    assert draw_noise_db(draws[:1]) == 0.0


def test_a_gain_compares_the_means_over_equivalent_models() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 2.0, 20) * 1e-3
    same = _judgement(base)
    lucky = [_judgement(base / 10 ** (1.5 / 10)) for _ in range(2)]  # the candidate's draws: +1.5 dB each
    gain, sigma, kept = significant_gain(same, same, draw_sigma=0.3, before_draws=[same] * 5, after_draws=lucky)
    assert gain == pytest.approx(1.0) and kept  # mean of (0, 1.5, 1.5) against the baseline's six zeros
    assert sigma == pytest.approx(0.3 * np.sqrt(1 / 6 + 1 / 3), rel=1e-6)  # each mean's share of the luck
    unlucky = [_judgement(base * 10 ** (1.5 / 10)) for _ in range(2)]
    better = _judgement(base / 10 ** (1.5 / 10))  # one lucky model, its draws say otherwise
    assert significant_gain(same, better, draw_sigma=0.3)[2]  # one draw each: kept
    assert not significant_gain(same, better, draw_sigma=0.3, before_draws=[same] * 5, after_draws=unlucky)[2]


def test_equivalent_draws_jitter_every_range_flip_ties_and_change_the_rounding(tmp_path) -> None:
    model, inputs = _outlier_relu_model()
    data = load_calibration((1, 3, 16, 16), calib=_save(tmp_path / "calib.npy", inputs), held_out=8)
    quantizer = StaticQuantizer(model, tmp_path, "m", data, "x")
    judge = HeldOutJudge(quantizer.float_path, data.held_out, "x")
    baseline = _scales(quantizer.quantize())
    draws = equivalent_draws(quantizer, [], judge, seed=3, count=2)
    written = sorted(tmp_path.glob("m-draw*.int8-*.onnx"))
    assert len(draws) == len(written) == 2
    for path in written:
        scales = _scales(path)
        assert scales.keys() == baseline.keys()
        moved = [abs(scales[name][0] / baseline[name][0] - 1) for name in baseline]
        assert max(moved) <= 2 * JITTER and max(moved) > 0  # a range of two jittered ends: its step moves ≤ 1 %
    snrs = [draw.min_snr_db for draw in draws]
    assert snrs[0] != snrs[1] and draw_noise_db(draws) > 0
    for index in range(2):  # each draw quantizes its own float model: tie weights flipped, nothing else
        redrawn = onnx.load(str(tmp_path / f"m-draw{index}.float.onnx"))
        weights = {i.name: numpy_helper.to_array(i) for i in redrawn.graph.initializer}
        assert not np.array_equal(weights["w1"], numpy_helper.to_array(model.graph.initializer[0]))
        assert np.array_equal(weights["b1"], np.zeros(8, np.float32))
    seen: list = []  # ``form`` gets each quantized file, and what it returns is judged
    judged = equivalent_draws(quantizer, [], judge, seed=3, count=2,
                              form=lambda path: seen.append(path) or quantizer.float_path)
    assert len(seen) == 2 and all(path.name.startswith("m-draw") for path in seen)
    assert all(draw.min_snr_db > 100 for draw in judged)  # the float model judged against itself
    # the same seed gives the same draws whatever order ORT's calibration cache lists the tensors in
    cache = json.loads(quantizer.cache_path.read_text())
    cache["data"] = dict(reversed(list(cache["data"].items())))
    quantizer.cache_path.write_text(json.dumps(cache))
    again = equivalent_draws(quantizer, [], judge, seed=3, count=2)
    assert [draw.min_snr_db for draw in again] == snrs
    # a step's candidate is redrawn only where the baseline's draws showed luck worth averaging
    report = QuantizeReport("m", "", "minmax", "calib", False)
    context = Context(data, "x", judge, QuantizeOptions(), int8_capability(), report)
    report.draw_noise_db = NEGLIGIBLE_DRAW_DB / 2
    assert context.candidate(quantizer, []).draws == []
    report.draw_noise_db = NEGLIGIBLE_DRAW_DB
    assert len(context.candidate(quantizer, []).draws) == CANDIDATE_DRAWS
    # a model with every conv weight on the grid (learned rounding) has nothing to flip: no draws
    on_grid = copy.deepcopy(model)
    for init in on_grid.graph.initializer:
        if init.name in ("w1", "w2"):
            weight = numpy_helper.to_array(init)
            grid = Grid.of(weight, False)
            init.CopyFrom(numpy_helper.from_array(grid.weights(grid.nearest(weight), weight.shape), init.name))
    assert equivalent_draws(StaticQuantizer(on_grid, tmp_path, "grid", data, "x"), [], judge) == []
    # a quantizer whose overrides set a range is jittered around that range, not the calibrated one
    low, high = quantizer.calibrate()["h"]
    narrowed = quantizer.with_overrides({"h": {"rmin": np.float32(low), "rmax": np.float32(high / 2)}}, "narrow")
    step = _scales(narrowed.quantize())["h"][0]
    assert step < 0.6 * baseline["h"][0]
    equivalent_draws(narrowed, [], judge, seed=3, count=1)
    drawn = _scales(next(tmp_path.glob("m-narrow-draw0.int8-*.onnx")))["h"][0]
    assert abs(drawn / step - 1) <= 2 * JITTER


def test_tie_flips_move_only_weights_near_a_tie_to_a_grid_neighbour_that_ort_keeps(tmp_path) -> None:
    model, inputs = _outlier_relu_model()
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    flipped = flip_tie_weights(model, {"conv_b"}, False, np.random.default_rng(0))
    after = {i.name: numpy_helper.to_array(i) for i in flipped.graph.initializer}
    assert np.array_equal(after["w2"], before["w2"]) and np.array_equal(after["b1"], before["b1"])  # conv_b excluded
    grid = Grid.of(before["w1"], False)
    ratio = grid.ratio(before["w1"])
    tie = np.abs(ratio - np.floor(ratio) - 0.5) < TIE_BAND
    moved = (after["w1"] != before["w1"]).reshape(ratio.shape)
    assert moved.any() and not (moved & ~tie).any()  # only weights near a tie move
    landed = grid.ratio(after["w1"])[moved]
    assert np.allclose(landed, np.round(landed), atol=1e-4)  # onto a grid point
    assert np.isin(np.round(landed), [np.floor(ratio[moved]), np.ceil(ratio[moved])]).all()  # a neighbour
    away = (np.round(landed) != grid.nearest(before["w1"])[moved]).mean()
    assert 0.3 < away < 0.7  # about half of the ties take the other neighbour
    assert np.array_equal(grid.nearest(after["w1"]), np.round(grid.ratio(after["w1"])).astype(np.int64))
    assert np.array_equal(Grid.of(after["w1"], False).scale, grid.scale)  # ORT computes the same scale
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.append(helper.make_node("Identity", ["w1"], ["w1_read"], name="reader"))
    unmoved = flip_tie_weights(shared, set(), False, np.random.default_rng(0))
    kept = {i.name: numpy_helper.to_array(i) for i in unmoved.graph.initializer}
    assert np.array_equal(kept["w1"], before["w1"]) and not np.array_equal(kept["w2"], before["w2"])  # w1 read twice
    data = load_calibration((1, 3, 16, 16), calib=_save(tmp_path / "calib.npy", inputs), held_out=8)
    quantized = onnx.load(str(StaticQuantizer(flipped, tmp_path, "f", data, "x").quantize()))
    stored = next(numpy_helper.to_array(i) for i in quantized.graph.initializer if i.name.startswith("w1")
                  and numpy_helper.to_array(i).size == ratio.size)
    assert np.array_equal(stored.reshape(ratio.shape), grid.nearest(after["w1"]))  # ORT writes the chosen integers


def _save(path, array: np.ndarray):
    np.save(path, array)
    return path


def _photos(folder, count: int = 2) -> None:
    rng = np.random.default_rng(3)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (30 + 10 * index, 40, 3), dtype=np.uint8)).save(folder / f"{index}.png")


def test_folder_calibrates_on_all_images_and_judges_on_seeded_variants(tmp_path) -> None:
    _photos(tmp_path)
    data = load_calibration((1, 3, 32, 32), calib=tmp_path, variants=3, seed=5)
    again = load_calibration((1, 3, 32, 32), calib=tmp_path, variants=3, seed=5)
    other = load_calibration((1, 3, 32, 32), calib=tmp_path, variants=3, seed=6)
    assert data.calibration.shape == (2, 3, 32, 32) and data.held_out.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(data.held_out, again.held_out)  # seeded
    assert not np.array_equal(data.held_out, other.held_out)
    assert not any(np.array_equal(h, c) for h in data.held_out for c in data.calibration)
    assert "seeded variants" in data.source and "flatters" in data.source


def test_preprocessing_hook_feeds_calibration_and_is_checked(tmp_path) -> None:
    _photos(tmp_path)
    seen = []

    def hook(path):
        seen.append(path.name)
        return np.full((1, 1, 4, 4), len(seen), np.float32)

    data = load_calibration((1, 1, 4, 4), calib=tmp_path, variants=1, preprocess=hook)
    assert seen[:2] == ["0.png", "1.png"] and len(seen) == 4
    np.testing.assert_array_equal(data.calibration[:, 0, 0, 0], [1, 2])
    with pytest.raises(FoldkitError, match="preprocessing gives inputs of shape \\[1, 4, 4\\], the model takes"):
        load_calibration((1, 1, 8, 8), calib=tmp_path, variants=1, preprocess=hook)


def _head_map(cells: list[tuple[int, int, int, float]]) -> np.ndarray:
    """One 4×4 YOLO head, one anchor, 3 classes: (row, col, class, objectness logit) per object."""
    raw = np.full((1, 8, 4, 4), -8.0, np.float32)
    raw[:, 0:4] = 0.0  # centred boxes, anchor-sized
    for row, col, cls, logit in cells:
        raw[0, 4, row, col] = logit
        raw[0, 5 + cls, row, col] = 8.0
    return raw


def test_detection_agreement_counts_matches_misses_and_extras() -> None:
    heads = [HeadSpec(((20.0, 20.0),), 3)]
    reference = {"head0": _head_map([(0, 0, 1, 4.0), (2, 2, 0, 4.0), (3, 0, 2, 4.0)])}
    same = compare_detections(reference, reference, heads, (64, 64))
    assert (same.f1, same.matched, same.misses, same.extras, same.mean_abs_score_diff) == (1.0, 3, 0, 0, 0.0)
    # one box changes class (a miss and an extra), one loses confidence, one is unchanged
    candidate = {"head0": _head_map([(0, 0, 1, 2.0), (2, 2, 2, 4.0), (3, 0, 2, 4.0)])}
    changed = compare_detections(reference, candidate, heads, (64, 64))
    assert (changed.matched, changed.misses, changed.extras) == (2, 1, 1)
    assert changed.f1 == pytest.approx(2 * 2 / 6)
    sigmoid = 1 / (1 + np.exp(-np.array([4.0, 2.0, 8.0])))
    assert changed.mean_abs_score_diff == pytest.approx((sigmoid[0] - sigmoid[1]) * sigmoid[2] / 2, rel=1e-4)


def test_detection_agreement_counts_scores_near_the_threshold_and_bootstraps_f1() -> None:
    heads = [HeadSpec(((20.0, 20.0),), 3)]
    class_score = 1 / (1 + np.exp(-8.0))
    logit = [float(np.log(p / (1 - p))) for p in (0.26 / class_score, 0.23 / class_score, 0.9)]
    near = {"head0": _head_map([(0, 0, 1, logit[0]), (2, 2, 0, logit[1]), (3, 0, 2, logit[2])])}
    agreement = compare_detections(near, near, heads, (64, 64))
    # 0.26 is a detection near 0.25, 0.23 a candidate just below it, 0.9 neither
    assert (agreement.float_detections, agreement.near_threshold) == (2, 2)
    assert agreement.f1_interval() == (1.0, 1.0) and agreement.per_input == [(2, 2, 2)]
    # two inputs: one agrees fully, the other loses both detections; the interval spans both outcomes
    both = {"head0": np.concatenate([near["head0"], near["head0"]])}
    lost = {"head0": np.concatenate([near["head0"], _head_map([])])}
    split = compare_detections(both, lost, heads, (64, 64))
    assert split.per_input == [(2, 2, 2), (2, 0, 0)] and split.f1 == pytest.approx(4 / 6)
    low, high = split.f1_interval()
    assert low == 0.0 and high == 1.0


def _outlier_relu_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """conv → relu → conv fed Student-t₄ inputs: MinMax spends u8 steps on the rare extremes, MSE clips them."""
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["h"], name="relu"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="conv_b")]
    model = make_model(nodes, [("x", np.float32, [1, 3, 16, 16])], [("y", np.float32, None)],
                       {"w1": w1, "b1": np.zeros(8, np.float32), "w2": w2, "b2": np.zeros(4, np.float32)})
    inputs = rng.standard_t(4, (28, 3, 16, 16)).astype(np.float32)
    return model, inputs


def _scales(path) -> dict[str, tuple[float, int]]:
    """Each quantized activation's (scale, element type), from the QuantizeLinear nodes of a QDQ model."""
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {node.input[0]: (float(values[node.input[1]]), values[node.input[2]].dtype.itemsize)
            for node in model.graph.node if node.op_type == "QuantizeLinear" and node.input[1] in values}


def test_clip_and_u16_steps_write_what_they_measured(tmp_path) -> None:
    model, inputs = _outlier_relu_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", inputs)
    report = quantize_onnx(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", QuantizeOptions(
        calib=tmp_path / "calib.npy", held_out=4, steps=(MSE_CLIP, MIXED_U16), latency_rounds=0,
        latency_budget=100.0, step_models=tmp_path))
    names = [s.name for s in report.steps]
    assert names[:2] == ["ORT quantize_static", "+ MSE-optimal activation ranges"]
    assert any(name.startswith("+ u16 (1 outputs + 0 worst)") for name in names)
    plain, clipped = _scales(tmp_path / "step0.int8.onnx"), _scales(tmp_path / "step1.int8.onnx")
    assert clipped["x"] == plain["x"]  # the graph input keeps its calibrated range
    narrowed = [name for name in plain if clipped[name][0] < plain[name][0]]
    assert narrowed and all(clipped[name][0] <= plain[name][0] for name in plain)
    u16 = _scales(tmp_path / f"step{names.index('+ u16 (1 outputs + 0 worst)')}.int8.onnx")
    output = "y_QuantizeLinear_Input"  # ORT's name for the conv's result that feeds the graph output's Q
    assert u16[output][1] == 2 and plain[output][1] == 1  # the graph output in 16 bits
    assert all(s.noise_db is not None for s in report.steps[1:])
    assert report.draw_noise_db is not None and "rounding draw: σ" in report.format()  # measured once, said
    redrawn = report.draw_noise_db >= NEGLIGIBLE_DRAW_DB  # each candidate redrawn twice, where luck matters
    assert all(("(means over 3 and" in s.note) == redrawn for s in report.steps[1:])
    # activation statistics cover the tensors ORT calibrated, and their histograms hold every value
    stats = activation_stats(model, {"h": (0.0, 50.0)}, inputs[:2], "x")
    assert [s.name for s in stats] == ["h"] and stats[0].counts.sum() == 2 * 8 * 16 * 16


def test_an_opset_11_model_is_converted_so_per_channel_int8_loads(tmp_path) -> None:
    rng = np.random.default_rng(5)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       [("x", np.float32, [1, 3, 8, 8])], [("y", np.float32, None)],
                       {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "b": np.zeros(4, np.float32)},
                       opset=11)
    onnx.save(model, tmp_path / "old.onnx")
    np.save(tmp_path / "calib.npy", rng.random((6, 3, 8, 8)).astype(np.float32))
    report = quantize_onnx(tmp_path / "old.onnx", tmp_path / "old.int8.onnx", QuantizeOptions(
        calib=tmp_path / "calib.npy", held_out=2, steps=(), latency_rounds=0, sensitivity="never"))
    assert "opset 11 converted to 13" in " ".join(report.notes) and report.min_snr_db > 20
    assert report.draw_noise_db is None  # no steps to judge: no draws spent
    written = onnx.load(str(tmp_path / "old.int8.onnx"))
    assert written.opset_import[0].version >= 13 and any(n.op_type == "DequantizeLinear" for n in written.graph.node)
