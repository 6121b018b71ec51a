"""Seeded fuzzing (issue 9): mutated ONNX bytes and edited cfg lines never crash foldkit.

Every run must end in exit 0, 1 or 2 with no traceback and no "internal error" (exit 3): a bad
file is the user's problem and gets one line naming it. The seeds are fixed, so a failure
reproduces; the message lists the seed and the mutation of every failing case.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
from pathlib import Path

import onnx
import pytest
from onnx_graphs import conv_bn_model

from foldkit.cli import main

ONNX_MUTATIONS = 70  # per model, each run through fold, check and inspect
CFG_EDITS = {"inspect": 30, "export": 6}  # an export of yolov3-tiny costs seconds
TOKENS = ["-1", "-3", "0", "1", "99999999", "1e9", "3.5", "-0.5", "nan", "inf", "1_6", "１６", "٣", "", "abc", "0x10",
          "2147483648", "1,2", ",", "=", "[", "]"]
TINY_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=linear
"""


def outcome(capsys, args: list[str]) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def crashed(code: int, err: str) -> bool:
    return code not in (0, 1, 2) or "Traceback" in err or "internal error" in err


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One seeded byte mutation: flip, insert, delete or truncate (the description says which)."""
    kind = rng.choice(["flip", "flip", "insert", "delete", "truncate"])
    at = rng.randrange(len(data))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:], f"flip@{at}"
    if kind == "insert":
        return data[:at] + bytes([rng.randrange(256)]) + data[at:], f"insert@{at}"
    if kind == "delete":
        return data[:at] + data[at + 1:], f"delete@{at}"
    return data[:at], f"truncate@{at}"


@contextlib.contextmanager
def memory_capped(extra_bytes: int = 6 << 30):
    """A soft address-space cap for this process, so a mutant that asks for absurd memory fails
    fast instead of swapping a shared machine; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    cap = used + extra_bytes if hard == resource.RLIM_INFINITY else min(hard, used + extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seeds")
    cfg = folder / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    exported = folder / "exported.onnx"
    assert main(["export", str(cfg), "-o", str(exported)]) == 0
    return {"graph": conv_bn_model(folder / "graph.onnx"), "export": exported}


@pytest.mark.parametrize("source", ["graph", "export"])
def test_mutated_onnx_never_crashes(tmp_path, capsys, seeds, source):
    original = seeds[source]
    data, rng = original.read_bytes(), random.Random(f"onnx-{source}")
    mutant, out = tmp_path / "mutant.onnx", tmp_path / "out.onnx"
    failures, codes = [], set()
    with memory_capped():
        for index in range(ONNX_MUTATIONS):
            bytes_, how = mutate(data, rng)
            mutant.write_bytes(bytes_)
            for args in (["fold", mutant, "-o", out], ["check", mutant, original], ["inspect", mutant]):
                code, err = outcome(capsys, args)
                codes.add(code)
                if crashed(code, err):
                    failures.append(f"#{index} {how} {args[0]}: exit {code}: {err.strip()[-300:]}")
            out.unlink(missing_ok=True)
    assert not failures, f"{len(failures)} crashes:\n" + "\n".join(failures[:20])
    assert {0, 2} <= codes  # the mutations both hit harmless bytes and break the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mutant.onnx"]  # no staging file left behind


def edit(lines: list[str], rng: random.Random) -> tuple[list[str], str]:
    """One seeded line edit: delete, duplicate, or replace a value with a random token."""
    lines = list(lines)
    at = rng.randrange(len(lines))
    kind = rng.choice(["delete", "duplicate", "replace", "replace", "replace"])
    if kind == "delete":
        del lines[at]
    elif kind == "duplicate":
        lines.insert(at, lines[at])
    else:
        values = [i for i, line in enumerate(lines) if "=" in line]
        at, token = rng.choice(values), rng.choice(TOKENS)
        lines[at] = lines[at].split("=", 1)[0] + "=" + token
    return lines, f"{kind} line {at + 1}: {lines[at] if at < len(lines) else ''!r}"


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_edited_cfg_never_crashes(tmp_path, capsys, command):
    from foldkit.darknet.builtin import builtin_cfg_path

    lines = builtin_cfg_path("yolov3-tiny").read_text().splitlines()
    rng = random.Random(f"cfg-{command}")
    cfg, out = tmp_path / "edited.cfg", tmp_path / "out.onnx"
    failures, codes = [], set()
    with memory_capped():
        for index in range(CFG_EDITS[command]):
            edited, how = edit(lines, rng)
            cfg.write_text("\n".join(edited) + "\n")
            args = ["inspect", cfg] if command == "inspect" else ["export", cfg, "-o", out, "--img-size", "32"]
            code, err = outcome(capsys, args)
            codes.add(code)
            if crashed(code, err):
                failures.append(f"#{index} {how}: exit {code}: {err.strip()[-300:]}")
            out.unlink(missing_ok=True)
    assert not failures, f"{len(failures)} crashes:\n" + "\n".join(failures[:20])
    assert {0, 2} <= codes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.cfg"]


# --- output paths (issue 20): every shape a path can take, combined at random ----------------------

OUTPUT_RUNS = 40  # fold runs of a tiny model, in-process: about a second in all
OUTPUT_SHAPES = ["new", "existing", "trailing-slash", "input", "input-symlink", "input-hardlink", "external-data",
                 "external-data-symlink", "dangling-symlink", "folder", "missing-folder", "dev-null",
                 "symlink-to-dev-null", "long-name", "dot", "empty"]


def output_path(folder: Path, shape: str, index: int, model: Path) -> str:
    """An output path of the given shape inside ``folder`` (created as the shape needs)."""
    name = folder / f"out{index}.onnx"
    if shape == "existing":
        name.write_bytes(b"an older file")
    elif shape in ("input-symlink", "external-data-symlink", "dangling-symlink", "symlink-to-dev-null"):
        target = {"input-symlink": model, "external-data-symlink": model.parent / "w.bin",
                  "dangling-symlink": folder / "nowhere" / "x", "symlink-to-dev-null": Path("/dev/null")}[shape]
        name.symlink_to(target)
    elif shape == "input-hardlink":
        os.link(model, name)
    elif shape == "folder":
        name.mkdir()
    return {"trailing-slash": f"{name}/", "input": str(model), "external-data": str(model.parent / "w.bin"),
            "missing-folder": str(folder / "missing" / "o.onnx"), "dev-null": "/dev/null",
            "long-name": str(folder / ("L" * 250 + f"{index:05d}")), "dot": str(folder / "."),
            "empty": ""}.get(shape, str(name))


def test_output_paths_never_destroy_an_input_or_a_device(tmp_path, capsys):
    """Seeded: -o and --report each take a random shape; inputs, devices and links survive every run."""
    from test_hostile import external_data_model

    model = external_data_model(tmp_path / "in", "w.bin")
    inputs = {path: path.read_bytes() for path in (model, tmp_path / "in" / "w.bin")}
    rng, failures, codes = random.Random("outputs"), [], set()
    for index in range(OUTPUT_RUNS):
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        shapes = rng.choice(OUTPUT_SHAPES), rng.choice([None, *OUTPUT_SHAPES])
        output = output_path(folder, shapes[0], index, model)
        report = None if shapes[1] is None else output_path(folder, shapes[1], index + 1000, model)
        links = {p: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}
        code, err = outcome(capsys, ["fold", model, "-o", output, *(["--report", report] if report else [])])
        codes.add(code)
        broken = [p for p, data in inputs.items() if p.read_bytes() != data]
        broken += [p for p, target in links.items() if not p.is_symlink() or os.readlink(p) != target]
        broken += [Path(p) for p in folder.rglob(".foldkit-*")]
        broken += [Path(p) for p in (output, report) if code == 0 and p and p.endswith("/")]  # a folder's name
        if crashed(code, err) or err.strip().count("\n") or broken or not Path("/dev/null").is_char_device():
            failures.append(f"#{index} {shapes}: exit {code}: {err.strip()[-200:]}; damaged {broken}")
        if code == 0 and output != "/dev/null" and not Path(output).is_char_device():
            assert onnx.load(output, load_external_data=False).graph.node, shapes
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert codes == {0, 2}
