"""Cell values every sheet shares: Excel's limits, clean text, date serials, column kinds
and widths."""

from __future__ import annotations

import re

import pandas as pd

DATE_FORMAT = "yyyy-mm-dd hh:mm"
MAX_CELL_TEXT = 32_767  # Excel's limit per cell
_ILLEGAL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # XML 1.0 forbids them
EXCEL_MAX_ROWS = 1_048_576
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_DAY = pd.Timedelta(days=1)
_DATE_WIDTH = 17.0  # "yyyy-mm-dd hh:mm" plus room: never "#####"
_MAX_REPORT_WIDTH = 48.0


def _text(text: str) -> str:
    return _ILLEGAL_TEXT.sub("", text)[:MAX_CELL_TEXT]


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


def _cell_kind(column: pd.Series) -> str:
    """The kind _cells would give ``column``, without making its cells."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return "date"
    if pd.api.types.is_bool_dtype(column.dtype):
        return "bool"
    return "number" if pd.api.types.is_numeric_dtype(column.dtype) else "text"
