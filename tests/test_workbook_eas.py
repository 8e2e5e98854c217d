"""The workbook leads with what needs action: EAS below 16.1 and the cleanup script."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from bridge import frames
from bridge.workbook import write_report
from tests.eas_org import SPECS, known_organisation
from tests.test_workbook import _rows, _run


def _book(tmp_path: Path, options: frames.ReportOptions, environment: str = "on-premises"
          ) -> tuple[frames.Report, openpyxl.Workbook]:
    org, _devices = known_organisation()
    report = frames.build_report(org.mailboxes, org.devices, options=options,
                                 run_started=org.reference_time,
                                 environment=environment)  # type: ignore[arg-type]
    path = tmp_path / "report.xlsx"
    write_report(path, report, _run())
    return report, openpyxl.load_workbook(path)


def test_summary_and_devices_show_eas_and_the_cleanup(tmp_path: Path) -> None:
    report, book = _book(tmp_path, frames.ReportOptions(all_devices=True, cleanup_days=30))
    rows = _rows(book["Summary"])
    labels = [row[0] for row in rows]
    figures = {row[0]: row[1] for row in rows[labels.index("Key figures") + 1:] if row[0]}
    assert figures["EAS clients below 16.1"] == 4
    assert figures["Partnerships in the cleanup script"] == 4
    title = labels.index("EAS below 16.1: would be blocked in Exchange Online")
    assert rows[title + 1][:3] == ("ClientVersion · DeviceModel", "Devices", "Share")
    assert [row[:3] for row in rows[title + 2:title + 5]] == [
        ("EAS 14.1 · SM-G991B", 2, pytest.approx(2 / 7)),
        ("EAS 12.1 · SM-A536B", 1, pytest.approx(1 / 7)),
        ("EAS 16.0 · Pixel 8", 1, pytest.approx(1 / 7))]
    assert rows[title + 5][0] == "Share: of the 7 EAS devices in the report."
    assert labels.index("By sync protocol") > title + 5

    devices = book["Devices"]
    headers = list(_rows(devices)[0])
    assert headers[9:12] == ["ClientVersion", "EASVersion", "EASBelow16.1"]
    assert "CleanupScript" in headers and headers.index("CleanupScript") < headers.index(
        "DeviceAccessState")
    table = [dict(zip(headers, row, strict=True)) for row in _rows(devices)[1:]]
    assert sum(row["EASBelow16.1"] is True for row in table) == 4
    assert sorted(row["EASVersion"] for row in table if row["EASVersion"] is not None) == [
        12.1, 14.1, 14.1, 16.0, 16.1, 16.1]
    assert sorted(str(row["CleanupScript"]) for row in table if row["CleanupScript"]) == [
        "never synced", "stale", "stale", "stale"]
    assert len(table) == len(SPECS)
    flag = devices.cell(1, headers.index("EASBelow16.1") + 1).column_letter
    rules = {rule.formula[0]: rule for rules in devices.conditional_formatting._cf_rules.values()
             for rule in rules}
    assert rules[f"${flag}2=TRUE"].dxf.fill.bgColor.rgb.endswith("FFEB9C")  # as REST rows
    # printed: every column up to DeviceAccessState
    access = headers.index("DeviceAccessState") + 1
    assert str(devices.print_area).endswith(
        f"$A$1:${devices.cell(1, access).column_letter}${len(SPECS) + 1}")
    run = {row[0]: row[1] for row in _rows(book["Run"]) if row[0]}
    assert run["Filter: Cleanup script"] == (
        "removes partnerships without a successful sync for 30+ days, or never synced and set "
        "up 30+ days ago")


def test_exchange_online_says_blocked(tmp_path: Path) -> None:
    _report, book = _book(tmp_path, frames.ReportOptions(all_devices=True), "online")
    labels = [row[0] for row in _rows(book["Summary"])]
    # the known organisation's clock is in 2025: before the block
    assert "EAS below 16.1: to be blocked by Exchange Online from 1 March 2026" in labels


@pytest.mark.parametrize("cleanup_days", [None, 30])
def test_the_classic_scope_says_in_one_line_that_it_hides_eas(tmp_path: Path,
                                                              cleanup_days: int | None) -> None:
    report, book = _book(tmp_path, frames.ReportOptions(cleanup_days=cleanup_days))
    rows = _rows(book["Summary"])
    labels = [row[0] for row in rows]
    assert labels.count(
        "This report lists Outlook for iOS and Android only; Exchange ActiveSync clients below "
        "16.1 are counted with --all-devices.") == 1
    assert not any(str(label).startswith("EAS") for label in labels if label)
    headers = list(_rows(book["Devices"])[0])
    assert "EASVersion" not in headers and "EASBelow16.1" not in headers
    assert ("CleanupScript" in headers) is (cleanup_days is not None)
    assert len(_rows(book["Devices"])) == 1 + 4  # the four Outlook partnerships
