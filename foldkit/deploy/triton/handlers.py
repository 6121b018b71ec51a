"""What a foldkit Python-backend entry computes for one request, free of Triton so it can be tested alone.

Two handlers, chosen when the entry is written:

- :class:`TensorHandler` runs the ONNX model on the tensors it is sent and returns every output:
  ONNX Runtime inside a server that has no onnxruntime backend.
- :class:`DetectionHandler` takes an encoded image (JPEG, PNG, … bytes) and returns detections, the
  way ``foldkit detect`` computes them: letterbox, the model, then decoding and NMS in numpy for a
  raw or decoded model, or the graph's own NMS for a model exported with ``--nms``. Rows are
  x1 y1 x2 y2 score class in the original image's pixels, ``max_det`` rows, zero past ``count``.

Both run ONNX Runtime on the CPU, unless the model carries a deployment record (``foldkit
optimize``): then the runtime, precision, optimization level and threads it was measured with.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from foldkit.defaults import DEFAULT_LETTERBOX
from foldkit.deploy.engines.batch import YoloRunner
from foldkit.deploy.letterbox import letterbox
from foldkit.deploy.nms_graph import NmsSettings, check_thresholds, nms_settings
from foldkit.deploy.nms_model import NmsRunner
from foldkit.deploy.sizing import image_sizes
from foldkit.deploy.yolo import Detection, heads_from_metadata
from foldkit.errors import FoldkitError
from foldkit.onnxio.input_size import Size
from foldkit.runtime import Predictor
from foldkit.runtime.deployment import model_deployment_record

IMAGE, CONF, IOU, DETECTIONS, COUNT = "image", "conf", "iou", "detections", "count"  # the entry's tensors
MAX_IMAGE_PIXELS = 64 * 2**20  # a request image larger than this is refused before it is decoded


class TensorHandler:
    """The model's outputs for the model's inputs, by name: on ORT's CPU provider, or as its deployment record says."""

    def __init__(self, model: Path) -> None:
        from foldkit.runtime.choice import open_backend

        record = model_deployment_record(model)
        self.backend = open_backend(model, **(record.backend_options() if record else {"providers": "cpu"}))
        self.output_names = self.backend.output_names

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.backend.run(feeds)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes → an RGB uint8 HWC array, or a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{image.width}×{image.height} is more than {MAX_IMAGE_PIXELS} pixels")
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise FoldkitError("the request's image is in no format Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FoldkitError(f"the request's image cannot be decoded ({type(exc).__name__}: {exc})") from None


class DetectionHandler:
    """An encoded image in, ``foldkit detect``'s detections out as fixed-shape tensors."""

    def __init__(self, model: Path, max_det: int, *, img_size: int | Size | None = None,
                 letterbox: str = DEFAULT_LETTERBOX) -> None:
        # A model measured by `foldkit optimize` runs as its record says ("auto" follows it); any other on the CPU.
        predictor = Predictor(model, providers="auto" if model_deployment_record(model) else "cpu")
        self.settings = nms_settings(predictor.metadata)
        self.max_det = self.settings.max_det if self.settings is not None else NmsSettings(max_det=max_det).max_det
        self.runner = (NmsRunner(predictor, self.settings, img_size=img_size, letterbox=letterbox)
                       if self.settings is not None else
                       YoloRunner(predictor, heads_from_metadata(predictor.metadata), img_size=img_size,
                                  letterbox=letterbox))
        self.defaults = self.settings or NmsSettings()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request: ``image`` (the encoded file's bytes as uint8), optional ``conf`` and ``iou``."""
        if IMAGE not in feeds or feeds[IMAGE].dtype != np.uint8:
            raise FoldkitError(f"the request needs '{IMAGE}': an encoded image's bytes as UINT8")
        conf, iou = (float(feeds[key].reshape(-1)[0]) if key in feeds else default
                     for key, default in ((CONF, self.defaults.conf), (IOU, self.defaults.iou)))
        check_thresholds(conf, iou)
        found = self.detect(decode_image(feeds[IMAGE].tobytes()), conf, iou)[:self.max_det]
        rows = np.zeros((self.max_det, 6), np.float32)
        if found:
            rows[:len(found)] = [[*d.box, d.score, d.class_id] for d in found]
        return {DETECTIONS: rows, COUNT: np.array([len(found)], np.int64)}

    def detect(self, image: np.ndarray, conf: float, iou: float) -> list[Detection]:
        """One image's detections, exactly as ``foldkit detect`` finds them (batch 1)."""
        runner = self.runner
        size = image_sizes([image.shape], runner.input_size, runner.sizing.stride, runner.letterbox)[0]
        tensor, info = letterbox(image, size)
        fixed = self.runner.predictor.fixed_batch or 1  # a fixed-batch model gets zero images after this one
        tensor = np.concatenate([tensor, np.zeros((fixed - 1, *tensor.shape[1:]), np.float32)])
        return self.runner.detect(tensor, [info], conf=conf, iou=iou, names=None)[0]
