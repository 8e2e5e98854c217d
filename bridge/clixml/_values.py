"""CLIXML primitive values (``<S>``, ``<DT>``, ``<TS>``, ``<D>`` ...) -> plain Python values."""

from __future__ import annotations

import base64
import decimal
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

#: What a SecureString value reads as: psbridge never decrypts one.
SECURE_STRING = "<SecureString: not decrypted>"

NS = "{http://schemas.microsoft.com/powershell/2004/04}"


def tags(*names: str) -> frozenset[str]:
    """A tag with and without PowerShell's default namespace (both are accepted)."""
    return frozenset(name for bare in names for name in (bare, NS + bare))


# A surrogate pair first (one character beyond U+FFFF), then any single escape.
_ESCAPE = re.compile(
    r"_x([dD][89abAB][0-9A-Fa-f]{2})__x([dD][c-fC-F][0-9A-Fa-f]{2})_|_x([0-9A-Fa-f]{4})_"
)
_DURATION = re.compile(
    r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d+))?S)?)?$"
)


def _escaped(match: re.Match[str]) -> str:
    high, low, single = match.groups()
    if single is None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    code = int(single, 16)
    # An unpaired surrogate is not a character: no encoding (UTF-8 in every writer) can
    # hold it, so the escape stays exactly as PowerShell wrote it.
    return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)


def unescape(text: str) -> str:
    """Decode PowerShell's ``_xHHHH_`` escapes (``_x000D__x000A_``, ``_x005F_``)."""
    return _ESCAPE.sub(_escaped, text)


def plain_string(text: str | None) -> str:
    """A string value: ``None`` (``<S />``) is the empty string; escapes decoded."""
    if text is None:
        return ""
    return unescape(text) if "_x" in text else text


def parse_datetime(text: str) -> datetime:
    """A CLIXML ``<DT>`` value; the zone is kept, and a value without one is taken as UTC.

    .NET writes 7 fraction digits: the 7th (100 ns) is truncated, as for durations.
    """
    value = datetime.fromisoformat(text.strip())  # 3.11 accepts (and truncates) 7 digits
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """A CLIXML ``<TS>`` value (xs:duration such as ``PT9.0269026S`` or ``-P1DT2H``).

    Truncated to the microsecond like dates (``PT9.0269026S`` is 9.026902 s), never rounded.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    value = timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=int(seconds or 0),
        microseconds=int((fraction or "").ljust(6, "0")[:6]),
    )
    return -value if sign else value


def parse_bool(text: str | None) -> bool:
    text = (text or "").strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _bytes(text: str | None) -> bytes:
    return base64.b64decode("".join((text or "").split()), validate=True)


def _text(text: str | None) -> str:
    return text or ""


def _nil(_text: str | None) -> None:
    return None


def _secure(_text: str | None) -> str:
    return SECURE_STRING


def _char(text: str | None) -> str:
    # a one-character string, as PowerShell shows a [char] (psrpcore keeps the number)
    return chr(int(text or ""))


_fromisoformat = datetime.fromisoformat


def _dt(text: str) -> datetime:
    value = _fromisoformat(text)  # TypeError for an empty <DT/>, reported as a bad value
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _ts(text: str | None) -> timedelta:
    return parse_duration(text or "")


def _decimal(text: str | None) -> decimal.Decimal:
    # System.Decimal has 28-29 significant digits: a float would lose them
    try:
        value = decimal.Decimal((text or "").strip())
    except decimal.InvalidOperation as exc:
        raise ValueError(f"not a decimal: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a decimal: {text!r}")
    return value


#: Elements whose value is a function of their text alone.
TEXT_VALUES: dict[str, Callable[[Any], object]] = {}
for _names, _convert in (
    (("S",), plain_string),
    (("C",), _char),
    (("B",), parse_bool),
    (("DT",), _dt),
    (("TS",), _ts),
    # the builtins themselves: no Python frame per value (None raises TypeError)
    (("By", "SB", "U16", "I16", "U32", "I32", "U64", "I64"), int),
    (("Sg", "Db"), float),  # float() reads .NET's INF, -INF and NaN
    (("D",), _decimal),
    (("BA",), _bytes),
    (("G", "Version"), _text),
    (("URI", "XD", "SBK"), plain_string),
    (("Nil",), _nil),
    (("SS",), _secure),
):
    for _name in _names:
        TEXT_VALUES[_name] = TEXT_VALUES[NS + _name] = _convert
