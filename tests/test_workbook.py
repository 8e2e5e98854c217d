"""workbook.write_report: the report workbook read back with openpyxl."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from bridge import frames, workbook
from bridge.errors import OutputError
from bridge.frames import ReportOptions, build_report
from bridge.sandbox.organisation import Organisation
from bridge.workbook import RunDetails, redact_command_line, write_report

STARTED = datetime(2025, 6, 16, 8, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def org() -> Organisation:
    return Organisation(mailboxes=40, seed=3)


@pytest.fixture(scope="module")
def report(org: Organisation) -> frames.Report:
    return build_report(org.mailboxes, org.devices, run_started=org.reference_time)


def _run(**changes: object) -> RunDetails:
    values: dict[str, object] = {
        "command_line": "psbridge mobile --server mail", "organisation": "Contoso",
        "server": "mail", "endpoint": "http://mail:80/PowerShell (Microsoft.Exchange)",
        "source": "live", "strategy": "bulk", "started": STARTED,
        "finished": STARTED + timedelta(seconds=12.5), "version": "9.9.9"}
    values.update(changes)
    return RunDetails(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def book(report: frames.Report, tmp_path_factory: pytest.TempPathFactory
         ) -> openpyxl.Workbook:
    path = tmp_path_factory.mktemp("wb") / "report.xlsx"
    write_report(path, report, _run())
    return openpyxl.load_workbook(path)


def _rows(sheet: Worksheet) -> list[tuple[object, ...]]:
    return list(sheet.iter_rows(values_only=True))


def _figures(sheet: Worksheet) -> dict[str, object]:
    rows = _rows(sheet)
    first = [row[0] for row in rows].index("Key figures") + 1
    last = [row[0] for row in rows].index("By sync protocol")
    return {row[0]: row[1] for row in rows[first:last] if row[0]}


def test_sheets_in_reading_order(book: openpyxl.Workbook) -> None:
    assert book.sheetnames == ["Summary", "Devices", "Users without devices", "Run"]


def test_devices_sheet_is_the_report_as_a_table(book: openpyxl.Workbook,
                                                report: frames.Report) -> None:
    sheet = book["Devices"]
    rows = _rows(sheet)
    frame = report.devices_sheet()
    assert list(rows[0]) == list(frame.columns)
    assert list(rows[0][:5]) == ["User", "Device", "OS", "SyncType", "LastSync"]
    assert len(rows) == len(frame) + 1
    table = sheet.tables["Devices"]
    assert table.ref == f"A1:{sheet.cell(1, len(frame.columns)).column_letter}{len(frame) + 1}"
    assert table.tableStyleInfo.name == "TableStyleMedium2"
    assert table.tableStyleInfo.showRowStripes
    assert table.autoFilter.ref == table.ref
    assert sheet.freeze_panes == "A2"
    last_sync = [row[4] for row in rows[1:]]
    never = int(frame["LastSync"].isna().sum())
    assert never > 0 and last_sync.count("Never") == never
    dated = [value for value in last_sync if value != "Never"]
    assert all(isinstance(value, datetime) for value in dated)
    first = frame["LastSync"].dropna().iloc[0].tz_convert("UTC").tz_localize(None)
    assert abs(dated[0] - first.to_pydatetime()) < timedelta(seconds=1)
    cell = sheet.cell(2, 5)
    assert cell.number_format == "yyyy-mm-dd hh:mm" or cell.value == "Never"
    # dates are wide enough never to show "#####"; every column has a capped width
    assert sheet.column_dimensions["E"].width >= 17
    widths = [sheet.column_dimensions[sheet.cell(1, i).column_letter].width
              for i in range(1, len(frame.columns) + 1)]
    assert all(8 <= width <= 48 for width in widths)
    days = rows[0].index("DaysSinceLastSync")
    assert [row[days] for row in rows[1:]] == [
        None if value is None else int(value)
        for value in frame["DaysSinceLastSync"].astype(object).where(
            frame["DaysSinceLastSync"].notna(), None)]


def test_rest_and_stale_rows_are_highlighted(book: openpyxl.Workbook,
                                             report: frames.Report) -> None:
    sheet = book["Devices"]
    rules = {rule.formula[0]: (area, rule) for area, rules in
             sheet.conditional_formatting._cf_rules.items() for rule in rules}
    headers = list(_rows(sheet)[0])
    protocol = sheet.cell(1, headers.index("SyncProtocol") + 1).column_letter
    last_sync = sheet.cell(1, headers.index("LastSync") + 1).column_letter
    days = sheet.cell(1, headers.index("DaysSinceLastSync") + 1).column_letter
    rest = f'${protocol}2="REST (legacy)"'
    stale = f'OR(${last_sync}2="Never",${days}2>30)'
    assert set(rules) == {rest, stale}
    area = str(rules[rest][0].sqref)
    assert area.startswith("A2:") and area.endswith(str(len(report.devices) + 1))
    assert rules[rest][1].dxf.fill.bgColor.rgb.endswith("FFEB9C")
    assert rules[stale][1].dxf.font.color.rgb.endswith("9C0006")


def test_summary_figures_equal_ground_truth(book: openpyxl.Workbook,
                                            org: Organisation) -> None:
    devices = [d for d in org.iter_devices() if d.mailbox.kind == "user"
               and d.model == frames.OUTLOOK_MOBILE_MODEL]
    users = [m for m in org.mailbox_entries if m.kind == "user"]
    figures = _figures(book["Summary"])
    assert figures["Mailboxes checked"] == len(users)
    assert figures["Devices"] == len(devices)
    assert figures["Users with devices"] == len({d.mailbox.identity for d in devices})
    assert figures["Still on REST (legacy)"] == sum(d.client_type == "REST" for d in devices)
    assert figures["Never synced"] == sum(d.last_success is None for d in devices)
    native = sum(d.client_type == "Outlook" for d in devices)
    assert figures["On Outlook native sync"] == pytest.approx(native / len(devices))
    summary = book["Summary"]
    assert summary["A1"].value == "Mobile device report: Outlook for iOS and Android"
    assert summary["A2"].value.startswith("Contoso  ·  server mail  ·  run 2025-06-16 08:20 UTC")
    texts = [row[0] for row in _rows(summary) if row[0]]
    for title in ("By sync protocol", "By platform and OS version", "By last successful sync",
                  "By access state"):
        assert title in texts


def test_summary_has_native_charts(book: openpyxl.Workbook) -> None:
    charts = book["Summary"]._charts
    kinds = sorted(type(chart).__name__ for chart in charts)
    assert kinds == ["BarChart", "DoughnutChart"]
    refs = sorted(chart.series[0].val.numRef.f for chart in charts)
    assert all(ref.startswith("Summary!$B$") for ref in refs)


def test_users_without_devices_and_run_sheets(book: openpyxl.Workbook,
                                              report: frames.Report) -> None:
    users = _rows(book["Users without devices"])
    assert list(users[0]) == frames.USERS_WITHOUT_DEVICES_COLUMNS
    assert len(users) - 1 == report.figures.users_without_devices
    assert book["Users without devices"].tables["UsersWithoutDevices"].ref.startswith("A1:D")
    run = {row[0]: row[1] for row in _rows(book["Run"]) if row[0]}
    assert run["Command line"] == "psbridge mobile --server mail"
    assert run["Server"] == "mail" and run["Strategy"] == "bulk"
    assert run["Started (UTC)"] == datetime(2025, 6, 16, 8, 20)
    assert run["Duration"] == "12.5 s"
    assert run["psbridge version"] == "9.9.9"
    assert run["Filter: Devices"] == "DeviceModel Outlook for iOS and Android"
    assert run["Devices in the report"] == report.figures.devices


def test_errors_sheet_only_with_errors(org: Organisation, tmp_path: Path) -> None:
    errors = [{"Mailbox": "contoso.com/Users/Gone", "Category": "ObjectNotFound",
               "Message": "The operation couldn't be performed because 'Gone' couldn't be "
                          "found.", "When": STARTED}]
    report = build_report(org.mailboxes, org.devices, errors, run_started=org.reference_time)
    path = tmp_path / "errors.xlsx"
    write_report(path, report, _run())
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "Devices", "Users without devices", "Errors", "Run"]
    rows = _rows(book["Errors"])
    assert list(rows[0]) == frames.ERROR_COLUMNS
    assert rows[1][0] == "contoso.com/Users/Gone" and rows[1][4] == datetime(2025, 6, 16, 8, 20)
    assert _figures(book["Summary"])["Mailboxes or commands that failed (see Errors)"] == 1


def test_rows_beyond_a_sheet_are_split_with_a_note(org: Organisation, tmp_path: Path) -> None:
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                          options=ReportOptions(all_devices=True))
    per_sheet = 20
    path = tmp_path / "split.xlsx"
    write_report(path, report, _run(), rows_per_sheet=per_sheet)
    book = openpyxl.load_workbook(path)
    total = report.figures.devices
    parts = -(-total // per_sheet)
    names = ["Devices"] + [f"Devices ({n})" for n in range(2, parts + 1)]
    assert [name for name in book.sheetnames if name.startswith("Devices")] == names
    seen = []
    for index, name in enumerate(names):
        rows = _rows(book[name])
        assert rows[0][0] == "User"
        assert book[name].tables[f"Devices{'' if index == 0 else index + 1}"]
        seen += rows[1:]
    assert len(seen) == total
    note = (f"The {total:,} devices are split over {parts} sheets ({', '.join(names)}): "
            "an Excel sheet holds 1,048,576 rows.")
    assert note in [row[0] for row in _rows(book["Summary"])]


def test_empty_report_still_opens(tmp_path: Path) -> None:
    report = build_report([], [], run_started=STARTED)
    path = tmp_path / "empty.xlsx"
    write_report(path, report, _run())
    book = openpyxl.load_workbook(path)
    assert _rows(book["Devices"])[0][0] == "User" and len(_rows(book["Devices"])) == 1
    assert book["Summary"]._charts == []
    assert _figures(book["Summary"])["Devices"] == 0


def test_locked_workbook_is_a_clear_error_and_the_old_file_stays(
        report: frames.Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.xlsx"
    path.write_bytes(b"previous report")

    def refuse(_source: object, _target: object) -> None:
        raise PermissionError(13, "Permission denied")  # what Windows says for an open file

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError) as caught:
        write_report(path, report, _run())
    assert str(caught.value) == (f"cannot write {path}: permission denied. If the file is "
                                 "open in Excel, close it and run again.")
    assert path.read_bytes() == b"previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.xlsx"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["psbridge", "mobile", "--server", "mail"], "psbridge mobile --server mail"),
    (["psbridge", "mobile", "--password", "hunter2"], "psbridge mobile --password '****'"),
    (["psbridge", "mobile", "--api-key=abc"], "psbridge mobile '--api-key=****'"),
    (["psbridge", "run", "-p", "Password=abc"], "psbridge run -p 'Password=****'"),
    (["psbridge", "x", "https://admin:s3cret@mail/PowerShell"],
     "psbridge x 'https://admin:****@mail/PowerShell'"),
])
def test_command_line_secrets_are_removed(argv: list[str], expected: str) -> None:
    assert redact_command_line(argv) == expected
    assert "hunter2" not in expected and "s3cret" not in expected


def test_xlsx_is_the_only_writer_module() -> None:
    root = Path(__file__).resolve().parent.parent / "bridge"
    importers = sorted(path.relative_to(root).parts[0].removesuffix(".py")
                       for path in root.rglob("*.py")
                       if "import xlsxwriter" in path.read_text(encoding="utf-8"))
    assert set(importers) == {"workbook"}  # workbook.py, or modules of bridge/workbook/
    assert workbook.EXCEL_MAX_ROWS == 1_048_576


def test_cell_text_survives_the_streamed_rows(tmp_path: Path) -> None:
    names = ["Zoë <Ops> & \"Sales\"", "  padded  ", "_x0041_ stays literal", "tab\there",
             "bell\x07gone", "ünïcødé 中文 عربي", "=1+1"]
    mailboxes = [{"Identity": f"c.com/U/{i}", "DisplayName": name,
                  "RecipientTypeDetails": "UserMailbox"} for i, name in enumerate(names)]
    devices = [{"Identity": f"c.com/U/{i}/ExchangeActiveSyncDevices/x§{i}", "DeviceId": str(i),
                "DeviceModel": frames.OUTLOOK_MOBILE_MODEL, "ClientType": "Outlook",
                "LastSuccessSync": STARTED - timedelta(days=i), "NumberOfFoldersSynced": i}
               for i in range(len(names))]
    report = build_report(mailboxes, devices, run_started=STARTED)
    path = tmp_path / "text.xlsx"
    write_report(path, report, _run())
    rows = _rows(openpyxl.load_workbook(path)["Devices"])
    users = {row[0] for row in rows[1:]}
    # Excel reads "_xHHHH_" as an escaped character, so a literal one is written with its
    # "_" escaped as _x005F_ (Excel shows "_x0041_"; openpyxl does not unescape in-line text)
    expected = {name.replace("\x07", "").replace("_x0041_", "_x005F_x0041_") for name in names}
    assert users == expected
    days = rows[0].index("DaysSinceLastSync")
    assert sorted(row[days] for row in rows[1:]) == list(range(len(names)))


@pytest.mark.parametrize("where", ["package", "rows"])
def test_a_full_disk_says_so(report: frames.Report, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import errno

    import xlsxwriter

    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*_args: object) -> None:
        if where == "package":
            raise xlsxwriter.exceptions.FileCreateError(full)
        raise full

    if where == "package":
        monkeypatch.setattr(xlsxwriter.Workbook, "close", no_space)
    else:
        monkeypatch.setattr(workbook.streaming, "_stream_rows_into", no_space)
    target = tmp_path / "report.xlsx"
    with pytest.raises(OutputError) as caught:
        write_report(target, report, _run())
    assert str(caught.value) == (
        f"cannot write {target}: the disk is full. Free some space and run again.")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(report: frames.Report, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(workbook.streaming, "_stream_rows_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path / "report.xlsx", report, _run())
    assert list(tmp_path.iterdir()) == []
