#!/usr/bin/env python3
"""Which Darknet cfgs of a folder can be exported with ``--img-size dynamic``, and their strides.

Plans each cfg at its own size and asks :func:`foldkit.darknet.sizes.require_dynamic`; prints one
line per cfg foldkit builds (the stride, or the refusal naming the layer and cfg line), then the
counts. Cfgs foldkit does not build at all (recurrent, XNOR) are counted apart.

    python tools/dynamic_zoo.py ../shared/darknet/zoo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foldkit.darknet.plan import plan_network
from foldkit.darknet.sizes import require_dynamic, stride_text
from foldkit.errors import FoldkitError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    args = parser.parse_args()
    counts = {"dynamic": 0, "refused": 0, "not built": 0}
    for cfg in sorted(Path(args.folder).glob("*.cfg")):
        try:
            plan = plan_network(cfg)
        except FoldkitError:
            counts["not built"] += 1
            continue
        try:
            print(f"{cfg.name}: dynamic, stride {stride_text(require_dynamic(cfg, plan))}")
            counts["dynamic"] += 1
        except FoldkitError as refused:
            print(f"{cfg.name}: refused: {refused}")
            counts["refused"] += 1
    print(", ".join(f"{n} {what}" for what, n in counts.items()))


if __name__ == "__main__":
    main()
