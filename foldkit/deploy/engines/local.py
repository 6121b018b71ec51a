"""The local engine: batches run one after another in this process, results written as they come.

Here an unreadable image fails the run (nothing is written), as ``foldkit detect`` always did;
the Ray engine, built for collections too large to pre-check, reports it as a row instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from foldkit.defaults import DEFAULT_RESIZE
from foldkit.deploy.engines.batch import Runner, detect_batch, image_record
from foldkit.deploy.engines.sinks import Sink
from foldkit.deploy.yolo import Detection
from foldkit.errors import FoldkitError


@dataclass
class ImageResult:
    image: Path
    detections: list[Detection]
    json_path: Path | None = None
    drawn_path: Path | None = None


def detect_all(runner: Runner, paths: Sequence[Path], sink: Sink | None, *, batch: int, conf: float,
               iou: float, names: list[str] | None, drawings: bool, resize: str = DEFAULT_RESIZE,
               progress: Callable[[int, int, str], None] | None = None) -> list[ImageResult]:
    """Every image through :func:`detect_batch`, ``batch`` at a time, each result handed to ``sink``."""
    results: list[ImageResult] = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        outcomes = detect_batch(runner, chunk, conf=conf, iou=iou, names=names, drawings=drawings, resize=resize)
        for index, outcome in enumerate(outcomes, start):
            if outcome.error is not None:
                raise FoldkitError(outcome.error)
            result = ImageResult(outcome.path, outcome.detections)
            if sink is not None:
                record = image_record(outcome, runner.predictor, resize)
                result.json_path, result.drawn_path = sink.add(index, record, outcome.drawn)
            results.append(result)
        if progress is not None:
            progress(len(results), len(paths), chunk[-1].name)
    return results
