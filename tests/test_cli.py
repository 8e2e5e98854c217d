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


def test_a_reader_that_stops_early_is_not_a_bug(tmp_path: Path) -> None:
    # `psbridge convert ... | head -0`: the pipe is closed before psbridge prints; no
    # "unexpected BrokenPipeError (a bug)" line, the shell's SIGPIPE code instead
    import subprocess
    import sys

    export = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"
    process = subprocess.Popen(
        [sys.executable, "-c", "from bridge.cli import main; main()", "convert",
         str(export / "Mailboxes.xml"), "-o", str(tmp_path / "out.csv")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert stderr == b""
    assert (tmp_path / "out.csv").is_file()  # the work was done before the first print


def test_ctrl_c_claims_nothing_was_kept_unless_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # convert (or run, demo) keeps nothing when interrupted; only `mobile` saves progress
    import bridge.convert

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bridge.convert, "convert", interrupted)
    result = CliRunner().invoke(cli, ["convert", "in.xml", "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 130
    assert result.stderr == "Error: interrupted.\n"
