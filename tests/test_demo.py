"""psbridge demo: the README's main command, end to end over real WSMan/NTLM."""

from __future__ import annotations

import re
from pathlib import Path

import click
import openpyxl
import pytest
from click.testing import CliRunner
from openpyxl.worksheet.worksheet import Worksheet

from bridge import history
from bridge.cli import cli
from bridge.sandbox.evolution import demo_organisation
from tests.ground_truth import classic_users, figure_lines

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _text(sheet: Worksheet) -> str:
    return " ".join(str(cell) for row in sheet.iter_rows(values_only=True) for cell in row
                    if cell is not None)


def test_demo_writes_the_report_of_the_sandbox(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    output = tmp_path / "psbridge-demo.xlsx"
    org = demo_organisation(200, 1)  # the story's last week: what the sandbox serves
    users = classic_users(org)
    devices = [d for m in users for d in m.devices]
    lines = result.stdout.splitlines()
    assert lines[0] == ("History: recorded the 6 weeks before today of the sandbox "
                        "organisation (the demo's story).")
    assert re.fullmatch(r"Sandbox: 200 mailboxes \(seed 1\) at http://127\.0\.0\.1:\d+/PowerShell"
                        r"; connecting over WSMan/PSRP with NTLM \.\.\.", lines[1])
    assert re.fullmatch(rf"Collected {len(users)} mailboxes and {len(devices)} devices in "
                        r"\d+\.\d s \(15 commands, bulk strategy\)\.", lines[2])
    assert lines[3:] == [
        f"Report written to {output.resolve()}",
        *figure_lines(org, all_devices=True),
    ]
    book = openpyxl.load_workbook(output)
    assert book.sheetnames == ["Summary", "Devices", "Users without devices", "Run",
                               "Changes", "Trend"]
    assert book["Devices"].max_row == len(devices) + 1
    run = {row[0]: row[1] for row in book["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Source"] == ("psbridge demo: sandbox organisation (200 mailboxes, seed 1) over "
                             "WSMan/PSRP, with Exchange Online's ClientTypes (REST, Outlook)")
    assert run["Organisation"] == "Contoso"
    # the first demo already compares with last week: one change of every kind at least
    counts = dict(book["Changes"].iter_rows(min_row=6, max_row=5 + len(history.CHANGE_KINDS),
                                            max_col=2, values_only=True))
    assert set(counts) == set(history.CHANGE_KINDS) and min(counts.values()) >= 1
    trend = list(book["Trend"].iter_rows(min_row=4, values_only=True))
    headers = list(trend[0])
    assert [row[0] for row in trend[1:8]] == [1, 2, 3, 4, 5, 6, 7]
    below = [row[headers.index("EAS below 16.1")] for row in trend[1:8]]
    assert below[-1] < below[0]
    again = CliRunner().invoke(cli, ["demo", "-o", "again.xlsx"])
    assert again.exit_code == 0, again.output
    assert not again.stdout.startswith("History:")  # the story is recorded once
    listing = CliRunner().invoke(cli, ["history", "list"])
    assert listing.stdout.count("Contoso (psbridge sandbox, 200 mailboxes, seed 1)") == 8
    text = _text(openpyxl.load_workbook(tmp_path / "again.xlsx")["Changes"])
    assert "No changes: the same partnerships" in text
    # samples/report.xlsx is this workbook (samples/make-report.sh makes it)
    sample = openpyxl.load_workbook(SAMPLES / "report.xlsx")
    assert list(sample["Devices"].iter_rows(values_only=True)) == list(
        book["Devices"].iter_rows(values_only=True)), (
        "samples/report.xlsx is stale: run samples/make-report.sh")


def test_demo_without_history_writes_no_history_sheets(tmp_path: Path) -> None:
    output = tmp_path / "demo.xlsx"
    result = CliRunner().invoke(cli, ["demo", "--mailboxes", "10", "--no-history",
                                      "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "Changes" not in openpyxl.load_workbook(output).sheetnames


def test_demo_size_seed_output_and_open(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(click, "launch", lambda target, **_kw: opened.append(target) or 0)
    output = tmp_path / "small.xlsx"
    result = CliRunner().invoke(cli, ["demo", "--mailboxes", "20", "--seed", "4", "-o",
                                      str(output), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [str(output)]
    org = demo_organisation(20, 4)
    devices = [d for d in org.iter_devices() if d.mailbox.kind == "user"]
    assert openpyxl.load_workbook(output)["Devices"].max_row == len(devices) + 1
    assert f"Report written to {output.resolve()}" in result.stdout


def test_demo_refuses_a_missing_folder_before_starting(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "demo.xlsx"
    result = CliRunner().invoke(cli, ["demo", "-o", str(target)])
    assert result.exit_code == 4
    assert result.stdout == ""  # nothing started, nothing collected
    assert result.stderr == (f"Error: cannot write {target}: folder {target.parent} does not "
                             "exist.\n")


def test_demo_writes_only_workbooks(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path / "demo.csv")])
    assert result.exit_code == 4
    assert result.stderr == (f"Error: cannot write {tmp_path / 'demo.csv'}: the demo writes a "
                             "workbook; use a name ending in .xlsx.\n")


def test_demo_with_a_damaged_history_warns_once_and_writes_the_report(tmp_path: Path) -> None:
    damaged = tmp_path / "history.sqlite"
    damaged.write_bytes(b"not a database " * 10)
    output = tmp_path / "demo.xlsx"
    result = CliRunner().invoke(cli, ["demo", "--mailboxes", "10", "--history", str(damaged),
                                      "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: history not recorded: history {damaged} is damaged (file is not a "
        "database); move it away (a new one is created) or use --history PATH / --no-history. "
        "The report is written without the Changes and Trend sheets.\n")
    assert "Changes" not in openpyxl.load_workbook(output).sheetnames
