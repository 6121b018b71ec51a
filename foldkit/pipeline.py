"""``foldkit fold`` as an API: load an ONNX file, fold it, optionally prove parity, write atomically."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.fileio import load_onnx, save_onnx, write_text_atomic
from foldkit.fold.onnx import fold_onnx, node_counts
from foldkit.fold.report import FoldReport
from foldkit.parity import ParityReport, compare_onnx_models
from foldkit.runtime import CONV_BN_FUSION
from foldkit.validate import validate_model


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
            for op in ops if self.ops_before.get(op, 0) != self.ops_after.get(op, 0) or op in ("Conv", "BatchNormalization")
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
    atol: float = 1e-6,
    rtol: float = 1e-4,
) -> FoldFileResult:
    """Fold ``input_path`` into ``output_path``; the input file is only read.

    With ``check``, the original (ONNX Runtime's ConvBNFusion off) and the folded model run on
    the same seeded inputs; when parity fails nothing is written.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise FoldkitError(f"{output_path}: refusing to overwrite the input; choose another output path")
    seconds = {}
    start = time.perf_counter()
    model = load_onnx(input_path)
    seconds["load"] = time.perf_counter() - start
    ops_before = node_counts(model)
    bytes_before = input_path.stat().st_size
    original = model.SerializeToString() if check else None

    start = time.perf_counter()
    folded, report = fold_onnx(model, allow_initializer_inputs=allow_initializer_inputs, inplace=True)
    seconds["fold"] = time.perf_counter() - start
    validate_model(folded, where=str(output_path), weights=False)
    result = FoldFileResult(input_path, output_path, report, ops_before, node_counts(folded), bytes_before, 0, seconds)

    if check:
        start = time.perf_counter()
        import onnx

        result.parity = compare_onnx_models(
            folded, onnx.load_from_string(original), atol=atol, rtol=rtol, opt_level="all",
            disabled_optimizers=(CONV_BN_FUSION,), names=(f"{output_path} (folded)", f"{input_path} (original)"),
        )
        seconds["check"] = time.perf_counter() - start
        if not result.parity.passed:
            return result
    start = time.perf_counter()
    save_onnx(folded, output_path)
    seconds["save"] = time.perf_counter() - start
    result.bytes_after, result.written = output_path.stat().st_size, True
    if report_path:
        write_text_atomic(report_path, report.to_json())
    return result
