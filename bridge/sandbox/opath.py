"""Exchange's OPATH -Filter, the subset admins type: parsed, then matched against records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.sandbox.exchange_types import Prop, to_record
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.shapes import SHAPES


def filter_record(shape: str, entry: Any) -> dict[str, Any]:
    builder = SHAPES[shape][0]
    return to_record(builder(entry))


def wildcard(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL)


class FilterSyntaxError(Exception):
    pass


class Filter:
    def matches(self, record: dict[str, Any]) -> bool:
        raise NotImplementedError


@dataclass
class _Compare(Filter):
    prop: str
    operator: str
    value: Any

    def matches(self, record: dict[str, Any]) -> bool:
        actual = record.get(self.prop)
        if self.operator in _ORDERING:
            return _ordered(actual, self.operator, self.value)
        if self.operator in ("eq", "ne"):
            equal = _equal(actual, self.value)
            return equal if self.operator == "eq" else not equal
        pattern = wildcard(str(self.value))
        values = actual if isinstance(actual, list) else [actual]
        hit = any(v is not None and pattern.match(_text(v)) for v in values)
        return hit if self.operator == "like" else not hit


@dataclass
class _Logical(Filter):
    operator: str
    parts: list[Filter]

    def matches(self, record: dict[str, Any]) -> bool:
        if self.operator == "and":
            return all(part.matches(record) for part in self.parts)
        return any(part.matches(record) for part in self.parts)


@dataclass
class _Not(Filter):
    part: Filter

    def matches(self, record: dict[str, Any]) -> bool:
        return not self.part.matches(record)


_ORDERING = ("lt", "le", "gt", "ge")


def _ordered(actual: Any, operator: str, expected: Any) -> bool:
    """-lt/-le/-gt/-ge on dates (ISO or US "M/d/yyyy [h:mm:ss tt]", UTC) and numbers."""
    if actual is None or isinstance(actual, bool | list):
        return False
    limit: Any
    if isinstance(actual, datetime):
        limit = _filter_date(str(expected))
        if limit is None:
            return False
    elif isinstance(actual, int):
        try:
            limit = int(str(expected))
        except ValueError:
            return False
    else:
        actual, limit = str(actual).lower(), str(expected).lower()
    if operator == "lt":
        return bool(actual < limit)
    if operator == "le":
        return bool(actual <= limit)
    if operator == "gt":
        return bool(actual > limit)
    return bool(actual >= limit)


def _filter_date(text: str) -> datetime | None:
    formats = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for layout in formats:
            try:
                value = datetime.strptime(text, layout)
                break
            except ValueError:
                continue
        else:
            return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _equal(actual: Any, expected: Any) -> bool:
    if expected is None:
        return actual is None or actual == [] or actual == ""
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    if isinstance(expected, bool):
        return actual is expected
    if actual is None:
        return False
    return _text(actual).lower() == _text(expected).lower()


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<op>-[A-Za-z]+)"
    r"|'(?P<sq>(?:[^']|'')*)'|\"(?P<dq>(?:[^\"]|\"\")*)\"|(?P<var>\$[A-Za-z]+)"
    r"|(?P<word>[^\s()'\"]+))"
)


class FilterParser:
    """``A -eq 'x' -and (B -like 'y*' -or -not C -eq $true)``, ``FirstSyncTime -gt
    '2025-01-01'``: the subset of Exchange's OPATH that admins type."""

    def __init__(self, text: str, properties: dict[str, str]) -> None:
        self.text = text
        self.properties = properties
        self.tokens: list[tuple[str, Any, int]] = []
        position = 0
        stripped = text.rstrip()
        while position < len(stripped):
            match = _TOKEN_RE.match(stripped, position)
            if match is None or match.end() == position:
                raise self._syntax(position)
            kind = match.lastgroup or ""
            value: Any = match.group(kind)
            if kind == "sq":
                value = value.replace("''", "'")
            elif kind == "dq":
                value = value.replace('""', '"')
            self.tokens.append((kind, value, match.start(kind) + 1))
            position = match.end()
        self.position = 0

    def _syntax(self, position: int) -> FilterSyntaxError:
        return FilterSyntaxError(
            "Invalid filter syntax. For a description of the filter parameter syntax see the "
            f'command help.\n"{self.text}" at position {position + 1}.')

    def _peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self) -> tuple[str, Any, int]:
        token = self._peek()
        if token is None:
            raise self._syntax(len(self.text))
        self.position += 1
        return token

    def parse(self) -> Filter:
        result = self._or()
        if self._peek() is not None:
            raise self._syntax(self._peek()[2] - 1)  # type: ignore[index]
        return result

    def _or(self) -> Filter:
        parts = [self._and()]
        while (token := self._peek()) and token[0] == "op" and token[1].lower() == "-or":
            self.position += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _Logical("or", parts)

    def _and(self) -> Filter:
        parts = [self._unary()]
        while (token := self._peek()) and token[0] == "op" and token[1].lower() == "-and":
            self.position += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else _Logical("and", parts)

    def _unary(self) -> Filter:
        token = self._next()
        if token[0] == "op" and token[1].lower() == "-not":
            return _Not(self._unary())
        if token[0] == "lparen":
            inner = self._or()
            closing = self._next()
            if closing[0] != "rparen":
                raise self._syntax(closing[2] - 1)
            return inner
        if token[0] != "word":
            raise self._syntax(token[2] - 1)
        prop = self.properties.get(token[1].lower())
        if prop is None:
            # Exchange's text exactly, its "\n\r" line break included (2013 resources)
            raise FilterSyntaxError(
                f'"{token[1]}" is not a recognized filterable property. For a complete list '
                "of filterable properties see the command help.\n\r"
                f'"{self.text}" at position {token[2]}.')
        operator = self._next()
        op = operator[1].lower().lstrip("-") if operator[0] == "op" else ""
        if op not in ("eq", "ne", "like", "notlike", *_ORDERING):
            raise self._syntax(operator[2] - 1)
        kind, raw, _ = self._next()
        value: Any
        if kind in ("sq", "dq", "word"):
            value = raw
        elif kind == "var" and raw.lower() in ("$true", "$false", "$null"):
            value = {"$true": True, "$false": False, "$null": None}[raw.lower()]
        else:
            raise self._syntax(self.tokens[self.position - 1][2] - 1)
        return _Compare(prop, op, value)


def _property_names(shape_props: list[Prop]) -> dict[str, str]:
    return {name.lower(): name for name, _kind, _value in shape_props}


def _schema_names(shape: str) -> dict[str, str]:
    org = Organisation(mailboxes=12, seed=0)
    mailbox = org.mailbox_entries[0]
    device = next(org.iter_devices())
    entry = mailbox if shape in ("Mailbox", "CASMailbox") else device
    return _property_names(SHAPES[shape][0](entry))


FILTERABLE = {
    "Get-Mailbox": _schema_names("Mailbox"),
    "Get-CASMailbox": _schema_names("CASMailbox"),
    "Get-MobileDevice": _schema_names("MobileDevice"),
}
