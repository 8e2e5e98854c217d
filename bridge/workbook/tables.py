"""The generic table writer (psbridge convert): one sheet per table with openpyxl's
write-only mode: header row, frozen, filterable, real dates."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bridge.output import atomic_write, open_for_writer
from bridge.workbook.cells import DATE_FORMAT, _text

# openpyxl is imported where a table is written (psbridge convert), not with the package:
# it is a sixth of a second of every other command's start
if TYPE_CHECKING:  # the types only: openpyxl exports no public name for the worksheet
    from openpyxl.cell.cell import Cell
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

MAX_SHEET_NAME = 31
MAX_COLUMN_WIDTH = 60
_EXACT_INTEGERS = 2**53  # beyond this a number cell would lose digits: write text
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


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
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

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
        cell = _text_cell(WriteOnlyCell(sheet, value=_text(header)))
        cell.font = Font(bold=True)
        header_cells.append(cell)
    sheet.append(header_cells)
    new_cell = functools.partial(WriteOnlyCell, sheet)
    makers: list[Callable[[object], object]] = []
    for _values, dated in columns:
        if dated:
            makers.append(lambda v: _date_cell(new_cell, v))
        else:
            makers.append(lambda v: _data_cell(new_cell, v))
    for row in zip(*(values for values, _dated in columns), strict=True):
        sheet.append([make(value) for make, value in zip(makers, row, strict=True)])


def _text_cell(cell: Cell) -> Cell:
    """The cell, kept as text: openpyxl stores a text starting with ``=`` as a live
    formula, and values from Exchange are data (a DisplayName such as
    ``=HYPERLINK("http://...")`` must not become a link)."""
    if isinstance(cell.value, str) and cell.value.startswith("="):
        cell.data_type = "s"
    return cell


def _data_cell(new_cell: Callable[..., Cell], value: object) -> object:
    """A value as it goes to ``append``: a text cell for a formula-looking text, else the
    value itself (a plain value is cheaper than a cell object)."""
    if isinstance(value, str) and value.startswith("="):
        return _text_cell(new_cell(value=value))
    return value


def _date_cell(new_cell: Callable[..., Cell], value: object) -> object:
    if not isinstance(value, datetime):
        return value
    cell = new_cell(value=value)
    cell.number_format = DATE_FORMAT
    return cell


def write_tables(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write one sheet per table (header row, frozen, filterable, real dates), atomically."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    for name, frame in zip(sheet_names(tables), tables.values(), strict=True):
        _write_sheet(workbook.create_sheet(title=name), frame)
    if not tables:
        workbook.create_sheet(title="Sheet")
    try:
        with atomic_write(path) as temp_path, open_for_writer(temp_path) as handle:
            workbook.save(handle)
    finally:
        # A save that failed (a full disk) leaves sheets open; closed later by the garbage
        # collector they print "Exception ignored" tracebacks after the one-line error.
        for sheet in workbook.worksheets:
            if not sheet.closed:
                with contextlib.suppress(OSError, ValueError):
                    sheet.close()
