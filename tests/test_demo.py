"""psbridge demo: the README's main command, end to end over real WSMan/NTLM."""

from __future__ import annotations

import re
from pathlib import Path

import click
import openpyxl
import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.frames import OUTLOOK_MOBILE_MODEL
from bridge.sandbox.organisation import Organisation
from tests.ground_truth import classic_users, figure_lines, outlook_devices


def test_demo_writes_the_report_of_the_sandbox(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    output = tmp_path / "psbridge-demo.xlsx"
    org = Organisation(mailboxes=200, seed=1)
    users, devices = classic_users(org), outlook_devices(org)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Sandbox: 200 mailboxes \(seed 1\) at http://127\.0\.0\.1:\d+/PowerShell"
                        r"; connecting over WSMan/PSRP with NTLM \.\.\.", lines[0])
    assert re.fullmatch(rf"Collected {len(users)} mailboxes and {len(devices)} devices in "
                        r"\d+\.\d s \(15 commands, bulk strategy\)\.", lines[1])
    assert lines[2:] == [
        f"Report written to {output.resolve()}",
        *figure_lines(org),
    ]
    book = openpyxl.load_workbook(output)
    assert book.sheetnames == ["Summary", "Devices", "Users without devices", "Run",
                               "Changes", "Trend"]
    assert book["Devices"].max_row == len(devices) + 1
    run = {row[0]: row[1] for row in book["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Source"] == ("psbridge demo: sandbox organisation (200 mailboxes, seed 1) over "
                             "WSMan/PSRP")
    assert run["Organisation"] == "Contoso"
    # the demo records its run like any other, under a name of its own: a second run
    # compares with the first and finds the same organisation unchanged
    assert "Nothing to compare yet" in " ".join(
        str(cell) for row in book["Changes"].iter_rows(values_only=True) for cell in row if cell)
    again = CliRunner().invoke(cli, ["demo", "-o", "again.xlsx"])
    assert again.exit_code == 0, again.output
    listing = CliRunner().invoke(cli, ["history", "list"])
    assert listing.stdout.count("Contoso (psbridge sandbox, 200 mailboxes, seed 1)") == 2
    changes = openpyxl.load_workbook(tmp_path / "again.xlsx")["Changes"]
    text = " ".join(str(c) for row in changes.iter_rows(values_only=True) for c in row if c)
    assert "Nothing to compare yet" not in text
    assert "No changes: the same partnerships" in text


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
    org = Organisation(mailboxes=20, seed=4)
    devices = [d for d in org.iter_devices()
               if d.mailbox.kind == "user" and d.model == OUTLOOK_MOBILE_MODEL]
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
