"""``foldkit detect``: run a YOLO ONNX model on images, write detections as JSON and drawn images.

Outputs never touch inputs: the output folder may not be (or lie inside) an input folder, every
output path is checked before the model runs, and the whole set is staged beside its targets and
renamed into place only when every image is done. This module checks a run (:func:`prepare_job`) and
runs it locally; the per-batch work and the engines that run it live in :mod:`foldkit.deploy.engines`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldkit.defaults import DEFAULT_LETTERBOX, DEFAULT_RESIZE
from foldkit.deploy.engines.batch import Runner, RunnerSpec
from foldkit.deploy.engines.batch import load_image as load_image  # its home moved; importers keep this name
from foldkit.deploy.engines.local import ImageResult, detect_all
from foldkit.deploy.engines.sinks import check_table_path, open_sink
from foldkit.deploy.engines.sources import expand_sources
from foldkit.deploy.letterbox import check_resize
from foldkit.deploy.sizing import check_letterbox
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction, check_outputs, read_text_input, require_input_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to their regular image files, sorted; list files and globs expanded."""
    images: list[Path] = []
    for item in map(Path, expand_sources(inputs)):
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


@dataclass
class DetectJob:
    """A checked detect run: its images, their output names, where results go, and the model to open."""

    paths: list[Path]
    stems: list[str]
    out: Path | None
    table: Path | None
    spec: RunnerSpec
    runner: Runner
    names: list[str] | None
    batch: int
    inputs: list  # every file the run reads: never an output
    overwrite: bool = False  # replace existing result files of the same names (they may be the user's own)

    @property
    def drawings(self) -> bool:
        return self.out is not None and self.table is None


def prepare_job(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    table: str | os.PathLike | None = None,
    names: str | os.PathLike | None = None,
    providers: str | Sequence[str] = "auto",
    strict: bool = False,
    batch: int = 1,
    classes: int | None = None,
    anchors: str | None = None,
    scale_x_y: float = 1.0,
    head_kind: str = "yolo",
    resize: str = DEFAULT_RESIZE,
    overwrite: bool = False,
    precision: str = "fp32",
    img_size: int | tuple[int, int] | None = None,
    letterbox: str = DEFAULT_LETTERBOX,
) -> DetectJob:
    """Everything checked before any image runs: inputs, outputs (never an input), the model and its heads.

    With ``table`` the results go to that one file instead of ``out_dir``. Images are letterboxed as
    Darknet does (``resize="darknet"``, so a network exported from a Darknet cfg finds what ``darknet
    detect`` finds) or with PIL's filter (``resize="pil"``); each record says which. An existing file
    of an output's name is replaced only with ``overwrite``. ``precision`` is OpenVINO's inference
    precision hint (``--providers openvino``); each record says what ran the model. ``img_size`` is the
    size a model with a dynamic height and width runs at (a fixed model refuses another);
    ``letterbox="rect"`` trims each image's input to the next multiple of the network stride
    (:mod:`foldkit.deploy.sizing`): images of different sizes then run in separate batches.
    """
    check_resize(resize)
    check_letterbox(letterbox)
    paths = collect_images(inputs)
    read = [model, names, *paths]
    out = Path(out_dir) if out_dir is not None and table is None else None
    stems = output_stems(paths)
    if table is not None:
        check_table_path(Path(table))
        check_outputs([table], read, replace=overwrite)
    if out is not None:
        _check_out_dir(out, inputs)
        targets = [out / f"{stem}{suffix}" for stem in stems for suffix in (".json", ".jpg")]
        check_outputs(targets if out.is_dir() else [], read, replace=overwrite)
    spec = RunnerSpec(str(model), providers if isinstance(providers, str) else tuple(providers), strict, classes,
                      anchors, scale_x_y, head_kind, precision=precision, resize=resize, img_size=img_size,
                      letterbox=letterbox)
    runner = spec.build()
    return DetectJob(paths, stems, out, Path(table) if table is not None else None, spec, runner,
                     load_names(names), runner.predictor.fixed_batch or batch, read, overwrite)


def detect_images(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    progress: Callable[[int, int, str], None] | None = None,
    **settings: Any,
) -> list[ImageResult]:
    """Detect objects in every image; with ``out_dir``, write ``<stem>.json`` and ``<stem>.jpg`` per image.

    Where two images share a stem their file names are used instead (``a.png.json``); with
    ``table=`` one .parquet or .jsonl file gets a row per image instead. ``settings`` are
    :func:`prepare_job`'s. Nothing is written unless every image succeeds.
    """
    job = prepare_job(model, inputs, out_dir, **settings)
    with OutputTransaction(job.inputs, replace=job.overwrite) as staged:
        sink = open_sink(staged, out=job.out, table=job.table, stems=job.stems)
        try:
            return detect_all(job.runner, job.paths, sink, batch=job.batch, conf=conf, iou=iou, names=job.names,
                              drawings=job.drawings, resize=job.spec.resize, progress=progress)
        finally:
            if sink is not None:
                sink.close()
