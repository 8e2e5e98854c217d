"""The CLI shell: version, help and the error contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import __version__
from bridge.cli import cli


def test_version_prints_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"psbridge, version {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_an_unexpected_exception_is_one_error_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.convert

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(bridge.convert, "convert", broken)
    result = CliRunner().invoke(cli, ["convert", "in.xml", "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: unexpected ZeroDivisionError: division by zero (a bug in psbridge: run again "
        "with --debug and report the traceback).\n")
    debug = CliRunner().invoke(cli, ["--debug", "convert", "in.xml", "-o", "out.csv"])
    assert isinstance(debug.exception, ZeroDivisionError)
