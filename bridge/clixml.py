"""CLIXML (Export-Clixml files, ``#< CLIXML`` streams, PSRP payloads) -> plain records -> frames.

The one place where PowerShell's serialized values become plain Python values:
str, int, float, bool, None, datetime (always zoned), timedelta, bytes, list, dict.

Speed comes from lxml doing the parsing in C with no per-element events: after each
chunk fed to the parser, every top-level item it has moved past is converted by one
recursive walk (the commonest tags tested first, a dispatch table on the tag for the
rest), then dropped, so memory stays flat however large the file
(``benchmarks/clixml_read.py`` measures it against pypsrp and a bare iterparse).

Rules (the README documents them for users):

- one record per top-level object: its adapted and extended properties, in order;
  a top-level primitive becomes ``{"Value": value}``
- RefId/TNRef/Ref are document-wide (a later object may reuse an earlier object's type
  names or objects at any depth); a RefId defined again replaces the earlier one
- enums -> their name (flags: "Tls, Integrated"); LST/IE/STK/QUE -> list; DCT -> dict
- ByteQuantifiedSize (object or "36 MB (37,748,736 bytes)" string) -> int bytes;
  Unlimited`1 -> None when unlimited, else its value; MultiValuedProperty -> list;
  other nested Exchange objects (ADObjectId, SmtpAddress...) -> their ToString, as the
  Exchange endpoint sends them on the wire; other nested objects -> dict of properties
- dates keep their zone; a date without a zone is taken as UTC
- SecureString is never decrypted: the value is :data:`SECURE_STRING`
- records of the error/warning/verbose/debug/information/progress streams are not
  rows: :func:`read_streams` returns them
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeAlias, cast

import numpy as np
import pandas as pd
from lxml import etree

from bridge.errors import ClixmlError

Source: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | IO[bytes]"
Record: TypeAlias = dict[str, object]

#: What a SecureString value reads as: psbridge never decrypts one.
SECURE_STRING = "<SecureString: not decrypted>"

#: Stream names of the non-output records in a ``#< CLIXML`` stream or PSRP run.
STREAMS = ("error", "warning", "verbose", "debug", "information", "progress")

_NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_NAMESPACE_DECLARATION = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'
_CHUNK = 1 << 18
_NO_DTD = "a DTD (<!DOCTYPE>) is not allowed in CLIXML; nothing was expanded or fetched"
_WRAPPER = "_CLIXML"  # same length as "#< CLIXML", so lines and columns stay true


def _tags(*names: str) -> frozenset[str]:
    return frozenset(name for bare in names for name in (bare, _NS + bare))


_OBJ_TAGS = _tags("Obj")
_OBJS_TAGS = _tags("Objs")
_PARSER_OPTIONS: dict[str, Any] = {
    # No DTD, no entity expansion, no network, no giant text nodes: a CLIXML file
    # is untrusted input (billion laughs and XXE must fail fast, see _refuse_dtd).
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
    "collect_ids": False,
    # Export-Clixml indents: dropping whitespace-only nodes between elements saves ~10%
    # (whitespace inside a value, <S> </S>, is kept)
    "remove_blank_text": True,
}

# --- primitive values ------------------------------------------------------------------

_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_SURROGATE = re.compile(r"_x[dD][89a-fA-F][0-9A-Fa-f]{2}_")
_SIZE = re.compile(r"^-?[\d.,]+ ?(?:B|KB|MB|GB|TB|PB|EB) \(([\d,. \u00a0\u202f']+) bytes\)$")
_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def _unescape(text: str) -> str:
    """Decode PowerShell's ``_xHHHH_`` escapes (``_x000D__x000A_``, ``_x005F_``)."""
    decoded = _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)
    if _SURROGATE.search(text):  # characters beyond U+FFFF come as escaped surrogate pairs
        decoded = decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return decoded


def size_bytes(text: str) -> int | None:
    """The byte count of a ByteQuantifiedSize string ("36 MB (37,748,736 bytes)"), else None."""
    match = _SIZE.match(text)
    if match is None:
        return None
    digits = re.sub(r"\D", "", match.group(1))
    return int(digits) if digits else None


def _string(text: str | None) -> object:
    if text is None:
        return ""
    if "_x" in text:
        text = _unescape(text)
    if text.endswith(" bytes)"):
        size = size_bytes(text)
        if size is not None:
            return size
    return text


def _plain_string(text: str | None) -> str:
    if text is None:
        return ""
    return _unescape(text) if "_x" in text else text


def parse_datetime(text: str) -> datetime:
    """A CLIXML ``<DT>`` value; the zone is kept, and a value without one is taken as UTC."""
    value = datetime.fromisoformat(text.strip())  # 3.11 accepts .NET's 7 fraction digits
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """A CLIXML ``<TS>`` value (xs:duration such as ``PT9.0269026S`` or ``-P1DT2H``)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    sign, days, hours, minutes, seconds = match.groups()
    value = timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=float(seconds or 0),
    )
    return -value if sign else value


def _bool(text: str | None) -> bool:
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
    return chr(int(text or ""))


def _dt(text: str) -> datetime:
    value = _fromisoformat(text)  # TypeError for an empty <DT/>, reported as a bad value
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _ts(text: str | None) -> timedelta:
    return parse_duration(text or "")


# Elements whose value is a function of their text alone.
_TEXT_VALUES: dict[str, Callable[[Any], object]] = {}
_fromisoformat = datetime.fromisoformat
_BOOLS = frozenset(("true", "false"))
for _names, _convert in (
    (("S",), _string),
    (("C",), _char),
    (("B",), _bool),
    (("DT",), _dt),
    (("TS",), _ts),
    # the builtins themselves: no Python frame per value (None raises TypeError)
    (("By", "SB", "U16", "I16", "U32", "I32", "U64", "I64"), int),
    (("Sg", "Db", "D"), float),  # float() reads .NET's INF, -INF and NaN
    (("BA",), _bytes),
    (("G", "Version"), _text),
    (("URI", "XD", "SBK"), _plain_string),
    (("Nil",), _nil),
    (("SS",), _secure),
):
    for _name in _names:
        _TEXT_VALUES[_name] = _TEXT_VALUES[_NS + _name] = _convert

_LIST_TAGS = _tags("LST", "IE", "STK", "QUE")
_DICT_TAGS = _tags("DCT")
_PROPERTY_TAGS = _tags("Props", "MS")
_TN_TAGS = _tags("TN")
_TNREF_TAGS = _tags("TNRef")
_TOSTRING_TAGS = _tags("ToString")
_REF_TAGS = _tags("Ref")
_PR_TAGS = _tags("PR")
_EN_TAGS = _tags("En")

# The parts of an <Obj>, by tag.
_PART_VALUE, _PART_PROPS, _PART_TNREF, _PART_TOSTRING, _PART_TN, _PART_LIST, _PART_DICT = range(7)
_OBJ_PARTS: dict[str, int] = {
    **dict.fromkeys(_PROPERTY_TAGS, _PART_PROPS),
    **dict.fromkeys(_TNREF_TAGS, _PART_TNREF),
    **dict.fromkeys(_TOSTRING_TAGS, _PART_TOSTRING),
    **dict.fromkeys(_TN_TAGS, _PART_TN),
    **dict.fromkeys(_LIST_TAGS, _PART_LIST),
    **dict.fromkeys(_DICT_TAGS, _PART_DICT),
}

# Progress record (MS-PSRP 2.2.3.10 / the PR element) children -> property names.
_PROGRESS_FIELDS = {
    "AV": "Activity",
    "AI": "ActivityId",
    "CO": "CurrentOperation",
    "PI": "ParentActivityId",
    "PC": "PercentComplete",
    "T": "Type",
    "SR": "SecondsRemaining",
    "SD": "StatusDescription",
}

# --- type names -> how to read an object ---------------------------------------------

_PLAIN, _ENUM, _SIZE_KIND, _UNLIMITED, _EXCHANGE = range(5)


@functools.lru_cache(maxsize=4096)
def _kind(type_names: tuple[str, ...]) -> int:
    """How objects of this type become plain values, decided once per type-name list."""
    names = [name.removeprefix("Deserialized.") for name in type_names]
    if "System.Enum" in names:
        return _ENUM
    first = names[0] if names else ""
    if first == "Microsoft.Exchange.Data.ByteQuantifiedSize":
        return _SIZE_KIND
    if first.startswith("Microsoft.Exchange.Data.Unlimited`1"):
        return _UNLIMITED
    if first.startswith("Microsoft.Exchange."):
        return _EXCHANGE
    return _PLAIN


@dataclass(frozen=True)
class _TypeInfo:
    names: tuple[str, ...]
    kind: int


_NO_TYPE = _TypeInfo((), _PLAIN)
_NAMES: dict[str, str] = {}  # raw property name -> decoded, shared (bounded by _CACHE_LIMIT)
_CACHED_LENGTH = 32
_CACHE_LIMIT = 50_000
_MISSING = object()


class _Walk(Exception):
    """Internal: a conversion failed at this element (becomes a located ClixmlError)."""

    def __init__(self, element: etree._Element, message: str) -> None:
        super().__init__(message)
        self.element = element
        self.message = message


class _Converter:
    """Turns serialized elements into plain values; holds the RefId registries."""

    def __init__(self, *, structured: bool = False) -> None:
        self.objects: dict[int | str, object] = {}  # RefId (a number: kept as int) -> value
        self.types: dict[str, _TypeInfo] = {}
        # shared by every reader: property names are few, and parse_element (one PSRP
        # message at a time) would otherwise start from nothing on every call
        self.names = _NAMES
        self.structured = structured
        self.saw_progress = False
        # Short strings repeat (DeviceType, enum names, "en-US"): one object per distinct
        # value keeps memory down and skips re-decoding. Capped so unique values cannot
        # make the cache grow without bound.
        strings: dict[str, object] = {}
        self.tostrings: dict[str, str] = {}

        def string(text: str | None) -> object:
            if text is None:
                return ""
            if len(text) <= _CACHED_LENGTH:
                hit = strings.get(text)
                if hit is None:
                    hit = _string(text)
                    if len(strings) < _CACHE_LIMIT:
                        strings[text] = hit
                return hit
            return _string(text)

        self.string = string
        self.strings = strings
        self.text_values = dict(_TEXT_VALUES)
        for tag in _tags("S"):
            self.text_values[tag] = string

    # Names repeat on every object: one shared (decoded) string per name saves memory.
    def name(self, raw: str | None) -> str:
        if raw is None:
            return ""
        known = self.names.get(raw)
        if known is None:
            known = _unescape(raw) if "_x" in raw else raw
            if len(self.names) < _CACHE_LIMIT:
                self.names[raw] = known
        return known

    def value(self, element: etree._Element) -> object:
        """The plain value of any serialized element."""
        tag = element.tag
        convert = self.text_values.get(tag)
        if convert is not None:
            try:
                return convert(element.text)
            except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
                raise _Walk(element, f"bad {_local(tag)} value {element.text or ''!r}") from exc
        if tag in _OBJ_TAGS:
            return self.obj(element)[0]
        if tag in _REF_TAGS:
            return self.ref(element)
        if tag in _PR_TAGS:
            return self.progress(element)
        raise _Walk(element, f"unexpected element <{_local(tag)}>")

    def ref(self, element: etree._Element) -> object:
        ref_id = element.get("RefId")
        found = self.objects.get(_ref_key(ref_id), _MISSING) if ref_id is not None else _MISSING
        if found is _MISSING:
            for ancestor in element.iterancestors(*_OBJ_TAGS):
                if ancestor.get("RefId") == ref_id:  # a cycle: the object refers to itself
                    text = ancestor.findtext("ToString") or ancestor.findtext(_NS + "ToString")
                    return _plain_string(text) if text is not None else None
            raise _Walk(element, f'<Ref RefId="{ref_id}"> refers to no earlier object')
        return found

    def progress(self, element: etree._Element) -> Record:
        self.saw_progress = True
        record: Record = {}
        for child in element:
            local = _local(child.tag)
            if local == "Nil":
                record.setdefault("CurrentOperation", None)
                continue
            field = _PROGRESS_FIELDS.get(local, local)
            text = child.text
            if local in ("AI", "PI", "PC", "SR"):
                record[field] = int(text or "")
            else:
                value = _plain_string(text)
                record[field] = value.strip() if local == "SD" else value
        return record

    def members(self, element: etree._Element, into: Record) -> None:
        """Add the properties of a <Props> or <MS> element (the hot loop: keep it lean)."""
        text_values = self.text_values
        names = self.names
        string = self.string
        strings_get = self.strings.get
        obj = self.obj
        enum = self.enum
        member = element
        try:
            for member in element:
                raw = member.get("N")
                try:
                    name = names[raw]  # type: ignore[index]
                except KeyError:
                    name = self.name(raw)
                tag = member.tag
                # the commonest tags first, without a call where none is needed
                if tag == "S":
                    text = member.text
                    hit = strings_get(text) if text is not None else ""
                    into[name] = hit if hit is not None else string(text)
                elif tag == "Nil":
                    into[name] = None
                elif tag == "B":
                    text = member.text
                    into[name] = text == "true" if text in _BOOLS else _bool(text)
                elif tag == "Obj":
                    into[name] = enum(member)
                else:
                    convert = text_values.get(tag)
                    if convert is not None:
                        into[name] = convert(member.text)
                    elif tag in _OBJ_TAGS:
                        into[name] = obj(member)[0]
                    else:
                        into[name] = self.value(member)
        except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
            raise _Walk(member, f"bad {_local(member.tag)} value {member.text or ''!r}") from exc

    def items(self, element: etree._Element) -> list[object]:
        text_values = self.text_values
        result: list[object] = []
        item = element
        try:
            for item in element:
                convert = text_values.get(item.tag)
                result.append(convert(item.text) if convert is not None else self.value(item))
        except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
            raise _Walk(item, f"bad {_local(item.tag)} value {item.text or ''!r}") from exc
        return result

    def entries(self, element: etree._Element) -> dict[object, object]:
        result: dict[object, object] = {}
        for entry in element:
            if entry.tag not in _EN_TAGS:
                raise _Walk(entry, f"unexpected element <{_local(entry.tag)}> in <DCT>")
            key: object = None
            value: object = None
            for part in entry:
                if part.get("N") == "Key":
                    key = self.value(part)
                else:
                    value = self.value(part)
            if not isinstance(key, str | int | float | bool | None):
                key = str(key)  # lists and dicts cannot be keys
            result[key] = value
        return result

    def to_string(self, text: str) -> str:
        """A <ToString> text, one shared object per distinct short text (enum names)."""
        known = self.tostrings.get(text)
        if known is None:
            known = _plain_string(text)
            if len(text) <= _CACHED_LENGTH and len(self.tostrings) < _CACHE_LIMIT:
                self.tostrings[text] = known
        return known

    def enum(self, element: etree._Element) -> object:
        """A nested <Obj>'s value, with a short path for the commonest one: an enum whose
        type names came before (<TNRef/><ToString>name</ToString>...)."""
        head = element[0] if len(element) else None
        if head is not None and head.tag == "TNRef":
            info = self.types.get(head.get("RefId") or "")
            if info is not None and info.kind == _ENUM:
                label = head.getnext()
                if label is not None and label.tag == "ToString":
                    text = label.text or ""
                    name = self.tostrings.get(text) or self.to_string(text)
                    own_id = element.get("RefId")
                    if own_id is not None:
                        self.objects[_ref_key(own_id)] = name
                    return name
        return self.obj(element)[0]

    def obj(self, element: etree._Element) -> tuple[object, Record | None]:
        """(plain value as a nested value, property record or None) of one <Obj>."""
        info = _NO_TYPE
        to_string: str | None = None
        record: Record | None = None
        content: object = _MISSING
        for child in element:
            part = _OBJ_PARTS.get(child.tag, _PART_VALUE)
            if part == _PART_PROPS:
                if record is None:
                    record = {}
                self.members(child, record)
            elif part == _PART_TNREF:
                ref_id = child.get("RefId") or ""
                found = self.types.get(ref_id)
                if found is None:
                    raise _Walk(child, f'<TNRef RefId="{ref_id}"> refers to no earlier <TN>')
                info = found
            elif part == _PART_TOSTRING:
                to_string = self.to_string(child.text or "")
                if info.kind == _ENUM:
                    break  # an enum is its name: skip its number
            elif part == _PART_TN:
                names = tuple(_plain_string(t.text) for t in child)
                info = _TypeInfo(names, _kind(names))
                self.types[child.get("RefId") or ""] = info
            elif part == _PART_LIST:
                content = self.items(child)
            elif part == _PART_DICT:
                content = self.entries(child)
            elif info.kind != _ENUM or to_string is None:
                content = self.value(child)  # a primitive wrapped with type names or notes
        if info.kind == _ENUM and to_string is not None:
            value: object = to_string
        else:
            value = self._nested(info, to_string, record, content)
        own_id = element.get("RefId")
        if own_id is not None:
            self.objects[_ref_key(own_id)] = value
        return value, record

    def _nested(
        self, info: _TypeInfo, to_string: str | None, record: Record | None, content: object
    ) -> object:
        kind = info.kind
        if kind == _ENUM:
            return to_string if to_string is not None else content
        if kind == _SIZE_KIND and not self.structured and to_string is not None:
            size = size_bytes(to_string)
            return size if size is not None else to_string
        if kind == _UNLIMITED and not self.structured:
            if (record or {}).get("IsUnlimited") is True or to_string == "Unlimited":
                return None
            inner = (record or {}).get("Value", to_string)
            if isinstance(inner, str):
                size = size_bytes(inner)
                return inner if size is None else size
            return inner
        if content is not _MISSING:
            return content
        if kind == _EXCHANGE and not self.structured and to_string is not None:
            return to_string
        if record:
            return record
        return to_string

    def top_level(self, element: etree._Element) -> tuple[str | None, Record]:
        """(stream name or None for output, record) of one top-level element."""
        stream = element.get("S")
        if element.tag in _OBJ_TAGS:
            self.saw_progress = False
            value, record = self.obj(element)
            if record:
                row = record
            elif isinstance(value, dict):
                row = {str(key): item for key, item in value.items()}
            else:
                row = {"Value": value}
            if stream is None and self.saw_progress:
                stream = "progress"
        else:
            found = self.value(element)
            if element.tag in _REF_TAGS and isinstance(found, dict):
                # the same object output again: the same row (an Exchange object that
                # is a ToString when nested stays its ToString)
                row = {str(key): item for key, item in found.items()}
            else:
                row = {"Value": found}
        if stream is None or stream.lower() == "output":  # pwsh marks output S="Output"
            return None, row
        return stream.lower(), row


def _ref_key(ref_id: str) -> int | str:
    # RefIds are numbers: an int key is half the memory of the string, for every object
    return int(ref_id) if ref_id.isdigit() else ref_id


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


def _line(element: etree._Element) -> int | None:
    line = element.sourceline
    return line if isinstance(line, int) else None


# --- sources ---------------------------------------------------------------------------


class _Input:
    """A source as a name for messages and a stream of raw bytes."""

    def __init__(self, source: Source, name: str | None = None) -> None:
        self.source = source
        self.path: Path | None = None
        self.data: bytes | None = None
        if isinstance(source, bytes | bytearray):
            self.name = "<bytes>"
            self.data = bytes(source)
        elif isinstance(source, str) and source.lstrip("\ufeff \t\r\n")[:2] in ("<O", "<S", "#<"):
            self.name = "<string>"
            self.data = source.lstrip("\ufeff").encode("utf-8")
        elif isinstance(source, str | os.PathLike):
            self.path = Path(source)
            self.name = str(self.path)
        elif hasattr(source, "read"):
            self.name = str(getattr(source, "name", "<stream>"))
        else:
            raise TypeError(f"cannot read CLIXML from {type(source).__name__}")
        if name is not None:
            self.name = name

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        if self.path is not None:
            try:
                stream: IO[bytes] = self.path.open("rb")
            except FileNotFoundError as exc:
                raise ClixmlError(f"{self.name}: no such file") from exc
            except IsADirectoryError as exc:
                raise ClixmlError(f"{self.name}: is a folder, not a CLIXML file") from exc
            except OSError as exc:
                raise ClixmlError(f"{self.name}: cannot read: {exc.strerror}") from exc
            with stream:
                yield from iter(lambda: stream.read(_CHUNK), b"")
            return
        stream = self.source  # type: ignore[assignment]
        while chunk := stream.read(_CHUNK):
            yield bytes(chunk)

    def line(self, number: int) -> str | None:
        """Text of one source line (only to locate an error), when it can be re-read."""
        try:
            if self.data is not None:
                raw = self.data
            elif self.path is not None:
                raw = self.path.read_bytes()
            else:
                return None
        except OSError:
            return None
        text = _decode(raw)
        lines = text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else None


def _decode(raw: bytes) -> str:
    bom, codec = _head_codec(raw[:4])
    return raw[bom:].decode(codec, "replace")


def _head_codec(head: bytes) -> tuple[int, str]:
    """(BOM length, codec) of the start of a document."""
    if head.startswith(b"\xef\xbb\xbf"):
        return 3, "utf-8"
    if head.startswith(b"\xff\xfe"):
        return 2, "utf-16-le"
    if head.startswith(b"\xfe\xff"):
        return 2, "utf-16-be"
    if len(head) > 1 and head[0] == 0 and head[1] != 0:
        return 0, "utf-16-be"
    if len(head) > 1 and head[0] != 0 and head[1] == 0:
        return 0, "utf-16-le"
    return 0, "utf-8"


def _located(name: str, message: str, line: int | None, column: int | None) -> ClixmlError:
    where = ""
    if line:
        where = f" line {line}" + (f", column {column}" if column else "") + ":"
    return ClixmlError(f"{name}:{where} {message}")


def _where(source: _Input, exc: _Walk) -> tuple[int | None, int | None]:
    """Line and column of the element a conversion failed at (lxml knows only the line)."""
    line = _line(exc.element)
    text = source.line(line) if line else None
    if text is None:
        return line, None
    tag = _local(exc.element.tag)
    ref_id = exc.element.get("RefId")
    starts = [m.start() for m in re.finditer(rf"<{re.escape(tag)}[\s/>]", text)]
    if ref_id is not None:
        starts = [at for at in starts if f'RefId="{ref_id}"' in text[at:].split(">")[0]]
    return line, (starts[0] + 1 if starts else None)


class _Document:
    """Reads one source with a safe pull parser; yields (stream, record) per top-level item."""

    def __init__(self, source: Source, *, structured: bool = False) -> None:
        self.input = _Input(source)
        self.converter = _Converter(structured=structured)
        self.wrapped = False

    def error(self, message: str, line: int | None, column: int | None = None) -> ClixmlError:
        return _located(self.input.name, message, line, column)

    def walk_error(self, exc: _Walk) -> ClixmlError:
        return _located(self.input.name, exc.message, *_where(self.input, exc))

    def _prepare(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Reject DTDs and turn a ``#< CLIXML`` prefix into a wrapper element."""
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= 4096:
                break
        if not head.strip(b"\x00\t\r\n \xef\xbb\xbf\xff\xfe"):
            raise self.error("empty file: no CLIXML data", None)
        bom, codec = _head_codec(head)
        text = head[bom:].decode(codec, "ignore")
        start = text.lstrip()
        doctype = text.find("<!DOCTYPE")
        if doctype != -1 and ("<Obj" not in text or doctype < text.find("<Obj")):
            before = text[:doctype]
            raise self.error(_NO_DTD, before.count("\n") + 1, doctype - before.rfind("\n"))
        if start.startswith("#< CLIXML"):
            marker = "#< CLIXML".encode(codec)
            at = head.find(marker)
            head = head[:at] + f"<{_WRAPPER}>".encode(codec) + head[at + len(marker) :]
            self.wrapped = True
        # Without the default namespace every tag is a short plain name: faster to
        # parse and to read (the dispatch tables accept both forms). Spaces of the same
        # length keep lines and columns true for error messages.
        root = text.find("<Objs")
        at = text.find(_NAMESPACE_DECLARATION, root, text.find(">", root)) if root >= 0 else -1
        if at >= 0:  # only in the root's start tag: never inside a value
            offset = bom + len(text[:at].encode(codec))
            size = len(_NAMESPACE_DECLARATION.encode(codec))
            head = (
                head[:offset]
                + (" " * len(_NAMESPACE_DECLARATION)).encode(codec)
                + head[offset + size :]
            )
        yield head
        yield from chunks
        if self.wrapped:
            yield f"</{_WRAPPER}>".encode(codec)

    def _refuse_dtd(self, element: etree._Element) -> None:
        docinfo = element.getroottree().docinfo
        if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
            raise self.error(_NO_DTD, None)

    def _drain(
        self, blocks: list[etree._Element], *, complete: bool
    ) -> Iterator[tuple[str | None, Record]]:
        """Convert and drop the finished top-level items of the <Objs> blocks seen so far."""
        top_level = self.converter.top_level
        while blocks:
            block = blocks[0]
            finished = complete or len(blocks) > 1  # a later block started: this one ended
            while len(block) > (0 if finished else 1):
                item = block[0]
                yield top_level(item)
                item.clear()  # empty first: removing a whole subtree is slow
                block.remove(item)
            if not finished:
                return
            parent = block.getparent()
            if parent is not None:
                parent.remove(block)
            blocks.pop(0)

    def items(self) -> Iterator[tuple[str | None, Record]]:
        # Events only for <Objs> starts: after each chunk, every child of an <Objs> but
        # its last is complete (the parser has moved past it), so it is converted and
        # dropped without any per-element event.
        parser = etree.XMLPullParser(events=("start",), tag=sorted(_OBJS_TAGS), **_PARSER_OPTIONS)
        blocks: list[etree._Element] = []
        try:
            for chunk in self._prepare(self.input.chunks()):
                parser.feed(chunk)
                for _event, item in parser.read_events():
                    block = cast(etree._Element, item)
                    if not blocks:  # a DTD the quick look at the head missed
                        self._refuse_dtd(block)
                    parent = block.getparent()
                    if parent is not None and parent.tag != _WRAPPER:
                        raise _Walk(block, "<Objs> inside another element")
                    blocks.append(block)
                yield from self._drain(blocks, complete=False)
            root = parser.close()
            yield from self._drain(blocks, complete=True)
        except etree.XMLSyntaxError as exc:
            line, column = exc.position
            message = str(exc.msg or exc).split(", line ")[0]
            raise self.error(f"malformed XML: {message}", line, column) from exc
        except _Walk as exc:
            raise self.walk_error(exc) from None
        self._refuse_dtd(root)
        if root.tag not in _OBJS_TAGS and root.tag != _WRAPPER:
            raise self.error(
                f"not CLIXML: the root element is <{_local(root.tag)}>, expected <Objs>",
                _line(root),
                1,
            )
        if root.tag == _WRAPPER and len(root):
            stray = root[0]
            raise self.error(
                f"unexpected <{_local(stray.tag)}> between <Objs> blocks", _line(stray)
            )


# --- public API ------------------------------------------------------------------------


def iter_records(source: Source, *, structured: bool = False) -> Iterator[Record]:
    """Yield one plain record per top-level output object of a CLIXML source.

    ``source`` is a path, bytes, CLIXML text (a str starting with ``<`` or ``#<``) or a
    binary file. ``structured=True`` keeps nested Exchange objects (ADObjectId, sizes)
    as dicts of their properties instead of their ToString / byte count.
    """
    for stream, record in _Document(source, structured=structured).items():
        if stream is None:
            yield record


def read_streams(source: Source) -> dict[str, list[Record]]:
    """The error/warning/verbose/debug/information/progress records, by stream name.

    A record from an ``<Obj>`` is its properties (error records as by
    :func:`parse_error_record`); a record from a string (``<S S="warning">``) is
    ``{"Message": text}``.
    """
    streams: dict[str, list[Record]] = {name: [] for name in STREAMS}
    for stream, record in _Document(source).items():
        if stream is not None:
            if set(record) == {"Value"}:
                record = {"Message": record["Value"]}
            elif stream == "error":
                record = error_fields(record)
            streams.setdefault(stream, []).append(record)
    return streams


def _single_root(xml: bytes | str) -> tuple[etree._Element, _Input]:
    data = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    source = _Input(data, name="<element>")
    if b"<!DOCTYPE" in data[:4096]:
        raise _located(source.name, _NO_DTD, None, None)
    try:
        return etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS)), source
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        message = str(exc.msg or exc).split(", line ")[0]
        raise _located(source.name, f"malformed XML: {message}", line, column) from exc


def parse_element(xml: bytes | str) -> Record:
    """One standalone serialized element (a PSRP message payload) -> its record.

    RefIds are scoped to the element, as in PSRP. The record is exactly what
    :func:`iter_records` gives for the same element at the top level of a file.
    """
    element, source = _single_root(xml)
    try:
        return _Converter().top_level(element)[1]
    except _Walk as exc:
        raise _located(source.name, exc.message, *_where(source, exc)) from None


def error_fields(record: Record) -> Record:
    """The useful fields of a deserialized ErrorRecord's properties."""
    exception = record.get("Exception")
    message = record.get("ErrorDetails_Message") or (
        exception.get("Message") if isinstance(exception, dict) else exception
    )
    return {
        "Message": message if message is not None else record.get("Message"),
        "Category": record.get("ErrorCategory_Category"),
        "CategoryInfo": record.get("ErrorCategory_Message"),
        "Reason": record.get("ErrorCategory_Reason"),
        "TargetName": record.get("ErrorCategory_TargetName"),
        "FullyQualifiedErrorId": record.get("FullyQualifiedErrorId"),
    }


def parse_error_record(xml: bytes | str) -> Record:
    """A serialized ErrorRecord (PSRP ERROR_RECORD payload) -> Message, Category, ... fields."""
    element, source = _single_root(xml)
    converter = _Converter()
    try:
        value, record = converter.obj(element) if element.tag in _OBJ_TAGS else (None, None)
    except _Walk as exc:
        raise _located(source.name, exc.message, *_where(source, exc)) from None
    fields = error_fields(record or {})
    if fields["Message"] is None:
        text = element.findtext("ToString") or element.findtext(_NS + "ToString")
        fields["Message"] = _plain_string(text) if text is not None else value
    return fields


# --- frames ----------------------------------------------------------------------------

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


def _column(values: list[Any]) -> Any:
    """One column of plain values -> the tightest faithful pandas array."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return pd.array(values, dtype=object)
    if kinds <= {int, str} and int in kinds:
        # sizes with "Unlimited": Exchange's Unlimited<ByteQuantifiedSize> sent as strings
        if {v for v in values if isinstance(v, str)} <= {"Unlimited"}:
            values = [None if isinstance(v, str) else v for v in values]
            kinds = {int}
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


def read_clixml(source: Source, *, structured: bool = False) -> pd.DataFrame:
    """Read a CLIXML file (or bytes, text, binary file) into a DataFrame, one row per object."""
    return records_to_frame(iter_records(source, structured=structured))
