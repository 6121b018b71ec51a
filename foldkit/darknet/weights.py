"""Darknet ``.weights`` files: read into a built model, write from one, bit-exactly.

Layout (Darknet's parser.c, load_weights): a header of three int32 (major, minor, revision) and ``seen`` — a uint64
when ``major·10 + minor ≥ 2`` (20-byte header, every current file), else an int32 (16 bytes,
e.g. the published yolov2.weights) — then float32 little-endian records in layer order. A
``[convolutional]`` record is: biases (BN's β when ``batch_normalize=1``), then γ, running mean,
running variance if BN, then the kernel as [filters][c/groups][size][size]. A ``[connected]``
record is biases, weights [outputs][inputs], then γ, mean, variance if BN; a
weighted ``[shortcut]`` stores its raw weights (§7.2); a conv with ``share_index`` stores nothing
(§6.6). Darknet itself never checks the file size; foldkit does, and says how many floats it
expected and found.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from foldkit.darknet.layout import stored_floats, weight_records
from foldkit.darknet.specs import Connected, Conv, Local, NetworkPlan, Shortcut
from foldkit.defaults import BN_VARIANTS
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import write_atomic

if TYPE_CHECKING:
    import torch

    from foldkit.darknet.build import DarknetModel

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
    def transposed(self) -> bool:
        """Darknet's flag for ``[connected]`` weights stored [inputs][outputs]: a version part above 1000."""
        return self.major > 1000 or self.minor > 1000

    @property
    def size(self) -> int:
        return 20 if self.wide_seen else 16

    def pack(self) -> bytes:
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(
            "<Q" if self.wide_seen else "<I", self.seen
        )


def expected_floats(network: NetworkPlan | DarknetModel) -> int:
    """How many float32 values the body of this network's ``.weights`` file holds (a plan or a model)."""
    return stored_floats(network if isinstance(network, NetworkPlan) else network.plan)


@dataclass
class ConvRecord:
    """One ``[convolutional]``, ``[connected]`` or ``[local]`` layer's arrays, as read (float32 views into the file)."""

    bias: np.ndarray  # BN's β with batch_normalize, else the conv bias
    weight: np.ndarray  # [filters, c/groups, size, size], or [outputs, inputs] for [connected]
    gamma: np.ndarray | None = None
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    eps: float = 1e-5


Record = ConvRecord | np.ndarray  # a weighted [shortcut]'s record is its raw weights


def read_header(data: bytes, path: str) -> WeightsHeader:
    if len(data) == 0:
        raise FoldkitError(f"{path}: the weights file is empty")
    if len(data) < 16:
        raise FoldkitError(f"{path}: {len(data)} bytes is too short for a Darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data)
    header = WeightsHeader(major, minor, revision, 0)
    if header.wide_seen and len(data) < 20:
        raise FoldkitError(f"{path}: {len(data)} bytes is too short for a version {header.major}.{header.minor} header")
    header.seen = struct.unpack_from("<Q" if header.wide_seen else "<I", data, 12)[0]
    return header


def read_weights(plan: NetworkPlan, path: str | os.PathLike, *, bn_variant: str = "alexeyab"
                 ) -> tuple[WeightsHeader, dict[int, Record]]:
    """Read a ``.weights`` file for ``plan`` after checking its exact size: the header and each layer's record.

    Records are keyed by layer index: conv and connected layers (:class:`ConvRecord`) and weighted
    shortcuts (their raw weights); a conv with ``share_index`` has none.

    ``bn_variant="pjreddie"`` reproduces pjreddie Darknet's CPU BatchNorm, ``γ(x − μ)/(√σ² + 1e-6) + β``,
    exactly: the variance becomes ``(√σ² + 1e-6)²`` with ε = 0 (computed in float64).
    """
    if bn_variant not in BN_VARIANTS:
        raise FoldkitError(f"unknown BatchNorm variant {bn_variant!r}; choose one of {', '.join(BN_VARIANTS)}")
    path = Path(path)
    try:  # mapped, not read: records are views that the converter folds or streams out page by page
        size = path.stat().st_size
        data = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    except FileNotFoundError:
        raise FoldkitError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise FoldkitError(f"{path}: cannot read: {exc.strerror}") from None
    header = read_header(bytes(data[:20]), str(path))
    body = size - header.size
    expected = expected_floats(plan)
    if body != 4 * expected:
        found = f"{body // 4} floats" + (f" and {body % 4} stray bytes" if body % 4 else "")
        verdict = "truncated" if body < 4 * expected else "too long"
        raise FoldkitError(
            f"{path}: {verdict} for {Path(plan.info.source).name}: expected {expected} floats "
            f"({header.size + 4 * expected} bytes with the {header.size}-byte header), found {found} "
            f"({size} bytes); is it the weights of this cfg?"
        )
    values = data[header.size:].view("<f4")
    position = 0

    def take(count: int) -> np.ndarray:
        nonlocal position
        position += count
        return values[position - count:position]

    records: dict[int, Record] = {}
    for index, layer in enumerate(plan.layers):
        counts = weight_records(layer.params)
        if not counts:
            continue
        arrays = {name: take(count) for name, count in counts}
        if isinstance(layer.params, Shortcut):
            records[index] = arrays["weight"]
            continue
        record = ConvRecord(arrays["bias"], arrays["weight"], arrays.get("gamma"), arrays.get("mean"),
                            arrays.get("var"))
        if record.var is not None and bn_variant == "pjreddie":
            record.var = ((np.sqrt(record.var.astype(np.float64)) + PJREDDIE_CPU_EPS) ** 2).astype(np.float32)
            record.eps = 0.0
        records[index] = _shaped(record, layer.params, header)
    return header, records


def _shaped(record: ConvRecord, p: object, header: WeightsHeader) -> ConvRecord:
    """The record's flat arrays viewed in the layer's shapes (weights and, for ``[local]``, the biases)."""
    if isinstance(p, Connected):
        shape: tuple[int, ...] = (p.outputs, p.inputs)
        if header.transposed:  # stored [inputs][outputs]; Darknet transposes after reading
            record.weight = record.weight.reshape(p.inputs, p.outputs).T.copy()
    elif isinstance(p, Local):  # per output position j: filters × (C, size, size); a bias per output value
        shape = (p.locations, p.filters, p.patch)
        record.bias = record.bias.reshape(p.filters, p.out_h, p.out_w)
    else:
        assert isinstance(p, Conv)
        shape = (p.filters, p.in_channels // p.groups, p.size, p.size)
    record.weight = record.weight.reshape(shape)
    return record


def _weighted_modules(module: Any) -> tuple[Any, Any]:
    """(linear op, norm) of a built conv, connected or local layer (``Any``: torch types its submodules loosely)."""
    if hasattr(module, "linear"):
        return module.linear, module.norm
    if hasattr(module, "conv"):
        return module.conv, module.norm
    return module, None  # [local]: its own weight and bias, no norm


def _file_tensors(params: object, module: Any) -> list[torch.Tensor]:
    """A built layer's tensors in ``.weights`` order (see :func:`~foldkit.darknet.layout.weight_records`)."""
    if isinstance(params, Shortcut):
        return [module.weight]
    op, norm = _weighted_modules(module)
    first = [op.bias] if op.bias is not None else [norm.bias]
    bn: list[torch.Tensor] = [] if op.bias is not None else [norm.weight, norm.running_mean, norm.running_var]
    return [*first, *bn, op.weight] if isinstance(params, Conv) else [*first, op.weight, *bn]


def load_weights(model: DarknetModel, path: str | os.PathLike, *, bn_variant: str = "alexeyab") -> WeightsHeader:
    """Fill a PyTorch Darknet model from a ``.weights`` file (see :func:`read_weights`); returns the header."""
    import torch

    header, records = read_weights(model.plan, path, bn_variant=bn_variant)
    with torch.no_grad():
        for index, record in records.items():
            module: Any = model.layers[index]
            if isinstance(record, np.ndarray):
                module.weight.copy_(torch.from_numpy(record.copy()))
                continue
            op, norm = _weighted_modules(module)
            if record.gamma is None:
                op.bias.copy_(torch.from_numpy(record.bias.copy()))
            else:
                for tensor, values in ((norm.bias, record.bias), (norm.weight, record.gamma),
                                       (norm.running_mean, record.mean), (norm.running_var, record.var)):
                    tensor.copy_(torch.from_numpy(np.array(values, dtype=np.float32)))
                norm.eps = record.eps
            op.weight.copy_(torch.from_numpy(record.weight.copy()))
    return header


def save_weights(model: DarknetModel, path: str | os.PathLike, header: WeightsHeader | None = None) -> None:
    """Write a PyTorch Darknet model's parameters as a ``.weights`` file (atomically)."""
    import torch

    header = header or WeightsHeader()
    parts = [header.pack()]
    with torch.no_grad():
        for layer, module in zip(model.plan.layers, model.layers, strict=True):
            if not weight_records(layer.params):
                continue
            for tensor in _file_tensors(layer.params, module):
                parts.append(tensor.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes())

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.writelines(parts)

    write_atomic(path, writer)
