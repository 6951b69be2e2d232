"""The package's layering: no import cycle, and one module that knows a run folder's files.

Imports are read with ``ast``, function-level ones included: an import moved into a function
to dodge a cycle is still an edge of the graph, so it shows up as the cycle it hides. (The
function-level imports that remain defer heavy libraries, torch or Ray, for start-up speed.)
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from llavac.runs import folder

PACKAGE = Path(__file__).resolve().parents[1] / "llavac"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
                     modules: set[str]) -> set[str]:
    """The package's modules ``node`` imports, with the parent packages Python runs first."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # a relative import, from this module's package
            here = importer.split(".")[: len(importer.split(".")) - (not is_package)]
            base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    found = set()
    for name in names:
        while name and name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & modules
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``, at any depth of the module."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= imported_modules(node, name, path.name == "__init__.py", modules)
        # A module's own parent packages run before it: importing them is no cycle.
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = edges - parents - {name}
    return graph


def import_cycle(package: Path = PACKAGE) -> list[str] | None:
    """One import cycle of ``package`` as ``[a, b, ..., a]``, or None."""
    try:
        graphlib.TopologicalSorter(import_graph(package)).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_the_package_has_no_import_cycle():
    cycle = import_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g  # dodges it\n")
    (package / "high.py").write_text("from pkg import low\n\ng = low.f\n")
    assert sorted(set(import_cycle(package))) == ["pkg.high", "pkg.low"]
    (package / "low.py").write_text("def f():\n    return 1\n")
    assert import_cycle(package) is None


def run_file_names_in_code(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{file name: modules whose code (docstrings aside) spells it}`` for the files only
    :class:`llavac.runs.folder.RunFolder` may open."""
    names = {folder.CONFIG_FILE, folder.CALIBRATION_FILE, folder.TRAINED_ON_FILE,
             folder.EXPORT_FILE}
    found = {name: set() for name in names}
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in names
                    and id(node) not in docstrings):
                found[node.value].add(module_name(path, package))
    return found


def test_only_the_run_folder_module_names_the_run_files():
    """``config.yaml`` (and the calibration, trained-on and export files) are opened in
    exactly one module: everything else goes through RunFolder."""
    assert run_file_names_in_code() == {
        name: {"llavac.runs.folder"} for name in (
            "config.yaml", "calibration.json", "trained_on.json", "llavac.json")}
