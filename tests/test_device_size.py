"""device/ stays readable: no module over 900 lines, no function over 80 (issue 20's bound), checked with `ast`
over every module of the package, the command shells included."""

from __future__ import annotations

import ast
from pathlib import Path

DEVICE = Path(__file__).resolve().parents[1] / "device"
MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    found = sorted(DEVICE.rglob("*.py"))
    assert len(found) > 30 and DEVICE / "engine.py" in found  # the walk sees the package, commands/ included
    return found


def test_no_device_module_is_over_900_lines() -> None:
    sizes = {str(p.relative_to(DEVICE)): len(p.read_text().splitlines()) for p in _modules()}
    long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_device_function_is_over_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # from `def` to its last line (decorators not counted)
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(DEVICE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
