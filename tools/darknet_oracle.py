"""Print foldkit-vs-libdarknet errors per shipped cfg as the rows of docs/darknet-oracle.md's tables.

Runs the oracle of ``tests/test_darknet_oracle.py`` (same weights, inputs, comparisons) for the
cfgs named on the command line, or for every cfg that test lists::

    python tools/darknet_oracle.py                  # all
    python tools/darknet_oracle.py resnet18.cfg yolov1.cfg

Needs Debian's ``darknet`` package and gcc (see ``tests/libdarknet_layers.py``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's foldkit, and the test's oracle

import test_darknet_oracle as oracle  # noqa: E402 - found through the path above
from libdarknet_layers import CFG_DIR, compile_dumper, unavailable  # noqa: E402

from foldkit.errors import FoldkitError  # noqa: E402


def main(names: list[str]) -> int:
    reason = unavailable()
    if reason:
        print(f"darknet_oracle: {reason}", file=sys.stderr)
        return 2
    sizes = {**oracle.DEFAULT, **oracle.SLOW}
    with tempfile.TemporaryDirectory() as folder:
        dumper = compile_dumper(Path(folder))
        for name in names or list(sizes):
            height, width = sizes[name]
            with tempfile.TemporaryDirectory() as work:
                start = time.perf_counter()
                try:
                    errors = oracle.oracle_errors(dumper, CFG_DIR / name, (height, width), Path(work))
                except FoldkitError as error:
                    print(f"| {name.removesuffix('.cfg')} | {width}×{height} | refused: {error} |", flush=True)
                    continue
                cells = [f"{value:.1e} ({key})" for key, value in (oracle.worst(errors[group])
                                                                   for group in ("layers", "export",
                                                                                 "export_vs_float64",
                                                                                 "darknet_vs_float64"))]
                print(f"| {name.removesuffix('.cfg')} | {width}×{height} | {' | '.join(cells)} | "
                      f"{time.perf_counter() - start:.0f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
