"""The Ray engine against the local one: same answers, every image exactly once, nothing half-written.

One local Ray (2 CPUs, bound to 127.0.0.1) is shared by every test here. The tests that start their
own Ray (a ``ray start`` head, the CLI in a subprocess) live in test_ray_cluster.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

from foldkit.cli import main
from foldkit.deploy.detect import detect_images
from foldkit.errors import FoldkitError
from tests.ray_workload import export_model, write_images

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a single-node Ray on 127.0.0.1 only (see ray.py)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'foldkit[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'foldkit[ray]')")
from foldkit.deploy.engines.ray import detect_with_ray  # noqa: E402  (needs ray)

ACTOR_TITLE = b"MapWorker(MapBatches(DetectActor))"


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session: 2 CPUs, no dashboard, no usage reports, 127.0.0.1 only."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 64×64 model and 11 images plus one file that is not an image."""
    folder = tmp_path_factory.mktemp("ray")
    model = export_model(folder, 64)
    write_images(folder / "images", 11)
    (folder / "images" / "broken.png").write_bytes(b"not a png")
    return model, folder / "images"


def _readable(images: Path) -> list[Path]:
    return [p for p in sorted(images.iterdir()) if p.name != "broken.png"]


def test_ray_answers_equal_local_byte_for_byte(ray_cluster, small, tmp_path):
    """Per-image JSON and drawings from 2 actors equal the local engine's (but for the threads that ran them);
    the broken image is a row."""
    model, images = small
    detect_images(model, _readable(images), tmp_path / "local", conf=0.6, batch=2)
    summary = detect_with_ray(model, [images], tmp_path / "ray", conf=0.6, batch=2, workers=2)
    assert (summary.images, summary.errors, summary.workers, summary.threads) == (12, 1, 2, 1)
    local = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(local) == 22 and summary.detections > 0
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted([*local, "broken.json"])
    for name in local:
        ray_bytes, local_bytes = ((tmp_path / engine / name).read_bytes() for engine in ("ray", "local"))
        if name.endswith(".jpg"):
            assert ray_bytes == local_bytes, name  # the drawings, byte for byte
            continue
        ran = [json.loads(b).pop("runtime") for b in (ray_bytes, local_bytes)]
        assert ran[0]["threads"] == 1 and ran[0]["runtime"] == ran[1]["runtime"] == "onnxruntime"  # one per actor
        same = [{k: v for k, v in json.loads(b).items() if k != "runtime"} for b in (ray_bytes, local_bytes)]
        assert same[0] == same[1], name  # everything but what ran it (the actor's thread count), exactly
    broken = json.loads((tmp_path / "ray" / "broken.json").read_text())
    assert "cannot read the image" in broken["error"] and "detections" not in broken
    assert summary.detections == sum(len(json.loads(p.read_text())["detections"])
                                     for p in (tmp_path / "local").glob("*.json"))


def test_more_workers_than_cpus_is_refused_before_any_work(ray_cluster, small, tmp_path):
    model, images = small
    with pytest.raises(FoldkitError, match="--workers 3 needs 3 CPUs; the Ray cluster has 2"):
        detect_with_ray(model, [images], tmp_path / "out", workers=3)
    assert not (tmp_path / "out").exists()


def test_an_address_while_connected_elsewhere_is_refused(ray_cluster, small, tmp_path):
    model, images = small
    with pytest.raises(FoldkitError, match="127.0.0.1:1: this process is already connected to a Ray cluster"):
        detect_with_ray(model, [images], tmp_path / "out", address="127.0.0.1:1")
    assert not (tmp_path / "out").exists()


def _actor_pids() -> set[int]:
    """This test process's Ray Data actors (descendants of this process whose title names the actor)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if ACTOR_TITLE in (entry / "cmdline").read_bytes() and _descends_from_me(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _descends_from_me(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_every_image_comes_back_once(ray_cluster, tmp_path):
    """SIGKILL one actor after the first results arrive: its batches are retried, the table is complete."""
    model = export_model(tmp_path, 416)  # ~50 ms per image: the pool is busy when the kill lands
    paths = write_images(tmp_path / "images", 48)
    killed: list[int] = []
    before: set[int] = set()

    def kill_one(done: int, total: int, label: str) -> None:
        if not killed:
            before.update(_actor_pids())
            assert before, f"no process titled {ACTOR_TITLE.decode()} under this test"
            killed.append(min(before))
            os.kill(killed[0], signal.SIGKILL)

    table = tmp_path / "rows.jsonl"
    summary = detect_with_ray(model, paths, table=table, conf=0.6, batch=2, workers=2, progress=kill_one)
    assert killed and summary.images == 48
    assert _actor_pids() - before, "no actor was restarted after the kill"
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert sorted(r["image"] for r in rows) == sorted(map(str, paths))  # each image exactly once
    local = detect_images(model, paths, table=tmp_path / "local.jsonl", conf=0.6, batch=2)
    assert len(local) == 48
    expected = {r["image"]: r for r in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    assert all(r["runtime"]["threads"] == 1 for r in rows)  # one thread per actor; the local engine ORT's default
    assert {r["image"]: {k: v for k, v in r.items() if k != "runtime"} for r in rows} == \
        {image: {k: v for k, v in r.items() if k != "runtime"} for image, r in expected.items()}


@pytest.mark.slow
def test_parquet_table_holds_the_same_records(ray_cluster, small, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    model, images = small
    detect_with_ray(model, [images], table=tmp_path / "rows.parquet", conf=0.6, batch=3, workers=1)
    rows = {r["image"]: r for r in pq.read_table(tmp_path / "rows.parquet").to_pylist()}
    detect_images(model, _readable(images), table=tmp_path / "local.jsonl", conf=0.6, batch=3)
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and rows[str(images / "broken.png")]["detections"] is None
    for record in local:
        row = dict(rows[record["image"]])
        ran = json.loads(row.pop("runtime"))  # the table keeps the runtime record as JSON text
        assert ran["runtime"] == record["runtime"]["runtime"] == "onnxruntime" and ran["threads"] >= 1
        assert row == {**{k: v for k, v in record.items() if k != "runtime"}, "error": None}


def test_a_model_failure_in_an_actor_is_one_line_exit_2(ray_cluster, small, tmp_path, capsys):
    """Anchors for one head on a two-head model: the actors fail, the CLI says why in one line, writes nothing."""
    model, images = small
    out = tmp_path / "out"
    assert main(["detect", str(model), str(images), "--engine", "ray", "--workers", "1", "--classes", "80",
                 "--anchors", "10,14,23,27,37,58", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["foldkit detect: error: the model has 2 outputs but 1 YOLO heads are described"]
    assert not out.exists()


def test_rect_batches_of_mixed_sizes_equal_local(ray_cluster, small, tmp_path):
    """A dynamic model with the rect letterbox: each Ray batch splits into same-size groups as the local one does."""
    model, images = small
    dynamic = tmp_path / "dynamic.onnx"
    assert main(["export", "yolov3-tiny", "--weights", str(model.parent / "w.weights"), "--img-size", "dynamic",
                 "-o", str(dynamic), "--batch", "dynamic"]) == 0
    settings = dict(conf=0.3, batch=3, img_size=64, letterbox="rect")
    local = detect_images(dynamic, _readable(images), table=tmp_path / "local.jsonl", **settings)
    detect_with_ray(dynamic, [images], table=tmp_path / "ray.jsonl", workers=1, **settings)
    rows = {r["image"]: r for r in map(json.loads, (tmp_path / "ray.jsonl").read_text().splitlines())}
    assert sum(len(r.detections) for r in local) > 0
    for record in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines()):
        assert {k: v for k, v in rows[record["image"]].items() if k != "runtime"} == \
            {k: v for k, v in record.items() if k != "runtime"}
