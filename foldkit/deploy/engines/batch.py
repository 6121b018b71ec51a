"""The per-batch work of every detect engine: read, letterbox, run, decode, draw — defined once.

The local engine calls :func:`detect_batch` in its own process; the Ray engine calls it inside each
actor. Preprocessing and decoding are called by name from :mod:`foldkit.deploy.yolo`, so a change
there reaches both engines at once. An image that cannot be read becomes an outcome carrying its
error, not an exception: the Ray engine reports it as a row, the local engine refuses the run.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foldkit.darknet.head_decode import HeadSpec
from foldkit.defaults import DEFAULT_LETTERBOX, DEFAULT_RESIZE
from foldkit.deploy.letterbox import Letterbox, letterbox
from foldkit.deploy.nms_graph import nms_settings
from foldkit.deploy.nms_model import NmsRunner
from foldkit.deploy.sizing import image_sizes, run_size, size_groups
from foldkit.deploy.yolo import Detection, decode_heads, heads_from_metadata, parse_anchors, postprocess
from foldkit.errors import FoldkitError
from foldkit.onnxio.input_size import Size
from foldkit.onnxio.metadata import DECODED_KEY
from foldkit.runtime import Predictor

DRAWN_JPEG_QUALITY = 92


def load_image(path: Path) -> np.ndarray:
    """An RGB uint8 HWC array, or a one-line error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise FoldkitError(f"{path}: cannot read the image ({type(exc).__name__}: {detail})") from None


class YoloRunner:
    """A predictor plus what it takes to turn its outputs into boxes.

    ``img_size`` is the size a dynamic model runs at (default: the size it was exported at);
    ``letterbox`` how images are fitted into it (:mod:`foldkit.deploy.sizing`).
    """

    def __init__(self, predictor: Predictor, heads: list[HeadSpec] | None, *, img_size: int | Size | None = None,
                 letterbox: str = DEFAULT_LETTERBOX) -> None:
        self.predictor, self.letterbox = predictor, letterbox
        self.sizing, self.input_size = run_size(predictor, img_size, letterbox)
        self.decoded = predictor.metadata.get(DECODED_KEY) == "true"
        self.heads = heads
        if not self.decoded and heads is None:
            raise FoldkitError(
                f"{predictor.path}: no YOLO metadata in the model (not exported by foldkit?); "
                "pass --classes and --anchors (and --scale-x-y where the cfg has it)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = list(self.predictor(batch).values())
        if self.decoded:
            if len(outputs) != 1 or outputs[0].ndim != 3 or outputs[0].shape[2] < 6:
                raise FoldkitError(f"{self.predictor.path}: outputs {[list(o.shape) for o in outputs]} are not "
                                   "decoded YOLO boxes (N, boxes, 4 + 1 + classes)")
            return outputs[0]
        if self.heads is None:
            raise FoldkitError(f"{self.predictor.path}: no YOLO head description to decode the raw outputs with")
        return decode_heads(outputs, self.heads, (batch.shape[2], batch.shape[3]))

    def detect(self, batch: np.ndarray, letterboxes: list[Letterbox], *, conf: float, iou: float,
               names: list[str] | None) -> list[list[Detection]]:
        """Detections of the first ``len(letterboxes)`` images of ``batch``, in each original image's pixels."""
        return postprocess(self(batch)[:len(letterboxes)], letterboxes, conf=conf, iou=iou, names=names)


Runner = YoloRunner | NmsRunner  # raw or decoded heads decoded here; or a graph that ends with NMS


@dataclass(frozen=True)
class RunnerSpec:
    """How to open a :class:`YoloRunner`: small and picklable, so each Ray actor opens its own session.

    ``threads`` is ONNX Runtime's intra-op thread count (None: its default, all cores); ``precision``
    OpenVINO's precision hint; ``resize`` how images are letterboxed (Darknet's arithmetic or PIL's);
    ``img_size`` and ``letterbox`` the size a dynamic model runs at and whether to trim it per image.
    """

    model: str
    providers: str | tuple[str, ...] = "auto"
    strict: bool = False
    classes: int | None = None
    anchors: str | None = None
    scale_x_y: float = 1.0
    head_kind: str = "yolo"
    threads: int | None = None
    precision: str = "fp32"
    resize: str = DEFAULT_RESIZE
    img_size: int | Size | None = None
    letterbox: str = DEFAULT_LETTERBOX

    def build(self) -> Runner:
        predictor = Predictor(self.model, providers=self.providers, strict=self.strict, threads=self.threads,
                              precision=self.precision)
        heads: list[HeadSpec] | None
        if self.anchors is not None:
            if self.classes is None:
                raise FoldkitError("--anchors needs --classes")
            # kind "region": YOLOv2, anchors in grid cells
            heads = parse_anchors(self.anchors, self.classes, self.scale_x_y, kind=self.head_kind)
        else:
            heads = heads_from_metadata(predictor.metadata)
        settings = nms_settings(predictor.metadata)  # a graph that ends with NMS: thresholds are its inputs
        if settings is not None:
            return NmsRunner(predictor, settings, img_size=self.img_size, letterbox=self.letterbox)
        return YoloRunner(predictor, heads, img_size=self.img_size, letterbox=self.letterbox)


@dataclass
class ImageOutcome:
    """One image's answer: its size and detections, or why it could not be read; the drawing as JPEG."""

    path: Path
    width: int = 0
    height: int = 0
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None
    drawn: bytes | None = None


def detect_batch(runner: Runner, paths: Sequence[Path], *, conf: float, iou: float, names: list[str] | None,
                 drawings: bool, resize: str = DEFAULT_RESIZE) -> list[ImageOutcome]:
    """Detect objects in one batch of images (in order); unreadable ones come back with their error.

    A fixed-batch model gets the batch padded with zeros; with ``drawings`` each readable image's
    boxes are drawn and JPEG-encoded here, where the pixels are.
    """
    outcomes = [ImageOutcome(Path(p)) for p in paths]
    images: list[tuple[ImageOutcome, np.ndarray]] = []
    for outcome in outcomes:
        try:
            images.append((outcome, load_image(outcome.path)))
        except FoldkitError as exc:
            outcome.error = str(exc)
    if not images:
        return outcomes
    sizes = image_sizes([image.shape for _, image in images], runner.input_size, runner.sizing.stride,
                        runner.letterbox)
    found: list[list[Detection]] = [[] for _ in images]
    for group in size_groups(sizes):  # a rect letterbox's differently sized inputs cannot share a tensor
        for index, detections in zip(group, _detect_group(runner, [images[i][1] for i in group], sizes[group[0]],
                                                          conf=conf, iou=iou, names=names, resize=resize),
                                     strict=True):
            found[index] = detections
    for (outcome, image), detections in zip(images, found, strict=True):
        outcome.height, outcome.width = int(image.shape[0]), int(image.shape[1])
        outcome.detections = detections
        if drawings:
            buffer = io.BytesIO()
            draw(image, detections).save(buffer, format="JPEG", quality=DRAWN_JPEG_QUALITY)
            outcome.drawn = buffer.getvalue()
    return outcomes


def _detect_group(runner: Runner, images: list[np.ndarray], size: Size, *, conf: float, iou: float,
                  names: list[str] | None, resize: str) -> list[list[Detection]]:
    """Images letterboxed to one size, run as one batch (zero-padded to a fixed batch size)."""
    fitted = [letterbox(image, size, resize) for image in images]
    tensors = np.concatenate([t for t, _ in fitted])
    fixed = runner.predictor.fixed_batch
    if fixed and len(images) < fixed:
        tensors = np.concatenate([tensors, np.zeros((fixed - len(images), *tensors.shape[1:]), np.float32)])
    return runner.detect(tensors, [lb for _, lb in fitted], conf=conf, iou=iou, names=names)


def image_record(outcome: ImageOutcome, predictor: Predictor, resize: str) -> dict[str, Any]:
    """The per-image JSON object every engine writes (a row of the table): what ran it, and how it was resized."""
    ran = {"model": str(predictor.path), "provider": predictor.provider, "runtime": predictor.record()}
    if outcome.error is not None:
        return {"image": str(outcome.path), **ran, "error": outcome.error}
    return {
        "image": str(outcome.path), "width": outcome.width, "height": outcome.height, **ran, "resize": resize,
        "detections": [d.to_dict() for d in outcome.detections],
    }


def draw(image: np.ndarray, detections: list[Detection]):
    """The image with each detection's box and 'label score' drawn on it (a PIL image)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    for d in detections:
        hue = (d.class_id * 67) % 256
        color = (255 - hue, (hue * 3) % 256, hue)
        pen.rectangle(d.box, outline=color, width=2)
        text = f"{d.label} {d.score:.2f}"
        left, top = d.box[0], max(0.0, d.box[1] - 12)
        pen.rectangle(pen.textbbox((left, top), text), fill=color)
        pen.text((left, top), text, fill=(255, 255, 255))
    return canvas
