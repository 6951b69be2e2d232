"""The code's shape: no function in ``llavac/`` or ``benchmarks/`` over 60 lines, no module
over 400.

Short functions and modules are what makes the package readable in one sitting; this test
keeps them so. The benchmarks are held to the same limits: they are how the speed and memory
targets are shown, and are read as closely as the package. Lines are counted as Python
reports them (a function from its ``def`` line to its last line, docstring and comments
included; a module's every line).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llavac"
FOLDERS = (PACKAGE, REPO / "benchmarks")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def shape_violations(folder: Path = PACKAGE) -> list[str]:
    """Every function and module under ``folder`` over its limit, as ``path:line name: N
    lines``."""
    violations = []
    for path in sorted(folder.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(folder.parent)
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            violations.append(f"{name}: module of {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    violations.append(f"{name}:{node.lineno} {node.name}: {length} lines "
                                      f"(at most {MAX_FUNCTION_LINES})")
    return violations


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_no_function_over_60_lines_and_no_module_over_400(folder):
    violations = shape_violations(folder)
    assert not violations, "\n".join(["too long:", *violations])


def test_the_check_sees_long_functions_and_modules(tmp_path):
    package = tmp_path / "llavac"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (package / "long.py").write_text(f"def f():\n{body}\n\n\nasync def g():\n    pass\n")
    (package / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (package / "notes.txt").write_text("x = 1\n" * 1000)  # not Python: not checked
    assert shape_violations(package) == [
        f"llavac/big.py: module of {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})",
        f"llavac/long.py:1 f: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})",
    ]
