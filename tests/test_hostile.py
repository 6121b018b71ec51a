"""foldkit attacked as a hostile user would (issue 9): one case per broken promise.

Every case asserts the exit code, the one-line message (never a traceback), that the inputs are
byte-for-byte unchanged, and that nothing is left behind (no ``.NAME.*.tmp`` staging files).
Most run in-process through ``foldkit.cli.main``; signals, FIFOs, the umask and cross-process
reproducibility need a real process (``python -m foldkit.cli`` from this checkout).
"""

from __future__ import annotations

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
    """Staging files left behind (OutputTransaction names them ``.TARGET.XXXX.tmp``)."""
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
def test_output_may_not_be_a_device_node(tmp_path, capsys, model, command):
    args = ["fold", model] if command == "fold" else ["export", "yolov3-tiny", "--img-size", IMG]
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *args, "-o", "/dev/null")
    assert_refused(code, err, "/dev/null", "not a regular file")
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
