"""Plain records -> a DataFrame with the tightest faithful column types."""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bridge.clixml._convert import Record

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NS_MIN, _NS_MAX = -(2**63) + 1, 2**63 - 1  # the ends of datetime64[ns]; -2**63 is NaT
_NAT = np.iinfo(np.int64).min
_BATCH = 2048


def _datetime_ns(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    nanoseconds = ((value - _EPOCH) // _MICROSECOND) * 1000
    return nanoseconds if _NS_MIN <= nanoseconds <= _NS_MAX else _NAT


def _timedelta_ns(value: timedelta) -> int:
    nanoseconds = (value // _MICROSECOND) * 1000
    return nanoseconds if _NS_MIN <= nanoseconds <= _NS_MAX else _NAT


# decimal128's precision: System.Decimal's 28-29 digits fit unless a column mixes very
# large and very precise values
_DECIMAL_DIGITS = 38


def _decimals(values: list[Any]) -> Any:
    """Decimals stay exact: an Arrow decimal128 column (Parquet writes it as a decimal,
    the workbook as a number), else, wider than 38 digits, the Decimal objects."""
    present = [value for value in values if value is not None]
    scale = max(max(-value.as_tuple().exponent, 0) for value in present)
    whole = max(value.adjusted() + 1 for value in present)
    if scale + max(whole, 1) > _DECIMAL_DIGITS:
        return pd.array(values, dtype=object)
    dtype = pd.ArrowDtype(pa.decimal128(_DECIMAL_DIGITS, scale))
    return pd.array(values, dtype=dtype)  # type: ignore[call-overload]


def _column(values: list[Any]) -> Any:
    """One column of plain values -> the tightest faithful pandas array."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return pd.array(values, dtype=object)
    if kinds == {bool}:
        return pd.array(values, dtype="boolean")
    if kinds == {int}:
        has_missing = any(value is None for value in values)
        low = min(v for v in values if v is not None)
        high = max(v for v in values if v is not None)
        if -(2**63) <= low and high < 2**63:
            return pd.array(values, dtype="Int64") if has_missing else np.array(values, np.int64)
        if low >= 0 and high < 2**64:
            return pd.array(values, dtype="UInt64")
        return pd.array(values, dtype=object)  # wider than 64 bits: keep exact Python ints
    if kinds <= {float, int} and float in kinds:
        if all(abs(v) < 2**53 for v in values if isinstance(v, int)):
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return pd.array(values, dtype=object)
    if all(issubclass(kind, datetime) for kind in kinds):
        stamps = [_NAT if v is None else _datetime_ns(v) for v in values]
        return pd.DatetimeIndex(np.array(stamps, dtype="datetime64[ns]")).tz_localize(UTC)
    if kinds == {timedelta}:
        spans = [_NAT if v is None else _timedelta_ns(v) for v in values]
        return pd.TimedeltaIndex(np.array(spans, dtype="timedelta64[ns]"))
    if kinds == {str}:
        return pd.array(values, dtype="str")
    if kinds == {decimal.Decimal}:
        return _decimals(values)
    return pd.array(values, dtype=object)


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Rows -> DataFrame: columns in first-seen order, dates as datetime64[ns, UTC].

    Dates pandas cannot hold (0001-01-01, 9999-12-31) and out-of-range durations become
    NaT; integers stay exact (Int64/UInt64, never float); lists and dicts stay objects.
    """
    # Records come in batches of value tuples, transposed in C per batch (consecutive
    # records of one type share their keys): far cheaper than a Python loop per cell.
    columns: dict[str, list[object]] = {}
    count = 0
    keys: tuple[str, ...] | None = None
    rows: list[tuple[object, ...]] = []

    def flush() -> None:
        if keys is None or not rows:
            return
        for name, values in zip(keys, zip(*rows, strict=True), strict=True):
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * (count - len(rows))
            column.extend(values)
        for column in columns.values():
            if len(column) < count:
                column.extend([None] * (count - len(column)))
        rows.clear()

    for record in records:
        record_keys = tuple(record)
        if record_keys != keys or len(rows) >= _BATCH:
            flush()
            keys = record_keys
        rows.append(tuple(record.values()))
        count += 1
    flush()
    arrays: dict[str, Any] = {}
    for name in list(columns):
        arrays[name] = _column(columns.pop(name))  # free each list as soon as it is converted
    return pd.DataFrame(arrays, index=pd.RangeIndex(count))
