"""What the Ray engine shares with the local one, tested without Ray: image sources (list files, globs)
and the table sinks (.jsonl, .parquet) holding the same records as the per-image JSON."""

from __future__ import annotations

import json

import pytest

from foldkit.cli import main
from foldkit.deploy.detect import collect_images, detect_images
from foldkit.errors import FoldkitError
from tests.ray_workload import export_model, write_images


def test_list_files_and_globs_expand_in_order_each_image_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = write_images(tmp_path / "a", 2)
    (nested,) = write_images(tmp_path / "a" / "deep", 1, seed=2)
    (tmp_path / "list.txt").write_text(f"a/{second.name}\n\n{first}\n")  # relative to the current folder
    found = collect_images(["list.txt", "a/**/*.png"])
    assert [p.resolve() for p in found] == [second, first, nested]
    with pytest.raises(FoldkitError, match=r"nothing\*\.png: the pattern matches no file"):
        collect_images(["nothing*.png"])
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(FoldkitError, match="empty.txt: the image list names no image"):
        collect_images(["empty.txt"])


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sinks")
    return export_model(folder, 64), write_images(folder / "images", 5)


def test_jsonl_table_rows_are_the_per_image_records(model_and_images, tmp_path):
    model, images = model_and_images
    detect_images(model, images, tmp_path / "out", conf=0.6, batch=2)
    results = detect_images(model, images, table=tmp_path / "rows.jsonl", conf=0.6, batch=2)
    assert [r.json_path for r in results] == [None] * 5
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert rows == [json.loads((tmp_path / "out" / f"{p.stem}.json").read_text()) for p in images]
    assert sum(len(r["detections"]) for r in rows) > 0


def test_parquet_table_rows_are_the_per_image_records(model_and_images, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install 'foldkit[ray]')")
    model, images = model_and_images
    detect_images(model, images, table=tmp_path / "rows.jsonl", conf=0.6, batch=2)
    detect_images(model, images, table=tmp_path / "rows.parquet", conf=0.6, batch=2)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    expected = [{**row, "error": None, "runtime": json.dumps(row["runtime"])} for row in rows]
    assert pq.read_table(tmp_path / "rows.parquet").to_pylist() == expected


@pytest.mark.parametrize(("extra", "words"), [
    (["--workers", "2"], "--address and --workers need --engine ray"),
    (["--table", "rows.csv"], "rows.csv: a results table ends in .parquet or .jsonl"),
    (["--names", "{names}", "--table", "{names}"], "refusing to overwrite the input"),
])
def test_bad_engine_options_are_one_line_exit_2(model_and_images, tmp_path, capsys, monkeypatch, extra, words):
    model, images = model_and_images
    monkeypatch.chdir(tmp_path)
    names = tmp_path / "names.jsonl"
    names.write_text("cat\ndog\n")
    extra = [e.replace("{names}", str(names)) for e in extra]
    assert main(["detect", str(model), str(images[0]), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["names.jsonl"] and names.read_text() == "cat\ndog\n"
