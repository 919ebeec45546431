"""``import clickadapt`` and ``clickadapt --help`` load no heavy library (torch, FastAPI, matplotlib)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from clickadapt import cli

HEAVY = ("torch", "fastapi", "matplotlib")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_import_clickadapt_does_not_import_torch() -> None:
    result = run_python("import clickadapt, sys; assert 'torch' not in sys.modules, 'torch imported'")
    assert result.returncode == 0, result.stderr


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from clickadapt import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"loaded = [name for name in {HEAVY!r} if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    for sub_command in cli.SUB_COMMANDS:
        assert sub_command.name in result.stdout


def test_the_predictor_is_exported_lazily() -> None:
    result = run_python("import clickadapt, sys; clickadapt.load_predictor; assert 'torch' in sys.modules")
    assert result.returncode == 0, result.stderr


def test_listed_help_is_the_help_each_module_registers() -> None:
    parser = cli.build_parser()  # every module imported
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    registered = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert registered == {sub_command.name: sub_command.help for sub_command in cli.SUB_COMMANDS}


def test_a_sub_command_still_has_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "--strategies" in capsys.readouterr().out
