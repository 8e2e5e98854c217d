"""psbridge convert: files written and read back, exact errors and exit codes, atomicity."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from bridge.cli import cli
from bridge.workbook import sheet_names, write_tables

NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'
EXPORT = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"

MAILBOXES = (
    f'<Objs Version="1.1.0.1" {NS}>\n'
    '  <Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Data.Directory.'
    "Management.Mailbox</T></TN><ToString>Ann</ToString><Props>"
    '<S N="Alias">ann</S><DT N="WhenCreated">2022-10-19T18:10:53-07:00</DT>'
    '<S N="ProhibitSendQuota">50 GB (53,687,091,200 bytes)</S></Props></Obj>\n'
    '  <Obj RefId="1"><TNRef RefId="0" /><ToString>Bob</ToString><Props>'
    '<S N="Alias">bob</S><Nil N="WhenCreated" /><S N="ProhibitSendQuota">Unlimited</S>'
    "</Props></Obj>\n"
    "</Objs>"
)
DEVICES = (
    f'<Objs Version="1.1.0.1" {NS}>\n'
    '  <Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Management.Tasks.'
    "MobileDeviceConfiguration</T></TN><Props>"
    '<S N="DeviceModel">iPhone14C3</S><DT N="LastSuccessSync">2024-05-01T12:30:00Z</DT>'
    "</Props></Obj>\n"
    "</Objs>"
)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, Path]:
    mailboxes = tmp_path / "Mailboxes.xml"
    devices = tmp_path / "MobileDeviceStatistics.xml"
    # UTF-16 LE with BOM, as Export-Clixml writes
    mailboxes.write_bytes(b"\xff\xfe" + MAILBOXES.encode("utf-16-le"))
    devices.write_bytes(b"\xff\xfe" + DEVICES.encode("utf-16-le"))
    return mailboxes, devices


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_workbook_has_a_sheet_per_input_with_header_and_real_dates(
    tmp_path: Path, exports: tuple[Path, Path]
) -> None:
    output = tmp_path / "export.xlsx"
    result = run(*exports, "-o", output)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f'{exports[0]}: 2 row(s) -> sheet "Mailboxes"\n'
        f'{exports[1]}: 1 row(s) -> sheet "MobileDeviceStatistics"\n'
        f"Wrote {output}\n"
    )
    book = openpyxl.load_workbook(output)
    assert book.sheetnames == ["Mailboxes", "MobileDeviceStatistics"]
    sheet = book["Mailboxes"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0] == ["Alias", "WhenCreated", "ProhibitSendQuota"]
    # Excel has no zones: the date is UTC, and a real date with a date format
    # a size stays the text Exchange wrote: the generic reader knows no schema (issue 12)
    assert rows[1] == ["ann", datetime(2022, 10, 20, 1, 10, 53), "50 GB (53,687,091,200 bytes)"]
    assert rows[2] == ["bob", None, "Unlimited"]  # Nil, and a size's text as written
    assert sheet["B2"].number_format == "yyyy-mm-dd hh:mm"
    assert sheet.freeze_panes == "A2"
    assert sheet["A1"].font.bold


def test_one_input_to_csv_has_no_source_column(tmp_path: Path, exports: tuple[Path, Path]) -> None:
    output = tmp_path / "mailboxes.csv"
    result = run(exports[0], "-o", output)
    assert result.exit_code == 0, result.output
    assert result.output == f"{exports[0]}: 2 row(s)\nWrote {output}\n"
    frame = pd.read_csv(output, encoding="utf-8-sig")
    assert list(frame.columns) == ["Alias", "WhenCreated", "ProhibitSendQuota"]
    assert frame["ProhibitSendQuota"][0] == "50 GB (53,687,091,200 bytes)"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_several_inputs_to_one_table_get_a_source_column(
    tmp_path: Path, exports: tuple[Path, Path], suffix: str
) -> None:
    output = tmp_path / f"all{suffix}"
    result = run(*exports, "-o", output)
    assert result.exit_code == 0, result.output
    if suffix == ".csv":
        frame = pd.read_csv(output, encoding="utf-8-sig")
    elif suffix == ".parquet":
        frame = pd.read_parquet(output)
    else:
        frame = pd.DataFrame(json.loads(output.read_text(encoding="utf-8")))
    assert list(frame.columns) == [
        "Source", "Alias", "WhenCreated", "ProhibitSendQuota", "DeviceModel", "LastSuccessSync",
    ]  # fmt: skip
    assert frame["Source"].tolist() == [
        "Mailboxes.xml", "Mailboxes.xml", "MobileDeviceStatistics.xml",
    ]  # fmt: skip
    assert frame["DeviceModel"].tolist()[2] == "iPhone14C3"


def test_objects_with_a_source_of_their_own_keep_it(tmp_path: Path) -> None:
    # Get-Command and Get-MessageTrackingLog objects have a Source property: stacking their
    # files must neither overwrite it nor lose which file a row came from
    tracking = (
        f'<Objs Version="1.1.0.1" {NS}>\n'
        '  <Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Management.'
        "TransportLogSearchTasks.MessageTrackingEvent</T></TN><Props>"
        '<S N="EventId">RECEIVE</S><S N="Source">SMTP</S></Props></Obj>\n'
        "</Objs>"
    )
    first, second = tmp_path / "ex01.xml", tmp_path / "ex02.xml"
    first.write_text(tracking, encoding="utf-8")
    second.write_text(tracking.replace("SMTP", "STOREDRIVER"), encoding="utf-8")
    output = tmp_path / "tracking.csv"
    result = run(first, second, "-o", output)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{first}: 1 row(s)\n{second}: 1 row(s)\nWrote {output}\n"
    )
    frame = pd.read_csv(output, encoding="utf-8-sig")
    assert list(frame.columns) == ["SourceFile", "EventId", "Source"]
    assert frame["SourceFile"].tolist() == ["ex01.xml", "ex02.xml"]
    assert frame["Source"].tolist() == ["SMTP", "STOREDRIVER"]


def test_the_readme_example_on_the_bundled_export(tmp_path: Path) -> None:
    counts = json.loads((EXPORT / "psbridge-manifest.json").read_text())["counts"]
    mailboxes, devices = EXPORT / "Mailboxes.xml", EXPORT / "MobileDeviceStatistics.xml"
    output = tmp_path / "export.xlsx"
    result = run(mailboxes, devices, "-o", output)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f'{mailboxes}: {counts["mailboxes"]} row(s) -> sheet "Mailboxes"\n'
        f'{devices}: {counts["devices"]} row(s) -> sheet "MobileDeviceStatistics"\n'
        f"Wrote {output}\n"
    )
    sheet = openpyxl.load_workbook(output)["MobileDeviceStatistics"]
    assert sheet.max_row == counts["devices"] + 1


def test_unknown_extension(tmp_path: Path, exports: tuple[Path, Path]) -> None:
    output = tmp_path / "out.txt"
    result = run(exports[0], "-o", output)
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: cannot write {output}: unknown output type '.txt'; "
        "use .xlsx, .csv, .parquet or .json.\n"
    )
    assert not output.exists()


def test_missing_input(tmp_path: Path, exports: tuple[Path, Path]) -> None:
    missing = tmp_path / "nope.xml"
    result = run(exports[0], missing, "-o", tmp_path / "out.xlsx")
    assert result.exit_code == 3
    assert result.stderr == f"Error: {missing}: no such file\n"
    assert not (tmp_path / "out.xlsx").exists()


def test_malformed_input_leaves_the_existing_output_untouched(
    tmp_path: Path, exports: tuple[Path, Path]
) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text(f'<Objs {NS}>\n  <Obj RefId="0">\n    <Props>\n')
    output = tmp_path / "out.xlsx"
    output.write_bytes(b"previous report")
    result = run(exports[0], broken, "-o", output)
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: {broken}: line 4, column 1: malformed XML: "
        "Premature end of data in tag Props line 3\n"
    )
    assert output.read_bytes() == b"previous report"
    assert _leftovers(tmp_path) == []


def test_output_that_is_a_folder(tmp_path: Path, exports: tuple[Path, Path]) -> None:
    output = tmp_path / "out.csv"
    output.mkdir()
    result = run(exports[0], "-o", output)
    assert result.exit_code == 4
    assert result.stderr == f"Error: cannot write {output}: it is a folder.\n"


def test_output_in_a_missing_folder(tmp_path: Path, exports: tuple[Path, Path]) -> None:
    output = tmp_path / "no" / "out.xlsx"
    result = run(exports[0], "-o", output)
    assert result.exit_code == 4
    assert (
        result.stderr == f"Error: cannot write {output}: folder {output.parent} does not exist.\n"
    )


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_locked_output_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, exports: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    # Windows refuses to replace a workbook open in Excel with PermissionError; Linux
    # (and root) cannot lock a file that way, so the rename is made to fail as it would.
    output = tmp_path / f"report{suffix}"
    output.write_bytes(b"previous report")

    def locked(_source: object, _target: object) -> None:
        raise PermissionError(errno.EACCES, "The process cannot access the file")

    monkeypatch.setattr(os, "replace", locked)
    result = run(*exports, "-o", output)
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: cannot write {output}: permission denied. "
        "If the file is open in Excel, close it and run again.\n"
    )
    assert output.read_bytes() == b"previous report"
    assert _leftovers(tmp_path) == []


def test_sheet_names_are_valid_and_unique_for_excel() -> None:
    assert sheet_names(["a/b:c*d?e[f]g\\h", "x" * 40, "X" * 40, "'quoted'", ""]) == [
        "a_b_c_d_e_f_g_h",
        "x" * 31,
        "X" * 27 + " (2)",
        "quoted",
        "Sheet",
    ]


def test_write_tables_converts_zoned_dates_to_naive_utc(tmp_path: Path) -> None:
    when = pd.Series(pd.to_datetime(["2024-05-01 12:30+02:00", None], utc=True))
    path = tmp_path / "t.xlsx"
    write_tables(path, {"T": pd.DataFrame({"When": when, "Big": [2**64 - 1, 1]})})
    sheet = openpyxl.load_workbook(path)["T"]
    assert sheet["A2"].value == datetime(2024, 5, 1, 10, 30)
    assert sheet["A3"].value is None
    assert sheet["B2"].value == "18446744073709551615"  # beyond Excel's 15 digits: text


def test_readme_convert_example_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parent.parent
    section = (
        (root / "README.md").read_text(encoding="utf-8").split("## Converting CLIXML files")[1]
    )
    block = section.split("```")[1].strip().splitlines()
    command, expected = block[0], block[1:]
    assert command.startswith("$ psbridge convert ")
    args = command.removeprefix("$ psbridge ").split()
    monkeypatch.chdir(root)  # the README runs from the checkout; its paths are relative
    output = tmp_path / args[-1]
    result = CliRunner().invoke(cli, [*args[:-1], str(output)])
    assert result.exit_code == 0, result.output
    assert result.output.replace(str(output), args[-1]).splitlines() == expected


def test_more_rows_than_an_excel_sheet_holds_is_refused(
    tmp_path: Path, exports: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge import convert

    monkeypatch.setattr(convert, "EXCEL_MAX_ROWS", 2)  # the real limit is 1,048,576 rows
    output = tmp_path / "big.xlsx"
    result = run(exports[0], "-o", output)
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: cannot write {output}: {exports[0]} has 2 rows and an Excel sheet holds 1 "
        "below its header; write .csv or .parquet instead.\n"
    )
    assert not output.exists()


def test_a_full_disk_while_writing_the_workbook_is_one_error_and_nothing_after(
        tmp_path: Path, exports: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The zip writer failed twice (the second time from the garbage collector, as
    'Exception ignored in: ZipFile.__del__' with a traceback after the one-line error)."""
    import gc
    import io
    import sys

    class FullDisk(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = Path.open

    def open_full(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if mode == "wb" and self.name.startswith(".out."):
            real_open(self, mode).close()
            return FullDisk()
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(Path, "open", open_full)
    result = run(*exports, "-o", tmp_path / "out.xlsx")
    gc.collect()
    assert result.exit_code == 4
    assert result.output.endswith(
        f"Error: cannot write {tmp_path / 'out.xlsx'}: the disk is full. "
        "Free some space and run again.\n")
    assert unraisable == []
    assert _leftovers(tmp_path) == []
