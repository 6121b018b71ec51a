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

from typing import TYPE_CHECKING

import numpy as np

from foldkit.darknet.layers import Conv, NetworkPlan
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import write_atomic

if TYPE_CHECKING:
    from foldkit.darknet.build import DarknetModel

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


def _convs(plan: NetworkPlan) -> list[Conv]:
    return [layer.params for layer in plan.layers if isinstance(layer.params, Conv)]


def expected_floats(network: NetworkPlan | object) -> int:
    """How many float32 values the body of this network's ``.weights`` file holds (a plan or a model)."""
    plan = getattr(network, "plan", network)
    return sum(c.filters * (4 if c.batch_normalize else 1) + c.filters * (c.in_channels // c.groups) * c.size ** 2
               for c in _convs(plan))


@dataclass
class ConvRecord:
    """One ``[convolutional]`` layer's arrays, as read (float32, views into the file's bytes)."""

    bias: np.ndarray  # BN's β with batch_normalize, else the conv bias
    weight: np.ndarray  # [filters, c/groups, size, size]
    gamma: np.ndarray | None = None
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    eps: float = 1e-5


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


def read_weights(plan: NetworkPlan, path: str | os.PathLike, *, bn_variant: str = "alexeyab"
                 ) -> tuple[WeightsHeader, list[ConvRecord]]:
    """Read a ``.weights`` file for ``plan`` after checking its exact size: the header and one record per conv.

    ``bn_variant="pjreddie"`` reproduces pjreddie Darknet's CPU BatchNorm, ``γ(x − μ)/(√σ² + 1e-6) + β``,
    exactly: the variance becomes ``(√σ² + 1e-6)²`` with ε = 0 (computed in float64).
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
    expected = expected_floats(plan)
    if body != 4 * expected:
        found = f"{body // 4} floats" + (f" and {body % 4} stray bytes" if body % 4 else "")
        verdict = "truncated" if body < 4 * expected else "too long"
        raise FoldkitError(
            f"{path}: {verdict} for {Path(plan.info.source).name}: expected {expected} floats "
            f"({header.size + 4 * expected} bytes with the {header.size}-byte header), found {found} "
            f"({len(data)} bytes); is it the weights of this cfg?"
        )
    values = np.frombuffer(data, dtype="<f4", offset=header.size)
    position = 0

    def take(count: int) -> np.ndarray:
        nonlocal position
        position += count
        return values[position - count:position]

    records = []
    for conv in _convs(plan):
        n = conv.filters
        record = ConvRecord(bias=take(n), weight=np.empty(0, np.float32))
        if conv.batch_normalize:
            record.gamma, record.mean, record.var = take(n), take(n), take(n)
            if bn_variant == "pjreddie":
                record.var = ((np.sqrt(record.var.astype(np.float64)) + PJREDDIE_CPU_EPS) ** 2).astype(np.float32)
                record.eps = 0.0
        record.weight = take(n * (conv.in_channels // conv.groups) * conv.size ** 2).reshape(
            n, conv.in_channels // conv.groups, conv.size, conv.size)
        records.append(record)
    return header, records


def load_weights(model: "DarknetModel", path: str | os.PathLike, *, bn_variant: str = "alexeyab") -> WeightsHeader:
    """Fill a PyTorch Darknet model from a ``.weights`` file (see :func:`read_weights`); returns the header."""
    import torch

    header, records = read_weights(model.plan, path, bn_variant=bn_variant)
    blocks = [layer for kind, layer in zip(model.kinds, model.layers) if kind == "convolutional"]
    with torch.no_grad():
        for block, record in zip(blocks, records):
            conv, bn = block.conv, block.norm
            if record.gamma is None:
                conv.bias.copy_(torch.from_numpy(record.bias.copy()))
            else:
                for tensor, values in ((bn.bias, record.bias), (bn.weight, record.gamma),
                                       (bn.running_mean, record.mean), (bn.running_var, record.var)):
                    tensor.copy_(torch.from_numpy(np.array(values, dtype=np.float32)))
                bn.eps = record.eps
            conv.weight.copy_(torch.from_numpy(record.weight.copy()))
    return header


def save_weights(model: "DarknetModel", path: str | os.PathLike, header: WeightsHeader | None = None) -> None:
    """Write a PyTorch Darknet model's parameters as a ``.weights`` file (atomically)."""
    import torch

    header = header or WeightsHeader()
    parts = [header.pack()]
    with torch.no_grad():
        for kind, block in zip(model.kinds, model.layers):
            if kind != "convolutional":
                continue
            conv, bn = block.conv, block.norm
            arrays = [bn.bias, bn.weight, bn.running_mean, bn.running_var] if conv.bias is None else [conv.bias]
            for tensor in [*arrays, conv.weight]:
                parts.append(tensor.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes())

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            for part in parts:
                handle.write(part)

    write_atomic(path, writer)
