"""Benchmark folded vs unfolded inference, honestly, and say exactly what ran.

``variants`` names every way of running the network, ``runners`` opens one, ``run`` times them in
interleaved rounds, ``memory`` probes peak RSS in a fresh process, ``results`` holds the numbers
and ``report`` prints and writes them.
"""

from __future__ import annotations

from foldkit.bench.config import BenchConfig
from foldkit.bench.report import format_table, write_csv, write_json, write_plot
from foldkit.bench.results import BenchResult, Row, bn_nodes_ran
from foldkit.bench.run import run_benchmark
from foldkit.bench.runners import available_providers
from foldkit.bench.variants import VARIANTS, Variant, parse_variants

__all__ = ["VARIANTS", "BenchConfig", "BenchResult", "Row", "Variant", "available_providers", "bn_nodes_ran",
           "format_table", "parse_variants", "run_benchmark", "write_csv", "write_json", "write_plot"]
