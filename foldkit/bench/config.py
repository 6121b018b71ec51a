"""What a benchmark run is asked to do: the one settings object every bench module reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldkit.defaults import DEFAULT_OPSET


@dataclass
class BenchConfig:
    """Model, variants, batch sizes and providers to time, and how.

    ``int8_model`` is a quantized (QDQ) ONNX file for the int8 row; ``quantize`` instead makes one
    on the fly from the folded model: ``quantize(folded_path, target_path) -> int8_path``.
    """

    model: str
    variants: list[str]
    batches: list[int]
    providers: list[str]
    img_size: int | tuple[int, int] | None = None  # a cfg's export size; an .onnx's run size where it is dynamic
    weights: str | None = None
    threads: int | None = None
    warmup: int = 3
    rounds: int = 20
    seed: int = 0
    opset: int = DEFAULT_OPSET
    baseline: str | None = None
    measure_memory: bool = True
    int8_model: Path | None = None
    quantize: Callable[[Path, Path], Path] | None = None
    outputs: tuple[str | None, ...] = ()  # report files the caller will write: checked before any timing

    def inputs(self) -> list[str | Path | None]:
        """The files the benchmark reads: no report may replace them."""
        return [self.model, self.weights, self.int8_model]

    def settings(self) -> dict[str, Any]:
        """The settings as JSON-ready values (paths as text, the quantize hook by its name)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["int8_model"] = str(self.int8_model) if self.int8_model else None
        values["quantize"] = getattr(self.quantize, "__qualname__", repr(self.quantize)) if self.quantize else None
        return values
