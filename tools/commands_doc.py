#!/usr/bin/env python3
"""Write docs/commands.md from the CLI's own help text, so the reference cannot drift from the code.

    python tools/commands_doc.py            # rewrite docs/commands.md
    python tools/commands_doc.py --check    # exit 1 if docs/commands.md is not what the code prints
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands.md"
WIDTH = 100  # argparse wraps help to $COLUMNS; fixed so the page does not depend on the terminal
HEADER = """# Commands

Every `foldkit` command with its options, as `foldkit COMMAND --help` prints them. This page is
generated from the help text (`python tools/commands_doc.py`; a test fails when it is out of date).
"""


def render() -> str:
    os.environ["COLUMNS"] = str(WIDTH)
    from foldkit.cli.main import build_parser

    parser = build_parser()
    sections = [("foldkit", parser.format_help())]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sections += [(f"foldkit {name}", sub.format_help()) for name, sub in subparsers.choices.items()]
    return HEADER + "".join(f"\n## {title}\n\n```text\n{text.rstrip()}\n```\n" for title, text in sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    page = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is out of date: run python tools/commands_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
