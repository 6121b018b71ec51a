"""Cfg values Darknet would read differently are refused, naming the file and line, and exit 2.

Darknet converts values with C's ``atoi``/``atof`` (FORMAT.md §1.1), which stop at the first
character they cannot use: ``1_6`` is 1, ``3.5`` is 3 for an integer key, full-width ``１６`` is 0,
and an empty list item is 0. Others it silently replaces (``groups=-4`` becomes 1) or cannot use.
foldkit refuses each of these rather than build a network Darknet would not build, and refuses
networks too large to allocate before allocating them, with the estimate in the message.
"""

from __future__ import annotations

import pytest

from foldkit.cli import main
from foldkit.darknet.cfg import parse_cfg
from foldkit.darknet.plan import plan_network
from foldkit.errors import FoldkitError

# A small detector that uses every section type the cases below edit: (section, [(key, value), …]).
BASE = [
    ("net", [("width", "64"), ("height", "64"), ("channels", "3")]),
    ("convolutional", [("filters", "16"), ("size", "3"), ("stride", "1"), ("padding", "1"), ("groups", "1"),
                       ("dilation", "1"), ("activation", "leaky")]),
    ("maxpool", [("size", "2"), ("stride", "2")]),
    ("upsample", [("stride", "2")]),
    ("route", [("layers", "-1,-3")]),
    ("convolutional", [("filters", "24"), ("size", "1"), ("activation", "linear")]),
    ("yolo", [("mask", "0,1,2"), ("anchors", "10,14,23,27,37,58"), ("classes", "3"), ("num", "3")]),
]


def write_cfg(folder, section: int, key: str, value: str | None) -> tuple[str, int]:
    """BASE with ``key`` of section ``section`` set to ``value`` (added if absent); returns (path, that line)."""
    lines, target = [], 0
    for index, (name, options) in enumerate(BASE):
        lines.append(f"[{name}]")
        options = dict(options)
        if index == section and value is not None:
            options[key] = value
        for k, v in options.items():
            lines.append(f"{k}={v}")
            if index == section and k == key:
                target = len(lines)
        lines.append("")
    path = folder / "case.cfg"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path), target


CASES = [
    # (section, key, value, what the message says)
    (1, "filters", "1_6", "Darknet would read 1"),
    (1, "filters", "１６", "Darknet would read 0"),
    (1, "size", "3.5", "Darknet would read 3"),
    (1, "filters", "1e9", "Darknet would read 1"),
    (1, "filters", "0x10", "Darknet would read 0"),
    (1, "filters", "99999999999", "32-bit integer"),
    (1, "groups", "-4", "'groups=-4' must be at least 1"),
    (1, "groups", "0", "'groups=0' must be at least 1"),
    (1, "dilation", "0", "'dilation=0' must be at least 1"),
    (1, "dilation", "-2", "'dilation=-2' must be at least 1"),
    (1, "padding", "-1", "'padding=-1' must be at least 0"),
    (1, "stride", "0", "'stride=0' must be at least 1"),
    (2, "padding", "-3", "'padding=-3' must be at least 0"),
    (6, "classes", "-1", "'classes=-1' must be at least 1"),
    (6, "num", "0", "'num=0' must be at least 1"),
    (4, "layers", "-1,,-3", "item '' is not a valid int"),
    (6, "mask", "0,1,2,", "item '' is not a valid int"),
    (6, "anchors", "10,14,23,27,37,5_8", "item '5_8'"),
    (0, "width", "6４", "Darknet would read 6"),
    (6, "scale_x_y", "1_0.5", "is not a valid float"),
    (6, "scale_x_y", "nan", "is not a valid float"),
    (6, "scale_x_y", "1e999", "overflows a float"),
]


@pytest.mark.parametrize("section, key, value, message", CASES, ids=[f"{c[1]}={c[2]}" for c in CASES])
def test_misread_values_are_refused_with_file_and_line(tmp_path, capsys, section, key, value, message):
    path, line = write_cfg(tmp_path, section, key, value)
    with pytest.raises(FoldkitError, match=f"^{path}:{line}: ") as raised:
        plan_network(path)
    assert message in str(raised.value)
    assert main(["inspect", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("section, key, value, expected", [
    (1, "filters", "16#comment", 16),  # atoi stops at '#' too: the inline comment is read alike
    (1, "filters", "+16", 16),
    (6, "scale_x_y", ".5", 0.5),
    (6, "scale_x_y", "2.", 2.0),
    (6, "scale_x_y", "1e-1", 0.1),
])
def test_values_darknet_reads_alike_are_accepted(tmp_path, section, key, value, expected):
    path, _ = write_cfg(tmp_path, section, key, value)
    target = parse_cfg(path)[section]
    read = target.get_float(key) if isinstance(expected, float) else target.get_int(key)
    assert read == expected
    plan_network(path)


def test_a_cfg_with_only_net_is_refused(tmp_path, capsys):
    path = tmp_path / "net.cfg"
    path.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n")
    with pytest.raises(FoldkitError, match=f"^{path}:1: the cfg has only \\[net\\] and no layers"):
        plan_network(path)
    assert main(["inspect", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_absurd_filters_are_refused_before_allocating(tmp_path, capsys):
    from foldkit.limits import memory_limit

    path, line = write_cfg(tmp_path, 1, "filters", "1000000000")
    with pytest.raises(FoldkitError) as raised:
        plan_network(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:{line - 1}: [convolutional] layer 0 (output 1000000000×64×64) takes the "
                              f"network over foldkit's limit of {memory_limit() / 2**30:,.1f} GiB")
    # conv 3→10⁹ 3×3 and 2·10⁹→24 1×1 with biases; outputs 10⁹·64² + 10⁹·32² + 10⁹·64² + 2·10⁹·64² + 2·24·64²
    assert "about 65,133.0 GiB, 76,000,000,024 parameters and 17,408,000,196,608 activation values" in message
    assert main(["inspect", path]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_absurd_upsampling_is_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "up.cfg"
    path.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n\n[convolutional]\nfilters=4\nsize=1\n"
                    "activation=leaky\n\n[upsample]\nstride=100000\n")
    with pytest.raises(FoldkitError, match=f"^{path}:11: \\[upsample\\] layer 1 \\(output 4×6400000×6400000\\) "
                                           "takes the network over foldkit's limit") as raised:
        plan_network(path)
    assert "163,840,000,016,384 activation values" in str(raised.value)
    assert main(["inspect", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_memory_estimate_counts_parameters_and_activations(tmp_path):
    from foldkit.darknet.budget import check_memory, estimate_bytes

    path, _ = write_cfg(tmp_path, 1, "filters", "16")
    plan = plan_network(path)
    parameters, activations = estimate_bytes(plan)
    # conv 3→16 3×3 with bias, conv 32→24 1×1 with bias; no BatchNorm
    assert parameters == 16 * 3 * 9 + 16 + 24 * 32 + 24
    assert activations == sum(c * h * w for c, h, w in [(16, 64, 64), (16, 32, 32), (16, 64, 64), (32, 64, 64),
                                                        (24, 64, 64), (24, 64, 64)])
    with pytest.raises(FoldkitError, match="over foldkit's limit"):
        check_memory(plan, parse_cfg(path), limit=4 * (parameters + activations) - 1)
    check_memory(plan, parse_cfg(path), limit=4 * (parameters + activations))
