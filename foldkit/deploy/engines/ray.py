"""The Ray engine: ``foldkit detect --engine ray``, the same per-batch work on a Ray Data pipeline.

The driver lists the images (paths only, never pixels) in blocks; ``map_batches`` hands
batches to a fixed pool of actors, each holding one ONNX Runtime session whose intra-op thread count
is the CPUs the actor reserves, so actors never oversubscribe a node. Each actor reads, letterboxes,
runs and decodes its batch with :func:`~foldkit.deploy.engines.batch.detect_batch` — the local
engine's own function — and sends back one JSON record (and drawing) per image. The driver streams
those into a sink as they arrive, staged, so memory stays flat and an interrupted run leaves nothing.

An actor that dies is restarted by Ray and the block it held is retried (Ray Data's actor pools
restart actors and retry their tasks without limit, and discard a failed task's partial output);
the driver still checks that every image came back exactly once. An
unreadable image is a row with its error, not a failed job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from foldkit import strict_json
from foldkit.deploy.detect import DetectJob, prepare_job
from foldkit.deploy.engines.batch import RunnerSpec, detect_batch, image_record
from foldkit.deploy.engines.sinks import Sink, open_sink
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction

MAX_BLOCK_IMAGES = 256  # paths per Ray Data block: the unit of scheduling and of retry
BLOCKS_PER_WORKER = 4  # at least this many blocks per actor, so the pool stays busy to the end


@dataclass
class RaySummary:
    """What a Ray run did: images (with the unreadable ones), detections, the pool that ran them."""

    images: int
    detections: int
    errors: int
    workers: int
    threads: int
    seconds: float


class DetectActor:
    """One Ray Data actor: one session, opened once, then :func:`detect_batch` per batch."""

    def __init__(self, spec: RunnerSpec, conf: float, iou: float, names: list[str] | None, drawings: bool) -> None:
        self.runner, self.resize = spec.build(), spec.resize
        self.conf, self.iou, self.names, self.drawings = conf, iou, names, drawings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows ``index, record`` (the image's JSON), ``drawn`` (JPEG or b""), ``fatal`` (why the job must stop)."""
        count = len(batch["index"])
        try:
            outcomes = detect_batch(self.runner, [Path(p) for p in batch["path"]], conf=self.conf, iou=self.iou,
                                    names=self.names, drawings=self.drawings, resize=self.resize)
        except FoldkitError as exc:  # the model, not an image: sent as data, so the driver can say it in one line
            return {"index": batch["index"], "record": np.full(count, "", dtype=object),
                    "drawn": np.full(count, b"", dtype=object), "fatal": np.full(count, str(exc), dtype=object)}
        records = [strict_json.dumps(image_record(o, self.runner.predictor, self.resize)) for o in outcomes]
        drawn = [o.drawn or b"" for o in outcomes]  # b"": no drawing (a JPEG is never empty)
        return {"index": batch["index"], "record": np.array(records, dtype=object),
                "drawn": np.array(drawn, dtype=object), "fatal": np.full(count, "", dtype=object)}


def detect_with_ray(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    progress: Callable[[int, int, str], None] | None = None,
    **settings: Any,
) -> RaySummary:
    """Detect objects in every image on Ray; write per-image files into ``out_dir`` or one ``table=``.

    ``address``: a running cluster (``host:port``, or ``ray://host:port`` for Ray Client); without
    it, the Ray this process already initialized, else a local one on this machine's cores.
    ``workers``: actors in the pool (default: one per CPU of the cluster). ``settings`` are
    :func:`~foldkit.deploy.detect.prepare_job`'s.
    """
    ray = _import_ray(local=address is None)
    job = prepare_job(model, inputs, out_dir, **settings)
    if job.out is None and job.table is None:
        raise FoldkitError("the Ray engine writes its results: give an output folder or a table")
    started = _connect(ray, address)
    try:
        workers, threads = _placement(ray, workers)
        spec = replace(job.spec, threads=threads)
        began = time.perf_counter()
        with OutputTransaction(job.inputs, replace=job.overwrite) as staged, warnings.catch_warnings():
            # Ray Data reads its own deprecated settings while it plans; nothing the user can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = _pipeline(ray, job, spec, workers, threads, conf=conf, iou=iou)
            sink = open_sink(staged, out=job.out, table=job.table, stems=job.stems)
            assert sink is not None
            try:
                detections, errors = _drain(ray, _results(dataset), job, sink, progress)
            finally:
                sink.close()
        return RaySummary(len(job.paths), detections, errors, workers, threads, time.perf_counter() - began)
    finally:
        if started:
            ray.shutdown()


def _import_ray(*, local: bool) -> Any:
    """Ray and Ray Data; for a private local Ray, first set the switch that keeps its addresses on loopback.

    Ray advertises a node by its network address even when told 127.0.0.1; with
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (read once, when Ray is imported) a single-node Ray
    uses 127.0.0.1 throughout, as it does on macOS. Joining a cluster (``address``) leaves it alone.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # the pipeline
    except ImportError:
        raise FoldkitError("the Ray engine needs Ray Data: pip install 'foldkit[ray]'") from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Join ``address``, or start a local Ray bound to 127.0.0.1; True when this call started it."""
    if ray.is_initialized():
        if address is not None:
            raise FoldkitError(f"{address}: this process is already connected to a Ray cluster; "
                               "call without an address to use it")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave this machine
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    try:
        if address is None:  # workers start in this folder with this environment: they import this foldkit
            ray.init(**quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise FoldkitError(f"{where}: cannot start or join the Ray cluster ({str(exc).splitlines()[0]})") from None
    return True


def _placement(ray: Any, workers: int | None) -> tuple[int, int]:
    """Actors and ONNX Runtime threads per actor: threads × actors fit the cluster's CPUs, one node each."""
    cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
    total = sum(cpus)
    if total < 1:
        raise FoldkitError("the Ray cluster has no CPUs to run actors on")
    workers = workers or total
    if workers > total:
        raise FoldkitError(f"--workers {workers} needs {workers} CPUs; the Ray cluster has {total}")
    return workers, max(1, min(max(cpus), total // workers))


def _pipeline(ray: Any, job: DetectJob, spec: RunnerSpec, workers: int, threads: int, *, conf: float,
              iou: float) -> Any:
    """The dataset of results: path blocks → the actor pool (``workers`` actors of ``threads`` CPUs).

    The blocks are built here, in the driver (``from_items``): no Ray task runs before the actors.
    """
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress lines would interleave with the CLI's
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own images/s and ETA
    context.print_on_execution_start = False
    count = len(job.paths)
    rows = min(MAX_BLOCK_IMAGES, math.ceil(count / (workers * BLOCKS_PER_WORKER)))
    rows = max(1, math.ceil(rows / job.batch)) * job.batch  # about whole batches per block
    items = [{"index": index, "path": str(path)} for index, path in enumerate(job.paths)]
    return ray.data.from_items(items, override_num_blocks=math.ceil(count / rows)).map_batches(
        DetectActor, fn_constructor_kwargs={"spec": spec, "conf": conf, "iou": iou, "names": job.names,
                                            "drawings": job.drawings},
        batch_size=job.batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads)


def _results(dataset: Any) -> Iterable[dict[str, np.ndarray]]:
    return dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


def _drain(ray: Any, results: Iterable[dict[str, np.ndarray]], job: DetectJob, sink: Sink,
           progress: Callable[[int, int, str], None] | None) -> tuple[int, int]:
    """Write every result as it arrives; each image exactly once, or a one-line error. (detections, errors)"""
    seen = np.zeros(len(job.paths), dtype=bool)
    done = detections = errors = 0
    try:
        for rows in results:
            for index, text, drawn, fatal in zip(rows["index"].tolist(), rows["record"], rows["drawn"], rows["fatal"],
                                                 strict=True):
                if fatal:
                    raise FoldkitError(fatal)
                if seen[index]:
                    raise FoldkitError(f"{job.paths[index]}: came back twice from the Ray cluster")
                seen[index] = True
                record = json.loads(text)
                errors += "error" in record
                detections += len(record.get("detections", ()))
                sink.add(index, record, bytes(drawn) or None)
            done += len(rows["index"])
            if progress is not None:
                progress(done, len(job.paths), job.paths[int(rows["index"][-1])].name)
    except ray.exceptions.RayError as exc:
        raise FoldkitError(f"the Ray job failed: {_root_cause(exc)}") from None
    missing = np.flatnonzero(~seen)
    if len(missing):
        raise FoldkitError(f"{len(missing)} image(s) never came back from the Ray cluster, "
                           f"e.g. {job.paths[missing[0]]}")
    return detections, errors


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost error Ray wraps (Ray has already logged the actor's stack)."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
