"""Excel workbooks: the only module that writes .xlsx (openpyxl, write-only mode for speed).

Excel has no time zones, so zoned datetimes are written as naive UTC with a
``yyyy-mm-dd hh:mm`` number format: real dates that sort and filter, never text.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.chart import LineChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo

from bridge.history import CHANGE_KINDS, HistoryView
from bridge.output import atomic_write

DATE_FORMAT = "yyyy-mm-dd hh:mm"
MAX_SHEET_NAME = 31
MAX_COLUMN_WIDTH = 60
MAX_CELL_TEXT = 32_767  # Excel's limit per cell
_EXACT_INTEGERS = 2**53  # beyond this a number cell would lose digits: write text
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_ILLEGAL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # XML 1.0 forbids them
_HEADER_FONT = Font(bold=True)


def sheet_names(names: Iterable[str]) -> list[str]:
    """Valid, unique Excel sheet names: at most 31 chars, none of []:*?/\\, unique ignoring case."""
    result: list[str] = []
    taken: set[str] = set()
    for raw in names:
        base = _BAD_SHEET_CHARS.sub("_", raw).strip("'").strip() or "Sheet"
        base = base[:MAX_SHEET_NAME]
        candidate, counter = base, 1
        while candidate.casefold() in taken:
            counter += 1
            tail = f" ({counter})"
            candidate = base[: MAX_SHEET_NAME - len(tail)] + tail
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


def _excel_value(value: object) -> object:
    """One plain value as something Excel shows faithfully."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_EXACT_INTEGERS < value < _EXACT_INTEGERS else str(value)
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, list):
        return _text("; ".join("" if item is None else str(item) for item in value))
    if isinstance(value, dict):
        return _text(json.dumps(value, default=str, ensure_ascii=False))
    if isinstance(value, bytes):
        return _text(value.hex())
    return _text(str(value))


def _text(text: str) -> str:
    return _ILLEGAL_TEXT.sub("", text)[:MAX_CELL_TEXT]


def _column_values(column: pd.Series) -> tuple[list[object], bool]:
    """The column's cells as Excel values, and whether it holds dates."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return [None if pd.isna(v) else v.to_pydatetime() for v in column], True
    values = [_excel_value(v) for v in column.tolist()]
    return values, any(isinstance(v, datetime) for v in values)


def _width(header: str, values: list[object]) -> float:
    longest = len(header)
    for value in values[:200]:  # a sample is enough to size a column
        if isinstance(value, datetime):
            longest = max(longest, 16)
        elif value is not None:
            longest = max(longest, len(str(value)))
    return float(min(MAX_COLUMN_WIDTH, longest + 2))


def _write_sheet(sheet: WriteOnlyWorksheet, frame: pd.DataFrame) -> None:
    headers = [str(name) for name in frame.columns]
    columns = [_column_values(frame.iloc[:, i]) for i in range(frame.shape[1])]
    for index, (header, (values, _dated)) in enumerate(zip(headers, columns, strict=True), 1):
        # the stubs miss these write-only attributes, which openpyxl does support
        dimension = sheet.column_dimensions[get_column_letter(index)]  # type: ignore[attr-defined]
        dimension.width = _width(header, values)
    sheet.freeze_panes = "A2"
    if headers:
        last = get_column_letter(len(headers))
        sheet.auto_filter.ref = f"A1:{last}{max(1, len(frame) + 1)}"  # type: ignore[attr-defined]
    header_cells = []
    for header in headers:
        cell = WriteOnlyCell(sheet, value=_text(header))
        cell.font = _HEADER_FONT
        header_cells.append(cell)
    sheet.append(header_cells)
    makers: list[Callable[[object], object]] = []
    for _values, dated in columns:
        if dated:
            makers.append(lambda v: _date_cell(sheet, v))
        else:
            makers.append(lambda v: v)
    for row in zip(*(values for values, _dated in columns), strict=True):
        sheet.append([make(value) for make, value in zip(makers, row, strict=True)])


def _date_cell(sheet: WriteOnlyWorksheet, value: object) -> object:
    if not isinstance(value, datetime):
        return value
    cell = WriteOnlyCell(sheet, value=value)
    cell.number_format = DATE_FORMAT
    return cell


def write_tables(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write one sheet per table (header row, frozen, filterable, real dates), atomically."""
    workbook = Workbook(write_only=True)
    for name, frame in zip(sheet_names(tables), tables.values(), strict=True):
        _write_sheet(workbook.create_sheet(title=name), frame)
    if not tables:
        workbook.create_sheet(title="Sheet")
    with atomic_write(path) as temp_path:
        workbook.save(temp_path)


# --- history sheets (owner: history) ---
# "Changes" and "Trend" from a bridge.history.HistoryView; write_report calls
# write_history_sheets(workbook, history) when history is not None.

_TITLE_FONT = Font(bold=True, size=14)
_NOTE_FONT = Font(italic=True)
_TABLE_STYLE = "TableStyleMedium2"
_CHART_WIDTH_CM = 18
_CHART_HEIGHT_CM = 8


def _title_rows(sheet: WriteOnlyWorksheet, title: str, lines: Iterable[str]) -> int:
    """A bold title and plain lines under it; returns how many rows were written."""
    cell = WriteOnlyCell(sheet, value=_text(title))
    cell.font = _TITLE_FONT
    sheet.append([cell])
    written = 1
    for line in lines:
        sheet.append([_text(line)])
        written += 1
    return written


def _note_row(sheet: WriteOnlyWorksheet, text: str) -> None:
    cell = WriteOnlyCell(sheet, value=_text(text))
    cell.font = _NOTE_FONT
    sheet.append([cell])


def _table_rows(sheet: WriteOnlyWorksheet, frame: pd.DataFrame, first_row: int,
                name: str) -> None:
    """``frame`` as an Excel table (header, banded rows, autofilter) starting at ``first_row``."""
    headers = [str(column) for column in frame.columns]
    columns = [_column_values(frame.iloc[:, i]) for i in range(frame.shape[1])]
    header_cells = []
    for header in headers:
        cell = WriteOnlyCell(sheet, value=_text(header))
        cell.font = _HEADER_FONT
        header_cells.append(cell)
    sheet.append(header_cells)
    for row in zip(*(values for values, _dated in columns), strict=True):
        sheet.append([_date_cell(sheet, value) for value in row])
    if len(frame):
        ref = f"A{first_row}:{get_column_letter(len(headers))}{first_row + len(frame)}"
        table = Table(displayName=name, ref=ref)
        # write-only sheets cannot read the header back: name the columns here
        table.tableColumns = [TableColumn(id=i, name=_text(h)) for i, h in enumerate(headers, 1)]
        table.tableStyleInfo = TableStyleInfo(name=_TABLE_STYLE, showRowStripes=True)
        with warnings.catch_warnings():  # "add table columns manually": done above
            warnings.filterwarnings("ignore", "In write-only mode", UserWarning)
            sheet.add_table(table)  # type: ignore[misc]  # write-only sheets borrow it


def _set_widths(sheet: WriteOnlyWorksheet, frame: pd.DataFrame, first: float = 0) -> None:
    """Column widths that fit the table (write-only sheets need them before any row)."""
    for index in range(frame.shape[1]):
        values, _dated = _column_values(frame.iloc[:, index])
        width = _width(str(frame.columns[index]), values)
        if index == 0:
            width = max(width, first)
        sheet.column_dimensions[get_column_letter(index + 1)].width = width  # type: ignore[attr-defined]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_changes_sheet(workbook: Workbook, history: HistoryView, title: str = "Changes") -> None:
    """The Changes sheet: counts by kind, then every change, against the previous run."""
    sheet = workbook.create_sheet(title=title)
    current, previous = history.current, history.previous
    _set_widths(sheet, history.changes if len(history.changes) else pd.DataFrame(
        columns=["Change", "Devices"]), first=22)
    if previous is None:
        _title_rows(sheet, "Changes since the previous run", [
            f"Organisation: {current.organisation}. "
            f"Run {current.run_id}, {_when(current.started)}.",
        ])
        sheet.append([])
        _note_row(sheet, "Nothing to compare yet: this is the first recorded run of this "
                  "organisation. The next run shows new and removed partnerships, protocol "
                  "switches, devices that went stale and OS upgrades.")
        return
    _title_rows(sheet, "Changes since the previous run", [
        f"Organisation: {current.organisation}.",
        f"Run {current.run_id} ({_when(current.started)}) compared with run "
        f"{previous.run_id} ({_when(previous.started)}).",
    ])
    sheet.append([])
    counts = history.change_counts
    summary = pd.DataFrame({"Change": list(CHANGE_KINDS),
                            "Devices": [counts.get(kind, 0) for kind in CHANGE_KINDS]})
    _table_rows(sheet, summary, first_row=5, name="HistoryChangeCounts")
    sheet.append([])
    if not len(history.changes):
        _note_row(sheet, "No changes: the same partnerships, protocols, OS versions and "
                  "sync states as in the previous run.")
        return
    first_row = 5 + len(summary) + 2
    _table_rows(sheet, history.changes, first_row=first_row, name="HistoryChanges")


def write_trend_sheet(workbook: Workbook, history: HistoryView, title: str = "Trend") -> None:
    """The Trend sheet: one row per run, with line charts by protocol, platform and staleness."""
    sheet = workbook.create_sheet(title=title)
    trend = history.trend
    _set_widths(sheet, trend, first=6)
    runs = len(trend)
    lines = [f"Organisation: {history.current.organisation}. {runs} run(s) recorded"
             + (f", {_when(trend['Started'].iloc[0])} to {_when(trend['Started'].iloc[-1])}."
                if runs else ".")]
    written = _title_rows(sheet, "Trend", lines)
    sheet.append([])
    first_row = written + 2
    if runs < 2:
        _note_row(sheet, "Nothing to compare yet: the trend needs at least two runs of this "
                  "organisation. Run the report again later.")
        first_row += 1
    _table_rows(sheet, trend, first_row=first_row, name="HistoryTrend")
    if runs < 2:
        return
    last_row = first_row + runs
    columns = {str(name): index for index, name in enumerate(trend.columns, 1)}
    charts = [
        ("Devices by sync protocol", history.protocol_columns),
        ("Devices by platform", history.platform_columns),
        ("Stale and never-synced devices", ["Stale", "Never synced"]),
    ]
    anchor_column = get_column_letter(len(trend.columns) + 2)
    for number, (chart_title, names) in enumerate(charts):
        chart = LineChart()
        chart.title = chart_title
        chart.y_axis.title = "Devices"
        chart.x_axis.number_format = "yyyy-mm-dd"
        # openpyxl 3.1 hides axes unless told otherwise
        chart.x_axis.delete = False
        chart.y_axis.delete = False
        chart.width, chart.height = _CHART_WIDTH_CM, _CHART_HEIGHT_CM
        for name in names:
            column = columns[name]
            data = Reference(sheet, min_col=column, min_row=first_row, max_row=last_row)
            chart.add_data(data, titles_from_data=True)
        chart.set_categories(Reference(sheet, min_col=columns["Started"], min_row=first_row + 1,
                                       max_row=last_row))
        sheet.add_chart(chart, f"{anchor_column}{1 + number * 16}")


def write_history_sheets(workbook: Workbook, history: HistoryView) -> None:
    """The Changes and Trend sheets, for write_report when history is recorded."""
    write_changes_sheet(workbook, history)
    write_trend_sheet(workbook, history)


def write_history_workbook(path: Path, history: HistoryView) -> None:
    """A workbook of just Changes and Trend (``psbridge diff``), written atomically."""
    workbook = Workbook(write_only=True)
    write_history_sheets(workbook, history)
    with atomic_write(path) as temp_path:
        workbook.save(temp_path)
