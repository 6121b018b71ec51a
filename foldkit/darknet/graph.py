"""Writing ONNX nodes: a graph under construction, and the activation primitives as nodes.

:class:`GraphWriter` hands out unique tensor names and collects nodes and initializers;
:class:`OnnxOps` implements :class:`foldkit.activations.Ops` on it, so every Darknet activation's
one formula (:mod:`foldkit.activations`) becomes ONNX nodes here and torch calls in :mod:`foldkit.nn`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from foldkit.activations import formula


class GraphWriter:
    """Collects nodes, and the initializers as (name, array) pairs, with unique names."""

    def __init__(self, opset: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.arrays: list[tuple[str, np.ndarray]] = []
        self.opset = opset
        self._count = 0
        self._scalars: dict[float, str] = {}

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.arrays.append((name, np.ascontiguousarray(array)))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant, shared by every node that needs the same value."""
        if value not in self._scalars:
            self._scalars[value] = self.const(np.array(value, dtype=np.float32), "const")
        return self._scalars[value]

    def ints(self, values: list[int], base: str) -> str:
        return self.const(np.array(values, dtype=np.int64), base)

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        output = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # elementwise helpers with a float constant
    def mul(self, x: str, value: float, base: str) -> str:
        return self.node("Mul", [x, self.scalar(value)], base)

    def add(self, x: str, value: float, base: str) -> str:
        return self.node("Add", [x, self.scalar(value)], base)

    def clip(self, x: str, low: float, high: float, base: str) -> str:
        return self.node("Clip", [x, self.scalar(low), self.scalar(high)], base)

    def reduce(self, op: str, x: str, axis: int, base: str) -> str:
        """ReduceSum/ReduceMax over one axis, keepdims (axes became an input in opsets 13 and 18)."""
        if self.opset >= (13 if op == "ReduceSum" else 18):
            return self.node(op, [x, self.ints([axis], base)], base, keepdims=1)
        return self.node(op, [x], base, axes=[axis], keepdims=1)


class Sym:
    """A tensor of the graph being written; ``+ − × ÷`` with another one or a float write the node."""

    def __init__(self, g: GraphWriter, name: str, base: str) -> None:
        self.g, self.name, self.base = g, name, base

    def _op(self, op: str, a: Any, b: Any) -> Sym:
        return Sym(self.g, self.g.node(op, [self._ref(a), self._ref(b)], self.base), self.base)

    def _ref(self, value: Any) -> str:
        return value.name if isinstance(value, Sym) else self.g.scalar(float(value))

    def __add__(self, other: Any) -> Sym:
        return self._op("Add", self, other)

    def __radd__(self, other: Any) -> Sym:
        return self._op("Add", other, self)

    def __sub__(self, other: Any) -> Sym:
        return self._op("Sub", self, other)

    def __rsub__(self, other: Any) -> Sym:
        return self._op("Sub", other, self)

    def __mul__(self, other: Any) -> Sym:
        return self._op("Mul", self, other)

    def __rmul__(self, other: Any) -> Sym:
        return self._op("Mul", other, self)

    def __truediv__(self, other: Any) -> Sym:
        return self._op("Div", self, other)


class OnnxOps:
    """:class:`foldkit.activations.Ops` as ONNX nodes (one node per primitive, opset ≥ 13)."""

    @staticmethod
    def _unary(op: str, x: Sym, **attrs: Any) -> Sym:
        return Sym(x.g, x.g.node(op, [x.name], x.base, **attrs), x.base)

    def relu(self, x: Sym) -> Sym:
        return self._unary("Relu", x)

    def leaky(self, x: Sym, slope: float) -> Sym:
        return self._unary("LeakyRelu", x, alpha=slope)

    def sigmoid(self, x: Sym) -> Sym:
        return self._unary("Sigmoid", x)

    def tanh(self, x: Sym) -> Sym:
        return self._unary("Tanh", x)

    def exp(self, x: Sym) -> Sym:
        return self._unary("Exp", x)

    def floor(self, x: Sym) -> Sym:
        return self._unary("Floor", x)

    def elu(self, x: Sym, alpha: float) -> Sym:
        return self._unary("Elu", x, alpha=alpha)

    def mish(self, x: Sym) -> Sym:
        if x.g.opset >= 18:
            return self._unary("Mish", x)
        return x * self.tanh(self._unary("Softplus", x))

    def clip(self, x: Sym, low: float, high: float) -> Sym:
        return Sym(x.g, x.g.clip(x.name, low, high, x.base), x.base)

    def channel_sum(self, x: Sym) -> Sym:
        return Sym(x.g, x.g.reduce("ReduceSum", x.name, 1, x.base), x.base)

    def channel_max(self, x: Sym) -> Sym:
        return Sym(x.g, x.g.reduce("ReduceMax", x.name, 1, x.base), x.base)


def activation(g: GraphWriter, name: str, x: str, base: str) -> str:
    """Darknet's activation ``name`` on tensor ``x``: its formula's nodes, the output tensor's name."""
    result = formula(name)(Sym(g, x, base), OnnxOps())
    return result.name
