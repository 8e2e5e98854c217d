"""Bad input a careful admin gives psbridge: one clear line, or plain data (issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
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
