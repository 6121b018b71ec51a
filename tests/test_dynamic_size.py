"""Any input size: the network stride, what refuses a dynamic size, and dynamic exports against PyTorch.

The parity tests build yolov3-tiny at each size in PyTorch (the builder plans every shape for that
size) and hold the one dynamic ONNX file to it. Their tolerance comes from a float64 run of the same
PyTorch model: the ONNX model's error against it may be at most 10× the float32 PyTorch model's own.
A graph that baked the traced size anywhere (a grid, a stride, a Resize to fixed sizes, a reshape)
fails at the other sizes by whole cells, not by float noise.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from foldkit.cli import main
from foldkit.darknet.build import build_model
from foldkit.darknet.builtin import builtin_cfg_path
from foldkit.darknet.decode import YoloDecoder
from foldkit.darknet.export import export_darknet, load_network
from foldkit.darknet.plan import plan_network
from foldkit.darknet.sizes import network_stride, require_dynamic
from foldkit.darknet.weights import load_weights, save_weights
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import STRIDE_KEY, read_metadata

TRACE = 64  # the test cfg's [net] size: every dynamic export is traced there, and run elsewhere
SIZES = [(96, 96), (160, 160), (64, 128)]  # three sizes, one rectangular (height x width)


def _tiny_cfg(folder: Path, size: int = TRACE) -> Path:
    text = builtin_cfg_path("yolov3-tiny").read_text()
    path = folder / f"tiny{size}.cfg"
    path.write_text(text.replace("width=416", f"width={size}").replace("height=416", f"height={size}"))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov3-tiny at 64×64 with seeded weights saved as .weights, and its dynamic exports on both routes."""
    folder = tmp_path_factory.mktemp("dynamic")
    cfg = _tiny_cfg(folder)
    network, _ = load_network(cfg)
    save_weights(network, folder / "tiny.weights")
    weights = folder / "tiny.weights"
    files = {"cfg": cfg, "weights": weights}
    for name, route, extra in (("direct", "direct", {}), ("torch", "torchscript", {}),
                               ("decoded", "torchscript", {"decode": True})):
        files[name] = folder / f"{name}.onnx"
        export_darknet(cfg, files[name], weights=weights, img_size="dynamic", exporter=route, batch=None, **extra)
    return files


def _reference(cfg: Path, weights: Path, size: tuple[int, int], decode: bool = False):
    network = build_model(cfg, size)
    load_weights(network, weights)
    model = YoloDecoder(network) if decode else network
    return model.eval(), copy.deepcopy(model).double().eval()


def _outputs(model, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(x).to(next(model.parameters()).dtype))
    return [o.double().numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("route", ["direct", "torch", "decoded"])
def test_dynamic_export_matches_pytorch_built_at_each_size(tiny, route):
    _check_parity(tiny, route, SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["direct", "decoded"])
def test_dynamic_export_at_deployment_sizes(tiny, route):
    _check_parity(tiny, route, [(320, 320), (416, 416), (608, 608), (256, 416)])


@pytest.mark.slow
def test_dynamo_dynamic_export(tiny, tmp_path):
    """torch.export is told height and width are stride × blocks; the decoded graph holds at every size."""
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    tiny = dict(tiny, dynamo=tmp_path / "dynamo.onnx")
    export_darknet(tiny["cfg"], tiny["dynamo"], weights=tiny["weights"], img_size="dynamic", exporter="dynamo",
                   decode=True, batch=None, opset=18)
    _check_parity(tiny, "dynamo", SIZES, decode=True)


def _check_parity(tiny, route: str, sizes: list[tuple[int, int]], decode: bool = False) -> None:
    session = ort.InferenceSession(str(tiny[route]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert read_metadata(onnx.load(str(tiny[route]), load_external_data=False))[STRIDE_KEY] == "32"
    for k, size in enumerate(sizes):
        model32, model64 = _reference(tiny["cfg"], tiny["weights"], size, decode=decode or route == "decoded")
        x = np.random.default_rng(k).random((2, 3, *size), dtype=np.float32)
        got = session.run(None, {"images": x})
        want, float32 = _outputs(model64, x), _outputs(model32, x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w, f in zip(got, want, float32, strict=True):
            noise = max(float(np.abs(f - w).max()), 1e-7 * float(np.abs(w).max()))
            assert np.isfinite(g).all() and float(np.abs(g - w).max()) <= 10 * noise, (route, size)


def test_dynamic_nms_graph_equals_the_numpy_path_at_another_size(tiny, tmp_path):
    """The NMS tail on a dynamic decoder: same detections as foldkit's numpy decode + NMS at a size never traced."""
    from foldkit.deploy.engines.batch import YoloRunner
    from foldkit.deploy.letterbox import Letterbox
    from foldkit.deploy.nms_graph import NmsSettings
    from foldkit.deploy.nms_model import NmsRunner
    from foldkit.deploy.yolo import heads_from_metadata
    from foldkit.runtime import Predictor

    nms = tmp_path / "nms.onnx"
    export_darknet(tiny["cfg"], nms, weights=tiny["weights"], img_size="dynamic", nms=NmsSettings(max_det=50))
    size = (96, 160)
    nms_runner = NmsRunner(Predictor(nms, providers="cpu"), NmsSettings(max_det=50), img_size=size)
    raw = Predictor(tiny["direct"], providers="cpu", img_size=size)
    numpy_runner = YoloRunner(raw, heads_from_metadata(raw.metadata), img_size=size)
    x = np.random.default_rng(3).random((1, 3, *size), dtype=np.float32)
    frame = [Letterbox.identity(size[1], size[0])]
    got = nms_runner.detect(x, frame, conf=0.05, iou=0.45, names=None)[0]
    want = numpy_runner.detect(x, frame, conf=0.05, iou=0.45, names=None)[0][:50]
    assert len(want) > 3 and [d.class_id for d in got] == [d.class_id for d in want]
    assert max(abs(g.score - w.score) for g, w in zip(got, want, strict=True)) <= 1e-5
    assert max(float(np.abs(np.subtract(g.box, w.box)).max()) for g, w in zip(got, want, strict=True)) <= 1e-3


def test_network_stride_and_fixed_sizes_off_the_stride():
    assert network_stride(plan_network("yolov3-tiny")) == (32, 32)
    assert network_stride(plan_network("darknet53")) == (32, 32)  # [avgpool] ends the maps; it adds no stride
    with pytest.raises(FoldkitError, match=r"not a multiple of the network stride 32"):
        plan_network("yolov3-tiny", 100)  # a route would concatenate 7×7 with 8×8
    assert plan_network("darknet53", (100, 75)).layers[-1].shape == (1000, 1, 1)  # a classifier takes any size
    assert plan_network("yolov3-tiny", (256, 416)).layers[-1].shape == (255, 16, 26)


CONV = "[convolutional]\nfilters=8\nsize=3\nstride={}\npad=1\nactivation=leaky\n\n"
RESHAPING = {  # layers whose ONNX reads the map's size at run time: at every size they equal PyTorch built there
    "strided [shortcut] (resnets)": CONV.format(1) + CONV.format(2) + "[shortcut]\nfrom=-2\nactivation=linear\n",
    "[reorg] (yolov2's passthrough)": CONV.format(1) + CONV.format(2) + "[route]\nlayers=-2\n\n[reorg]\nstride=2\n\n"
                                      "[route]\nlayers=-1,-3\n",
    "[reorg3d] reverse=1": CONV.format(2).replace("filters=8", "filters=16")
                           + "[reorg3d]\nstride=2\nreverse=1\n\n" + CONV.format(2),
}


@pytest.mark.parametrize("route", ["direct", "torchscript"])
@pytest.mark.parametrize("layers", list(RESHAPING))
def test_reshaping_layers_take_any_size(tmp_path, route, layers):
    """pjreddie's strided [shortcut] samples every step-th pixel to the map's end; [reorg] reinterprets
    Darknet's buffer with reshapes computed from the map's run-time shape."""
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n\n" + RESHAPING[layers])
    network, _ = load_network(cfg)
    save_weights(network, tmp_path / "w.weights")
    export_darknet(cfg, tmp_path / "net.onnx", weights=tmp_path / "w.weights", img_size="dynamic", exporter=route)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    for size in [(48, 48), (24, 40)]:
        model32, model64 = _reference(cfg, tmp_path / "w.weights", size)
        x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
        (got,), (want,), (f32,) = session.run(None, {"images": x}), _outputs(model64, x), _outputs(model32, x)
        assert got.shape == want.shape and got.shape[2:] != (16, 16)
        assert float(np.abs(got - want).max()) <= 10 * max(float(np.abs(f32 - want).max()), 1e-7)


POOLS = ("[maxpool]\nsize=2\nstride=2\n\n[maxpool]\nsize=3\nstride=2\n\n[maxpool]\nsize=2\nstride=1\n\n"
         "[local_avgpool]\nsize=3\nstride=2\n\n" + CONV.format(2) + "[avgpool]\n")


@pytest.mark.parametrize("route", ["direct", "torchscript"])
def test_pool_padding_holds_at_odd_sizes(tmp_path, route):
    """Darknet's pool pads come from size, stride and padding alone (ceil-mode windows, trailing −∞ pads):
    a classifier traced at 32×32 runs at odd sizes exactly as PyTorch built at each of them."""
    cfg = tmp_path / "pools.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n\n" + CONV.format(1) + POOLS)
    network, _ = load_network(cfg)
    save_weights(network, tmp_path / "w.weights")
    export_darknet(cfg, tmp_path / "pools.onnx", weights=tmp_path / "w.weights", img_size="dynamic", exporter=route)
    session = ort.InferenceSession(str(tmp_path / "pools.onnx"), providers=["CPUExecutionProvider"])
    for size in [(33, 47), (17, 21), (50, 9)]:
        model32, model64 = _reference(cfg, tmp_path / "w.weights", size)
        x = np.random.default_rng(1).random((1, 3, *size), dtype=np.float32) * 2 - 1
        (got,), (want,), (f32,) = session.run(None, {"images": x}), _outputs(model64, x), _outputs(model32, x)
        assert got.shape == want.shape == (1, 8, 1, 1)
        assert float(np.abs(got - want).max()) <= 10 * max(float(np.abs(f32 - want).max()), 1e-7)


SIZE_BOUND = {
    "[connected]\noutput=10\nactivation=linear": "flattens its input to a fixed length",
    "[local]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky": "own weights at each",
    "[crop]\ncrop_height=8\ncrop_width=8": "crops a fixed 8×8 window",
    "[maxpool]\nmaxpool_depth=1\nout_channels=2": "reshapes its input to its fixed height and width",
    "[softmax]": "flattened C·H·W",
}


@pytest.mark.parametrize("section", list(SIZE_BOUND))
def test_size_bound_layers_refuse_a_dynamic_size_naming_the_cfg_line(tmp_path, section, capsys):
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=16\nheight=16\nchannels=3\n\n[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n"
                   f"activation=leaky\n\n{section}\n")
    with pytest.raises(FoldkitError, match=SIZE_BOUND[section]) as refused:
        require_dynamic(cfg, plan_network(cfg))
    assert str(refused.value).startswith(f"{cfg}:13: [")
    assert main(["export", str(cfg), "--img-size", "dynamic", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{cfg}:13:" in err[0] and not (tmp_path / "x.onnx").exists()


def test_after_a_global_layer_sizes_no_longer_matter(tmp_path):
    """[connected] after [avgpool] reads C values at any size: a dynamic classifier, fixed output shape."""
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n"
                   "activation=leaky\n\n[avgpool]\n\n[connected]\noutput=5\nactivation=linear\n\n[softmax]\n")
    assert require_dynamic(cfg, plan_network(cfg)) == (2, 2)
    path = tmp_path / "net.onnx"
    export_darknet(cfg, path, img_size="dynamic")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[1:] == [5]
    out = session.run(None, {"images": np.random.default_rng(0).random((1, 3, 10, 14), dtype=np.float32)})[0]
    assert out.shape == (1, 5) and abs(float(out.sum()) - 1.0) < 1e-5


def test_inspect_says_the_stride_and_whether_dynamic_is_possible(tmp_path):
    from foldkit.inspect import inspect_target

    assert inspect_target("yolov3-tiny").endswith(
        "Input size: network stride 32; --img-size dynamic exports any multiple of it")
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=16\nheight=16\nchannels=3\n\n" + CONV.format(2) + "[connected]\noutput=3\n")
    assert f"stride 2; --img-size dynamic is refused: {cfg}:13: [connected] layer 1" in inspect_target(cfg)


def test_image_size_options():
    import argparse

    from foldkit.cli import options

    assert options.image_size("320") == 320 and options.image_size("256x416") == (256, 416)
    assert options.image_size("64X64") == 64 and options.export_image_size("dynamic") == "dynamic"
    for bad in ("0", "256x", "x416", "2x3x4", "dynamic", "-32"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.image_size(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        options.export_image_size("dynamicx3")
    with pytest.raises(FoldkitError, match="img_size must be"):
        export_darknet("yolov3-tiny", None, img_size="big")
