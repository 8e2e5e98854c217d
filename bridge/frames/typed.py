"""Typed frames: rows with Exchange's property names as frames of declared kinds (a
property an older Exchange lacks becomes an empty column, never a crash)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import pandas as pd

from bridge import sizes
from bridge.frames.columns import (
    DEVICE_SCHEMA,
    ERROR_COLUMNS,
    IDENTIFIER_COLUMNS,
    MAILBOX_SCHEMA,
    Kind,
)

# -- typed frames ---------------------------------------------------------------------------


def _text(column: pd.Series) -> pd.Series:
    """Any column as pandas text: missing stays missing, other values become their str()."""
    if column.dtype == "str":
        return column
    inferred = pd.api.types.infer_dtype(column, skipna=True)
    if inferred not in ("string", "empty"):
        column = column.map(lambda v: v if v is None or isinstance(v, str) else _to_text(v))
    return column.astype("str")


def _to_text(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    return str(value)


def _datetimes(column: pd.Series) -> pd.Series:
    """UTC datetimes; values Excel or pandas cannot hold (year 1, 9999) become missing."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        converted: pd.Series = column.dt.tz_convert("UTC")
        return converted
    return pd.to_datetime(column, utc=True, errors="coerce")


def typed_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame,
                schema: Mapping[str, Kind]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``schema``'s columns typed; absent properties are NA."""
    # PowerShell property names ignore case: Exchange declares DeviceID, docs say DeviceId.
    wanted = {name.casefold(): name for name in schema}
    if isinstance(rows, pd.DataFrame):
        source = rows.rename(columns={
            column: wanted[str(column).casefold()] for column in rows.columns
            if str(column).casefold() in wanted and column not in schema})
    else:
        records = rows if isinstance(rows, list) else list(rows)
        keys: set[str] = set(itertools.chain.from_iterable(records))
        present = {wanted[key.casefold()]: key for key in sorted(keys)
                   if key.casefold() in wanted}
        source = pd.DataFrame.from_records(records, columns=list(present.values()))
        source.columns = pd.Index(list(present))
    columns: dict[str, pd.Series] = {}
    for name, kind in schema.items():
        if name in source.columns:
            column = source[name]
        else:
            column = pd.Series(None, index=source.index, dtype=object)
        if kind == "text":
            columns[name] = _text(column)
        elif kind == "datetime":
            columns[name] = _datetimes(column)
        elif kind == "int":
            columns[name] = pd.to_numeric(column, errors="coerce").astype("Int64")
        elif kind == "bool":
            columns[name] = column.astype("boolean")
        elif kind == "size":  # "30 GB (32,212,254,720 bytes)" / "Unlimited" -> bytes / NA
            columns[name] = sizes.size_column(column)
        else:
            columns[name] = column
    return pd.DataFrame(columns, index=pd.RangeIndex(len(source)))


def mailbox_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Get-Mailbox rows as a typed frame (:data:`MAILBOX_SCHEMA`)."""
    return typed_frame(rows, MAILBOX_SCHEMA)


def device_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame, *,
                 include_identifiers: bool = False) -> pd.DataFrame:
    """Get-MobileDeviceStatistics rows as a typed frame (:data:`DEVICE_SCHEMA`).

    IMEI and phone number are dropped here, at the first step, unless asked for, so
    they cannot reach any output by accident.
    """
    schema = dict(DEVICE_SCHEMA)
    if not include_identifiers:
        for name in IDENTIFIER_COLUMNS:
            schema.pop(name)
    return typed_frame(rows, schema)


def error_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Error rows ({"Mailbox"|"Command", "Category", "Message", "When"}) as a frame."""
    frame = typed_frame(rows, {"Mailbox": "text", "Command": "text", "Category": "text",
                               "Message": "text", "When": "datetime"})
    return frame[ERROR_COLUMNS]
