"""pjreddie's Darknet (libdarknet.so) as an oracle: every layer's output for a given input.

A C program of a few lines, compiled with gcc at test time against the installed header, loads a
cfg and ``.weights``, runs ``network_predict`` on a float input and writes each layer's output
buffer, then the network's output. Going through C rather than ctypes keeps the harness
independent of the layout of Darknet's large ``layer`` struct: the compiler reads it from
``darknet.h``.

Where libdarknet, its header or gcc is missing, :func:`unavailable` says so and tests skip.
``FOLDKIT_LIBDARKNET`` (the folder with ``libdarknet.so`` and ``include/darknet.h``) and
``FOLDKIT_DARKNET_CFGS`` (pjreddie's cfg folder) override the Debian package's locations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

LIB_DIR = Path(os.environ.get("FOLDKIT_LIBDARKNET", "/usr/lib/darknet"))
CFG_DIR = Path(os.environ.get("FOLDKIT_DARKNET_CFGS", "/usr/share/darknet/cfg"))
NETWORK_OUTPUT = -1  # the record after the layers: what network_predict returns

_DUMPER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "darknet.h"

static void dump(FILE *out, int index, const float *values, int count) {
    fwrite(&index, sizeof(int), 1, out);
    fwrite(&count, sizeof(int), 1, out);
    fwrite(values, sizeof(float), count, out);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: dumper cfg weights input.f32 output.bin\n"); return 2; }
    network *net = load_network(argv[1], argv[2], 0);
    set_batch_network(net, 1);
    float *input = calloc(net->inputs, sizeof(float));
    FILE *in = fopen(argv[3], "rb");
    if (!in || fread(input, sizeof(float), net->inputs, in) != (size_t)net->inputs) {
        fprintf(stderr, "input: expected %d floats\n", net->inputs); return 2;
    }
    fclose(in);
    float *result = network_predict(net, input);
    FILE *out = fopen(argv[4], "wb");
    for (int i = 0; i < net->n; ++i) dump(out, i, net->layers[i].output, net->layers[i].outputs);
    dump(out, -1, result, net->outputs);
    fclose(out);
    return 0;
}
"""


def unavailable() -> str | None:
    """Why the oracle cannot run here, or ``None`` when it can."""
    if not (LIB_DIR / "libdarknet.so").is_file():
        return f"{LIB_DIR}/libdarknet.so is absent (Debian package 'darknet')"
    if not (LIB_DIR / "include" / "darknet.h").is_file():
        return f"{LIB_DIR}/include/darknet.h is absent"
    if shutil.which("gcc") is None:
        return "gcc is absent (needed to compile the libdarknet harness)"
    if not CFG_DIR.is_dir():
        return f"{CFG_DIR} (pjreddie's cfgs) is absent"
    return None


def compile_dumper(folder: Path) -> Path:
    """Compile the layer-dumping program into ``folder``; return its path."""
    source, binary = folder / "dumper.c", folder / "dumper"
    source.write_text(_DUMPER)
    subprocess.run(["gcc", "-O1", "-std=gnu99", f"-I{LIB_DIR / 'include'}", str(source), "-o", str(binary),
                    f"-L{LIB_DIR}", "-ldarknet", f"-Wl,-rpath,{LIB_DIR}", "-lm", "-lpthread"],
                   check=True, capture_output=True)
    return binary


def sized_cfg(source: Path, target: Path, height: int, width: int) -> Path:
    """A copy of ``source`` with ``[net]``'s width and height replaced and batch = subdivisions = 1."""
    lines, in_net, replaced = [], False, {"width": str(width), "height": str(height), "batch": "1",
                                          "subdivisions": "1"}
    for line in source.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if in_net:
                lines.extend(f"{key}={value}" for key, value in replaced.items())
            in_net = stripped.lower() == "[net]"
        elif in_net and stripped.split("=")[0].strip() in replaced:
            continue
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    return target


def layer_outputs(dumper: Path, cfg: Path, weights: Path, image: np.ndarray, folder: Path) -> dict[int, np.ndarray]:
    """Darknet's output of each layer (by index) and of the network (:data:`NETWORK_OUTPUT`) for one CHW image."""
    source, dump = folder / "input.f32", folder / "layers.bin"
    np.ascontiguousarray(image, dtype="<f4").tofile(source)
    done = subprocess.run([str(dumper), str(cfg), str(weights), str(source), str(dump)], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"libdarknet failed on {cfg.name}: {done.stderr.strip().splitlines()[-1:]}")
    data, position, outputs = dump.read_bytes(), 0, {}
    while position < len(data):
        index, count = np.frombuffer(data, "<i4", 2, position)
        position += 8
        outputs[int(index)] = np.frombuffer(data, "<f4", int(count), position).astype(np.float64)
        position += 4 * int(count)
    return outputs
