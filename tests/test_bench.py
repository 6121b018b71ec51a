"""`foldkit bench`: the JSON says what ran, every number is there, the files are readable."""

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from foldkit.bench import BenchConfig, available_providers, bn_nodes_ran, parse_variants, run_benchmark
from foldkit.bench.runners import input_feeds
from foldkit.cli import main
from foldkit.defaults import INPUT_NAME
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import node_counts
from foldkit.runtime import create_session, provider_preference, random_inputs


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    paths = {k: folder / f"b.{k}" for k in ("json", "csv", "png")}
    code = main(["bench", "yolov3-tiny", "--img-size", "64", "--rounds", "3", "--warmup", "1", "--batch", "1,2",
                 "--no-memory", "--json", str(paths["json"]), "--csv", str(paths["csv"]), "--plot", str(paths["png"])])
    assert code == 0
    return json.loads(paths["json"].read_text()), paths


def test_every_variant_and_batch_is_present_with_all_samples(bench_run):
    data, _ = bench_run
    rows = data["rows"]
    assert {(r["variant"], r["batch"]) for r in rows} == {(v, b) for v in parse_variants("all") for b in (1, 2)}
    for r in rows:
        assert len(r["samples_ms"]) == 3 and all(s > 0 for s in r["samples_ms"])
        s = r["stats"]
        assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["images_per_s"] == pytest.approx(r["batch"] * 1e3 / s["p50_ms"])
        assert s["session_p50_ms"] > 0 and r["model_bytes"] > 0 and r["peak_rss_mb"] is None  # --no-memory


def test_peak_memory_is_measured_per_variant_in_a_fresh_process(tmp_path):
    """Two variants of each runtime (the memory processes cost seconds each, so not all ten here)."""
    out = tmp_path / "m.json"
    assert main(["bench", "yolov3-tiny", "--img-size", "64", "--rounds", "1", "--warmup", "1",
                 "--variants", "ort-unfolded-noopt,torch-folded", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["ort-unfolded-noopt", "torch-folded"]
    assert all(r["peak_rss_mb"] > 50 for r in rows)  # torch and onnxruntime alone take more than that


def test_ratios_are_against_the_baseline(bench_run):
    data, _ = bench_run
    assert data["config"]["baseline"] == "ort-unfolded-noopt"
    for batch in (1, 2):
        rows = {r["variant"]: r for r in data["rows"] if r["batch"] == batch}
        base = rows["ort-unfolded-noopt"]["stats"]["p50_ms"]
        assert rows["ort-unfolded-noopt"]["ratio"] == 1.0
        for r in rows.values():
            assert r["ratio"] == pytest.approx(r["stats"]["p50_ms"] / base)


def test_rows_ran_what_they_claim(bench_run):
    """Checked on the graph ORT saved after optimizing, not assumed from the settings."""
    data, _ = bench_run
    from foldkit.bench import Row

    rows = {r["variant"]: Row(**r) for r in data["rows"] if r["batch"] == 1}
    assert rows["ort-unfolded-noopt"].ran_ops["BatchNormalization"] == 11
    assert bn_nodes_ran(rows["ort-unfolded-nofusion"]) == 11  # BN still separate (ORT may recast it as NCHWc Conv)
    assert bn_nodes_ran(rows["ort-unfolded-default"]) == 0  # ORT fused them itself
    for name in ("ort-folded-disable", "ort-folded-basic", "ort-folded-extended", "ort-folded-all"):
        assert rows[name].model_ops.get("BatchNormalization", 0) == 0 and bn_nodes_ran(rows[name]) == 0
    assert rows["ort-unfolded-noopt"].model_ops["BatchNormalization"] == 11
    assert rows["torch-unfolded"].ran_ops["BatchNorm2d"] == 11 and "BatchNorm2d" not in rows["torch-folded"].ran_ops
    assert all(r.provider_used in ("CPUExecutionProvider", "torch-cpu") for r in rows.values())


def test_environment_is_recorded(bench_run):
    data, _ = bench_run
    env = data["environment"]
    assert env["cores"] >= 1 and {"onnxruntime", "onnx", "torch", "foldkit"} <= set(env["versions"])
    assert data["config"]["rounds"] == 3 and data["config"]["opset"] == 17


def test_csv_loads_and_png_is_valid(bench_run):
    data, paths = bench_run
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(parse_variants("all")) * 2 * 3
    assert sorted(float(r["latency_ms"]) for r in rows) == pytest.approx(
        sorted(s for r in data["rows"] for s in r["samples_ms"]), abs=1e-5)
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(str(paths["png"])).shape[2] in (3, 4)


def test_onnx_input_is_folded_for_the_folded_side(tmp_path, capsys):
    model = tmp_path / "u.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(model), "--img-size", "64", "--no-fold", "--random-weights", "1",
                 "--batch", "dynamic"]) == 0
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--variants", "ort-unfolded-noopt,ort-folded-disable", "--rounds", "2",
                 "--warmup", "1", "--no-memory", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["ran_ops"].get("BatchNormalization", 0) for r in rows] == [11, 0]


@pytest.mark.parametrize("args,words", [
    (["bench", "missing.onnx"], "no such file"),
    (["bench", "yolov3-tiny", "--batch", "0"], "at least 1"),
    (["bench", "yolov3-tiny", "--variants", "ort-turbo"], "unknown variant(s) ort-turbo"),
    (["bench", "yolov3-tiny", "--providers", "quantum"], "execution provider 'quantum' is not available"),
    (["bench", "nonexistent-net"], "not a built-in model"),
])
def test_bad_input_exits_2_with_one_line(args, words, capsys):
    assert main(args + ["--img-size", "64", "--rounds", "1", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_session_creation_is_sampled_every_round(bench_run):
    """A median with its min–max spread over the rounds, not one sample that caught the machine busy."""
    data, paths = bench_run
    for r in data["rows"]:
        samples, s = r["session_samples_ms"], r["stats"]
        assert len(samples) == data["config"]["rounds"] == 3 and all(x > 0 for x in samples)
        assert len(set(samples)) == 3  # three creations timed, not one copied
        assert (s["session_min_ms"], s["session_p50_ms"], s["session_max_ms"]) == pytest.approx(
            (min(samples), sorted(samples)[1], max(samples)))
    with open(paths["csv"]) as handle:
        csv_sessions = sorted(float(r["session_ms"]) for r in csv.DictReader(handle))
    assert csv_sessions == pytest.approx(sorted(x for r in data["rows"] for x in r["session_samples_ms"]), abs=1e-3)


@pytest.fixture(scope="module")
def unfolded_tiny(tmp_path_factory):
    """yolov3-tiny at 64 px, BatchNorms kept, dynamic batch."""
    path = tmp_path_factory.mktemp("tiny") / "u.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(path), "--img-size", "64", "--no-fold", "--random-weights", "1",
                 "--batch", "dynamic"]) == 0
    return path


def quantize_qdq(model: Path, target: Path) -> Path:
    """Static int8 QDQ quantization by ONNX Runtime, calibrated on two seeded inputs (stands in for foldkit's)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Seeded(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{INPUT_NAME: np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32)}
                               for i in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(model), str(target), Seeded(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"])
    return target


def _int8_config(model: Path, **int8) -> BenchConfig:
    return BenchConfig(model=str(model), variants=["ort-folded-all", "ort-int8-default"], batches=[2],
                       providers=["cpu"], warmup=1, rounds=2, measure_memory=False, **int8)


def test_int8_row_times_the_given_quantized_file(unfolded_tiny, tmp_path):
    int8 = quantize_qdq(unfolded_tiny, tmp_path / "int8.onnx")
    result = run_benchmark(_int8_config(unfolded_tiny, int8_model=int8))
    row = {r.variant: r for r in result.rows}["ort-int8-default"]
    assert row.description == "int8 (QDQ), ORT defaults" and row.batch == 2
    assert row.model_bytes == int8.stat().st_size
    assert row.model_ops == node_counts(onnx.load(str(int8))) and row.model_ops["QuantizeLinear"] > 0
    assert row.ran_ops.get("QLinearConv", 0) > 0  # ORT ran integer convolutions, not the float model
    assert len(row.samples_ms) == len(row.session_samples_ms) == 2 and row.ratio > 0
    assert json.loads(json.dumps(result.to_dict()))["config"]["int8_model"] == str(int8)


def test_int8_row_quantizes_the_folded_model_through_the_hook(unfolded_tiny):
    calls = []

    def hook(folded: Path, target: Path) -> Path:
        calls.append((node_counts(onnx.load(str(folded))), target.parent == folded.parent))
        out = quantize_qdq(folded, target)
        calls.append(out.stat().st_size)
        return out

    result = run_benchmark(_int8_config(unfolded_tiny, quantize=hook))
    (folded_ops, beside), size = calls
    assert "BatchNormalization" not in folded_ops and folded_ops["Conv"] == 13 and beside
    row = {r.variant: r for r in result.rows}["ort-int8-default"]
    assert row.model_bytes == size and row.model_ops["DequantizeLinear"] > 0
    assert result.config["quantize"].endswith("hook")


@pytest.mark.parametrize("int8,words", [
    ({}, "needs an int8 model file"),
    ({"int8_model": Path("missing-int8.onnx")}, "missing-int8.onnx: no such file"),
    ({"int8_model": Path("x.onnx"), "quantize": quantize_qdq}, "not both"),
])
def test_int8_row_without_one_model_is_refused(unfolded_tiny, int8, words):
    with pytest.raises(FoldkitError, match=words):
        run_benchmark(_int8_config(unfolded_tiny, **int8))


def test_all_has_the_int8_row_only_when_there_is_a_model_for_it():
    assert "ort-int8-default" not in parse_variants("all")
    assert parse_variants("all", int8=True) == [*parse_variants("all"), "ort-int8-default"]


def test_feeds_and_providers_come_from_the_runtime(unfolded_tiny):
    """The bench reuses foldkit.runtime's inputs and provider order instead of keeping its own."""
    feeds = input_feeds(unfolded_tiny, batch=2, seed=5)
    expected = random_inputs(create_session(unfolded_tiny, opt_level="disable"), seed=5, batch=2)
    assert list(feeds) == list(expected) == [INPUT_NAME] and feeds[INPUT_NAME].shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(feeds[INPUT_NAME], expected[INPUT_NAME])
    assert not np.array_equal(feeds[INPUT_NAME], input_feeds(unfolded_tiny, batch=2, seed=6)[INPUT_NAME])
    providers = available_providers()
    assert providers[0] == "CPUExecutionProvider" and sorted(providers) == sorted(provider_preference("auto"))


def test_a_fixed_batch_model_refuses_another_batch(tmp_path, capsys):
    """random_inputs keeps a fixed batch dim, so the bench must refuse rather than time batch 1 as batch 2."""
    model = tmp_path / "fixed.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(model), "--img-size", "64", "--random-weights", "1"]) == 0
    assert main(["bench", str(model), "--variants", "ort-folded-disable", "--batch", "2", "--rounds", "1",
                 "--no-memory"]) == 2
    assert "batch size is fixed at 1; cannot run batch 2" in capsys.readouterr().err
