"""The view of an ONNX graph that every fold pattern shares.

Who produces and who reads each value, which values are constants (and why a value is not),
known ranks, and the two edits a fold makes: give a node new initializer values (a private copy
when the tensor is shared) and remove a node. Values are read and written through a
:class:`~foldkit.onnxio.store.TensorStore`, so the same patterns work on a lazily opened file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from foldkit.fold.constants import constant_names
from foldkit.onnxio.store import TensorStore
from foldkit.onnxio.validate import skeleton


@dataclass(frozen=True)
class Refusal:
    """Why a pattern that is present in the graph cannot fold here (shown in the report)."""

    reason: str


class GraphView:
    """Producers, consumers, constants and ranks of one model's main graph, kept current by the edits."""

    def __init__(self, model: onnx.ModelProto, allow_initializer_inputs: bool, store: TensorStore) -> None:
        graph = model.graph
        self.model = model
        self.store = store
        self.constants = constant_names(graph, initializer_inputs_are_constant=allow_initializer_inputs)
        self.initializers = {init.name: init for init in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.ranks = known_ranks(model)
        self._names = {n for node in graph.node for n in (*node.input, *node.output)} | set(self.initializers)
        self.removed: set[int] = set()
        self.memo: dict[tuple[str, int], Any] = {}  # per-node results several patterns share (a norm's map)

    def constant(self, name: str, role: str) -> np.ndarray | Refusal:
        """The value of constant ``name``, or why it is not one (``role`` names it in the reason)."""
        if name in self.constants:
            return self.store.get(self.initializers[name])
        if name in self.graph_inputs:
            hint = (" (it has an initializer too; --allow-initializer-inputs treats such inputs as constants)"
                    if name in self.initializers else "")
            return Refusal(f"{role} '{name}' is a graph input, not a constant{hint}")
        producer = self.producer.get(name)
        what = f"computed by {producer.op_type} '{producer.name}'" if producer else "not a known constant"
        return Refusal(f"{role} '{name}' is {what}, not a constant")

    def constant_or_none(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant; for matchers that only look."""
        return self.store.get(self.initializers[name]) if name in self.constants else None

    def sole_reader(self, value: str, reader: onnx.NodeProto) -> str:
        """'' if ``reader`` is the only consumer of ``value`` and it is no graph output; else why not."""
        if value in self.graph_outputs:
            return f"'{value}' is a graph output, so it must stay as it is"
        others = [n for n in self.consumers[value] if n is not reader]
        if others:
            names = ", ".join(f"{n.op_type} '{n.name}'" for n in others[:3])
            return f"'{value}' is also read by {names}; folding would change what they see"
        return ""

    def set_initializer(self, node: onnx.NodeProto, position: int, array: np.ndarray, label: str) -> str:
        """Give ``node`` input ``position`` the value ``array``; a shared tensor gets a private copy.

        Returns a note when a private copy was made, else ''.
        """
        old = node.input[position] if position < len(node.input) else ""
        shared = bool(old) and sum(1 for n in self.consumers[old] if id(n) not in self.removed) > 1
        if old and not shared and old in self.initializers:
            self.store.put(self.initializers[old], array)
            return ""
        name = self._fresh_name(f"{old}_folded" if old else f"{node.name or node.output[0]}_{label}")
        tensor = self.model.graph.initializer.add()
        tensor.name = name
        self.store.put(tensor, array)
        self.initializers[name] = tensor
        self.constants.add(name)
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = name
        self.consumers[name].append(node)
        if old:
            self.consumers[old] = [n for n in self.consumers[old] if n is not node]
        return f"{label} '{old}' is shared with other nodes: folded into a private copy '{name}'" if shared else ""

    def remove(self, node: onnx.NodeProto) -> None:
        """Mark ``node`` removed; :meth:`commit` drops it from the graph."""
        self.removed.add(id(node))

    def take_over_output(self, node: onnx.NodeProto, removed: onnx.NodeProto) -> None:
        """``node`` now writes what the removed node wrote (its first output)."""
        node.output[0] = removed.output[0]
        self.producer[removed.output[0]] = node

    def commit(self) -> None:
        """Drop the removed nodes from the model's graph."""
        kept = [node for node in self.model.graph.node if id(node) not in self.removed]
        del self.model.graph.node[:]
        self.model.graph.node.extend(kept)

    def _fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_float_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.f = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def known_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Ranks of values, from shape inference on the graph's skeleton (unknown ranks are left out)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=False)
    except Exception:  # a model shape inference cannot read just gives no ranks
        return {}
    ranks = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks
