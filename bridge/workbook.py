"""Excel workbooks: the only module that writes .xlsx.

``write_tables`` (convert) uses openpyxl's write-only mode; the mobile device report
(``write_report``) and its history sheets use XlsxWriter's constant-memory mode, the
faster of the two for a formatted 100,000-row workbook (benchmarks/report.py).

Excel has no time zones, so zoned datetimes are written as naive UTC with a
``yyyy-mm-dd hh:mm`` number format: real dates that sort and filter, never text.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import xlsxwriter
import xlsxwriter.exceptions
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from xlsxwriter.utility import xl_col_to_name, xl_range

from bridge import eas
from bridge.errors import OutputError
from bridge.frames import NATIVE_PROTOCOL, NEVER, REST_PROTOCOL, Report
from bridge.history import CHANGE_KINDS, EAS_BELOW, HistoryView
from bridge.output import _output_error, atomic_write

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
    if value is None or value is pd.NaT or value is pd.NA:
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


# --- mobile device report (owner: report) ---
# write_report renders a frames.Report: XlsxWriter (constant-memory mode) writes the
# workbook's structure (Summary, charts, formats, tables, conditional formats, Run) and the
# table sheets' data rows are streamed into its package afterwards (_SheetRows). Measured
# by benchmarks/report.py for 100,000 devices: about 0.2x the time and 0.3x the memory of
# pandas' plain to_excel; openpyxl's write-only mode, and XlsxWriter's own per-cell path,
# missed the time target. Constant-memory sheets are written top to bottom: small sheets
# collect their cells in a _Grid first.

EXCEL_MAX_ROWS = 1_048_576
_REPORT_TABLE_STYLE = "Table Style Medium 2"
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_DAY = pd.Timedelta(days=1)
_DATE_WIDTH = 17.0  # "yyyy-mm-dd hh:mm" plus room: never "#####"
_MAX_REPORT_WIDTH = 48.0
_DEVICE_PRINT_COLUMNS = 14
_SECRET_OPTION = re.compile(
    r"pass(word)?|secret|token|credential|api[-_]?key|private", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@", re.IGNORECASE)


@dataclass(frozen=True)
class RunDetails:
    """What the Run sheet says about how the report was made (no secrets here)."""

    command_line: str
    organisation: str
    server: str
    endpoint: str
    source: str
    strategy: str
    started: datetime
    finished: datetime
    version: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """The run's duration."""
        return max(0.0, (self.finished - self.started).total_seconds())


def redact_command_line(argv: Sequence[str]) -> str:
    """The command line for the Run sheet, with any secret-looking value replaced by ****.

    psbridge never takes a password on the command line, but a user may still type one
    (``--password x``, ``-p Password=x``, ``https://user:x@host``).
    """
    words: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            words.append("****")
            hide_next = False
            continue
        name, equals, _value = word.partition("=")
        if _SECRET_OPTION.search(name):
            if equals:
                words.append(f"{name}=****")
            else:
                words.append(word)
                hide_next = word.startswith("-")
            continue
        words.append(_URL_PASSWORD.sub(r"\g<scheme>:****@", word))
    return " ".join(shlex.quote(word) for word in words)


def _serials(column: pd.Series) -> list[object]:
    """Datetimes as Excel serial day numbers (UTC; Excel has no zones), None when missing."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    serials = (column - _EXCEL_EPOCH) / _DAY
    values: list[object] = serials.astype(object).where(serials.notna(), None).tolist()
    return values


def _cells(column: pd.Series) -> tuple[list[object], str]:
    """A column's cells as plain values and their kind: "date", "number", "bool" or "text"."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return _serials(column), "date"
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.astype(object).where(column.notna(), None).tolist(), "bool"
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("Float64") if column.dtype.kind in "iu" else column
        return values.astype(object).where(values.notna(), None).tolist(), "number"
    text = column.astype(object).where(column.notna(), None).tolist()
    return [None if value is None else _text(str(value)) for value in text], "text"


def _fitted_width(header: str, column: pd.Series, kind: str) -> float:
    """A width that shows the whole header (with its filter button) and most values."""
    if kind == "date":
        return max(_DATE_WIDTH, len(header) + 4.0)
    if len(column) == 0:
        longest = 0
    elif kind == "text":
        lengths = column.astype("str").str.len()
        longest = int(lengths.max()) if lengths.notna().any() else 0
    else:
        longest = max((len(str(v)) for v in column.dropna().head(1000).tolist()), default=0)
    return min(_MAX_REPORT_WIDTH, max(float(longest) + 2, len(header) + 4.0, 8.0))


class _Grid:
    """Cells of a small sheet collected in any order, written top to bottom (constant memory)."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], tuple[object, Any]] = {}

    def put(self, row: int, col: int, value: object, cell_format: Any = None) -> None:
        self.cells[(row, col)] = (value, cell_format)

    def write(self, sheet: Any) -> None:
        for (row, col), (value, cell_format) in sorted(self.cells.items()):
            if value is None:
                if cell_format is not None:
                    sheet.write_blank(row, col, None, cell_format)
            elif isinstance(value, bool):
                sheet.write_boolean(row, col, value, cell_format)
            elif isinstance(value, int | float):
                sheet.write_number(row, col, value, cell_format)
            elif isinstance(value, datetime):
                sheet.write_number(row, col, _serials(pd.Series([value]))[0], cell_format)
            else:
                sheet.write_string(row, col, _text(str(value)), cell_format)


class _Styles:
    """The report's cell formats, made once per workbook."""

    def __init__(self, book: Any) -> None:
        base = {"font_name": "Calibri", "font_size": 11, "valign": "vcenter"}
        self.date = book.add_format({**base, "num_format": DATE_FORMAT, "align": "left"})
        self.never = book.add_format({**base, "italic": True, "font_color": "#7F7F7F"})
        self.text = book.add_format({**base, "align": "left", "num_format": "#,##0"})
        self.title = book.add_format(
            {**base, "bold": True, "font_size": 18, "font_color": "#1F3864"}
        )
        self.subtitle = book.add_format({**base, "font_color": "#595959"})
        self.section = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 12,
                "font_color": "#1F3864",
                "bottom": 2,
                "bottom_color": "#4472C4",
            }
        )
        self.figure_label = book.add_format({**base, "bottom": 1, "bottom_color": "#D9D9D9"})
        self.figure = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 14,
                "align": "right",
                "num_format": "#,##0",
                "bottom": 1,
                "bottom_color": "#D9D9D9",
            }
        )
        self.figure_share = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 14,
                "align": "right",
                "num_format": "0.0%",
                "bottom": 1,
                "bottom_color": "#D9D9D9",
            }
        )
        self.head = book.add_format(
            {
                **base,
                "bold": True,
                "font_color": "#FFFFFF",
                "bg_color": "#4472C4",
                "border": 1,
                "border_color": "#4472C4",
            }
        )
        self.head_number = book.add_format(
            {
                **base,
                "bold": True,
                "font_color": "#FFFFFF",
                "bg_color": "#4472C4",
                "align": "right",
                "border": 1,
                "border_color": "#4472C4",
            }
        )
        self.cell = book.add_format({**base, "border": 1, "border_color": "#D9D9D9"})
        self.count = book.add_format(
            {**base, "num_format": "#,##0", "border": 1, "border_color": "#D9D9D9"}
        )
        self.share = book.add_format(
            {**base, "num_format": "0.0%", "border": 1, "border_color": "#D9D9D9"}
        )
        self.note = book.add_format({**base, "italic": True, "font_color": "#595959"})
        self.label = book.add_format({**base, "bold": True, "valign": "top"})
        self.wrap = book.add_format({**base, "text_wrap": True, "valign": "top"})
        self.rest_row = book.add_format({"bg_color": "#FFEB9C"})
        self.stale_row = book.add_format({"font_color": "#9C0006"})


def _add_streamed_table(
    sheet: Any,
    rows: int,
    headers: Sequence[str],
    name: str,
    formats: Sequence[Any],
    header_format: Any = None,
) -> None:
    """An Excel table (banded, autofilter) over the header row and ``rows`` rows below it.

    XlsxWriter refuses add_table in constant-memory mode (it would write cells out of
    order) and records every cell of a table's range in a dict (hundreds of MB for
    100,000 rows). So: add it over the header and one row while the sheet is still
    empty, with the mode briefly off, then widen its range. tests/test_workbook.py
    reads the table back, so a change in XlsxWriter that breaks this fails a test.
    """
    last_col = len(headers) - 1
    columns = [
        {"header": header, "format": cell_format}
        for header, cell_format in zip(headers, formats, strict=True)
    ]
    options = {
        "columns": columns,
        "name": name,
        "style": _REPORT_TABLE_STYLE,
        "autofilter": True,
        "banded_rows": True,
    }
    sheet.constant_memory = False
    try:
        sheet.add_table(0, 0, 1, last_col, options)
    finally:
        sheet.constant_memory = True
    # as in-line strings, as constant memory writes them; the explicit header format
    # shows the header in viewers that ignore table styles (LibreOffice)
    for col, header in enumerate(headers):
        sheet.write_string(0, col, header, header_format)
    table = sheet.tables[-1]
    full = xl_range(0, 0, max(1, rows), last_col)
    table["range"] = table["a_range"] = table["autofilter"] = full


_ROWS_PER_CHUNK = 5_000
_EXCEL_ESCAPE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")  # Excel reads "_x0041_" as "A"
_DIMENSION = re.compile(r'<dimension ref="[^"]*"/>')


def _kind(column: pd.Series) -> str:
    """How a column's cells are written: "date", "int", "number", "bool" or "text"."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return "date"
    if pd.api.types.is_bool_dtype(column.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(column.dtype):
        return "int"
    if pd.api.types.is_numeric_dtype(column.dtype):
        return "number"
    return "text"


def _inline_string(value: object, style: str = "") -> str:
    """The rest of a ``<c r="..."`` element holding ``value`` as an in-line string."""
    text = _text(str(value))
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "_x" in escaped:
        escaped = _EXCEL_ESCAPE.sub(r"_x005F_\1", escaped)
    space = ' xml:space="preserve"' if text != text.strip() else ""
    return f'{style} t="inlineStr"><is><t{space}>{escaped}</t></is></c>'


class _SheetRows:
    """A table sheet's data rows as SpreadsheetML, made chunk by chunk.

    Formatting XlsxWriter's way costs about 10 microseconds a cell (every string escaped
    and checked one by one); here each distinct value of a chunk is rendered once and
    rows are joined from those pieces, so 100,000 devices stream in seconds with only
    one chunk in memory. The XML is what XlsxWriter writes in constant-memory mode.
    """

    def __init__(self, frame: pd.DataFrame, kinds: Sequence[str], never_col: int,
                 date_xf: int, never_xf: int) -> None:
        self.frame = frame
        self.kinds = list(kinds)
        self.never_col = never_col
        self.date_style = f' s="{date_xf}"'
        self.never = _inline_string(NEVER, f' s="{never_xf}"')
        self.letters = [xl_col_to_name(index) for index in range(frame.shape[1])]

    def dimension(self) -> str:
        return f'<dimension ref="A1:{self.letters[-1]}{len(self.frame) + 1}"/>'

    def _bodies(self, column: pd.Series, kind: str, never: bool) -> list[str | None]:
        if kind == "date":
            serials = _serials(column)
            date_style = self.date_style
            missing = self.never if never else None
            return [missing if value is None else f"{date_style}><v>{value!r}</v></c>"
                    for value in serials]
        codes, uniques = pd.factorize(column.astype(object).where(column.notna(), None))
        if kind == "int":
            rendered = [f"><v>{int(value)}</v></c>" for value in uniques]
        elif kind == "number":
            rendered = [f"><v>{float(value)!r}</v></c>" for value in uniques]
        elif kind == "bool":
            rendered = [f' t="b"><v>{int(bool(value))}</v></c>' for value in uniques]
        else:
            rendered = [_inline_string(value) for value in uniques]
        pieces: list[str | None] = [*rendered, None]  # code -1 (missing) -> None
        return [pieces[code] for code in codes.tolist()]

    def chunks(self) -> Iterator[str]:
        """The ``<row>`` elements from row 2 on, a chunk of rows per string."""
        frame, letters = self.frame, self.letters
        for start in range(0, len(frame), _ROWS_PER_CHUNK):
            block = frame.iloc[start:start + _ROWS_PER_CHUNK]
            bodies = [self._bodies(block.iloc[:, index], kind, index == self.never_col)
                      for index, kind in enumerate(self.kinds)]
            rows = []
            for offset, cells in enumerate(zip(*bodies, strict=True)):
                number = start + offset + 2
                row = "".join([f'<c r="{letter}{number}"{body}'
                               for letter, body in zip(letters, cells, strict=True)
                               if body is not None])
                rows.append(f'<row r="{number}">{row}</row>')
            yield "".join(rows)


def _stream_rows_into(package: Path, target: Path, streams: dict[str, _SheetRows]) -> None:
    """Copy the XlsxWriter ``package`` to ``target`` with each streamed sheet's rows added."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(
            target, "w", compression=zipfile.ZIP_DEFLATED) as result:
        for info in source.infolist():
            data = source.read(info)
            rows = streams.get(info.filename)
            if rows is None:
                result.writestr(info, data)
                continue
            head, tail = data.decode("utf-8").split("</sheetData>", 1)
            head = _DIMENSION.sub(rows.dimension(), head, count=1)
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with result.open(entry, "w", force_zip64=True) as stream:
                stream.write(head.encode("utf-8"))
                for chunk in rows.chunks():
                    stream.write(chunk.encode("utf-8"))
                stream.write(f"</sheetData>{tail}".encode())


class _ReportWriter:
    """Writes one report workbook; sheets in the order leadership reads them."""

    def __init__(self, book: Any, report: Report, run: RunDetails, rows_per_sheet: int) -> None:
        self.book = book
        self.report = report
        self.run = run
        self.rows_per_sheet = rows_per_sheet
        self.styles = _Styles(book)
        self.devices = report.devices_sheet()
        parts = max(1, -(-len(self.devices) // rows_per_sheet))
        self.device_sheets = ["Devices"] + [f"Devices ({n})" for n in range(2, parts + 1)]
        self.notes = list(report.notes)
        self.streams: dict[str, _SheetRows] = {}
        if parts > 1:
            self.notes.append(
                f"The {len(self.devices):,} devices are split over {parts} sheets "
                f"({', '.join(self.device_sheets)}): an Excel sheet holds "
                f"{EXCEL_MAX_ROWS:,} rows."
            )

    # -- Summary ---------------------------------------------------------------------------

    def summary(self) -> None:
        report, run, styles = self.report, self.run, self.styles
        figures = report.figures
        sheet = self.book.add_worksheet("Summary")
        sheet.hide_gridlines(2)
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        sheet.set_paper(9)
        sheet.set_column(0, 0, 38)
        sheet.set_column(1, 1, 13)
        sheet.set_column(2, 2, 9)
        sheet.set_column(3, 3, 3)
        sheet.set_column(4, 12, 9.5)
        grid = _Grid()
        options = report.options
        what = "Outlook for iOS and Android" if not options.all_devices else "All mobile devices"
        grid.put(0, 0, f"Mobile device report: {what}", styles.title)
        grid.put(
            1,
            0,
            f"{run.organisation}  ·  server {run.server}  ·  run "
            f"{run.started.astimezone(UTC):%Y-%m-%d %H:%M} UTC  ·  "
            f"{', '.join(options.recipient_types)}",
            styles.subtitle,
        )
        as_of = report.run_started.astimezone(UTC)
        if abs((as_of - run.started.astimezone(UTC)).total_seconds()) > 3600:
            grid.put(
                2,
                0,
                f"Days since the last sync are counted from {as_of:%Y-%m-%d %H:%M} "
                "UTC, not from when this report was made.",
                styles.subtitle,
            )
        grid.put(4, 0, "Key figures", styles.section)
        grid.put(4, 1, None, styles.section)
        grid.put(4, 2, None, styles.section)
        stale_label = f"Stale (no sync for over {options.stale_after} days)"
        rows: list[tuple[str, float | int, Any]] = [
            ("Mailboxes checked", figures.mailboxes_checked, styles.figure),
            ("Users with devices", figures.users_with_devices, styles.figure),
            ("Users without devices", figures.users_without_devices, styles.figure),
            ("Devices", figures.devices, styles.figure),
            ("On Outlook native sync", figures.native_share, styles.figure_share),
            ("Still on REST (legacy)", figures.rest, styles.figure),
            (stale_label, figures.stale, styles.figure),
            ("Never synced", figures.never_synced, styles.figure),
        ]
        rows += _action_figures(report, styles)
        if figures.errors:
            rows.append(
                ("Mailboxes or commands that failed (see Errors)", figures.errors, styles.figure)
            )
        row = 5
        for label, value, value_format in rows:
            grid.put(row, 0, label, styles.figure_label)
            grid.put(row, 1, value, value_format)
            grid.put(row, 2, None, styles.figure_label)
            row += 1
        row = _put_eas_section(grid, row, report, styles)
        tables = [
            ("By sync protocol", report.by_protocol),
            ("By platform and OS version", report.by_platform),
            ("By last successful sync", report.by_stale),
            ("By access state", report.by_access_state),
        ]
        anchors: dict[str, tuple[int, int]] = {}
        for title, table in tables:
            grid.put(row, 0, title, styles.section)
            grid.put(row, 1, None, styles.section)
            grid.put(row, 2, None, styles.section)
            row += 1
            grid.put(row, 0, str(table.columns[0]), styles.head)
            grid.put(row, 1, "Devices", styles.head_number)
            grid.put(row, 2, "Share", styles.head_number)
            first = row + 1
            for label, devices, share in table.itertuples(index=False, name=None):
                row += 1
                grid.put(row, 0, label, styles.cell)
                grid.put(row, 1, int(devices), styles.count)
                grid.put(row, 2, float(share), styles.share)
            if not len(table):
                row += 1
                grid.put(row, 0, "(no devices)", styles.note)
            anchors[title] = (first, row)
            row += 2
        notes_row = row
        for note in self.notes:
            grid.put(row, 0, note, styles.note)
            row += 1
        if self.notes:
            grid.put(notes_row - 1, 0, "Notes", styles.label)
        grid.put(
            row + 1,
            0,
            "Devices, users without devices and how this report was made: "
            "see the other sheets. All times are UTC.",
            styles.note,
        )
        grid.write(sheet)
        self._charts(sheet, anchors)

    def _charts(self, sheet: Any, anchors: dict[str, tuple[int, int]]) -> None:
        first, last = anchors["By sync protocol"]
        if last >= first and self.report.figures.devices:
            pie = self.book.add_chart({"type": "doughnut"})
            pie.add_series(
                {
                    "name": "Devices by sync protocol",
                    "categories": ["Summary", first, 0, last, 0],
                    "values": ["Summary", first, 1, last, 1],
                    "data_labels": {"percentage": True, "leader_lines": True},
                    "points": [
                        {"fill": {"color": color}}
                        for color in _protocol_colors(
                            self.report.by_protocol["SyncProtocol"].tolist()
                        )
                    ],
                }
            )
            pie.set_title(
                {
                    "name": "Devices by sync protocol",
                    "name_font": {"size": 12, "bold": True, "color": "#1F3864"},
                }
            )
            pie.set_legend({"position": "right", "font": {"size": 10}})
            pie.set_hole_size(50)
            pie.set_size({"width": 540, "height": 300})
            pie.set_chartarea({"border": {"none": True}})
            sheet.insert_chart(4, 4, pie, {"x_offset": 5, "y_offset": 0})
        first, last = anchors["By platform and OS version"]
        if last >= first and self.report.figures.devices:
            bar = self.book.add_chart({"type": "bar"})
            bar.add_series(
                {
                    "name": "Devices",
                    "categories": ["Summary", first, 0, last, 0],
                    "values": ["Summary", first, 1, last, 1],
                    "fill": {"color": "#4472C4"},
                    "gap": 60,
                    "data_labels": {"value": True, "num_format": "#,##0"},
                }
            )
            bar.set_title(
                {
                    "name": "Devices by platform and OS version",
                    "name_font": {"size": 12, "bold": True, "color": "#1F3864"},
                }
            )
            bar.set_legend({"none": True})
            bar.set_y_axis({"reverse": True, "major_tick_mark": "none", "crossing": "max"})
            bar.set_x_axis(
                {
                    "major_gridlines": {"visible": True, "line": {"color": "#E7E6E6"}},
                    "num_format": "#,##0",
                }
            )
            bar.set_size({"width": 620, "height": 330})
            bar.set_chartarea({"border": {"none": True}})
            sheet.insert_chart(21, 4, bar, {"x_offset": 5, "y_offset": 0})

    # -- table sheets ----------------------------------------------------------------------

    def table_sheets(
        self,
        names: Sequence[str],
        frame: pd.DataFrame,
        table_name: str,
        highlight: bool = False,
        print_columns: int = 0,
    ) -> None:
        """``frame`` as Excel tables, ``rows_per_sheet`` rows per sheet, one sheet per name.

        XlsxWriter writes each sheet with its header row, table, widths and formats; the
        data rows are streamed into the package afterwards (see :class:`_SheetRows`).
        """
        styles = self.styles
        headers = [str(column) for column in frame.columns]
        kinds = [_kind(frame[name]) for name in frame.columns]
        widths = [
            _fitted_width(header, frame[header], kind)
            for header, kind in zip(headers, kinds, strict=True)
        ]
        formats = [styles.date if kind == "date" else None for kind in kinds]
        never_col = headers.index("LastSync") if "LastSync" in headers else -1
        for part, name in enumerate(names):
            start = part * self.rows_per_sheet
            stop = min(len(frame), start + self.rows_per_sheet)
            sheet = self.book.add_worksheet(name)
            sheet.freeze_panes(1, 0)
            sheet.set_landscape()
            sheet.fit_to_pages(1, 0)
            sheet.repeat_rows(0)
            for index, width in enumerate(widths):
                sheet.set_column(index, index, width, formats[index])
            suffix = "" if part == 0 else str(part + 1)
            _add_streamed_table(
                sheet, stop - start, headers, table_name + suffix, formats, styles.head
            )
            if print_columns:
                sheet.print_area(0, 0, max(1, stop - start), min(print_columns, len(headers)) - 1)
            if stop > start:
                # XlsxWriter names worksheet parts sheet1.xml, sheet2.xml, ... in order
                part_name = f"xl/worksheets/sheet{len(self.book.worksheets())}.xml"
                self.streams[part_name] = _SheetRows(
                    frame.iloc[start:stop], kinds, never_col,
                    styles.date._get_xf_index(), styles.never._get_xf_index())
            if highlight and stop > start:
                self._highlight(sheet, headers, stop - start)

    def _highlight(self, sheet: Any, headers: list[str], rows: int) -> None:
        """REST rows on amber, stale and never-synced rows in dark red."""
        last = xl_col_to_name(len(headers) - 1)
        area = f"A2:{last}{rows + 1}"
        if "SyncProtocol" in headers:
            protocol = xl_col_to_name(headers.index("SyncProtocol"))
            sheet.conditional_format(
                area,
                {
                    "type": "formula",
                    "criteria": f'=${protocol}2="{REST_PROTOCOL}"',
                    "format": self.styles.rest_row,
                },
            )
        if eas.FLAG_COLUMN in headers:  # EAS clients below 16.1, amber like REST rows
            flag = xl_col_to_name(headers.index(eas.FLAG_COLUMN))
            sheet.conditional_format(
                area,
                {"type": "formula", "criteria": f"=${flag}2=TRUE",
                 "format": self.styles.rest_row},
            )
        if "LastSync" in headers and "DaysSinceLastSync" in headers:
            last_sync = xl_col_to_name(headers.index("LastSync"))
            days = xl_col_to_name(headers.index("DaysSinceLastSync"))
            stale = self.report.options.stale_after
            sheet.conditional_format(
                area,
                {
                    "type": "formula",
                    "criteria": f'=OR(${last_sync}2="{NEVER}",${days}2>{stale})',
                    "format": self.styles.stale_row,
                },
            )

    # -- Run -------------------------------------------------------------------------------

    def run_sheet(self) -> None:
        report, run, styles = self.report, self.run, self.styles
        sheet = self.book.add_worksheet("Run")
        sheet.hide_gridlines(2)
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        sheet.set_column(0, 0, 40)
        sheet.set_column(1, 1, 90)
        grid = _Grid()
        grid.put(0, 0, "How this report was made", styles.title)
        figures = report.figures
        lines: list[tuple[str, object, Any]] = [
            ("Command line", run.command_line, styles.wrap),
            ("Organisation", run.organisation, styles.wrap),
            ("Server", run.server, styles.wrap),
            ("Endpoint", run.endpoint, styles.wrap),
            ("Source", run.source, styles.wrap),
            ("Strategy", run.strategy, styles.wrap),
        ]
        lines += [
            (f"Filter: {name}", value, styles.wrap)
            for name, value in report.options.describe().items()
        ]
        lines += [
            ("Started (UTC)", run.started, styles.date),
            ("Finished (UTC)", run.finished, styles.date),
            ("Duration", f"{run.seconds:.1f} s", styles.wrap),
            ("Days since last sync counted from (UTC)", report.run_started, styles.date),
            ("Mailboxes checked", figures.mailboxes_checked, styles.text),
            ("Devices in the report", figures.devices, styles.text),
            ("Users without devices", figures.users_without_devices, styles.text),
            ("Errors", figures.errors, styles.text),
            ("Devices under no mailbox in scope", figures.unmatched_devices, styles.text),
        ]
        lines += [(name, value, styles.wrap) for name, value in run.extra.items()]
        lines.append(("psbridge version", run.version, styles.wrap))
        for index, note in enumerate(self.notes):
            lines.append(("Note" if index == 0 else "", note, styles.wrap))
        for row, (label, value, value_format) in enumerate(lines, 2):
            grid.put(row, 0, label, styles.label)
            grid.put(row, 1, value, value_format)
        grid.write(sheet)


def _protocol_colors(protocols: Sequence[str]) -> list[str]:
    """One colour per protocol that means the same thing in every report."""
    fixed = {
        NATIVE_PROTOCOL: "#2E75B6",
        REST_PROTOCOL: "#FFC000",
        "Exchange ActiveSync": "#A5A5A5",
        "Unknown": "#D9D9D9",
    }
    spare = iter(["#70AD47", "#7030A0", "#ED7D31", "#264478", "#9E480E", "#636363"] * 10)
    return [fixed.get(protocol) or next(spare) for protocol in protocols]


def _action_figures(report: Report, styles: _Styles) -> list[tuple[str, float | int, Any]]:
    """Key figures of what admins must act on: EAS below 16.1, the cleanup script."""
    rows: list[tuple[str, float | int, Any]] = []
    if report.eas_figures is not None:
        rows.append((f"EAS clients below {eas.MINIMUM_TEXT}", report.eas_figures.below_minimum,
                     styles.figure))
    if report.cleanup_plan is not None:
        rows.append(("Partnerships in the cleanup script", report.cleanup_plan.count,
                     styles.figure))
    return rows


def _put_eas_section(grid: _Grid, row: int, report: Report, styles: _Styles) -> int:
    """Under the key figures: the one line saying the scope hides EAS devices, or the EAS
    clients below 16.1 by ClientVersion and DeviceModel. Returns the next free row."""
    note = report.eas_scope_note
    if note is not None:
        grid.put(row, 0, note, styles.note)
        return row + 2
    figures = report.eas_figures
    if figures is None:
        return row + 1
    row += 1
    grid.put(row, 0, f"EAS below {eas.MINIMUM_TEXT}: {figures.wording}", styles.section)
    grid.put(row, 1, None, styles.section)
    grid.put(row, 2, None, styles.section)
    row += 1
    grid.put(row, 0, "ClientVersion · DeviceModel", styles.head)
    grid.put(row, 1, "Devices", styles.head_number)
    grid.put(row, 2, "Share", styles.head_number)
    for version, model, devices in figures.by_version_model.itertuples(index=False, name=None):
        row += 1
        grid.put(row, 0, f"EAS {version} · {model}", styles.cell)
        grid.put(row, 1, int(devices), styles.count)
        grid.put(row, 2, int(devices) / figures.eas_devices, styles.share)
    row += 1
    if figures.below_minimum:
        grid.put(row, 0, f"Share: of the {figures.eas_devices:,} EAS devices in the report.",
                 styles.note)
    else:
        grid.put(row, 0, f"None of the {figures.eas_devices:,} EAS devices.", styles.note)
    return row + 2


def write_report(
    path: Path | str,
    report: Report,
    run_info: RunDetails,
    *,
    history: HistoryView | None = None,
    rows_per_sheet: int = EXCEL_MAX_ROWS - 1,
) -> None:
    """Write the mobile device report workbook atomically.

    Sheets: Summary, Devices (split when over Excel's row limit), Users without
    devices, Errors (only when some), Run, then Changes and Trend when ``history`` is
    given. A workbook open in Excel gives an OutputError naming the file.
    """
    properties = {"title": "Mobile device report", "creator": "psbridge",
                  "comments": f"psbridge {run_info.version}"}
    with _streamed_workbook(path, properties) as (book, streams):
        writer = _ReportWriter(book, report, run_info, rows_per_sheet)
        writer.summary()
        # printed (and rendered to PDF): the columns up to DeviceAccessState
        columns = list(writer.devices.columns)
        writer.table_sheets(
            writer.device_sheets,
            writer.devices,
            "Devices",
            highlight=True,
            print_columns=(columns.index("DeviceAccessState") + 1
                           if "DeviceAccessState" in columns else _DEVICE_PRINT_COLUMNS),
        )
        users = report.users_without_devices
        parts = max(1, -(-len(users) // rows_per_sheet))
        names = ["Users without devices"] + [
            f"Users without devices ({n})" for n in range(2, parts + 1)
        ]
        writer.table_sheets(names, users, "UsersWithoutDevices")
        if len(report.errors):
            writer.table_sheets(["Errors"], report.errors, "Errors")
        writer.run_sheet()
        if history is not None:
            # --- history hook: Changes and Trend (functions in the history block) ---
            # ``book`` is an XlsxWriter Workbook in constant-memory mode: write each
            # sheet's rows top to bottom (_Grid helps), tables via _add_streamed_table.
            writer.streams.update(write_history_sheets(book, history))
        streams.update(writer.streams)


@contextmanager
def _streamed_workbook(
    path: Path | str, properties: dict[str, str]
) -> Iterator[tuple[xlsxwriter.Workbook, dict[str, _SheetRows]]]:
    """An XlsxWriter book in constant-memory mode whose table rows are streamed in after.

    The caller writes the book's structure and fills the yielded ``streams`` (sheet XML
    name -> rows); on leaving, the package is closed, the rows are streamed into it and
    the result replaces ``path`` atomically. Row data waits in temporary files beside the
    output (not in a small /tmp), in a folder of their own so a failed run leaves nothing.
    """
    target = Path(path)
    with (
        atomic_write(target) as temp_path,
        tempfile.TemporaryDirectory(
            prefix=".psbridge-", dir=temp_path.parent, ignore_cleanup_errors=True
        ) as rows_dir,
    ):
        package = Path(rows_dir) / "package.xlsx"
        book = xlsxwriter.Workbook(
            str(package),
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "tmpdir": rows_dir,
            },
        )
        book.set_properties(properties)
        streams: dict[str, _SheetRows] = {}
        yield book, streams
        try:
            book.close()
        except xlsxwriter.exceptions.FileCreateError as exc:
            if exc.args and isinstance(exc.args[0], OSError):  # a full disk says so
                raise _output_error(target, exc.args[0]) from exc
            raise OutputError(f"cannot write {target}: {exc.args[0]}") from exc
        try:
            _stream_rows_into(package, temp_path, streams)
        except OSError as exc:
            raise _output_error(target, exc) from exc


# --- history sheets (owner: history) ---
# "Changes" and "Trend" from a bridge.history.HistoryView, written with XlsxWriter like the
# report: write_report calls write_history_sheets(book, history) when history is not None
# (book in constant-memory mode: each sheet top to bottom); psbridge diff calls
# write_history_workbook.

_HISTORY_TITLE = "Changes since the previous run"
# column-wise rendering pays per chunk, not per cell: larger chunks than _SheetRows'
_HISTORY_ROWS_PER_CHUNK = 50_000
_CHART_ROWS = 16  # rows between the Trend sheet's charts
_TREND_CHARTS = (
    "Devices by sync protocol",
    "Devices by platform",
    "Stale and never-synced devices",
)


class _HistoryRows(_SheetRows):
    """A history table's data rows as SpreadsheetML, the same XML as _SheetRows makes, but
    starting below the sheet's heading (``first_row``: the Excel row of the first data
    row) and built column-wise with pandas string operations: a list of changes has
    mostly distinct values, which _SheetRows renders one by one."""

    def __init__(self, frame: pd.DataFrame, first_row: int, date_xf: int) -> None:
        super().__init__(frame, [_kind(frame[name]) for name in frame.columns], -1, date_xf,
                         date_xf)
        self.first_row = first_row

    def dimension(self) -> str:
        return f'<dimension ref="A1:{self.letters[-1]}{self.first_row + len(self.frame) - 1}"/>'

    def _column_xml(self, column: pd.Series, kind: str, refs: pd.Series) -> pd.Series:
        """Each cell's ``<c>`` element, "" where the value is missing."""
        if kind == "date":
            serials = pd.Series(_serials(column), index=column.index, dtype="Float64")
            body = self.date_style + "><v>" + serials.astype("string") + "</v></c>"
        elif kind in ("int", "number"):
            values = column.astype("Int64" if kind == "int" else "Float64")
            body = "><v>" + values.astype("string") + "</v></c>"
        elif kind == "bool":
            flags = column.astype("boolean").map({True: "1", False: "0"}).astype("string")
            body = ' t="b"><v>' + flags + "</v></c>"
        else:
            text = column.astype("string").str.replace(_ILLEGAL_TEXT.pattern, "", regex=True)
            text = text.str.slice(0, MAX_CELL_TEXT)
            escaped = (text.str.replace("&", "&amp;", regex=False)
                       .str.replace("<", "&lt;", regex=False)
                       .str.replace(">", "&gt;", regex=False)
                       .str.replace(_EXCEL_ESCAPE.pattern, r"_x005F_\1", regex=True))
            space = (text != text.str.strip()).map(
                {True: ' xml:space="preserve"', False: ""}).astype("string")
            body = ' t="inlineStr"><is><t' + space + ">" + escaped + "</t></is></c>"
        return ("<c r=" + refs + body).fillna("")

    def chunks(self) -> Iterator[str]:
        frame = self.frame
        for start in range(0, len(frame), _HISTORY_ROWS_PER_CHUNK):
            block = frame.iloc[start:start + _HISTORY_ROWS_PER_CHUNK].reset_index(drop=True)
            first = self.first_row + start
            numbers = pd.Series([str(n) for n in range(first, first + len(block))],
                                dtype="string")
            rows = '<row r="' + numbers + '">'
            for index, (letter, kind) in enumerate(zip(self.letters, self.kinds, strict=True)):
                refs = '"' + letter + numbers + '"'
                rows = rows + self._column_xml(block.iloc[:, index], kind, refs)
            yield "".join((rows + "</row>").tolist())


def _cell_kind(column: pd.Series) -> str:
    """The kind _cells would give ``column``, without making its cells."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return "date"
    if pd.api.types.is_bool_dtype(column.dtype):
        return "bool"
    return "number" if pd.api.types.is_numeric_dtype(column.dtype) else "text"


def _history_table(sheet: Any, first_row: int, frame: pd.DataFrame, name: str,
                   styles: _Styles, streams: dict[str, _SheetRows] | None = None) -> None:
    """``frame`` as an Excel table (banded, autofilter) with its header on ``first_row``.

    As _add_streamed_table, but below other rows: the table is added over its header and
    one row with constant memory briefly off, then widened. With ``streams`` the data rows
    are streamed into the package after XlsxWriter closes it (a long Changes list); else
    they are written cell by cell here, so nothing may follow the table on the sheet.
    """
    headers = [str(column) for column in frame.columns]
    kinds = [_cell_kind(frame.iloc[:, index]) for index in range(frame.shape[1])]
    for col, header in enumerate(headers):
        sheet.set_column(col, col, _fitted_width(header, frame.iloc[:, col], kinds[col]),
                         styles.date if kinds[col] == "date" else None)
    last_col = len(headers) - 1
    memory = sheet.constant_memory
    sheet.constant_memory = False
    try:
        sheet.add_table(first_row, 0, first_row + 1, last_col, {
            "columns": [{"header": header} for header in headers], "name": name,
            "style": _REPORT_TABLE_STYLE, "autofilter": True, "banded_rows": True})
    finally:
        sheet.constant_memory = memory
    table = sheet.tables[-1]
    full = xl_range(first_row, 0, first_row + max(1, len(frame)), last_col)
    table["range"] = table["a_range"] = table["autofilter"] = full
    for col, header in enumerate(headers):
        sheet.write_string(first_row, col, _text(header), styles.head)
    if streams is not None:
        if len(frame):
            # XlsxWriter names worksheet parts sheet1.xml, sheet2.xml, ... in order
            part = f"xl/worksheets/sheet{sheet.index + 1}.xml"
            streams[part] = _HistoryRows(frame, first_row + 2, styles.date._get_xf_index())
        return
    writers = []
    cells = [_cells(frame.iloc[:, index]) for index in range(frame.shape[1])]
    for col, (values, kind) in enumerate(cells):
        if kind == "date":
            writers.append((col, values, sheet.write_number, styles.date))
        elif kind == "number":
            writers.append((col, values, sheet.write_number, None))
        elif kind == "bool":
            writers.append((col, values, sheet.write_boolean, None))
        else:
            writers.append((col, values, sheet.write_string, None))
    for offset in range(len(frame)):
        row = first_row + 1 + offset
        for col, values, write, cell_format in writers:
            value = values[offset]
            if value is not None:
                write(row, col, value, cell_format)


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def write_changes_sheet(book: Any, history: HistoryView, styles: _Styles,
                        streams: dict[str, _SheetRows]) -> None:
    """The Changes sheet: counts by kind, then every change, against the previous run.

    The list of changes is added to ``streams`` (its rows go in after XlsxWriter closes).
    """
    sheet = book.add_worksheet("Changes")
    sheet.hide_gridlines(2)
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)  # printed: as wide as one page
    current, previous = history.current, history.previous
    sheet.write_string(0, 0, _HISTORY_TITLE, styles.title)
    if previous is None:
        sheet.write_string(
            1,
            0,
            f"{current.organisation}  ·  run {current.run_id}, {_when(current.started)}",
            styles.subtitle,
        )
        sheet.write_string(
            3,
            0,
            "Nothing to compare yet: this is the first recorded run of "
            "this organisation. The next run shows new and removed "
            "partnerships, protocol switches, devices that went stale and "
            "OS upgrades.",
            styles.note,
        )
        return
    sheet.write_string(
        1,
        0,
        f"{current.organisation}  ·  run {current.run_id} "
        f"({_when(current.started)}) compared with run {previous.run_id} "
        f"({_when(previous.started)})",
        styles.subtitle,
    )
    counts = history.change_counts
    summary = pd.DataFrame(
        {"Change": list(CHANGE_KINDS), "Devices": [counts.get(kind, 0) for kind in CHANGE_KINDS]}
    )
    sheet.write_string(3, 0, "Changes by kind", styles.section)
    _history_table(sheet, 4, summary, "HistoryChangeCounts", styles)
    detail_row = 4 + len(summary) + 2
    if not len(history.changes):
        sheet.write_string(
            detail_row,
            0,
            "No changes: the same partnerships, protocols, OS "
            "versions and sync states as in the previous run.",
            styles.note,
        )
        return
    sheet.write_string(detail_row, 0, "Every change", styles.section)
    # the widths of the detail table win over the small summary's
    _history_table(sheet, detail_row + 1, history.changes, "HistoryChanges", styles, streams)
    sheet.freeze_panes(detail_row + 2, 0)


def write_trend_sheet(book: Any, history: HistoryView, styles: _Styles) -> None:
    """The Trend sheet: one row per run, line charts by protocol, platform and staleness."""
    sheet = book.add_worksheet("Trend")
    sheet.hide_gridlines(2)
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)  # printed: as wide as one page
    trend = history.trend
    runs = len(trend)
    sheet.write_string(0, 0, "Trend", styles.title)
    span = (
        f"{runs} runs, {_when(trend['Started'].iloc[0])} to {_when(trend['Started'].iloc[-1])}"
        if runs > 1
        else "1 run"
    )
    sheet.write_string(1, 0, f"{history.current.organisation}  ·  {span}", styles.subtitle)
    first_row = 3
    if runs < 2:
        sheet.write_string(
            3,
            0,
            "Nothing to compare yet: the trend needs at least two runs of "
            "this organisation. Run the report again later.",
            styles.note,
        )
        first_row = 5
    _history_table(sheet, first_row, trend, "HistoryTrend", styles)
    if runs < 2:
        return
    column = {str(name): index for index, name in enumerate(trend.columns)}
    last_row = first_row + runs
    series_of = [history.protocol_columns, history.platform_columns, ["Stale", "Never synced"]]
    titles = list(_TREND_CHARTS)
    if EAS_BELOW in trend.columns:
        titles.append(f"Exchange ActiveSync clients below {eas.MINIMUM_TEXT}")
        series_of.append([EAS_BELOW])
    colours = {
        name: colour
        for name, colour in zip(
            history.protocol_columns, _protocol_colors(history.protocol_columns), strict=True
        )
    }
    for number, (title, names) in enumerate(zip(titles, series_of, strict=True)):
        chart = book.add_chart({"type": "line"})
        for name in names:
            series: dict[str, Any] = {
                "name": [sheet.name, first_row, column[name]],
                "categories": [
                    sheet.name,
                    first_row + 1,
                    column["Started"],
                    last_row,
                    column["Started"],
                ],
                "values": [sheet.name, first_row + 1, column[name], last_row, column[name]],
                "marker": {"type": "circle", "size": 5},
            }
            if name in colours and number == 0:
                series["line"] = {"color": colours[name], "width": 2.25}
                series["marker"]["fill"] = {"color": colours[name]}
                series["marker"]["border"] = {"color": colours[name]}
            chart.add_series(series)
        chart.set_title({"name": title, "name_font": {"size": 12}})
        # one point per run, evenly spaced (a date axis would tick every day)
        chart.set_x_axis(
            {"text_axis": True, "num_format": "yyyy-mm-dd", "num_font": {"rotation": -45}}
        )
        chart.set_y_axis(
            {
                "name": "Devices",
                "min": 0,
                "num_format": "#,##0",
                "major_gridlines": {"visible": True, "line": {"color": "#D9D9D9"}},
            }
        )
        chart.set_legend({"position": "right"})
        chart.set_size({"width": 640, "height": 300})
        if number < len(_TREND_CHARTS):
            sheet.insert_chart(last_row + 2 + number * _CHART_ROWS, 0, chart)
        else:  # EAS below 16.1: beside the first chart, so the sheet prints on one page
            sheet.insert_chart(last_row + 2, 0, chart, {"x_offset": 660})


def write_history_sheets(book: Any, history: HistoryView) -> dict[str, _SheetRows]:
    """The Changes and Trend sheets in an XlsxWriter workbook (write_report's hook).

    Returns the rows to stream into the package once the book is closed
    (:func:`_stream_rows_into`), as write_report does for Devices.
    """
    styles = _Styles(book)
    streams: dict[str, _SheetRows] = {}
    write_changes_sheet(book, history, styles, streams)
    write_trend_sheet(book, history, styles)
    return streams


def write_history_workbook(path: Path | str, history: HistoryView) -> None:
    """A workbook of just Changes and Trend (``psbridge diff``), written atomically."""
    properties = {"title": "psbridge history", "creator": "psbridge"}
    with _streamed_workbook(path, properties) as (book, streams):
        streams.update(write_history_sheets(book, history))
