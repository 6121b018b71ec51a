"""`foldkit bench`: the JSON says what ran, every number is there, the files are readable."""

import csv
import json

import pytest

from foldkit.bench import bn_nodes_ran, parse_variants
from foldkit.cli import main


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    paths = {k: folder / f"b.{k}" for k in ("json", "csv", "png")}
    code = main(["bench", "yolov3-tiny", "--img-size", "64", "--rounds", "3", "--warmup", "1", "--batch", "1,2",
                 "--json", str(paths["json"]), "--csv", str(paths["csv"]), "--plot", str(paths["png"])])
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
        assert s["session_p50_ms"] > 0 and r["model_bytes"] > 0 and r["peak_rss_mb"] > 50


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
