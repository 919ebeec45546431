"""The package never imports the benchmark harness: ``clickadapt`` works without ``bench/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import clickadapt

PACKAGE = Path(clickadapt.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` of ``path`` names (absolute names only)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_package_module_imports_bench() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(name for name in imported_modules(path) if name.split(".")[0] == "bench")
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert len(offenders) > 50, "the package's sources were not found"
    assert {path: names for path, names in offenders.items() if names} == {}


def test_every_package_module_imports_without_bench_on_the_path() -> None:
    """Import every module of the package in a process where no module named ``bench`` can be imported."""
    code = (
        "import importlib, pkgutil, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bench' or name.startswith('bench.'):\n"
        "            raise ImportError('the package imported ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import clickadapt\n"
        "names = [m.name for m in pkgutil.walk_packages(clickadapt.__path__, 'clickadapt.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False, cwd=PACKAGE.parent
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 50


def test_the_old_bench_sub_command_is_gone() -> None:
    from clickadapt import cli

    assert "bench" not in {command.name for command in cli.SUB_COMMANDS}
    assert all(not module.startswith("bench") for module in cli.COMMAND_MODULES)
