"""``foldkit detect``: run a YOLO ONNX model on images, write detections as JSON and drawn images.

Outputs never touch inputs: the output folder may not be (or lie inside) an input folder, every
output path is checked before the model runs, and the whole set is staged beside its targets and
renamed into place only when every image is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foldkit import strict_json
from foldkit.darknet.head_decode import HeadSpec
from foldkit.defaults import DEFAULT_RESIZE
from foldkit.deploy.letterbox import Letterbox, check_resize, letterbox
from foldkit.deploy.nms_graph import nms_settings
from foldkit.deploy.nms_model import NmsRunner
from foldkit.deploy.yolo import Detection, decode_heads, heads_from_metadata, parse_anchors, postprocess
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction, check_outputs, read_text_input, require_input_file
from foldkit.onnxio.metadata import DECODED_KEY
from foldkit.runtime import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ImageResult:
    image: Path
    detections: list[Detection]
    json_path: Path | None = None
    drawn_path: Path | None = None


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to their regular image files, sorted."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif not item.exists():
            raise FoldkitError(f"{item}: no such image or folder")
        else:
            images.append(require_input_file(item, "image"))
    if not images:
        raise FoldkitError(f"no images found in {', '.join(map(str, inputs))}")
    unique = {path.resolve(): path for path in reversed(images)}  # an image named twice is detected once
    return [path for path in images if unique[path.resolve()] is path]


def load_image(path: Path) -> np.ndarray:
    """An RGB uint8 HWC array, or a one-line error naming the file."""
    import warnings

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


def load_names(path: str | os.PathLike | None) -> list[str] | None:
    """Class names, one per line (Darknet's .names files)."""
    if path is None:
        return None
    text = read_text_input(path, "class names file")
    return [line.strip() for line in text.splitlines() if line.strip()]


def output_stems(images: Sequence[Path]) -> list[str]:
    """Each image's output name: its stem, or its file name where stems collide (a.jpg + a.png)."""
    stems = [p.stem for p in images]
    chosen = [p.stem if stems.count(p.stem) == 1 else p.name for p in images]
    first: dict[str, Path] = {}
    for path, name in zip(images, chosen, strict=True):
        if name in first and first[name] != path:
            raise FoldkitError(f"{first[name]} and {path} would write the same outputs ({name}.json); "
                               "detect them in separate runs or into separate folders")
        first[name] = path
    return chosen


def _check_out_dir(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    resolved = out.resolve()
    for folder in (Path(i).resolve() for i in inputs if Path(i).is_dir()):
        if resolved == folder or folder in resolved.parents:
            raise FoldkitError(f"{out}: the output folder is (inside) the input folder {folder}; its drawn images "
                               "would mix with the inputs — choose another folder")
    if out.exists() and not out.is_dir():
        raise FoldkitError(f"{out}: exists and is not a folder")


class YoloRunner:
    """A predictor plus what it takes to turn its outputs into boxes."""

    def __init__(self, predictor: Predictor, heads: list[HeadSpec] | None) -> None:
        self.predictor = predictor
        shape = predictor.input_shape
        if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
            raise FoldkitError(f"{predictor.path}: input shape {shape} is not NCHW with a fixed height and width")
        self.input_size = (shape[2], shape[3])
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
        return decode_heads(outputs, self.heads, self.input_size)

    def detect(self, batch: np.ndarray, letterboxes: list[Letterbox], *, conf: float, iou: float,
               names: list[str] | None) -> list[list[Detection]]:
        """Detections of the first ``len(letterboxes)`` images of ``batch``, in each original image's pixels."""
        return postprocess(self(batch)[:len(letterboxes)], letterboxes, conf=conf, iou=iou, names=names)


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
    resize: str = DEFAULT_RESIZE,
    progress: Callable[[int, int, str], None] | None = None,
    overwrite: bool = False,
    precision: str = "fp32",
) -> list[ImageResult]:
    """Detect objects in every image; with ``out_dir``, write ``<stem>.json`` and ``<stem>.jpg`` per image.

    Images are letterboxed as Darknet does (``resize="darknet"``, so a network exported from a Darknet
    cfg finds what ``darknet detect`` finds) or with PIL's filter (``resize="pil"``); the JSON says which.
    Where two images share a stem their file names are used instead (``a.png.json``). Nothing is
    written unless every image succeeds. An existing file of that name in ``out_dir`` is replaced
    only with ``overwrite``: it may be the user's own. ``precision`` is OpenVINO's inference precision
    hint (``--providers openvino``); each JSON records what ran the model.
    """
    check_resize(resize)
    paths = collect_images(inputs)
    out = Path(out_dir) if out_dir is not None else None
    stems = output_stems(paths)
    if out is not None:
        _check_out_dir(out, inputs)
        targets = [out / f"{stem}{suffix}" for stem in stems for suffix in (".json", ".jpg")]
        check_outputs(targets if out.is_dir() else [], [model, names, *paths], replace=overwrite)
    predictor = Predictor(model, providers=providers, strict=strict, precision=precision)
    heads: list[HeadSpec] | None
    if anchors is not None:
        if classes is None:
            raise FoldkitError("--anchors needs --classes")
        heads = parse_anchors(anchors, classes, scale_x_y, kind=head_kind)  # kind "region": YOLOv2, anchors in cells
    else:
        heads = heads_from_metadata(predictor.metadata)
    settings = nms_settings(predictor.metadata)  # a graph that ends with NMS: thresholds are its inputs
    runner = YoloRunner(predictor, heads) if settings is None else NmsRunner(predictor, settings)
    class_names = load_names(names)
    batch = predictor.fixed_batch or batch
    with OutputTransaction([model, names, *paths], replace=overwrite) as staged:
        if out is not None:
            staged.make_folder(out)
        return _detect_all(runner, paths, stems, out, staged, batch=batch, conf=conf, iou=iou, names=class_names,
                           resize=resize, progress=progress)


def _detect_all(runner: YoloRunner | NmsRunner, paths: list[Path], stems: list[str], out: Path | None,
                staged: OutputTransaction, *, batch: int, conf: float, iou: float, names: list[str] | None,
                resize: str, progress: Callable[[int, int, str], None] | None) -> list[ImageResult]:
    predictor = runner.predictor
    results: list[ImageResult] = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = [load_image(p) for p in chunk]
        fitted = [letterbox(image, runner.input_size, resize) for image in images]
        tensors = np.concatenate([t for t, _ in fitted])
        if len(chunk) < batch and predictor.fixed_batch:
            tensors = np.concatenate([tensors, np.zeros((batch - len(chunk), *tensors.shape[1:]), np.float32)])
        detections = runner.detect(tensors, [lb for _, lb in fitted], conf=conf, iou=iou, names=names)
        for path, stem, image, found in zip(chunk, stems[start:start + batch], images, detections, strict=True):
            result = ImageResult(path, found)
            if out is not None:
                result.json_path, result.drawn_path = _write_outputs(staged, out / stem, path, image, found, predictor,
                                                                     resize)
            results.append(result)
        if progress is not None:
            progress(len(results), len(paths), chunk[-1].name)
    return results


def _write_outputs(staged: OutputTransaction, base: Path, path: Path, image: np.ndarray, found: list[Detection],
                   predictor: Predictor, resize: str) -> tuple[Path, Path]:
    json_path, drawn_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".jpg")
    record = {
        "image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
        "model": str(predictor.path), "provider": predictor.provider, "runtime": predictor.record(),
        "resize": resize,
        "detections": [d.to_dict() for d in found],
    }
    staged.write_text(json_path, strict_json.dumps(record, indent=2))
    draw(image, found).save(staged.path(drawn_path), format="JPEG", quality=92)
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
