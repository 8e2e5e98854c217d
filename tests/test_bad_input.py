"""Bad input a careful admin gives psbridge: one clear line, or plain data (issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from bridge.cli import cli

EXPORT = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"


def _figures(output: str) -> list[str]:
    return [line for line in output.splitlines() if ":" in line and "Wrote" not in line]


def test_the_same_export_given_twice_counts_every_mailbox_once(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(EXPORT, copy)
    shutil.copy(EXPORT / "Mailboxes.xml", copy / "Mailboxes (2).xml")  # a copy beside it
    once = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "--no-history",
                                    "-o", str(tmp_path / "once.xlsx")])
    twice = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "--from-clixml",
                                     str(copy), "--no-history", "-o", str(tmp_path / "twice.xlsx")])
    assert once.exit_code == 0 and twice.exit_code == 0, twice.output
    assert _figures(twice.output) == _figures(once.output)
    book = openpyxl.load_workbook(tmp_path / "twice.xlsx")
    summary_text = [c.value for row in book["Summary"].iter_rows() for c in row if c.value]
    assert any("mailbox row(s) appeared more than once" in str(v) for v in summary_text)
    def rows(name: str) -> list[tuple[object, ...]]:
        return list(openpyxl.load_workbook(tmp_path / name)["Devices"].iter_rows(values_only=True))
    assert rows("twice.xlsx") == rows("once.xlsx")


def test_day_options_out_of_range_are_usage_errors(tmp_path: Path) -> None:
    base = ["mobile", "--from-clixml", str(EXPORT), "-o", str(tmp_path / "r.xlsx")]
    cases = {
        ("--stale-buckets", "99999999999999999999"):
            "Error: Invalid value for '--stale-buckets': '99999999999999999999': the days must "
            "increase and be from 1 to 36,500",
        ("--stale-days", "99999999999999999999"):
            "Error: Invalid value for '--stale-days': 99999999999999999999 is not in the range "
            "0<=x<=36500.",
        ("--as-of", "0001-01-01"):
            "Error: Invalid value for '--as-of': 0001-01-01 is not between 2000-01-01 and "
            "2100-12-31",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 2
        assert result.output.splitlines()[-1] == message
    assert not (tmp_path / "r.xlsx").exists()


def test_a_value_sqlite_cannot_store_is_a_history_error_and_the_report_is_written(
        tmp_path: Path) -> None:
    from bridge.errors import HistoryError
    from bridge.frames import build_report, load_exports
    from bridge.history import History

    export = load_exports([EXPORT])
    assert export.created is not None
    report = build_report(export.mailboxes, export.devices, run_started=export.created)
    with History(tmp_path / "h.sqlite") as store, pytest.raises(HistoryError) as caught:
        store.record(report.devices, organisation="x", started=export.created,
                     mailboxes=2**70)
    assert str(caught.value).startswith(f"cannot use history {tmp_path / 'h.sqlite'}: ")


@pytest.mark.parametrize("command", [["history", "list"], ["history", "show", "1"],
                                     ["history", "prune", "--keep", "1"], ["diff", "1", "2"]])
def test_history_commands_never_turn_an_empty_file_into_a_history(
        tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"")
    result = CliRunner().invoke(cli, [*command, "--history", str(path)])
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        f"Error: {path} is an empty file, not a psbridge history; give the file psbridge "
        "records to (see --history in --help).")
    assert path.read_bytes() == b""
