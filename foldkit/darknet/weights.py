"""Darknet ``.weights`` files: read into a built model, write from one, bit-exactly.

Layout (FORMAT.md §3): a header of three int32 (major, minor, revision) and ``seen`` — a uint64
when ``major·10 + minor ≥ 2`` (20-byte header, every current file), else an int32 (16 bytes,
e.g. the published yolov2.weights) — then float32 little-endian records in layer order. A
``[convolutional]`` record is: biases (BN's β when ``batch_normalize=1``), then γ, running mean,
running variance if BN, then the kernel as [filters][c/groups][size][size]. Darknet itself never
checks the file size; foldkit does, and says how many floats it expected and found.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from foldkit.darknet.build import DarknetModel
from foldkit.errors import FoldkitError
from foldkit.fileio import write_atomic

BN_VARIANTS = ("alexeyab", "pjreddie")
PJREDDIE_CPU_EPS = 1e-6  # pjreddie's CPU path divides by √σ² + 1e-6 (ε outside the root)


@dataclass
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def wide_seen(self) -> bool:
        """Whether ``seen`` is a uint64 (20-byte header); Darknet decides by version."""
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def size(self) -> int:
        return 20 if self.wide_seen else 16

    def pack(self) -> bytes:
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(
            "<Q" if self.wide_seen else "<I", self.seen
        )


def _records(model: DarknetModel):
    """(conv, bn or None) per weighted layer, in file order."""
    for kind, layer in zip(model.kinds, model.layers):
        if kind == "convolutional":
            yield layer.conv, layer.norm if isinstance(layer.norm, nn.BatchNorm2d) else None


def expected_floats(model: DarknetModel) -> int:
    """How many float32 values the body of this network's ``.weights`` file holds."""
    return sum(conv.out_channels * (4 if bn is not None else 1) + conv.weight.numel() for conv, bn in _records(model))


def read_header(data: bytes, path: str) -> WeightsHeader:
    if len(data) == 0:
        raise FoldkitError(f"{path}: the weights file is empty")
    if len(data) < 16:
        raise FoldkitError(f"{path}: {len(data)} bytes is too short for a Darknet weights header")
    header = WeightsHeader(*struct.unpack_from("<3i", data), 0)
    if header.wide_seen and len(data) < 20:
        raise FoldkitError(f"{path}: {len(data)} bytes is too short for a version {header.major}.{header.minor} header")
    header.seen = struct.unpack_from("<Q" if header.wide_seen else "<I", data, 12)[0]
    return header


def load_weights(model: DarknetModel, path: str | os.PathLike, *, bn_variant: str = "alexeyab") -> WeightsHeader:
    """Fill ``model`` from a ``.weights`` file after checking its exact size; returns the header.

    ``bn_variant="pjreddie"`` reproduces pjreddie Darknet's CPU BatchNorm, ``γ(x − μ)/(√σ² + 1e-6) + β``,
    exactly: the variance is stored as ``(√σ² + 1e-6)²`` with ε = 0 (computed in float64).
    """
    if bn_variant not in BN_VARIANTS:
        raise FoldkitError(f"unknown BatchNorm variant {bn_variant!r}; choose one of {', '.join(BN_VARIANTS)}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FoldkitError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise FoldkitError(f"{path}: cannot read: {exc.strerror}") from None
    header = read_header(data, str(path))
    body = len(data) - header.size
    expected = expected_floats(model)
    if body != 4 * expected:
        found = f"{body // 4} floats" + (f" and {body % 4} stray bytes" if body % 4 else "")
        verdict = "truncated" if body < 4 * expected else "too long"
        raise FoldkitError(
            f"{path}: {verdict} for {Path(model.info.source).name}: expected {expected} floats "
            f"({header.size + 4 * expected} bytes with the {header.size}-byte header), found {found} "
            f"({len(data)} bytes); is it the weights of this cfg?"
        )
    values = np.frombuffer(data, dtype="<f4", offset=header.size)
    position = 0

    def take(count: int) -> torch.Tensor:
        nonlocal position
        chunk = values[position:position + count]
        position += count
        return torch.from_numpy(chunk.astype(np.float32))

    with torch.no_grad():
        for conv, bn in _records(model):
            n = conv.out_channels
            (bn.bias if bn is not None else conv.bias).copy_(take(n))
            if bn is not None:
                bn.weight.copy_(take(n))
                bn.running_mean.copy_(take(n))
                variance = take(n)
                if bn_variant == "pjreddie":
                    variance = torch.from_numpy(
                        ((np.sqrt(variance.numpy().astype(np.float64)) + PJREDDIE_CPU_EPS) ** 2).astype(np.float32)
                    )
                    bn.eps = 0.0
                bn.running_var.copy_(variance)
            conv.weight.copy_(take(conv.weight.numel()).view_as(conv.weight))
    return header


def save_weights(model: DarknetModel, path: str | os.PathLike, header: WeightsHeader | None = None) -> None:
    """Write ``model``'s parameters as a Darknet ``.weights`` file (atomically)."""
    header = header or WeightsHeader()
    parts = [np.frombuffer(header.pack(), dtype=np.uint8)]
    with torch.no_grad():
        for conv, bn in _records(model):
            arrays = [bn.bias, bn.weight, bn.running_mean, bn.running_var] if bn is not None else [conv.bias]
            for tensor in [*arrays, conv.weight]:
                parts.append(tensor.detach().to("cpu", torch.float32).numpy().astype("<f4").reshape(-1).view(np.uint8))

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            for part in parts:
                handle.write(part.tobytes())

    write_atomic(path, writer)
