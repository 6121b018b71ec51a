"""``foldkit fold`` as an API: open an ONNX file, fold it, optionally prove parity, write atomically.

File I/O lives here; :func:`foldkit.fold.onnx.fold_onnx` only edits a model in memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from foldkit.defaults import DEFAULT_ATOL, DEFAULT_RTOL
from foldkit.fold.onnx import fold_onnx, node_counts
from foldkit.fold.report import FoldReport
from foldkit.onnxio.files import (
    OutputTransaction,
    check_outputs,
    load_onnx,
    model_companions,
    require_input_file,
    save_onnx,
)
from foldkit.onnxio.lazy import LazyModel, open_lazy
from foldkit.onnxio.validate import validate_model
from foldkit.simplify import simplify_model

if TYPE_CHECKING:
    from foldkit.parity import ParityReport


@dataclass
class FoldFileResult:
    input: Path
    output: Path
    report: FoldReport
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    bytes_before: int
    bytes_after: int
    seconds: dict[str, float] = field(default_factory=dict)
    parity: ParityReport | None = None
    written: bool = False

    def format(self) -> str:
        ops = sorted(set(self.ops_before) | set(self.ops_after))
        lines = [f"  {'op':<24} {'before':>7} {'after':>7}"]
        lines += [
            f"  {op:<24} {self.ops_before.get(op, 0):>7} {self.ops_after.get(op, 0):>7}"
            for op in ops
            if self.ops_before.get(op, 0) != self.ops_after.get(op, 0) or op in ("Conv", "BatchNormalization")
        ]
        lines.append(f"  {'nodes':<24} {sum(self.ops_before.values()):>7} {sum(self.ops_after.values()):>7}")
        lines.append(f"size: {self.bytes_before / 1e6:.2f} MB → {self.bytes_after / 1e6:.2f} MB")
        lines.append(self.report.format())
        if self.parity is not None:
            lines.append(self.parity.format())
        lines.append("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items()))
        lines.append(f"wrote {self.output}" if self.written else f"nothing written to {self.output}")
        return "\n".join(lines)


def fold_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    report_path: str | os.PathLike | None = None,
    check: bool = False,
    allow_initializer_inputs: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    simplify: bool = False,
) -> FoldFileResult:
    """Fold ``input_path`` into ``output_path``; the input file is only read.

    The weights stay in the input file until written (:mod:`foldkit.onnxio.lazy`) unless the model
    keeps them in external data files, which are loaded. With ``check``, the original and the
    written result run as written (ORT optimizations off) on the same seeded inputs, and the result
    (with its report) replaces ``output_path`` only if parity passes. ``simplify`` runs onnx-simplifier after
    the fold (on the model loaded whole) and always checks parity, as ``check`` does.
    """
    check_outputs([output_path, report_path], [input_path])
    input_path, output_path = require_input_file(input_path, "model"), Path(output_path)
    seconds = {}
    start = time.perf_counter()
    check = check or simplify
    source = load_onnx(input_path) if simplify else open_for_fold(input_path)
    lazy = source if isinstance(source, LazyModel) else None
    inputs = [input_path, *(model_companions(input_path) if isinstance(source, onnx.ModelProto) else [])]
    try:
        check_outputs([output_path, report_path], inputs)
        seconds["load"] = time.perf_counter() - start
        ops_before = node_counts(source.model if isinstance(source, LazyModel) else source)
        start = time.perf_counter()
        folded, report = fold_onnx(source, allow_initializer_inputs=allow_initializer_inputs, inplace=True)
        write = lazy.save if lazy else partial(save_onnx, folded)
        validate_model(folded, where=f"{input_path} (folded)", weights=False)
        if simplify:
            folded = simplify_model(folded, where=str(input_path))
            write = partial(save_onnx, folded)
        seconds["fold"] = time.perf_counter() - start
        result = FoldFileResult(input_path, output_path, report, ops_before, node_counts(folded),
                                input_path.stat().st_size, 0, seconds)
        try:
            with OutputTransaction(inputs) as staged:  # the model and its report land together or not at all
                start = time.perf_counter()
                tmp = write(output_path, staged)
                seconds["save"] = time.perf_counter() - start
                if check:
                    start = time.perf_counter()
                    result.parity = _check(tmp, input_path, output_path, atol, rtol)
                    seconds["check"] = time.perf_counter() - start
                    if not result.parity.passed:
                        raise _ParityFailedError
                if report_path:
                    staged.write_text(report_path, report.to_json())
        except _ParityFailedError:
            return result
    finally:
        if lazy is not None:
            lazy.close()
    result.bytes_after, result.written = output_path.stat().st_size, True
    return result


def open_for_fold(path: str | os.PathLike) -> LazyModel | onnx.ModelProto:
    """The model at ``path`` for :func:`~foldkit.fold.onnx.fold_onnx`: lazily opened when its layout allows.

    A lazy model keeps its weights in the file until saved (close it when done); a model with
    external data or an unusual encoding is loaded whole.
    """
    return open_lazy(path) or load_onnx(path)


class _ParityFailedError(Exception):
    """The folded model failed --check: nothing is written."""


def _check(folded: Path, original: Path, output_path: Path, atol: float, rtol: float):
    from foldkit.parity import compare_onnx_models

    # Both run as written (every ORT optimization off): ORT's own fusions (Conv+BN, Conv+Mul/Add,
    # MatMul+BN) would otherwise fold the original too, and the proof would compare two folds.
    return compare_onnx_models(
        folded, original, atol=atol, rtol=rtol, opt_level="disable",
        names=(f"{output_path} (folded)", f"{original} (original)"),
    )
