"""foldkit attacked as a hostile user would (issue 9): one case per broken promise.

Every case asserts the exit code, the one-line message (never a traceback), that the inputs are
byte-for-byte unchanged, and that nothing is left behind (no ``.NAME.*.tmp`` staging files).
Most run in-process through ``foldkit.cli.main``; signals, FIFOs, the umask and cross-process
reproducibility need a real process (``python -m foldkit.cli`` from this checkout).
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_graphs import conv_bn_model, make_model

from foldkit.cli import main

REPO = Path(__file__).resolve().parents[1]
IMG = "64"  # small networks keep the whole module fast


# --- helpers ---------------------------------------------------------------------------------------

def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``foldkit ARGS`` in-process: (exit code, stdout, stderr). argparse's exit counts as a code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*args, timeout: float = 120, umask: int | None = None, env: dict | None = None,
                wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """``python -m foldkit.cli ARGS`` from this checkout (so this checkout's foldkit is imported)."""
    command = [sys.executable, "-m", "foldkit.cli", *map(str, args)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=environment, preexec_fn=preexec, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=environment, preexec_fn=preexec, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every regular file under ``roots`` with its bytes."""
    files = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                files[path] = path.read_bytes()
    return files


def leftovers(*roots: Path) -> list[Path]:
    """Staging left behind (OutputTransaction stages in a ``.foldkit-XXXXXXXX.tmp`` folder beside the target)."""
    return [p for root in roots for p in root.rglob(".*") if p.name.endswith(".tmp")]


def assert_refused(code: int, err: str, *words: str, expected: int = 2) -> None:
    assert code == expected, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for word in words:
        assert word in err, err


def elementwise_model(path: Path, op: str, constant: float, shape=(1, 3, 8, 8), input_name: str = "x") -> Path:
    """``y = op(x, constant)``: two such models with a NaN constant differ, yet both output all NaN."""
    node = helper.make_node(op, [input_name, "k"], ["y"], name="op")
    model = make_model([node], [(input_name, np.float32, list(shape))], [("y", np.float32, list(shape))],
                       {"k": np.array(constant, np.float32)})
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    return conv_bn_model(tmp_path / "in.onnx")


@pytest.fixture(scope="module")
def darknet(tmp_path_factory) -> dict[str, Path]:
    """yolov3-tiny as a cfg with its .weights, and exported (folded, metadata included) at 64 px."""
    from foldkit.darknet.build import build_model
    from foldkit.darknet.builtin import builtin_cfg_path
    from foldkit.darknet.weights import save_weights

    folder = tmp_path_factory.mktemp("darknet")
    cfg = folder / "tiny.cfg"
    cfg.write_bytes(builtin_cfg_path("yolov3-tiny").read_bytes())
    weights = folder / "tiny.weights"
    save_weights(build_model(cfg, 64, seed=0), weights)
    exported = folder / "tiny.onnx"
    assert main(["export", str(cfg), "--weights", str(weights), "-o", str(exported), "--img-size", IMG]) == 0
    return {"cfg": cfg, "weights": weights, "onnx": exported}


def photo(path: Path, size=(40, 30), color=(200, 30, 30)) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


# --- inputs destroyed ------------------------------------------------------------------------------

@pytest.mark.parametrize("victim", ["cfg", "weights"])
def test_export_refuses_to_overwrite_its_input(tmp_path, capsys, darknet, victim):
    cfg, weights = tmp_path / "in.cfg", tmp_path / "in.weights"
    cfg.write_bytes(darknet["cfg"].read_bytes())
    weights.write_bytes(darknet["weights"].read_bytes())
    before = snapshot(tmp_path)
    target = {"cfg": cfg, "weights": weights}[victim]
    code, _, err = cli(capsys, "export", cfg, "--weights", weights, "-o", target, "--img-size", IMG)
    assert_refused(code, err, str(target), "is the input")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


@pytest.mark.parametrize("report", ["input", "output"])
def test_fold_report_may_not_replace_the_input_or_the_model(tmp_path, capsys, model, report):
    output = tmp_path / "out.onnx"
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "fold", model, "-o", output, "--report", model if report == "input" else output)
    assert_refused(code, err, "refusing to overwrite")
    assert snapshot(tmp_path) == before and not output.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("inside", [False, True])
def test_detect_output_folder_may_not_be_the_photo_folder(tmp_path, capsys, darknet, inside):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.jpg")
    photo(photos / "b.png")
    before = snapshot(photos)
    out = photos / "drawn" if inside else photos
    code, _, err = cli(capsys, "detect", darknet["onnx"], photos, "-o", out)
    assert_refused(code, err, "input folder")
    assert snapshot(photos) == before and not (photos / "drawn").exists() and not leftovers(photos)


@pytest.mark.parametrize("flag", ["--json", "--csv", "--plot"])
def test_bench_outputs_may_not_replace_the_model(tmp_path, capsys, model, flag):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "bench", model, flag, model, "--rounds", "1", "--no-memory")
    assert_refused(code, err, "is the input")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["fold", "export"])
def test_output_device_node_is_written_through_never_replaced(tmp_path, capsys, model, command):
    args = ["fold", model] if command == "fold" else ["export", "yolov3-tiny", "--img-size", IMG]
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *args, "-o", "/dev/null")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_output_may_not_be_a_directory(tmp_path, capsys, model):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = cli(capsys, "fold", model, "-o", folder)
    assert_refused(code, err, "is a folder")
    assert list(folder.iterdir()) == [] and not leftovers(tmp_path)


def test_output_may_not_be_empty(tmp_path, capsys, model):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "fold", model, "-o", "")
    assert_refused(code, err, "empty")
    assert snapshot(tmp_path) == before and not leftovers(REPO)


# --- false proofs ----------------------------------------------------------------------------------

def test_check_of_two_different_all_nan_models_fails(tmp_path, capsys):
    mul = elementwise_model(tmp_path / "mul.onnx", "Mul", float("nan"))
    add = elementwise_model(tmp_path / "add.onnx", "Add", float("nan"))
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, "check", mul, add)
    assert code == 1, out + err
    assert "PASSED" not in out and "NaN" in out, out
    assert "Traceback" not in err and snapshot(tmp_path) == before


def test_fold_check_cannot_pass_when_the_fold_yields_nan(tmp_path, capsys):
    model = conv_bn_model(tmp_path / "in.onnx", var=-1.0)
    output = tmp_path / "out.onnx"
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, "fold", model, "-o", output, "--check")
    assert code in (1, 2), out + err  # parity failed (all NaN never passes), or the fold is refused
    assert "PASSED" not in out and "Traceback" not in err
    assert not output.exists() and snapshot(tmp_path) == before and not leftovers(tmp_path)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_output_that_is_a_link_to_the_input_is_refused(tmp_path, capsys, model, link):
    alias = tmp_path / "alias.onnx"
    (os.symlink if link == "symlink" else os.link)(model, alias)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "fold", model, "-o", alias)
    assert_refused(code, err, "is the input")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


@pytest.mark.parametrize("stats", [
    pytest.param({"var": -1.0}, id="variance-1"),
    pytest.param({"mean": float("nan")}, id="nan-mean"),
    pytest.param({"var": float("inf")}, id="inf-variance"),
])
def test_bn_that_cannot_fold_is_left_with_its_reason(tmp_path, capsys, stats):
    """A BN whose statistics are not usable is kept as it is; the report says why and stays strict JSON."""
    import json

    model = conv_bn_model(tmp_path / "in.onnx", **stats)
    output, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code, out, err = cli(capsys, "fold", model, "-o", output, "--report", report)
    assert code == 0 and "Traceback" not in err, out + err
    assert "0 folded, 1 not folded" in out, out
    folded = onnx.load(str(output))
    assert all(np.isfinite(numpy_helper.to_array(t)).all() or t.name in ("mean", "var")
               for t in folded.graph.initializer)
    json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the report"))


# --- writes outside the target ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "/tmp/foldkit-hostile-absolute", 'm"\nmax_batch_size: 99\n#',
                                  "..", ".", "a/b", "tab\tname", ""])
def test_triton_model_name_cannot_leave_the_repository(tmp_path, capsys, model, name):
    repo = tmp_path / "deep" / "repo"
    repo.mkdir(parents=True)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "triton", model, "--repo", repo, "--name", name)
    assert_refused(code, err, "not a valid Triton model folder name")
    assert snapshot(tmp_path) == before and list(repo.iterdir()) == []
    assert not Path("/tmp/foldkit-hostile-absolute").exists() and not (tmp_path / "escape").exists()


def external_data_model(folder: Path, location: str) -> Path:
    """The Conv→BN model with its conv weights in external data at ``location`` (relative to ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = conv_bn_model(folder / "in.onnx")
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    data = numpy_helper.to_array(weight).tobytes()
    target = Path(location) if os.path.isabs(location) else folder / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        weight.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def model_command(tmp_path, command: str, model):
    """(empty output folder, arguments) for running ``command`` on an ONNX ``model``."""
    out = tmp_path / "outputs"
    out.mkdir()
    args = {"fold": ["fold", model, "-o", out / "o.onnx"], "check": ["check", model, model],
            "inspect": ["inspect", model], "triton": ["triton", model, "--repo", out / "repo"]}[command]
    return out, args


@pytest.mark.parametrize("command", ["fold", "check", "inspect", "triton"])
@pytest.mark.parametrize("escape", ["relative", "absolute"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, capsys, command, escape):
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    location = "../../secret.bin" if escape == "relative" else str(tmp_path / "secret.bin")
    model = external_data_model(folder, location)
    before = snapshot(tmp_path)
    out, args = model_command(tmp_path, command, model)
    code, _, err = cli(capsys, *args)
    assert_refused(code, err, "external data location", "secret.bin")
    assert snapshot(tmp_path) == before and list(out.iterdir()) == [] and not leftovers(tmp_path)


def test_external_data_inside_the_model_folder_is_served(tmp_path, capsys):
    """The refusal above is not a refusal of all external data."""
    model = external_data_model(tmp_path, "weights/w.bin")
    code, _, err = cli(capsys, "triton", model, "--repo", tmp_path / "repo", "--name", "m")
    assert code == 0, err
    copied = tmp_path / "repo" / "m" / "1" / "weights" / "w.bin"
    assert copied.read_bytes() == (tmp_path / "weights" / "w.bin").read_bytes()


def test_failed_triton_run_keeps_the_existing_entry(tmp_path, capsys, model):
    repo = tmp_path / "repo"
    assert cli(capsys, "triton", model, "--repo", repo, "--name", "m")[0] == 0
    before = snapshot(repo)
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    broken = external_data_model(tmp_path / "other", "w.bin")
    (tmp_path / "other" / "w.bin").unlink()  # the copy fails after the entry is staged
    code, _, err = cli(capsys, "triton", broken, "--repo", repo, "--name", "m")
    assert_refused(code, err, "w.bin")
    assert snapshot(repo) == before and not leftovers(repo)


def test_triton_refuses_tensor_names_that_would_inject_config_fields(tmp_path, capsys):
    model = elementwise_model(tmp_path / "m.onnx", "Add", 1.0, input_name='x"\n  dims: [ 1 ]\n#')
    repo = tmp_path / "repo"
    code, _, err = cli(capsys, "triton", model, "--repo", repo, "--name", "m")
    assert_refused(code, err, "cannot be written into config.pbtxt")
    assert not repo.exists() and not leftovers(tmp_path)


def test_triton_repo_that_is_a_file_is_refused(tmp_path, capsys, model):
    repo = tmp_path / "repo"
    repo.write_bytes(b"not a folder")
    code, _, err = cli(capsys, "triton", model, "--repo", repo)
    assert_refused(code, err, "not a folder")
    assert repo.read_bytes() == b"not a folder"


# --- tracebacks and exit codes ---------------------------------------------------------------------

def corrupt(model: Path, how: str) -> Path:
    proto = onnx.load(str(model))
    weight = next(t for t in proto.graph.initializer if t.name == "W")
    if how == "raw_data_short":
        weight.raw_data = weight.raw_data[:-4]
    elif how in ("STRING", "UNDEFINED"):
        weight.data_type = getattr(onnx.TensorProto, how)
    if how == "utf8_name":
        proto.graph.node[0].name = "NODEXNAME"
        data = proto.SerializeToString().replace(b"NODEXNAME", b"NODE\xff\xfeAME")
    else:
        data = proto.SerializeToString()
    model.write_bytes(data)
    return model


@pytest.mark.parametrize("how", ["raw_data_short", "STRING", "UNDEFINED", "utf8_name"])
@pytest.mark.parametrize("command", ["fold", "check", "inspect", "triton"])
def test_malformed_models_are_one_line_exit_2(tmp_path, capsys, model, how, command):
    corrupt(model, how)
    before = snapshot(tmp_path)
    out, args = model_command(tmp_path, command, model)
    code, _, err = cli(capsys, *args)
    assert_refused(code, err, str(model))
    assert snapshot(tmp_path) == before and list(out.iterdir()) == [] and not leftovers(tmp_path)


def test_a_file_name_with_a_newline_still_gives_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "inspect", tmp_path / "two\nlines.onnx")
    assert_refused(code, err, "two\\nlines.onnx", "no such file")


def test_unwritable_output_folder_is_exit_2(tmp_path, capsys, model):
    # chmod does not stop root; /proc refuses new files to everyone
    folder = Path("/proc") if os.geteuid() == 0 else tmp_path / "ro"
    if folder != Path("/proc"):
        folder.mkdir()
        folder.chmod(0o555)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "fold", model, "-o", folder / "o.onnx")
    assert_refused(code, err, str(folder))
    assert snapshot(tmp_path) == before and not (folder / "o.onnx").exists()


def test_unreadable_input_is_exit_2(tmp_path, capsys, model):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; the permission check cannot be provoked")
    model.chmod(0)
    code, _, err = cli(capsys, "inspect", model)
    assert_refused(code, err, str(model), "permission denied")


@pytest.mark.parametrize("args,words", [
    (["export", "yolov3-tiny", "-o", "{tmp}/o.onnx", "--opset", "30"], "opset"),
    (["check", "{model}", "{model}", "--seed", "-1"], "seed"),
    (["export", "yolov3-tiny", "-o", "{tmp}/o.onnx", "--random-weights", "-1"], "seed"),
    (["check", "{model}", "{model}", "--atol", "nan"], "tolerance"),
    (["check", "{model}", "{model}", "--rtol", "-1"], "tolerance"),
    (["fold", "{model}", "-o", "{tmp}/o.onnx", "--atol", "-0.1"], "tolerance"),
    (["fold", "{model}", "-o", "{tmp}/o.onnx", "--rtol", "inf"], "tolerance"),
    (["detect", "{model}", "{tmp}", "--conf", "nan"], "0 to 1"),
    (["detect", "{model}", "{tmp}", "--conf", "-0.5"], "0 to 1"),
    (["detect", "{model}", "{tmp}", "--iou", "nan"], "0 to 1"),
    (["detect", "{model}", "{tmp}", "--iou", "1.5"], "0 to 1"),
])
def test_invalid_options_exit_2(tmp_path, capsys, model, args, words):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *[a.format(tmp=tmp_path, model=model) for a in args])
    assert code == 2 and words in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


def test_random_weights_with_weights_is_refused_not_ignored(tmp_path, capsys, darknet):
    code, _, err = cli(capsys, "export", darknet["cfg"], "--weights", darknet["weights"], "--random-weights", "3",
                       "-o", tmp_path / "o.onnx", "--img-size", IMG)
    assert_refused(code, err, "random-weights seed")
    assert list(tmp_path.iterdir()) == []


def test_huge_batch_is_refused_with_an_estimate(tmp_path, capsys):
    model = elementwise_model(tmp_path / "dynamic.onnx", "Add", 1.0, shape=("N", 3, 64, 64))
    code, _, err = cli(capsys, "check", model, model, "--batch", "100000000000")
    assert_refused(code, err, "GiB")


def test_huge_export_batch_is_refused_with_an_estimate(tmp_path, capsys):
    code, _, err = cli(capsys, "export", "yolov3-tiny", "-o", tmp_path / "o.onnx", "--img-size", IMG,
                       "--batch", "100000000")
    assert_refused(code, err, "GiB", "tracing")
    assert list(tmp_path.iterdir()) == []


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header claims ``width``×``height`` pixels (with almost no data behind it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused(tmp_path, capsys, darknet):
    bomb = png_bomb(tmp_path / "bomb.png")
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "detect", darknet["onnx"], bomb, "-o", out)
    assert_refused(code, err, "bomb.png")
    assert snapshot(tmp_path) == before and not out.exists() and not leftovers(tmp_path)


def test_binary_names_file_is_refused(tmp_path, capsys, darknet):
    image, names = photo(tmp_path / "a.jpg"), tmp_path / "coco.names"
    names.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "detect", darknet["onnx"], image, "-o", out, "--names", names)
    assert_refused(code, err, "coco.names")
    assert snapshot(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("anchors", ["nan,nan", "inf,3", "-10,14", "0,0", "10,14;nan,1"])
def test_non_finite_or_non_positive_anchors_are_refused(tmp_path, capsys, anchors):
    model = tmp_path / "plain.onnx"
    model.write_bytes(onnx.load(str(conv_bn_model(tmp_path / "m.onnx", size=32))).SerializeToString())
    image = photo(tmp_path / "a.jpg")
    code, _, err = cli(capsys, "detect", model, image, "-o", tmp_path / "out", "--classes", "1",
                       f"--anchors={anchors}")
    assert_refused(code, err, "--anchors")
    assert not (tmp_path / "out").exists()


def test_check_of_same_named_inputs_with_different_shapes(tmp_path, capsys):
    small = elementwise_model(tmp_path / "small.onnx", "Add", 1.0, shape=(1, 3, 8, 8))
    large = elementwise_model(tmp_path / "large.onnx", "Add", 1.0, shape=(1, 3, 16, 16))
    code, _, err = cli(capsys, "check", small, large)
    assert_refused(code, err, "input 'x'")


@pytest.mark.parametrize("edit", [
    pytest.param(("filters=16", "filters=1_6"), id="underscore-digits"),
    pytest.param(("filters=16", "filters=１６"), id="full-width-digits"),
    pytest.param(("filters=16", "filters=3.5"), id="float-for-int"),
    pytest.param(("filters=16", "filters=16\ngroups=-4"), id="negative-groups"),
    pytest.param(("classes=80", "classes=-1"), id="negative-classes"),
    pytest.param(("filters=16", "filters=16\ndilation=0"), id="zero-dilation"),
    pytest.param(("pad=1", "padding=-1"), id="negative-padding"),
    pytest.param(("filters=16", "filters=1000000000"), id="huge-filters"),
    pytest.param(("stride=2", "stride=100000"), id="huge-upsample-stride"),
])
@pytest.mark.parametrize("command", ["inspect", "export"])
def test_cfg_values_darknet_would_misread_are_refused(tmp_path, capsys, edit, command):
    from foldkit.darknet.builtin import builtin_cfg_path

    text = builtin_cfg_path("yolov3-tiny").read_text()
    old, new = edit
    if edit[0] == "stride=2" and new.endswith("100000"):  # the [upsample] section's stride
        head, tail = text.split("[upsample]", 1)
        text = head + "[upsample]" + tail.replace(old, new, 1)
    else:
        text = text.replace(old, new, 1)
    cfg = tmp_path / "net.cfg"
    cfg.write_text(text)
    before = snapshot(tmp_path)
    args = ["inspect", cfg] if command == "inspect" else ["export", cfg, "-o", tmp_path / "o.onnx", "--img-size", IMG]
    code, _, err = cli(capsys, *args)
    assert_refused(code, err, "net.cfg")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_net_only_cfg_is_refused(tmp_path, capsys):
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n")
    code, _, err = cli(capsys, "export", cfg, "-o", tmp_path / "o.onnx")
    assert_refused(code, err, "net.cfg")
    assert not (tmp_path / "o.onnx").exists()


# --- FIFOs, umask, signals -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["detect", "export-weights", "fold", "names"])
def test_fifo_inputs_do_not_hang(tmp_path, darknet, command):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    image = photo(tmp_path / "a.jpg")
    args = {
        "detect": ["detect", darknet["onnx"], fifo, "-o", tmp_path / "out"],
        "export-weights": ["export", darknet["cfg"], "--weights", fifo, "-o", tmp_path / "o.onnx", "--img-size", IMG],
        "fold": ["fold", fifo, "-o", tmp_path / "o.onnx"],
        "names": ["detect", darknet["onnx"], image, "-o", tmp_path / "out", "--names", fifo],
    }[command]
    result = run_process(*args, timeout=120)
    assert_refused(result.returncode, result.stderr, "fifo", "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "fifo"]


@pytest.mark.parametrize("command", ["fold", "check", "inspect"])
def test_external_data_fifo_does_not_hang(tmp_path, command):
    model = external_data_model(tmp_path, "w.bin")
    (tmp_path / "w.bin").unlink()
    os.mkfifo(tmp_path / "w.bin")
    args = {"fold": ["fold", model, "-o", tmp_path / "o.onnx"], "check": ["check", model, model],
            "inspect": ["inspect", model]}[command]
    result = run_process(*args, timeout=120)
    assert_refused(result.returncode, result.stderr, "w.bin", "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "w.bin"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_output_mode_follows_the_umask(tmp_path, model, umask, mode):
    output, report, repo = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "repo"
    result = run_process("fold", model, "-o", output, "--report", report, umask=umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(output.stat().st_mode) == mode and stat.S_IMODE(report.stat().st_mode) == mode
    previous = os.umask(umask)  # the multi-file staging (a Triton entry) follows it too
    try:
        assert main(["triton", str(output), "--repo", str(repo), "--name", "m"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((repo / "m" / "1" / "model.onnx").stat().st_mode) == mode
    assert stat.S_IMODE((repo / "m" / "config.pbtxt").stat().st_mode) == mode


def test_sigterm_during_fold_check_leaves_no_temp_file(tmp_path):
    unfolded, output = tmp_path / "u.onnx", tmp_path / "o.onnx"
    assert main(["export", "yolov3-tiny", "--no-fold", "-o", str(unfolded), "--img-size", "416"]) == 0
    before = snapshot(tmp_path)
    process = run_process("fold", unfolded, "-o", output, "--check", wait=False)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftovers(tmp_path), "the staged output never appeared: the model is too small to catch mid-run"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert snapshot(tmp_path) == before and not output.exists() and not leftovers(tmp_path)


def test_fold_report_in_a_missing_folder_writes_nothing(tmp_path, capsys, model):
    output = tmp_path / "o.onnx"
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "fold", model, "-o", output, "--report", tmp_path / "nodir" / "r.json")
    assert_refused(code, err, "nodir", "does not exist")
    assert snapshot(tmp_path) == before and not output.exists() and not leftovers(tmp_path)


def test_refusals_stay_one_line_under_foldkit_debug(tmp_path, capsys, monkeypatch):
    """FOLDKIT_DEBUG=1 adds the traceback to internal errors (exit 3) only, never to a refusal."""
    monkeypatch.setenv("FOLDKIT_DEBUG", "1")
    code, _, err = cli(capsys, "inspect", tmp_path / "missing.onnx")
    assert_refused(code, err, "no such file")


# --- reproducibility -------------------------------------------------------------------------------

def test_export_is_seeded_reproducible_and_its_two_routes_agree(tmp_path, capsys):
    """The first thing a new user tries: export folded and unfolded, then check the pair; and the
    same export in another process writes the same bytes."""
    folded, unfolded, other = (tmp_path / f"{n}.onnx" for n in ("f", "u", "f2"))
    assert cli(capsys, "export", "yolov3-tiny", "-o", folded, "--img-size", IMG)[0] == 0
    code, out, _ = cli(capsys, "export", "yolov3-tiny", "--no-fold", "-o", unfolded, "--img-size", IMG)
    assert code == 0 and "seed 0" in out, out
    code, out, err = cli(capsys, "check", folded, unfolded)
    assert code == 0 and "PASSED" in out, out + err
    result = run_process("export", "yolov3-tiny", "-o", other, "--img-size", IMG)
    assert result.returncode == 0, result.stderr
    assert folded.read_bytes() == other.read_bytes()


# --- outputs that collide or stray -----------------------------------------------------------------

def test_detect_outputs_of_same_stem_images_do_not_collide(tmp_path, capsys, darknet):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    images = [photo(tmp_path / "a.jpg"), photo(tmp_path / "a.png", color=(0, 0, 255)),
              photo(tmp_path / "x" / "pic.jpg"), photo(tmp_path / "y" / "pic.png", size=(20, 50))]
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "detect", darknet["onnx"], *images, "-o", out, "--conf", "0.99")
    assert code == 0, err
    records = sorted(out.glob("*.json"))
    assert len(records) == 4 and len(list(out.glob("*.jpg"))) == 4
    import json

    assert sorted(json.loads(r.read_text())["image"] for r in records) == sorted(map(str, images))
    assert {p: b for p, b in snapshot(tmp_path).items() if out not in p.parents} == before
    assert not leftovers(tmp_path)


def test_detect_refuses_two_images_that_would_share_outputs(tmp_path, capsys, darknet):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    images = [photo(tmp_path / "x" / "pic.jpg"), photo(tmp_path / "y" / "pic.jpg")]
    code, _, err = cli(capsys, "detect", darknet["onnx"], *images, "-o", tmp_path / "out")
    assert_refused(code, err, "pic.jpg", "same outputs")
    assert not (tmp_path / "out").exists()


def test_demo_with_a_cfg_path_writes_only_inside_out(tmp_path, capsys, monkeypatch, darknet):
    cfgs, out, cwd = tmp_path / "cfgs", tmp_path / "D", tmp_path / "cwd"
    cfgs.mkdir()
    cwd.mkdir()
    cfg = cfgs / "net.cfg"
    cfg.write_bytes(darknet["cfg"].read_bytes())
    monkeypatch.chdir(cwd)
    code, out_text, err = cli(capsys, "demo", cfg, "--img-size", IMG, "--out", out, "--rounds", "1")
    assert code == 0, out_text + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "cfgs", "cwd"]
    assert [p.name for p in cfgs.iterdir()] == ["net.cfg"] and list(cwd.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["net-folded.onnx", "net-unfolded.onnx"]


def test_external_data_climbing_out_and_back_is_refused_not_reused_on_the_write_side(tmp_path, capsys):
    """``../m/w.bin`` resolves inside the model's folder ``m`` but would climb out of a Triton entry."""
    model = external_data_model(tmp_path / "src" / "m", "../m/w.bin")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "triton", model, "--repo", tmp_path / "repo")
    assert_refused(code, err, "leaves the model's folder")
    assert snapshot(tmp_path) == before and not (tmp_path / "repo").exists()


def test_external_data_named_like_the_model_cannot_replace_it_in_a_triton_entry(tmp_path, capsys):
    model = external_data_model(tmp_path / "m", "model.onnx")
    code, _, err = cli(capsys, "triton", model, "--repo", tmp_path / "repo")
    assert_refused(code, err, "written over another output")
    assert not (tmp_path / "repo").exists() and not leftovers(tmp_path)


def test_nan_fails_parity_even_with_an_rtol_whose_bound_overflows(tmp_path, capsys):
    nan_model = elementwise_model(tmp_path / "nan.onnx", "Add", float("nan"))
    plain = elementwise_model(tmp_path / "plain.onnx", "Add", 0.0)
    code, out, _ = cli(capsys, "check", nan_model, plain, "--rtol", "1e308")
    assert code == 1 and "FAILED" in out and "NaN/Inf" in out


def test_integer_outputs_are_compared_exactly():
    from foldkit.parity import compare_outputs

    assert not compare_outputs([np.array([2**53 + 1])], [np.array([2**53])], atol=0, rtol=0).passed
    assert compare_outputs([np.array([2**53 + 1])], [np.array([2**53 + 1])], atol=0, rtol=0).passed


# --- issue 20: outputs that alias inputs in new ways ------------------------------------------------
# One output rule (foldkit.onnxio.outputs), applied by the API function that writes.

def test_export_darknet_api_refuses_to_replace_its_cfg(tmp_path, darknet):
    from foldkit.darknet.export import export_darknet
    from foldkit.errors import FoldkitError

    cfg = tmp_path / "net.cfg"
    cfg.write_bytes(darknet["cfg"].read_bytes())
    with pytest.raises(FoldkitError, match="is the input"):
        export_darknet(cfg, cfg, img_size=64)
    assert cfg.read_bytes() == darknet["cfg"].read_bytes() and not leftovers(tmp_path)


@pytest.mark.parametrize("option", ["-o", "--report"])
@pytest.mark.parametrize("command", ["fold", "quantize"])
def test_outputs_may_not_replace_the_inputs_external_data(tmp_path, capsys, command, option):
    model = external_data_model(tmp_path, "w.bin")
    before = snapshot(tmp_path)
    args = ["-o", tmp_path / "w.bin"] if option == "-o" else ["-o", tmp_path / "o.onnx", "--report", tmp_path / "w.bin"]
    code, _, err = cli(capsys, command, model, *args, *(["--calib-random", "4"] if command == "quantize" else []))
    assert_refused(code, err, "w.bin", "is the input")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def small_calibration_folder(folder: Path, count: int = 3) -> Path:
    folder.mkdir()
    for index in range(count):
        photo(folder / f"c{index}.png", size=(8, 8), color=(40 * index, 90, 200 - 30 * index))
    return folder


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_quantize_outputs_may_not_replace_a_calibration_image(tmp_path, capsys, model, option):
    calib = small_calibration_folder(tmp_path / "calib")
    victim = calib / "c1.png"
    before = snapshot(tmp_path)
    args = ["-o", victim] if option == "-o" else ["-o", tmp_path / "q.onnx", "--report", victim]
    code, _, err = cli(capsys, "quantize", model, "--calib", calib, *args)
    assert_refused(code, err, "c1.png", "is the input")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_quantize_whose_report_cannot_be_written_writes_nothing(tmp_path, capsys, model):
    """A FIFO without a reader passes the up-front check (a stream) but fails when written: no model either."""
    report = tmp_path / "report.fifo"
    os.mkfifo(report)
    calib = small_calibration_folder(tmp_path / "calib", count=4)
    code, _, err = cli(capsys, "quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx",
                       "--report", report, "--no-equalize", "--no-bias-correction")
    assert_refused(code, err, "report.fifo", "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "in.onnx", "report.fifo"]


def test_detect_refuses_to_replace_an_unrelated_file_unless_told(tmp_path, capsys, darknet):
    image = photo(tmp_path / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.jpg").write_bytes(b"the user's own photo")
    code, _, err = cli(capsys, "detect", darknet["onnx"], image, "-o", out)
    assert_refused(code, err, "b.jpg", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg"]
    assert (out / "b.jpg").read_bytes() == b"the user's own photo"
    code, _, err = cli(capsys, "detect", darknet["onnx"], image, "-o", out, "--overwrite")
    assert code == 0, err
    assert (out / "b.jpg").read_bytes()[:2] == b"\xff\xd8" and (out / "b.json").is_file() and not leftovers(out)


@pytest.mark.parametrize("command", ["fold", "export"])
def test_output_with_a_trailing_slash_is_refused(tmp_path, capsys, model, command):
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    target = f"{existing}/" if command == "fold" else f"{tmp_path / 'newdir'}/"
    args = ["fold", model] if command == "fold" else ["export", "yolov3-tiny", "--img-size", IMG]
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *args, "-o", target)
    assert_refused(code, err, "ends in '/'")
    assert snapshot(tmp_path) == before and not (tmp_path / "newdir").exists() and not leftovers(tmp_path)


def test_symlinked_output_replaces_the_file_it_points_to_and_keeps_the_link(tmp_path, capsys, model):
    real, link, dangling = tmp_path / "real.onnx", tmp_path / "link.onnx", tmp_path / "dangling.onnx"
    real.write_bytes(b"old")
    link.symlink_to(real)
    code, _, err = cli(capsys, "fold", model, "-o", link)
    assert code == 0, err
    assert link.is_symlink() and onnx.load(str(real)).graph.node
    dangling.symlink_to(tmp_path / "missing" / "x.onnx")
    code, _, err = cli(capsys, "fold", model, "-o", dangling)
    assert_refused(code, err, "symlink to a missing file")
    assert dangling.is_symlink() and not (tmp_path / "missing").exists() and not leftovers(tmp_path)


def test_output_through_a_descriptor_link_is_streamed_never_replaced(tmp_path, model):
    """``-o``/``--report`` through a link to /proc/self/fd/1 (what /dev/stdout is) write to stdout; the link stays."""
    out, report = tmp_path / "stdout.onnx", tmp_path / "stdout.json"
    out.symlink_to("/proc/self/fd/1")
    report.symlink_to("/proc/self/fd/1")
    result = subprocess.run([sys.executable, "-m", "foldkit.cli", "fold", str(model), "-o", str(out), "--report",
                             str(report)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.is_symlink() and os.readlink(out) == "/proc/self/fd/1" and report.is_symlink()
    written = onnx.load_from_string(result.stdout[:result.stdout.index(b'{\n  "')])  # the model, then the report
    assert [n.op_type for n in written.graph.node] == ["Conv", "Relu"]
    assert b'"folded"' in result.stdout and not leftovers(tmp_path)


def test_longest_legal_output_name_can_be_written(tmp_path, capsys, model):
    target = tmp_path / ("m" * 250 + ".onnx")
    code, _, err = cli(capsys, "fold", model, "-o", target)
    assert code == 0, err
    assert onnx.load(str(target)).graph.node and not leftovers(tmp_path)


def test_output_named_like_a_builtin_network_is_not_the_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "export", "yolov3-tiny", "-o", "yolov3-tiny", "--img-size", IMG)
    assert code == 0, err
    assert onnx.load(str(tmp_path / "yolov3-tiny")).graph.node


def test_bench_refuses_a_report_over_its_input_before_timing(tmp_path, model):
    from foldkit.bench import BenchConfig, run_benchmark
    from foldkit.errors import FoldkitError

    config = BenchConfig(model=str(model), variants=["ort-folded-all"], batches=[1], providers=["cpu"],
                         outputs=(str(tmp_path / "r.json"), str(model)))
    with pytest.raises(FoldkitError, match="is the input"):
        run_benchmark(config)
    assert not (tmp_path / "r.json").exists()


# --- models over protobuf's 2 GiB: the limit lowered (the seam) so a small model takes the same path ---

@pytest.fixture
def big_model(tmp_path) -> Path:
    """Conv→BN with 64 channels: its 6.9 KB conv weight is streamed (over the lazy reader's 4 KiB)."""
    return conv_bn_model(tmp_path / "in.onnx", channels=64)


def run_model(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("command,limit", [("fold", 4000), ("export-direct", 100_000)])
def test_model_over_the_protobuf_limit_is_written_with_external_data(tmp_path, capsys, monkeypatch, big_model,
                                                                      darknet, command, limit):
    args = {"fold": ["fold", big_model, "--check"],
            "export-direct": ["export", darknet["cfg"], "--weights", darknet["weights"], "--img-size", IMG]}[command]
    reference = darknet["onnx"]
    monkeypatch.setattr("foldkit.onnxio.wire.PROTOBUF_LIMIT", limit)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    code, _, err = cli(capsys, *args, "-o", out)
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert out.stat().st_size < limit < (out.parent / "model.onnx.data").stat().st_size
    if command == "fold":  # the folded model, read back with its external data, computes what the original does
        x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
        expected = run_model(big_model, x)
        np.testing.assert_allclose(run_model(out, x), expected, atol=1e-4 * float(np.abs(expected).max()))
    else:  # every tensor read back from the data file equals the one written inline without the limit
        written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
        inline = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(reference)).graph.initializer}
        assert written.keys() == inline.keys()
        for name, array in inline.items():
            np.testing.assert_array_equal(written[name], array, err_msg=name)


def test_in_memory_model_over_the_protobuf_limit_is_saved_with_external_data(tmp_path, monkeypatch, big_model):
    """``save_onnx`` (the torch exports, quantize) takes the same path as the streamed writers."""
    from foldkit.onnxio.files import save_onnx

    model = onnx.load(str(big_model))
    monkeypatch.setattr("foldkit.onnxio.wire.PROTOBUF_LIMIT", model.ByteSize() - 1)
    save_onnx(model, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").stat().st_size > (tmp_path / "out.onnx").stat().st_size
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    assert written.keys() == {t.name for t in model.graph.initializer}
    for tensor in model.graph.initializer:
        np.testing.assert_array_equal(written[tensor.name], numpy_helper.to_array(tensor), err_msg=tensor.name)
    assert not leftovers(tmp_path)


def test_model_too_large_even_without_its_initializers_is_refused_before_writing(tmp_path, capsys, monkeypatch,
                                                                                 big_model):
    monkeypatch.setattr("foldkit.onnxio.wire.PROTOBUF_LIMIT", 100)
    code, _, err = cli(capsys, "fold", big_model, "-o", tmp_path / "o.onnx")
    assert_refused(code, err, "o.onnx", "even with its initializers in external data", "nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_external_data_is_removed_with_the_model_when_the_run_fails(tmp_path, capsys, monkeypatch, big_model):
    """The report (a FIFO nobody reads) fails after model and data are staged: neither appears."""
    monkeypatch.setattr("foldkit.onnxio.wire.PROTOBUF_LIMIT", 4000)
    os.mkfifo(tmp_path / "report.fifo")
    code, _, err = cli(capsys, "fold", big_model, "-o", tmp_path / "o.onnx", "--report", tmp_path / "report.fifo")
    assert_refused(code, err, "report.fifo", "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "report.fifo"]


# --- issue 20: every bad model is one line, exit 2 --------------------------------------------------

def bad_model(tmp_path: Path, how: str) -> Path:
    """The Conv→BN model broken one way: dims past 2^63 bytes, 0 × 2^62, string weights, no outputs."""
    path = conv_bn_model(tmp_path / f"{how}.onnx")
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    if how in ("dims_overflow", "zero_times_huge"):
        weight.ClearField("dims")
        weight.dims.extend([2**40, 2**40, 1, 1] if how == "dims_overflow" else [0, 2**62, 3, 3])
        if how == "zero_times_huge":
            weight.ClearField("raw_data")
            weight.ClearField("float_data")
    elif how == "string_weights":
        count = len(numpy_helper.to_array(weight).reshape(-1))
        weight.ClearField("raw_data")
        weight.ClearField("float_data")
        weight.data_type = onnx.TensorProto.STRING
        weight.string_data.extend([b"w"] * count)
    elif how == "no_outputs":
        del model.graph.output[:]
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("how,words", [("dims_overflow", "2^63"), ("zero_times_huge", "2^63"),
                                       ("string_weights", "strings where"), ("no_outputs", "no outputs")])
@pytest.mark.parametrize("command", ["inspect", "fold"])
def test_bad_models_are_one_line_exit_2(tmp_path, capsys, how, words, command):
    model = bad_model(tmp_path, how)
    before = snapshot(tmp_path)
    args = ["inspect", model] if command == "inspect" else ["fold", model, "-o", tmp_path / "o.onnx"]
    code, _, err = cli(capsys, *args)
    assert_refused(code, err, words)
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_file_truncated_while_being_read_is_one_line(tmp_path):
    from foldkit.errors import FoldkitError
    from foldkit.fold.onnx import fold_onnx
    from foldkit.pipeline import open_for_fold

    path = conv_bn_model(tmp_path / "in.onnx", channels=64)  # its conv weight stays in the file until read
    source = open_for_fold(path)
    try:
        os.truncate(path, path.stat().st_size // 2)
        with pytest.raises(FoldkitError, match="changed while being read"):
            fold_onnx(source, inplace=True)
    finally:
        source.close()


def broken_for_quantize(tmp_path: Path, how: str) -> Path:
    """Models ORT's quantizer cannot take: BN ε NaN or negative, sparse weights, fp16, nothing to quantize."""
    path = conv_bn_model(tmp_path / f"{how}.onnx")
    model = onnx.load(str(path))
    graph = model.graph
    if how in ("eps_nan", "eps_negative"):
        bn = next(n for n in graph.node if n.op_type == "BatchNormalization")
        del bn.attribute[:]
        bn.attribute.append(helper.make_attribute("epsilon", math.nan if how == "eps_nan" else -10.0))
    elif how == "sparse":
        weight = next(t for t in graph.initializer if t.name == "W")
        values = numpy_helper.to_array(weight)
        graph.initializer.remove(weight)
        sparse = helper.make_sparse_tensor(numpy_helper.from_array(values.reshape(-1), "W"),
                                           numpy_helper.from_array(np.arange(values.size, dtype=np.int64), "i"),
                                           list(values.shape))
        graph.sparse_initializer.append(sparse)
    elif how == "fp16":
        for tensor in graph.initializer:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
        for value in [*graph.input, *graph.output]:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    elif how == "relu_only":
        model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", np.float32, [1, 3, 8, 8])],
                           [("y", np.float32, [1, 3, 8, 8])], {})
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("how,words", [("eps_nan", "NaN or Inf"), ("eps_negative", "NaN or Inf"),
                                       ("sparse", "sparse initializer"), ("fp16", "float32"),
                                       ("relu_only", "nothing for int8")])
def test_quantize_refuses_what_its_quantizer_cannot_take(tmp_path, capsys, how, words):
    model = broken_for_quantize(tmp_path, how)
    calib = small_calibration_folder(tmp_path / "calib", count=4)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--report",
                       tmp_path / "r.json")
    assert_refused(code, err, f"{how}.onnx", words)
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_bench_runs_a_model_with_external_data(tmp_path, capsys):
    model = external_data_model(tmp_path, "w.bin")
    code, out, err = cli(capsys, "bench", model, "--variants", "ort-unfolded-noopt,ort-folded-all", "--rounds", "1",
                         "--warmup", "1", "--no-memory", "--providers", "cpu")
    assert code == 0, err
    assert "ort-folded-all" in out


def test_detect_refuses_a_huge_names_file_and_nested_metadata(tmp_path, capsys, darknet):
    from foldkit.defaults import MAX_TEXT_INPUT_BYTES

    image, names = photo(tmp_path / "a.jpg"), tmp_path / "huge.names"
    with open(names, "wb") as handle:  # sparse: no time spent writing it
        handle.truncate(MAX_TEXT_INPUT_BYTES + 1)
    code, _, err = cli(capsys, "detect", darknet["onnx"], image, "-o", tmp_path / "out", "--names", names)
    assert_refused(code, err, "huge.names", "too large")
    nested = onnx.load(str(darknet["onnx"]))
    heads = next(p for p in nested.metadata_props if p.key == "foldkit.yolo_heads")
    heads.value = "[" * 100_000 + "]" * 100_000
    onnx.save(nested, str(tmp_path / "nested.onnx"))
    code, _, err = cli(capsys, "detect", tmp_path / "nested.onnx", image, "-o", tmp_path / "out")
    assert_refused(code, err, "nested too deeply")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_detect_json_of_an_image_whose_name_is_not_utf8_is_valid_json(tmp_path, capsys, darknet):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(Path(os.fsdecode(bytes(folder) + b"/b\xff.png")))
    code, _, err = cli(capsys, "detect", darknet["onnx"], folder, "-o", tmp_path / "out")
    assert code == 0, err
    [written] = (tmp_path / "out").glob("*.json")
    text = written.read_text(encoding="utf-8")
    assert "\\ud" not in text  # a lone surrogate escape, which Go, Rust and browsers reject
    assert json.loads(text)["image"].endswith("b\\xff.png")


@pytest.mark.parametrize("option", ["--max-batch", "--instances"])
def test_triton_counts_past_int32_are_refused(tmp_path, capsys, model, option):
    code, _, err = cli(capsys, "triton", model, "--repo", tmp_path / "repo", option, str(2**40))
    assert_refused(code, err, "32-bit")
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow  # a dynamo export takes a minute on 2 shared cores
def test_dynamo_exporter_failure_is_one_line(tmp_path):
    """torch's dynamo exporter cannot write opset 17 for this network: onnxscript logs a traceback, foldkit does not."""
    result = run_process("export", "yolov3-tiny", "--img-size", IMG, "--exporter", "dynamo", "--opset", "17",
                         "-o", tmp_path / "d.onnx", timeout=300)
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path):
    """``foldkit inspect … | head -1``: the reader leaves early; no "Broken pipe" and the command's own exit code.

    The report (1,100 layers, about 70 KB) is larger than a pipe holds, so the writer is still
    writing when the reader closes.
    """
    layer = "[convolutional]\nbatch_normalize=1\nfilters=1\nsize=1\nstride=1\npad=0\nactivation=leaky\n\n"
    cfg = tmp_path / "long.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n\n" + layer * 1100)
    process = run_process("inspect", cfg, wait=False)
    assert process.stdout.readline()
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == ""


@pytest.mark.parametrize("command", ["inspect", "fold"])
def test_constant_bomb_is_refused_with_the_estimate(tmp_path, capsys, command):
    """``ConstantOfShape([100000, 100000, 10])`` is 24 bytes in the file and 372 GiB evaluated."""
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["big"], name="bomb",
                              value=helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["r"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    model = make_model(nodes, [("x", np.float32, [1])], [("y", np.float32, [1])],
                       {"s": np.array([100_000, 100_000, 10], np.int64)})
    onnx.save(model, str(tmp_path / "bomb.onnx"))
    args = ["inspect", tmp_path / "bomb.onnx"] if command == "inspect" else ["fold", tmp_path / "bomb.onnx", "-o",
                                                                              tmp_path / "o.onnx"]
    code, _, err = cli(capsys, *args)
    assert_refused(code, err, "'big' of shape [100000, 100000, 10]", "would need about 372.5 GiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.onnx"]
