"""The one Darknet export: a built-in name or cfg (with or without ``.weights``) → an ONNX file.

Two routes, one result. With ``.weights`` and no in-graph decoding the graph is written directly
from the cfg and the weights with numpy (:mod:`foldkit.darknet.to_onnx`): no PyTorch, tensors
streamed into the file. Otherwise the network is built in PyTorch and exported through
:func:`foldkit.export.export_onnx` (``torchscript`` or ``dynamo``). Either way BatchNorm is folded
by the same float64 arithmetic, the file carries the same metadata, and the same inputs give the
same bytes: a network without ``.weights`` gets seeded random weights (seed 0 unless told), never
unseeded ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from foldkit.darknet.budget import estimate_bytes
from foldkit.darknet.builtin import BUILTIN_MODELS
from foldkit.darknet.plan import plan_network
from foldkit.darknet.sizes import ImageSize, is_dynamic, network_stride, require_dynamic, stride_text
from foldkit.darknet.specs import NetInfo, NetworkPlan
from foldkit.darknet.to_onnx import MIN_OPSET, darknet_to_onnx
from foldkit.defaults import DEFAULT_OPSET, DYNAMIC_SIZE, EXPORT_ROUTES
from foldkit.deploy.nms_graph import NmsSettings, append_nms
from foldkit.errors import FoldkitError
from foldkit.export import ExportResult, export_onnx
from foldkit.limits import ensure_fits
from foldkit.onnxio.files import check_outputs, require_input_file, save_onnx
from foldkit.onnxio.metadata import STRIDE_KEY, add_metadata, network_metadata

if TYPE_CHECKING:
    from foldkit.darknet.build import DarknetModel

ROUTES = EXPORT_ROUTES
Route = Literal["auto", "direct", "torchscript", "dynamo"]
DEFAULT_SEED = 0  # the seed of a network exported without .weights when none is given


def input_shape(info: NetInfo, batch: int | None) -> tuple[int, int, int, int]:
    """NCHW input shape of a network; a dynamic batch (``None``) is traced with batch 1."""
    return (1 if batch is None else batch, info.channels, info.height, info.width)


def activation_bytes(plan: NetworkPlan, batch: int | None) -> float:
    """float32 bytes of the input and every layer's output for one forward pass (what tracing holds)."""
    _, per_image = estimate_bytes(plan)
    return 4.0 * (math.prod(input_shape(plan.info, batch)) + (1 if batch is None else batch) * per_image)


def require_regular_inputs(model: str | os.PathLike, weights: str | os.PathLike | None) -> None:
    """The cfg and weights files must be regular files: a FIFO or a device would block or stream forever."""
    if weights is not None:
        require_input_file(weights, "weights file")
    if str(model) not in BUILTIN_MODELS and Path(model).exists():
        require_input_file(model, "cfg")


def choose_route(route: Route, *, weights: bool, decode: bool, opset: int) -> str:
    """The route ``auto`` resolves to: direct when it can (weights given, no decoding), else torchscript."""
    if route not in ROUTES:
        raise FoldkitError(f"unknown exporter {route!r}; choose one of {', '.join(ROUTES)}")
    if route != "auto":
        return route
    return "direct" if weights and not decode and opset >= MIN_OPSET else "torchscript"


def export_darknet(
    model: str | os.PathLike,
    output: str | os.PathLike | None,
    *,
    weights: str | os.PathLike | None = None,
    seed: int | None = None,
    img_size: ImageSize | str | None = None,
    batch: int | None = 1,
    opset: int = DEFAULT_OPSET,
    fold: bool = True,
    decode: bool = False,
    exporter: Route = "auto",
    bn_variant: str = "alexeyab",
    progress: Callable[[int, int, str], None] | None = None,
    nms: NmsSettings | None = None,
) -> ExportResult:
    """Export a Darknet network to ONNX at ``output`` (``None``: build and validate only).

    ``weights`` is a Darknet ``.weights`` file; without it the weights are seeded random ones with
    realistic BatchNorm statistics (``seed``, default :data:`DEFAULT_SEED`), and the result says so.
    ``batch=None`` makes the batch dimension dynamic; ``img_size="dynamic"`` the height and width, where
    the network allows it (:func:`foldkit.darknet.sizes.require_dynamic` names the layer that does
    not), traced at the cfg's size. The network stride goes into the metadata. ``decode`` puts YOLO
    decoding in the graph (PyTorch routes only); ``nms`` implies it and ends the graph with NonMaxSuppression
    (:mod:`foldkit.deploy.nms_graph`). ``progress(done, total, label)`` follows the direct route.
    """
    decode = decode or nms is not None
    require_regular_inputs(model, weights)
    check_outputs([output], [model, weights])
    if weights is not None and seed is not None:
        raise FoldkitError("weights and a random-weights seed exclude each other: give one of them")
    route = choose_route(exporter, weights=weights is not None, decode=decode, opset=opset)
    dynamic_size = is_dynamic(img_size)
    if isinstance(img_size, str) and not dynamic_size:
        raise FoldkitError(f"img_size must be a size or {DYNAMIC_SIZE!r}, not {img_size!r}")
    plan = plan_network(model, None if dynamic_size else cast(ImageSize | None, img_size))
    stride = require_dynamic(model, plan) if dynamic_size else network_stride(plan)
    sized = dict(img_size=None if dynamic_size else img_size, dynamic_size=dynamic_size, stride=stride)
    if route == "direct":
        if weights is None:
            raise FoldkitError("the direct exporter converts a cfg with its .weights; without weights use torchscript")
        if decode:
            raise FoldkitError("in-graph decoding goes through PyTorch: use the torchscript (or auto) exporter")
        return _export_direct(model, output, weights=weights, batch=batch, opset=opset, fold=fold,
                              bn_variant=bn_variant, progress=progress, **sized)
    return _export_torch(model, output, weights=weights, seed=seed, batch=batch, opset=opset,
                         fold=fold, decode=decode, exporter=route,
                         bn_variant=bn_variant, nms=nms, **sized)


def _export_direct(model, output, *, weights, img_size, batch, opset, fold, bn_variant, progress, dynamic_size,
                   stride) -> ExportResult:
    converted = darknet_to_onnx(model, weights, img_size=img_size, batch=batch, opset=opset, fold=fold,
                                bn_variant=bn_variant, progress=progress, dynamic_size=dynamic_size)
    shape = input_shape(converted.plan.info, batch)
    add_metadata(converted.graph_model,
                 network_metadata(converted.plan.info, shape, decoded=False) | {STRIDE_KEY: stride_text(stride)})
    if output is not None:
        converted.save(output)
    return ExportResult(path=None if output is None else Path(output), model=None,
                        fold_report=converted.fold_report, opset=opset, input_shape=shape,
                        dynamic_batch=batch is None, exporter="direct", weights_source=os.fspath(weights),
                        dynamic_size=dynamic_size)


def load_network(
    model: str | os.PathLike, *, weights: str | os.PathLike | None = None, seed: int | None = None,
    img_size: int | tuple[int, int] | None = None, bn_variant: str = "alexeyab",
) -> tuple[DarknetModel, str]:
    """The PyTorch network with its weights, and a line saying where they came from.

    Without ``weights`` the weights are seeded random ones with realistic BatchNorm statistics
    (``seed``, default :data:`DEFAULT_SEED`).
    """
    from foldkit.darknet.build import build_model
    from foldkit.darknet.weights import load_weights
    from foldkit.synthetic import randomize_batchnorm

    require_regular_inputs(model, weights)
    if weights is not None and seed is not None:
        raise FoldkitError("weights and a random-weights seed exclude each other: give one of them")
    seed = DEFAULT_SEED if seed is None else seed
    network = build_model(model, img_size, seed=seed)
    if weights is not None:
        load_weights(network, weights, bn_variant=bn_variant)
        return network, os.fspath(weights)
    randomize_batchnorm(network, (2, *input_shape(network.info, 1)[1:]), seed=seed)
    return network, f"seeded random weights (seed {seed})"


def _export_torch(model, output, *, weights, seed, img_size, batch, opset, fold, decode, exporter,
                  bn_variant, nms, dynamic_size, stride) -> ExportResult:
    from foldkit.darknet.decode import YoloDecoder

    network, source = load_network(model, weights=weights, seed=seed, img_size=img_size, bn_variant=bn_variant)
    shape = input_shape(network.info, batch)
    ensure_fits(activation_bytes(network.plan, batch), f"{model}: tracing at input shape {list(shape)}")
    if decode and not network.is_detector:
        raise FoldkitError(f"{model}: in-graph decoding needs a detector with [yolo] or [region] sections")
    exported = YoloDecoder(network, dynamic_size=dynamic_size) if decode else network
    result = export_onnx(exported, None if nms is not None else output, input_shape=shape, fold=fold, opset=opset,
                         dynamic_batch=batch is None, exporter=exporter, dynamic_size=dynamic_size,
                         size_multiple=stride, metadata={STRIDE_KEY: stride_text(stride)})
    result.weights_source = source
    if nms is not None and result.model is not None:
        result.model = append_nms(result.model, nms, where=str(model))
        if output is not None:
            save_onnx(result.model, output)
            result.path = Path(output)
    return result
