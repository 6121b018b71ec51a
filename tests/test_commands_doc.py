"""docs/commands.md is the CLI's help text as the code prints it today (tools/commands_doc.py writes it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_commands_page_is_what_the_cli_prints():
    check = subprocess.run([sys.executable, "tools/commands_doc.py", "--check"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr.strip()
