"""Exchange Online's JSON -> the same plain rows the CLIXML reader gives for on-premises.

The REST endpoint answers ``{"value": [...]}`` with each property beside companion keys
(``Prop@odata.type``, ``Prop@data.type``) that say its .NET type. Those keys are dropped;
the values become what :mod:`bridge.clixml` makes of the same property on-premises:
dates -> zoned datetime, sizes ("35 MB (36,700,160 bytes)") -> int bytes, TimeSpan ->
timedelta, Unlimited -> None, Guids stay str. No third-party library here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from bridge.clixml import size_bytes
from bridge.commands import ErrorRecord

Row = dict[str, object]

_COMPANIONS = ("@odata.type", "@data.type")
_DATE_TYPES = frozenset({"system.datetime", "#datetimeoffset", "edm.datetimeoffset",
                         "system.datetimeoffset", "#datetime"})
_TIMESPAN_TYPES = frozenset({"system.timespan", "#timespan", "edm.duration"})
# ISO dates as the endpoint writes them: 2022-09-21T08:07:47.0000000+00:00 (or Z)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})$")
# .NET TimeSpan text: [-][d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def _type_of(obj: Mapping[str, object], key: str) -> str:
    for suffix in _COMPANIONS:
        hint = obj.get(key + suffix)
        if isinstance(hint, str):
            return hint.casefold()
    return ""


def parse_date(text: str) -> datetime:
    """An endpoint date (7 fraction digits, ``Z`` or an offset) as a zoned datetime."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_timespan(text: str) -> timedelta | None:
    """.NET TimeSpan text (``90.00:00:00``, ``-00:05:00.5``) as a timedelta, else None."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        return None
    sign, days, hours, minutes, seconds, fraction = match.groups()
    value = timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes),
                      seconds=int(seconds), microseconds=int((fraction or "0").ljust(7, "0")) // 10)
    return -value if sign else value


def _value(value: object, hint: str) -> object:
    if isinstance(value, str):
        if hint in _DATE_TYPES or (not hint and _ISO_DATE.match(value)):
            try:
                return parse_date(value)
            except ValueError:
                return value
        if hint in _TIMESPAN_TYPES:
            span = parse_timespan(value)
            return value if span is None else span
        if value == "Unlimited" and "unlimited" in hint:
            return None  # as clixml reads an Unlimited`1 that is unlimited
        if value.endswith(" bytes)"):
            size = size_bytes(value)
            return value if size is None else size
        return value
    if isinstance(value, list):
        item_hint = hint.removeprefix("#collection(").removesuffix(")") if hint else ""
        return [_value(item, item_hint) for item in value]
    if isinstance(value, dict):
        return plain_object(value)
    return value  # None, bool, int, float: JSON already has them


def plain_object(obj: Mapping[str, object]) -> Row:
    """One JSON object as a row: companion type keys and ``@odata`` annotations dropped."""
    row: Row = {}
    for key, value in obj.items():
        if key.startswith("@") or key.endswith(_COMPANIONS):
            continue
        row[key] = _value(value, _type_of(obj, key))
    return row


def plain_rows(values: object) -> list[Row]:
    """A response's ``value`` array as rows (a bare value becomes ``{"Value": v}``)."""
    if not isinstance(values, list):
        return []
    return [plain_object(item) if isinstance(item, dict) else {"Value": _value(item, "")}
            for item in values]


def messages(items: object) -> list[str]:
    """``@adminapi.warnings`` (or errors) as text lines, whatever their shape."""
    if items is None:
        return []
    found = items if isinstance(items, list) else [items]
    lines = []
    for item in found:
        if isinstance(item, dict):
            text = item.get("message") or item.get("Message") or item.get("ErrorMessage")
            lines.append(str(text if text is not None else item))
        else:
            lines.append(str(item))
    return lines


# -- OData errors --------------------------------------------------------------------------

_CATEGORIES = {
    "ManagementObjectNotFoundException": "ObjectNotFound",
    "ManagementObjectAmbiguousException": "InvalidArgument",
    "ParameterBindingException": "InvalidArgument",
    "CommandNotFoundException": "ObjectNotFound",
    "ADTransientException": "ReadError",
}


def _detail(error: Mapping[str, object]) -> str:
    details = error.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        text = details[0].get("message")
        if isinstance(text, str) and text.strip():
            return text.strip()
    inner = error.get("innererror")
    while isinstance(inner, dict):
        nested = inner.get("internalexception")
        if not isinstance(nested, dict):
            text = inner.get("message")
            if isinstance(text, str) and text.strip():
                return text.strip()
            break
        inner = nested
    message = error.get("message")
    return str(message).strip() if message else ""


def error_records(items: object) -> list[ErrorRecord]:
    """``@adminapi.errors`` (non-terminating errors beside the rows) as error records;
    a ``<errorId>|<ExceptionType>|<text>`` message is split as in an OData error."""
    records = []
    for text in messages(items):
        parts = text.split("|", 2)
        if len(parts) == 3:
            error_id, exception, message = (part.strip() for part in parts)
        else:
            error_id, exception, message = "", "", text.strip()
        short = exception.rsplit(".", 1)[-1]
        records.append(ErrorRecord(
            message=message, category=_CATEGORIES.get(short, "NotSpecified"), reason=short,
            error_id=",".join(part for part in (error_id, exception) if part)
            or "adminapi.errors"))
    return records


def odata_error(body: object, *, status: int, exception_header: str = "",
                target: str = "") -> ErrorRecord | None:
    """An OData error body as a PowerShell-like error record, or None when it is not one.

    ``details[0].message`` is ``<errorId>|<ExceptionType>|<text>``: the text is the
    message, the exception type the reason, as PowerShell would show them.
    """
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error: dict[str, object] = body["error"]
    detail = _detail(error)
    error_id, exception, text = "", "", detail
    parts = detail.split("|", 2)
    if len(parts) == 3:
        error_id, exception, text = (part.strip() for part in parts)
    exception = exception or exception_header
    inner = error.get("innererror")
    if not exception and isinstance(inner, dict) and isinstance(inner.get("type"), str):
        exception = str(inner["type"])
    short = exception.rsplit(".", 1)[-1]
    code = str(error.get("code") or f"HTTP{status}")
    return ErrorRecord(
        message=text or str(error.get("message") or f"HTTP {status}"),
        category=_CATEGORIES.get(short, code),
        reason=short,
        error_id=",".join(part for part in (error_id, exception) if part) or code,
        target=target,
    )
