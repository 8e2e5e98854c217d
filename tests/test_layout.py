"""The house layout: a third-party library has one owning module, and imports go one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"

#: library -> the only modules (relative to bridge/) that may import it
OWNERS = {
    "click": {"cli.py"},
    "openpyxl": {"workbook.py"},
    "xlsxwriter": {"workbook.py"},
    "lxml": {"clixml/__init__.py", "clixml/_convert.py", "clixml/_document.py",
             "clixml/_scan.py"},
    "pypsrp": {"remote.py"},
    "psrpcore": {"sandbox/psrp.py"},
}

#: modules of bridge that must not import these (lower layers never reach up)
NOT_ABOVE = {
    "errors.py": {"cli", "exchange", "frames", "workbook", "history", "remote", "clixml"},
    **{f"clixml/{name}.py": {"cli", "exchange", "frames", "workbook", "history", "remote",
                             "sandbox"}
       for name in ("__init__", "_values", "_convert", "_document", "_frames", "_export",
                    "_scan")},
    "sizes.py": {"cli", "exchange", "frames", "workbook", "history", "remote", "sandbox",
                 "clixml", "errors"},
    "output.py": {"cli", "exchange", "frames", "workbook", "history", "remote"},
    "remote.py": {"cli", "exchange", "frames", "workbook", "history", "sandbox"},
    "frames.py": {"cli", "exchange", "workbook", "remote", "sandbox"},
    "workbook.py": {"cli", "exchange", "remote", "sandbox"},
    "exchange.py": {"cli", "frames", "workbook", "sandbox"},
}


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (``bridge.x`` kept whole)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            if node.module == "bridge":
                names.update(f"bridge.{alias.name}" for alias in node.names)
    return names


def _modules() -> dict[str, set[str]]:
    return {path.relative_to(BRIDGE).as_posix(): _imports(path) for path in BRIDGE.rglob("*.py")}


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_a_library_is_imported_by_its_owner_only(library: str) -> None:
    importers = {module for module, names in _modules().items()
                 if any(name.split(".")[0] == library for name in names)}
    assert importers == OWNERS[library]


@pytest.mark.parametrize("module", sorted(NOT_ABOVE))
def test_imports_go_one_way(module: str) -> None:
    reached = {name.split(".")[1] for name in _modules()[module]
               if name.startswith("bridge.") and name.count(".") >= 1}
    assert reached.isdisjoint(NOT_ABOVE[module]), reached & NOT_ABOVE[module]


def test_the_sandbox_imports_only_clixml_and_errors_from_bridge() -> None:
    for module, names in _modules().items():
        if module.startswith("sandbox/"):
            outside = {name for name in names
                       if name.startswith("bridge.") and not name.startswith("bridge.sandbox")}
            assert outside <= {"bridge.clixml", "bridge.errors"}, (module, outside)
