"""The package's shape, kept: short functions, and a CLI that only parses.

Cheap static checks over foldkit's own source (no imports run), so a regression is caught by the
suite rather than by the next review.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "foldkit"
MAX_FUNCTION_LINES = 80


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(PACKAGE.parent), node


def test_no_function_is_longer_than_80_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_cli_writes_no_file_itself():
    """Output rules live in the API function that writes; a command module only parses and calls."""
    writers = {"open", "write_text", "write_bytes", "write_text_atomic", "check_outputs", "OutputTransaction",
               "save_onnx"}
    offenders = []
    for path in sorted((PACKAGE / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name in writers and not (name == "open" and isinstance(node.func, ast.Attribute)):  # os.open
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []
