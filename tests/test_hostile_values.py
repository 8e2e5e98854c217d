"""Values from Exchange are data in every output: no live formula in any workbook, and a
CSV guard against spreadsheet formula injection (issue 11)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from bridge.cli import cli
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox
from bridge.workbook import write_tables

HOSTILE = '=HYPERLINK("http://evil.example/","Click me")'
NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'


def _formulas(path: Path) -> list[str]:
    """Every formula element in the workbook's sheets."""
    with zipfile.ZipFile(path) as package:
        return [name for name in package.namelist()
                if name.startswith("xl/worksheets/") and b"<f>" in package.read(name)]


@pytest.fixture(scope="module")
def hostile_sandbox() -> Iterator[Sandbox]:
    organisation = Organisation(mailboxes=4, seed=1)
    organisation.mailbox_entries[0].display_name = HOSTILE
    with Sandbox(organisation=organisation) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


def test_write_tables_writes_formula_looking_text_as_text(tmp_path: Path) -> None:
    out = tmp_path / "t.xlsx"
    write_tables(out, {"T": pd.DataFrame({"=Header": [HOSTILE, "=1+1", "plain", 5]})})
    sheet = load_workbook(out)["T"]
    assert [c.value for c in sheet["A"]] == ["=Header", HOSTILE, "=1+1", "plain", 5]
    assert [c.data_type for c in sheet["A"]] == ["s", "s", "s", "s", "n"]
    assert _formulas(out) == []


def test_convert_keeps_a_hostile_display_name_as_text(tmp_path: Path) -> None:
    source = tmp_path / "Mailboxes.xml"
    source.write_text(
        f'<Objs Version="1.1.0.1" {NS}><Obj RefId="0"><TN RefId="0"><T>Deserialized.'
        "Microsoft.Exchange.Data.Directory.Management.Mailbox</T></TN><Props>"
        '<S N="DisplayName">=HYPERLINK("http://evil.example/","Click me")</S>'
        "</Props></Obj></Objs>", encoding="utf-8")
    for suffix in (".xlsx", ".csv"):
        out = tmp_path / f"o{suffix}"
        result = CliRunner().invoke(cli, ["convert", str(source), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert load_workbook(tmp_path / "o.xlsx")["Mailboxes"]["A2"].value == HOSTILE
    assert _formulas(tmp_path / "o.xlsx") == []
    csv_text = (tmp_path / "o.csv").read_text(encoding="utf-8-sig")
    assert csv_text.splitlines()[1] == (
        '"\'=HYPERLINK(""http://evil.example/"",""Click me"")"')


def test_run_to_xlsx_and_csv_keeps_a_hostile_display_name_as_data(
        hostile_sandbox: Sandbox, tmp_path: Path) -> None:
    connect = ["--server", hostile_sandbox.host, "--port", str(hostile_sandbox.port), "--http",
               "--auth", "ntlm", "--user", hostile_sandbox.username, "-q"]
    env = {"PSBRIDGE_PASSWORD": hostile_sandbox.password}
    for suffix in (".xlsx", ".csv"):
        out = tmp_path / f"m{suffix}"
        result = CliRunner(env=env).invoke(
            cli, ["run", "Get-Mailbox", "-p", "ResultSize=Unlimited", "-o", str(out), *connect])
        assert result.exit_code == 0, result.output
    sheet = load_workbook(tmp_path / "m.xlsx")["Get-Mailbox"]
    header = [c.value for c in sheet[1]]
    column = header.index("DisplayName") + 1
    assert sheet.cell(row=2, column=column).value == HOSTILE
    assert _formulas(tmp_path / "m.xlsx") == []
    frame = pd.read_csv(tmp_path / "m.csv", encoding="utf-8-sig")
    assert frame["DisplayName"][0] == "'" + HOSTILE


def test_the_mobile_report_keeps_a_hostile_display_name_as_text(
        hostile_sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    result = CliRunner(env={"PSBRIDGE_PASSWORD": hostile_sandbox.password}).invoke(cli, [
        "mobile", "--server", hostile_sandbox.host, "--port", str(hostile_sandbox.port),
        "--http", "--auth", "ntlm", "--user", hostile_sandbox.username, "-q", "--no-history",
        "--all-devices", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as package:
        sheets = [n for n in package.namelist() if n.startswith("xl/worksheets/")]
        assert all(b"<f>HYPERLINK" not in package.read(name) for name in sheets)
    values = [c.value for row in load_workbook(out)["Devices"].iter_rows() for c in row]
    assert HOSTILE in values
