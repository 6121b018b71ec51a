"""``foldkit detect``: run a YOLO ONNX model on images, write detections as JSON and drawn images."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from foldkit.deploy.yolo import (Detection, HeadSpec, decode_heads, heads_from_metadata, letterbox, parse_anchors,
                                 postprocess)
from foldkit.errors import FoldkitError
from foldkit.fileio import write_atomic, write_text_atomic
from foldkit.runtime import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ImageResult:
    image: Path
    detections: list[Detection]
    json_path: Path | None = None
    drawn_path: Path | None = None


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to their image files, sorted."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            images.append(item)
        else:
            raise FoldkitError(f"{item}: no such image or folder")
    if not images:
        raise FoldkitError(f"no images found in {', '.join(map(str, inputs))}")
    return images


def load_image(path: Path) -> np.ndarray:
    """An RGB uint8 HWC array, or a one-line error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FoldkitError(f"{path}: cannot read the image ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def load_names(path: str | os.PathLike | None) -> list[str] | None:
    """Class names, one per line (Darknet's .names files)."""
    if path is None:
        return None
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise FoldkitError(f"{path}: cannot read class names: {exc.strerror}") from None


class YoloRunner:
    """A predictor plus what it takes to turn its outputs into boxes."""

    def __init__(self, predictor: Predictor, heads: list[HeadSpec] | None) -> None:
        self.predictor = predictor
        shape = predictor.input_shape
        if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
            raise FoldkitError(f"{predictor.path}: input shape {shape} is not NCHW with a fixed height and width")
        self.input_size = (shape[2], shape[3])
        self.decoded = predictor.metadata.get("decoded") == "true"
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
        return decode_heads(outputs, self.heads, self.input_size)


def detect_images(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    names: str | os.PathLike | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    providers: str | Sequence[str] = "auto",
    strict: bool = False,
    batch: int = 1,
    classes: int | None = None,
    anchors: str | None = None,
    scale_x_y: float = 1.0,
    head_kind: str = "yolo",
    progress: Callable[[int, int, str], None] | None = None,
) -> list[ImageResult]:
    """Detect objects in every image; with ``out_dir``, write ``<stem>.json`` and ``<stem>.jpg`` per image."""
    predictor = Predictor(model, providers=providers, strict=strict)
    if anchors is not None:
        if classes is None:
            raise FoldkitError("--anchors needs --classes")
        heads = parse_anchors(anchors, classes, scale_x_y, kind=head_kind)  # kind "region": YOLOv2, anchors in cells
    else:
        heads = heads_from_metadata(predictor.metadata)
    runner = YoloRunner(predictor, heads)
    class_names = load_names(names)
    paths = collect_images(inputs)
    batch = predictor.fixed_batch or batch
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: list[ImageResult] = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = [load_image(p) for p in chunk]
        fitted = [letterbox(image, runner.input_size) for image in images]
        tensors = np.concatenate([t for t, _ in fitted])
        if len(chunk) < batch and predictor.fixed_batch:
            tensors = np.concatenate([tensors, np.zeros((batch - len(chunk), *tensors.shape[1:]), np.float32)])
        detections = postprocess(runner(tensors)[:len(chunk)], [lb for _, lb in fitted], conf=conf, iou=iou,
                                 names=class_names)
        for path, image, found in zip(chunk, images, detections):
            result = ImageResult(path, found)
            if out is not None:
                result.json_path, result.drawn_path = _write_outputs(out, path, image, found, predictor)
            results.append(result)
        if progress is not None:
            progress(len(results), len(paths), chunk[-1].name)
    return results


def _write_outputs(out: Path, path: Path, image: np.ndarray, found: list[Detection], predictor: Predictor):
    json_path, drawn_path = out / f"{path.stem}.json", out / f"{path.stem}.jpg"
    record = {
        "image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
        "model": str(predictor.path), "provider": predictor.provider,
        "detections": [d.to_dict() for d in found],
    }
    write_text_atomic(json_path, json.dumps(record, indent=2))
    write_atomic(drawn_path, lambda tmp: draw(image, found).save(tmp, format="JPEG", quality=92))
    return json_path, drawn_path


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
