"""One module per ``foldkit`` command, each with NAME, HELP, DESCRIPTION, add_arguments and run.

The order here is the order ``foldkit --help`` lists them.
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Protocol, cast

from foldkit.cli.commands import bench, check, demo, detect, export, fold, inspect, quantize, triton


class Command(Protocol):
    NAME: str
    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _commands(*modules: ModuleType) -> tuple[Command, ...]:
    return tuple(cast(Command, module) for module in modules)


COMMANDS = _commands(demo, export, check, fold, inspect, quantize, bench, detect, triton)
