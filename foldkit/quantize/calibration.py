"""Calibration inputs for static int8 quantization: images, an ``.npy`` batch, or seeded noise.

Whatever the source, the result is one float32 NCHW array that matches the model's input, split
into the part ONNX Runtime calibrates on and a held-out part that the quantized model is judged
on (never the same inputs: ranges fitted to an input flatter the error measured on it). Images
go through one preprocessing hook (:func:`default_preprocess`, the letterbox of ``foldkit
detect``), so calibration sees what deployment sees; a folder is judged on seeded variants of its
images (:mod:`foldkit.quantize.augment`) that go through the same hook.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from foldkit.errors import FoldkitError
from foldkit.probe import draw_uniform

HELD_OUT_FRACTION = 0.25  # of an .npy batch (or a folder given a held-out count); at least one input

Preprocess = Callable[[Path], np.ndarray]  # an image file → the network's 1×C×H×W float32 input


def default_preprocess(size: tuple[int, int]) -> Preprocess:
    """How ``foldkit detect`` feeds an image of a file to a network of input H×W: the one place to change."""
    from foldkit.deploy.detect import load_image
    from foldkit.deploy.letterbox import letterbox

    return lambda path: letterbox(load_image(path), size)[0]


class SyntheticCalibrationWarning(UserWarning):
    """Calibrating on random noise: fine for a smoke test, meaningless for deployment accuracy."""


@dataclass
class CalibrationData:
    """The inputs ORT calibrates on, the held-out inputs the result is judged on, and where they came from."""

    calibration: np.ndarray  # N×C×H×W float32
    held_out: np.ndarray
    source: str
    synthetic: bool

    def reader(self, input_name: str) -> CalibrationDataReader:
        """A fresh ORT data reader over the calibration inputs, one sample per batch."""
        return _ArrayReader(input_name, self.calibration)


class _ArrayReader(CalibrationDataReader):
    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self._name = input_name
        self._batch = batch
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batch):
            return None
        self._next += 1
        return {self._name: self._batch[self._next - 1:self._next]}

    def __len__(self) -> int:
        return len(self._batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._batch = self._batch[start_index:end_index]
        self._next = 0


def model_input(model: onnx.ModelProto, where: str) -> tuple[str, tuple[int | None, ...]]:
    """The model's single image input: its name and NCHW shape (None where the dim is symbolic)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FoldkitError(f"{where}: quantize needs a model with one input, this one has {len(inputs)}")
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise FoldkitError(f"{where}: input '{inputs[0].name}' has rank {len(dims)}; quantize expects NCHW images")
    return inputs[0].name, _exported_size(model, dims, where)


def _exported_size(model: onnx.ModelProto, dims: tuple[int | None, ...], where: str) -> tuple[int | None, ...]:
    """A dynamic height and width calibrate at the size a foldkit export was traced at (its metadata)."""
    from foldkit.onnxio.input_size import input_size
    from foldkit.onnxio.metadata import read_metadata

    if dims[2] is not None or dims[3] is not None:
        return dims
    try:
        return (*dims[:2], *input_size(dims, read_metadata(model), where).choose(None))
    except FoldkitError:  # no size stated: calibration data of its own size (.npy) is still accepted
        return dims


def load_calibration(
    shape: tuple[int | None, ...],
    *,
    calib: str | os.PathLike | None = None,
    random_count: int | None = None,
    held_out: int | None = None,
    seed: int = 0,
    preprocess: Preprocess | None = None,
    variants: int = 0,
) -> CalibrationData:
    """Calibration and held-out inputs for a model whose input is ``shape`` (NCHW, None = symbolic).

    ``calib`` is a folder of images (each through ``preprocess``, default :func:`default_preprocess`)
    or an ``.npy`` array N×C×H×W; otherwise ``random_count`` seeded uniform [0, 1) inputs (a
    warning says they are for smoke tests only). A folder with ``variants`` > 0 and no ``held_out``
    count calibrates on every image and is judged on ``variants`` seeded variants of each;
    otherwise ``held_out`` inputs are kept apart (default: a quarter, at least one; for random
    inputs, as many more seeded ones).
    """
    if (calib is None) == (random_count is None):
        raise FoldkitError("give calibration data: a folder of images or an .npy file, or a count of random inputs")
    if calib is None:
        return _random(shape, random_count or 0, held_out, seed)
    path = Path(calib)
    if path.is_dir():
        if held_out is None and variants > 0:
            return _folder_with_variants(path, shape, preprocess, variants, seed)
        batch = _images(_collect(path), shape, preprocess)
        source = f"{len(batch)} images in {path}"
    elif path.suffix.lower() == ".npy" and path.is_file():
        batch, source = _npy(path, shape), str(path)
    elif path.exists():
        raise FoldkitError(f"{path}: calibration data must be a folder of images or an .npy file")
    else:
        raise FoldkitError(f"{path}: no such calibration folder or file")
    count = held_out if held_out is not None else max(1, round(len(batch) * HELD_OUT_FRACTION))
    if len(batch) < count + 1:
        raise FoldkitError(f"{path}: {len(batch)} input(s); need at least {count + 1} "
                           f"(calibration plus {count} held out)")
    return CalibrationData(batch[:-count], batch[-count:], source=f"{source}: {len(batch) - count} calibration, "
                           f"{count} held out", synthetic=False)


def _folder_with_variants(folder: Path, shape: tuple[int | None, ...], preprocess: Preprocess | None,
                          variants: int, seed: int) -> CalibrationData:
    from foldkit.quantize.augment import write_variants

    images = _collect(folder)
    calibration = _images(images, shape, preprocess)
    with tempfile.TemporaryDirectory(prefix="foldkit-held-out-") as tmp:
        held_out = _images(write_variants(images, variants, seed, Path(tmp)), shape, preprocess)
    return CalibrationData(calibration, held_out, synthetic=False, source=(
        f"{len(images)} images in {folder}, all calibration; held out: {len(held_out)} seeded variants of them "
        f"(crop, mirror, stretch; seed {seed}), the same scenes, which flatters the result somewhat"))


def _collect(folder: Path) -> list[Path]:
    from foldkit.deploy.detect import collect_images

    return collect_images([folder])


def _spatial(shape: tuple[int | None, ...], what: str) -> tuple[int, int]:
    if shape[2] is None or shape[3] is None:
        raise FoldkitError(f"{what}: the model's input height and width are symbolic; give an .npy batch instead")
    return shape[2], shape[3]


def _random(shape: tuple[int | None, ...], count: int, held_out: int | None, seed: int) -> CalibrationData:
    if count < 1:
        raise FoldkitError(f"--calib-random needs a positive count, got {count}")
    height, width = _spatial(shape, "--calib-random")
    extra = held_out if held_out is not None else max(1, round(count * HELD_OUT_FRACTION))
    warnings.warn(f"calibrating on {count} random inputs: for smoke tests only; int8 accuracy on real data "
                  "needs real calibration images", SyntheticCalibrationWarning, stacklevel=3)
    # the in-range draw of the parity probes (foldkit.probe), so calibration and proofs see the same inputs
    batch = draw_uniform(np.random.default_rng(seed), (count + extra, shape[1] or 3, height, width))
    return CalibrationData(batch[:count], batch[count:], source=f"{count} seeded random inputs (seed {seed}), "
                           f"{extra} held out", synthetic=True)


def _images(images: list[Path], shape: tuple[int | None, ...], preprocess: Preprocess | None) -> np.ndarray:
    folder = images[0].parent
    if preprocess is None:
        if shape[1] not in (None, 3):
            raise FoldkitError(f"{folder}: images are RGB, but the model's input has {shape[1]} channels")
        preprocess = default_preprocess(_spatial(shape, str(folder)))
    batch = np.concatenate([preprocess(path) for path in images]).astype(np.float32)
    if batch.ndim != 4 or any(want is not None and got != want
                              for got, want in zip(batch.shape[1:], shape[1:], strict=True)):
        raise FoldkitError(f"{folder}: preprocessing gives inputs of shape {list(batch.shape[1:])}, "
                           f"the model takes {list(shape[1:])}")
    return batch


def _npy(path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
    try:
        batch = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FoldkitError(f"{path}: cannot read the array ({str(exc).splitlines()[0]})") from None
    expected = "×".join("?" if d is None else str(d) for d in ("N", *shape[1:]))
    mismatched = batch.ndim != 4 or any(
        want is not None and got != want for got, want in zip(batch.shape[1:], shape[1:], strict=True))
    if mismatched:
        raise FoldkitError(f"{path}: array of shape {'×'.join(map(str, batch.shape))} does not match the model "
                           f"input {expected}")
    if batch.dtype.kind != "f" or not np.isfinite(batch).all():
        raise FoldkitError(f"{path}: calibration inputs must be finite floats, got {batch.dtype}"
                           + ("" if batch.dtype.kind != "f" else " with NaN or inf values"))
    return batch.astype(np.float32)
