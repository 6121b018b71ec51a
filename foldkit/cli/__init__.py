"""The ``foldkit`` command: argument parsing only; every command calls the Python API.

One module per command in :mod:`foldkit.cli.commands`; :mod:`foldkit.cli.main` turns errors into
exit codes (:mod:`foldkit.cli.codes`).
"""

from foldkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
