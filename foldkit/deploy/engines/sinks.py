"""Where detect results go: a folder of per-image JSON and drawings, or one table with a row per image.

Every sink writes through an :class:`~foldkit.onnxio.files.OutputTransaction`: files are staged
beside their targets and appear only when the whole run succeeds, so an interrupted or failed run
leaves nothing behind and never overwrites anything half-way. Rows arrive one at a time, in any
order, and are written as they arrive: no sink holds the collection in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from foldkit import strict_json
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction

TABLE_SUFFIXES = (".parquet", ".jsonl")
PARQUET_ROW_GROUP = 1024  # rows buffered per Parquet row group


class Sink(Protocol):
    def add(self, index: int, record: dict[str, Any], drawn: bytes | None) -> tuple[Path | None, Path | None]:
        """Write image ``index``'s record (and drawing); return the JSON and drawing paths, if any."""

    def close(self) -> None:
        """Flush what is buffered (the transaction still decides whether the files appear)."""


class FolderSink:
    """``<stem>.json`` (indented) and ``<stem>.jpg`` per image; an unreadable image gets its JSON only."""

    def __init__(self, staged: OutputTransaction, out: Path, stems: Sequence[str]) -> None:
        self.staged, self.out, self.stems = staged, out, stems
        staged.make_folder(out)

    def add(self, index: int, record: dict[str, Any], drawn: bytes | None) -> tuple[Path | None, Path | None]:
        json_path = self.out / f"{self.stems[index]}.json"
        self.staged.write_text(json_path, strict_json.dumps(record, indent=2))
        if drawn is None:
            return json_path, None
        drawn_path = self.out / f"{self.stems[index]}.jpg"
        self.staged.write_bytes(drawn_path, drawn)
        return json_path, drawn_path

    def close(self) -> None:
        pass


class JsonlSink:
    """One compact JSON object per line, the same object the folder sink writes per image."""

    def __init__(self, staged: OutputTransaction, table: Path) -> None:
        self.table = table
        self.file: IO[str] = staged.path(table).open("w", encoding="utf-8")

    def add(self, index: int, record: dict[str, Any], drawn: bytes | None) -> tuple[Path | None, Path | None]:
        self.file.write(strict_json.dumps(record) + "\n")
        return None, None

    def close(self) -> None:
        self.file.close()


class ParquetSink:
    """A Parquet table: image, width, height, model, provider, runtime (JSON text), resize, error, detections."""

    def __init__(self, staged: OutputTransaction, table: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise FoldkitError(f"{table}: writing Parquet needs pyarrow (pip install 'foldkit[ray]'), "
                               "or write .jsonl") from None
        detection = pa.struct([("class_id", pa.int32()), ("label", pa.string()), ("score", pa.float64()),
                               ("box", pa.list_(pa.float64(), 4))])
        self.schema = pa.schema([("image", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                                 ("model", pa.string()), ("provider", pa.string()), ("runtime", pa.string()),
                                 ("resize", pa.string()),
                                 ("error", pa.string()),
                                 ("detections", pa.list_(detection))])
        self.writer = pq.ParquetWriter(str(staged.path(table)), self.schema)
        self.rows: list[dict[str, Any]] = []

    def add(self, index: int, record: dict[str, Any], drawn: bytes | None) -> tuple[Path | None, Path | None]:
        self.rows.append(record | {"runtime": strict_json.dumps(record.get("runtime"))})  # JSON text: keys vary
        if len(self.rows) >= PARQUET_ROW_GROUP:
            self._flush()
        return None, None

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


def open_sink(staged: OutputTransaction, *, out: Path | None, table: Path | None, stems: Sequence[str]) -> Sink | None:
    """The sink the run asked for: a table, a folder, or none (results only returned)."""
    if table is not None:
        return ParquetSink(staged, table) if table.suffix.lower() == ".parquet" else JsonlSink(staged, table)
    return FolderSink(staged, out, stems) if out is not None else None


def check_table_path(table: Path) -> None:
    """A table is .parquet or .jsonl (the format follows the suffix)."""
    if table.suffix.lower() not in TABLE_SUFFIXES:
        raise FoldkitError(f"{table}: a results table ends in {' or '.join(TABLE_SUFFIXES)}")
