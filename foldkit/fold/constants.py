"""Evaluate constant subexpressions of an ONNX graph into initializers.

Exporters leave parameters behind little computations over constants: TorchScript's exporter
writes ``Identity`` aliases for deduplicated tensors; the dynamo exporter without its optimizer
feeds each BatchNorm parameter through ``Expand``/``Shape``/``CastLike``. A fold pattern needs
the values, so every node whose inputs are all constant is evaluated (with ONNX's reference
evaluator, in one run) and replaced by an initializer. Graph inputs are never constants, even
when an initializer of the same name gives them a default, unless the caller says so.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from foldkit.limits import ensure_fits
from foldkit.onnxio.store import TensorStore

# Nodes that must not be evaluated at fold time even with constant inputs.
_NONDETERMINISTIC = {
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
}


def constant_names(graph: onnx.GraphProto, *, initializer_inputs_are_constant: bool = False) -> set[str]:
    """Names of initializers that hold fixed values (not overridable graph inputs)."""
    names = {init.name for init in graph.initializer}
    if not initializer_inputs_are_constant:
        names -= {inp.name for inp in graph.input}
    return names


def fold_constants(
    model: onnx.ModelProto, *, initializer_inputs_are_constant: bool = False, store: TensorStore | None = None
) -> int:
    """Replace every all-constant node of the main graph by initializers, in place.

    Returns the number of nodes removed. Subgraphs (If/Loop bodies) are left alone.
    """
    store = store or TensorStore()
    graph = model.graph
    known = constant_names(graph, initializer_inputs_are_constant=initializer_inputs_are_constant)
    _cast_like_to_cast(graph, known)
    constant_nodes = []
    for node in graph.node:  # ONNX requires topological order
        if node.op_type in _NONDETERMINISTIC or any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            continue
        if all(name == "" or name in known for name in node.input):
            constant_nodes.append(node)
            known.update(o for o in node.output if o)
    if not constant_nodes:
        return 0

    produced = {o for node in constant_nodes for o in node.output if o}
    removed = {id(node) for node in constant_nodes}
    needed = {name for node in graph.node if id(node) not in removed for name in node.input} | {
        o.name for o in graph.output
    }
    wanted = sorted(produced & needed)
    if wanted:
        initializers = {init.name: init for init in graph.initializer}
        used = {name for node in constant_nodes for name in node.input if name in initializers}
        sub = helper.make_model(
            helper.make_graph(
                list(constant_nodes), "constants", [], [helper.make_tensor_value_info(n, 0, None) for n in wanted],
                initializer=[store.materialized(initializers[n]) for n in sorted(used)],
            ),
            opset_imports=list(model.opset_import), ir_version=model.ir_version,
        )
        ensure_fits(*_evaluation_bytes(sub))
        values = ReferenceEvaluator(sub).run(None, {})
        graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in zip(wanted, values, strict=True))

    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    # Graph outputs produced by folded nodes now come from initializers, which ONNX allows.
    remove_unused_initializers(model)
    return len(constant_nodes)


def _evaluation_bytes(sub: onnx.ModelProto) -> tuple[float, str]:
    """What evaluating ``sub`` allocates, from the shapes ONNX infers (data propagated), and its largest value.

    A constant such as ``ConstantOfShape([100000, 100000, 10])`` is a few bytes in the file and
    40 GB once evaluated: the memory rule refuses it with this estimate before it is allocated.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(sub, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return 0.0, "constant folding"
    sizes = []
    for value in inferred.graph.value_info:
        tensor = value.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if tensor.HasField("shape") and all(d > 0 for d in dims) and tensor.elem_type != onnx.TensorProto.STRING:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
            sizes.append((float(math.prod(dims)) * itemsize, value.name, dims))
    if not sizes:
        return 0.0, "constant folding"
    _, name, dims = max(sizes)
    return sum(size for size, _, _ in sizes), f"evaluating the constant nodes (largest: '{name}' of shape {dims})"


def _cast_like_to_cast(graph: onnx.GraphProto, constants: set[str]) -> None:
    """``CastLike(constant, x)`` reads only x's element type: rewrite it as ``Cast`` when that is known.

    The dynamo exporter writes a zero conv bias as ``Expand(CastLike(0, images), shape)``.
    """
    elem_types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    elem_types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "CastLike" and node.input[0] in constants and elem_types.get(node.input[1]):
            target = elem_types[node.input[1]]
            data = node.input[0]
            node.op_type = "Cast"
            del node.input[:]
            node.input.append(data)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("to", target))
        elif node.op_type in ("Constant",):
            constants.update(node.output)


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    """Drop initializers no node, subgraph or graph output reads; returns how many."""
    graph = model.graph
    used = {name for node in graph.node for name in _all_inputs(node)} | {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    unused = [i for i, init in enumerate(graph.initializer) if init.name not in used and init.name not in graph_inputs]
    for index in reversed(unused):  # deleting in place never copies the tensors that stay
        del graph.initializer[index]
    return len(unused)


def _all_inputs(node: onnx.NodeProto):
    """A node's inputs and every name its subgraphs read from outside."""
    yield from node.input
    for attr in node.attribute:
        subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subgraphs:
            for inner in sub.node:
                yield from _all_inputs(inner)
