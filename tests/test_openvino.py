"""OpenVINO as a backend: parity with ORT against a float64 reference, check, the predictor, bench rows, errors.

Every test runs OpenVINO's real CPU plugin on small real models (yolov3-tiny at 64 px with seeded
weights, unfolded and folded by foldkit), and asserts on numbers and on what OpenVINO says it ran.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'foldkit[openvino]')")

from foldkit.bench import BenchConfig, format_table, run_benchmark
from foldkit.darknet import export
from foldkit.defaults import INPUT_NAME
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import fold_onnx
from foldkit.parity import compare_onnx_models, torch_outputs
from foldkit.runtime import (
    CPU_PROVIDER,
    OPENVINO,
    PrecisionWarning,
    Predictor,
    backend_preference,
    open_backend,
    random_inputs,
)
from foldkit.runtime.openvino import signed_int8_activations

SIZE, SEED = 64, 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov3-tiny at 64 px, seeded weights, dynamic batch: the unfolded ONNX, foldkit's fold of it, the torch net."""
    folder = tmp_path_factory.mktemp("ov")
    unfolded, folded = folder / "unfolded.onnx", folder / "folded.onnx"
    export.export_darknet("yolov3-tiny", unfolded, seed=SEED, img_size=SIZE, batch=None, fold=False)
    model, report = fold_onnx(onnx.load(str(unfolded)))
    assert report.folded
    onnx.save(model, str(folded))
    net, _ = export.load_network("yolov3-tiny", seed=SEED, img_size=SIZE)
    return {"unfolded": unfolded, "folded": folded, "net": net}


@pytest.mark.parametrize("kind", ["unfolded", "folded"])
def test_openvino_fp32_is_as_close_to_float64_as_ort(tiny, kind):
    """fp32 noise is measured, not assumed: OpenVINO's error against a float64 run of the same network must stay
    within 10× ORT CPU's own error (bf16 would be ~1000× off; a wrong layer far more)."""
    ov = open_backend(tiny[kind], "openvino", precision="fp32")
    ort = open_backend(tiny[kind], "cpu", opt_level="disable")
    feeds = random_inputs(ort, seed=0, batch=2)
    assert all(np.array_equal(feeds[k], v) for k, v in random_inputs(ov, seed=0, batch=2).items())
    reference = torch_outputs(tiny["net"], feeds[INPUT_NAME], float64=True)
    got_ov, got_ort = ov.run(feeds), ort.run(feeds)
    assert list(got_ov) == list(got_ort) == ort.output_names
    for out_ov, out_ort, ref in zip(got_ov.values(), got_ort.values(), reference, strict=True):
        assert out_ov.shape == ref.shape and np.isfinite(out_ov).all()
        err_ov, err_ort = np.abs(out_ov - ref).max(), np.abs(out_ort - ref).max()
        floor = 1e-6 * np.abs(ref).max()  # ORT could be exact on a lucky machine; fp32 noise is never below this
        assert err_ov <= 10 * max(err_ort, floor), (kind, err_ov, err_ort)
    record = ov.record()
    assert record["runtime"] == "openvino" and record["precision_hint"] == "f32"
    assert record["inference_precision"] == "f32" and record["convolution_precisions"] == ["f32"]
    assert record["threads"] >= 1 and record["device"].startswith("CPU")


def test_openvino_fuses_batchnorm_itself(tiny):
    """The unfolded graph's BatchNorms do not survive OpenVINO's compilation: both models run 13 convolutions."""
    ran = {kind: open_backend(tiny[kind], "openvino").ran_ops() for kind in ("unfolded", "folded")}
    assert ran["unfolded"] == ran["folded"] and ran["folded"]["Convolution"] == 13
    assert not any("Norm" in kind for kind in ran["unfolded"])


def test_default_precision_is_read_back_from_openvino(tiny):
    """Without a hint OpenVINO picks (bf16 on AMX CPUs, f32 on this AVX2 EPYC): the record says what its convolutions
    really ran in, and the precision it reports is among them."""
    record = open_backend(tiny["folded"], "openvino", precision="default").record()
    assert record["precision_hint"].startswith("none")
    # on an AMX Xeon a few convolutions (e.g. the 3-channel first one) may stay f32 beside the bf16 ones
    assert record["inference_precision"] in record["convolution_precisions"]
    assert set(record["convolution_precisions"]) <= {"f32", "bf16", "f16"}


def test_default_precision_that_cannot_compile_falls_back_to_f32_said_and_recorded(tiny, tmp_path):
    """ORT's quantize_static quantizes activations to signed int8 by default, and OpenVINO's bf16 convolutions (its
    default on AMX CPUs) have no kernel for them. Where an explicit bf16 fails to compile, the default is retried at
    f32 with a PrecisionWarning naming the reason, and the record says f32; where bf16 compiles (or the CPU has no
    bf16 and OpenVINO runs f32), the default compiles as it is, without a word."""
    from test_bench import quantize_qdq  # ORT's static QDQ quantizer, its defaults (QInt8 activations)

    int8 = quantize_qdq(tiny["folded"], tmp_path / "int8.onnx")
    assert signed_int8_activations(int8) and not signed_int8_activations(tiny["folded"])
    try:
        open_backend(int8, "openvino", precision="bf16")
        bf16_compiles = True
    except FoldkitError as exc:
        assert "at bf16" in str(exc) and str(int8) in str(exc)
        bf16_compiles = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = open_backend(int8, "openvino", precision="default").record()
    said = [str(w.message) for w in caught if issubclass(w.category, PrecisionWarning)]
    assert {"i8", "u8"} & set(record["convolution_precisions"])  # integer convolutions either way
    if bf16_compiles:
        assert not said and record["precision_hint"].startswith("none")
    else:
        assert len(said) == 1 and "signed int8" in said[0] and said[0].startswith(str(int8))
        assert record["precision_hint"].startswith("f32 (") and record["inference_precision"] == "f32"


def test_check_candidate_on_openvino_against_ort(tiny):
    report = compare_onnx_models(tiny["folded"], tiny["unfolded"], providers="openvino", reference_providers="cpu",
                                 batch=2)
    assert report.passed, report.format()
    assert [r["runtime"] for r in report.runtimes] == ["openvino", "onnxruntime"]
    assert report.runtimes[0]["precision_hint"] == "f32" and report.runtimes[1]["provider"] == CPU_PROVIDER
    assert "candidate: openvino" in report.settings and "reference: onnxruntime CPUExecutionProvider" in report.settings
    assert json.loads(json.dumps(report.to_dict()))["runtimes"][0]["inference_precision"] == "f32"


def test_predictor_on_openvino_matches_ort(tiny):
    ov = Predictor(tiny["folded"], providers="openvino", strict=True)
    ort = Predictor(tiny["folded"], providers="cpu", strict=True)
    assert ov.provider == OPENVINO and ov.record()["runtime"] == "openvino" and ov.fixed_batch is None
    images = np.random.default_rng(3).random((3, 3, SIZE, SIZE), dtype=np.float32)
    for a, b in zip(ov(images).values(), ort(images).values(), strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    with pytest.raises(FoldkitError, match="OpenVINO"):
        ov.save_optimized(tiny["folded"].with_name("never.onnx"))
    assert not tiny["folded"].with_name("never.onnx").exists()


def test_backend_names():
    assert backend_preference("openvino") == [OPENVINO, CPU_PROVIDER]
    assert backend_preference(["OpenVINO", "cpu"]) == [OPENVINO, CPU_PROVIDER]
    assert OPENVINO not in backend_preference("auto")  # asked for by name only


def test_output_names_are_the_onnx_outputs_through_identity_chains(tmp_path):
    """Compiling merges x → Relu → Identity → Identity into one tensor; the outputs keep their ONNX names."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("Identity", ["mid"], ["zout"]),
             helper.make_node("Identity", ["zout"], ["aout"])]
    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "zout", "aout")]
    graph = helper.make_graph(nodes, "chain", io_[:1], io_[1:])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    got = open_backend(path, "openvino").run({"x": x})
    assert list(got) == ["zout", "aout"]
    assert all(np.array_equal(v, np.maximum(x, 0)) for v in got.values())


def test_bad_inputs_are_one_line_errors(tiny, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(FoldkitError, match=r"garbage\.onnx: OpenVINO cannot load the model") as caught:
        open_backend(garbage, "openvino")
    assert "\n" not in str(caught.value)
    with pytest.raises(FoldkitError, match="unknown OpenVINO precision"):
        open_backend(tiny["folded"], "openvino", precision="int4")
    backend = open_backend(tiny["folded"], "openvino")
    # OpenVINO itself would run a wrong-sized image without a word; the backend refuses it
    with pytest.raises(FoldkitError, match=r"input 'images' is float32 \[1, 3, 32, 32\]"):
        backend.run({INPUT_NAME: np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(FoldkitError, match="is float64"):
        backend.run({INPUT_NAME: np.zeros((1, 3, SIZE, SIZE))})


def test_bench_rows_for_openvino_beside_ort(tiny, tmp_path):
    """fp32, default-precision and int8 OpenVINO rows, interleaved with ORT's CPU rows in one group."""
    from test_bench import quantize_qdq  # ORT's static QDQ quantizer, seeded calibration

    int8 = quantize_qdq(tiny["folded"], tmp_path / "int8.onnx")
    variants = ["ort-folded-all", "openvino-folded-fp32", "openvino-folded-default", "ort-int8-default",
                "openvino-int8-default"]
    result = run_benchmark(BenchConfig(model=str(tiny["unfolded"]), variants=variants, batches=[1],
                                       providers=["openvino"], warmup=1, rounds=2, measure_memory=False,
                                       int8_model=int8))
    rows = {r.variant: r for r in result.rows}
    assert list(rows) == variants and result.config["providers"] == [CPU_PROVIDER]
    for name in variants:
        assert len(rows[name].samples_ms) == 2 and rows[name].provider_requested == CPU_PROVIDER
    ov32, ovdef, ov8 = (rows[n] for n in ("openvino-folded-fp32", "openvino-folded-default", "openvino-int8-default"))
    assert {ov32.provider_used, ovdef.provider_used, ov8.provider_used} == {OPENVINO}
    assert ov32.runtime["precision_hint"] == "f32" and ovdef.runtime["precision_hint"].startswith("none")
    assert set(ov8.runtime["convolution_precisions"]) & {"u8", "i8"}  # OpenVINO ran integer convolutions
    assert ov32.ran_ops["Convolution"] == 13 and ov32.model_ops == rows["ort-folded-all"].model_ops
    assert rows["ort-folded-all"].runtime["runtime"] == "onnxruntime"
    assert "openvino" in result.environment["versions"]
    table = format_table(result)
    assert "ran: openvino" in table and "precision hint f32" in table


def test_bench_all_with_providers_openvino_adds_its_rows():
    from foldkit.bench import parse_variants

    assert not any(v.startswith("openvino") for v in parse_variants("all"))
    assert {"openvino-folded-fp32", "openvino-folded-default"} <= set(parse_variants("all", openvino=True))
    assert "openvino-int8-default" in parse_variants("all", openvino=True, int8=True)



def test_cli_check_openvino_against_ort(tiny, capsys):
    from foldkit.cli import main

    code = main(["check", str(tiny["folded"]), str(tiny["unfolded"]), "--providers", "openvino",
                 "--reference-providers", "cpu", "--batch", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "candidate: openvino" in out and "precision hint f32, inference precision f32" in out
    assert "reference: onnxruntime CPUExecutionProvider, graph optimizations 'disable'" in out


def test_cli_detect_on_openvino_finds_what_ort_finds(shared_real, tmp_path):
    """pjreddie's trained yolov3-tiny on two real photos: OpenVINO's detections are ORT's, box for box."""
    from foldkit.cli import main

    model = tmp_path / "tiny.onnx"
    assert main(["export", str(shared_real / "yolov3-tiny.cfg"), "--weights", str(shared_real / "yolov3-tiny.weights"),
                 "-o", str(model)]) == 0
    photos = sorted((shared_real / "photos").iterdir())[:2]
    runs = {}
    for provider in ("openvino", "cpu"):
        out = tmp_path / provider
        assert main(["detect", str(model), *map(str, photos), "-o", str(out), "--providers", provider, "--strict",
                     "--names", str(shared_real / "coco.names")]) == 0
        runs[provider] = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    assert runs["openvino"].keys() == runs["cpu"].keys() and len(runs["cpu"]) == 2
    total = 0
    for stem, record in runs["openvino"].items():
        assert record["provider"] == OPENVINO and record["runtime"]["precision_hint"] == "f32"
        reference = runs["cpu"][stem]["detections"]
        assert [d["label"] for d in record["detections"]] == [d["label"] for d in reference]
        for a, b in zip(record["detections"], reference, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-2)
        total += len(reference)
    assert total > 0
