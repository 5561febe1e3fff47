from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler import cli


def test_help_lists_every_command(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"  {command.name}" in out


def test_unknown_command_fails_with_exit_code_2(capsys) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_installed_prof_script_shows_serve_help_with_env_names_and_examples() -> None:
    prof = Path(sys.executable).parent / "prof"
    assert prof.exists(), "console script 'prof' not installed (pip install -e .)"
    result = subprocess.run([str(prof), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--max-batch" in result.stdout and "PROF_MAX_BATCH" in result.stdout and "examples:" in result.stdout
