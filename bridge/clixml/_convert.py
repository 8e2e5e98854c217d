"""Serialized elements -> plain values: objects, lists, dictionaries, RefIds, type names."""

from __future__ import annotations

import binascii
import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from lxml import etree

from bridge.clixml._values import NS, TEXT_VALUES, parse_bool, plain_string, tags, unescape
from bridge.errors import ClixmlError
from bridge.sizes import size_bytes

Record: TypeAlias = dict[str, object]

OBJ_TAGS = tags("Obj")
_BOOLS = frozenset(("true", "false"))
_LIST_TAGS = tags("LST", "IE", "STK", "QUE")
_DICT_TAGS = tags("DCT")
_PROPERTY_TAGS = tags("Props", "MS")
_TN_TAGS = tags("TN")
_TNREF_TAGS = tags("TNRef")
_TOSTRING_TAGS = tags("ToString")
_REF_TAGS = tags("Ref")
_PR_TAGS = tags("PR")
_EN_TAGS = tags("En")
_SKIPPED_TAGS = sorted(_TN_TAGS | OBJ_TAGS)

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
_BAD_VALUE = (ValueError, TypeError, OverflowError, binascii.Error)

# --- type names -> how to read an object ---------------------------------------------

_PLAIN, _ENUM, _SIZE_KIND, _UNLIMITED, _EXCHANGE = range(5)
ENUM = _ENUM  # for the scan (bridge.clixml._scan)


@functools.lru_cache(maxsize=4096)
def _kind(type_names: tuple[str, ...]) -> int:
    """How objects of this type become plain values, decided once per type-name list."""
    names = [name.removeprefix("Deserialized.") for name in type_names]
    if "System.Enum" in names:
        return _ENUM
    first = names[0] if names else ""
    # Typed sizes: the type names say what the value is (unlike a string that looks like
    # one, which stays a string: see bridge.sizes)
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


def type_info(names: tuple[str, ...]) -> _TypeInfo:
    """What a type-name list (decoded) tells the converter."""
    return _TypeInfo(names, _kind(names))
_NAMES: dict[str, str] = {}  # raw property name -> decoded, shared (bounded by _CACHE_LIMIT)
_CACHED_LENGTH = 32
_CACHE_LIMIT = 50_000
MISSING = object()


class Walk(Exception):
    """Internal: a conversion failed at this element (becomes a located ClixmlError)."""

    def __init__(self, element: etree._Element, message: str) -> None:
        super().__init__(message)
        self.element = element
        self.message = message


class Reread(ClixmlError):
    """A kept value of a projected read refers to an object the projection skipped
    (rare: :func:`bridge.clixml.read_clixml` then reads the file whole)."""

    def __init__(self, ref_id: str | None) -> None:
        what = (f'<Ref RefId="{ref_id}"> refers to an object' if ref_id is not None
                else "a part of the file needs")
        super().__init__(f"{what} the columns= projection skipped; read the file without "
                         "columns=")


# every type-name list inside an object, with or without the default namespace
_TYPE_LISTS = etree.XPath("descendant::TN | descendant::p:TN", namespaces={"p": NS[1:-1]})


def local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


def ref_key(ref_id: str) -> int | str:
    # RefIds are numbers: an int key is half the memory of the string, for every object
    return int(ref_id) if ref_id.isdigit() else ref_id


class Converter:
    """Turns serialized elements into plain values; holds the RefId registries.

    ``columns`` projects top-level objects: their other properties are skipped without
    being converted (their type names and RefIds are still registered for later objects).
    """

    def __init__(self, *, structured: bool = False, columns: Collection[str] | None = None):
        self.objects: dict[int | str, object] = {}  # RefId (a number: kept as int) -> value
        self.types: dict[str, _TypeInfo] = {}
        # shared by every reader: property names are few, and parse_element (one PSRP
        # message at a time) would otherwise start from nothing on every call
        self.names = _NAMES
        self.structured = structured
        self.saw_progress = False
        # PowerShell property names ignore case, so does the projection
        self.wanted = None if columns is None else frozenset(c.casefold() for c in columns)
        self.keep: dict[str | None, bool] = {}
        # Short strings repeat (DeviceType, enum names, "en-US"): one object per distinct
        # value keeps memory down and skips re-decoding. Capped so unique values cannot
        # make the cache grow without bound.
        strings: dict[str, str] = {}
        self.tostrings: dict[str, str] = {}

        def string(text: str | None) -> str:
            if text is None:
                return ""
            if len(text) <= _CACHED_LENGTH:
                hit = strings.get(text)
                if hit is None:
                    hit = plain_string(text)
                    if len(strings) < _CACHE_LIMIT:
                        strings[text] = hit
                return hit
            return plain_string(text)

        self.string = string
        self.strings = strings
        self.text_values = dict(TEXT_VALUES)
        for tag in tags("S"):
            self.text_values[tag] = string

    # Names repeat on every object: one shared (decoded) string per name saves memory.
    def name(self, raw: str | None) -> str:
        if raw is None:
            return ""
        known = self.names.get(raw)
        if known is None:
            known = unescape(raw) if "_x" in raw else raw
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
            except _BAD_VALUE as exc:
                raise Walk(element, f"bad {local(tag)} value {element.text or ''!r}") from exc
        if tag in OBJ_TAGS:
            return self.obj(element)[0]
        if tag in _REF_TAGS:
            return self.ref(element)
        if tag in _PR_TAGS:
            self.saw_progress = True
            return _progress(element)
        raise Walk(element, f"unexpected element <{local(tag)}>")

    def ref(self, element: etree._Element) -> object:
        ref_id = element.get("RefId")
        found = self.objects.get(ref_key(ref_id), MISSING) if ref_id is not None else MISSING
        if found is MISSING:
            if self.wanted is not None:
                raise Reread(ref_id)  # perhaps to a skipped object: the full read will tell
            for ancestor in element.iterancestors(*OBJ_TAGS):
                if ancestor.get("RefId") == ref_id:  # a cycle: the object refers to itself
                    text = ancestor.findtext("ToString") or ancestor.findtext(NS + "ToString")
                    return plain_string(text) if text is not None else None
            raise Walk(element, f'<Ref RefId="{ref_id}"> refers to no earlier object')
        return found

    def wants(self, raw: str | None) -> bool:
        assert self.wanted is not None
        wanted = self.name(raw).casefold() in self.wanted
        self.keep[raw] = wanted
        return wanted

    def members(
        self, element: Iterable[etree._Element], into: Record, project: bool = False
    ) -> None:
        """Add the properties of a <Props> or <MS> element (the hot loop: keep it lean)."""
        text_values = self.text_values
        names = self.names
        string = self.string
        strings_get = self.strings.get
        obj = self.obj
        enum = self.enum
        keep = self.keep if project else None
        member: object = element
        try:
            for member in element:
                raw = member.get("N")
                if keep is not None and not (keep.get(raw) or raw not in keep and self.wants(raw)):
                    continue  # not converted (its type names were registered up front)
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
                    into[name] = text == "true" if text in _BOOLS else parse_bool(text)
                elif tag == "Obj":
                    into[name] = enum(member)
                else:
                    convert = text_values.get(tag)
                    if convert is not None:
                        into[name] = convert(member.text)
                    elif tag in OBJ_TAGS:
                        into[name] = obj(member)[0]
                    else:
                        into[name] = self.value(member)
        except _BAD_VALUE as exc:
            assert isinstance(member, etree._Element)
            raise Walk(member, f"bad {local(member.tag)} value {member.text or ''!r}") from exc

    def items(self, element: etree._Element) -> list[object]:
        text_values = self.text_values
        result: list[object] = []
        item = element
        try:
            for item in element:
                convert = text_values.get(item.tag)
                result.append(convert(item.text) if convert is not None else self.value(item))
        except _BAD_VALUE as exc:
            raise Walk(item, f"bad {local(item.tag)} value {item.text or ''!r}") from exc
        return result

    def entries(self, element: etree._Element) -> dict[object, object]:
        result: dict[object, object] = {}
        for entry in element:
            if entry.tag not in _EN_TAGS:
                raise Walk(entry, f"unexpected element <{local(entry.tag)}> in <DCT>")
            key: object = MISSING
            value: object = MISSING
            for part in entry:
                if part.get("N") == "Key":
                    key = self.value(part)
                elif part.get("N") == "Value":
                    value = self.value(part)
            # as .NET and psrpcore: an entry is a Key and a Value, nothing less
            if key is MISSING or value is MISSING:
                missing = "Key" if key is MISSING else "Value"
                raise Walk(entry, f'<En> in <DCT> without its N="{missing}" element')
            if not isinstance(key, str | int | float | bool | None):
                key = str(key)  # lists and dicts cannot be keys
            result[key] = value
        return result

    def to_string(self, text: str) -> str:
        """A <ToString> text, one shared object per distinct short text (enum names)."""
        known = self.tostrings.get(text)
        if known is None:
            known = plain_string(text)
            if len(text) <= _CACHED_LENGTH and len(self.tostrings) < _CACHE_LIMIT:
                self.tostrings[text] = known
        return known

    def type_names(self, element: etree._Element) -> _TypeInfo:
        info = type_info(tuple(plain_string(t.text) for t in element))
        self.types[element.get("RefId") or ""] = info
        return info

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
                        self.objects[ref_key(own_id)] = name
                    return name
        return self.obj(element)[0]

    def obj(
        self, element: etree._Element, project: bool = False
    ) -> tuple[object, Record | None, bool]:
        """(plain value as a nested value, property record or None, whether the object
        wraps a value of its own: a primitive, list or dictionary) of one <Obj>."""
        info = _NO_TYPE
        to_string: str | None = None
        record: Record | None = None
        content: object = MISSING
        for child in element:
            part = _OBJ_PARTS.get(child.tag, _PART_VALUE)
            if part == _PART_PROPS:
                if record is None:
                    record = {}
                self.members(child, record, project)
            elif part == _PART_TNREF:
                ref_id = child.get("RefId") or ""
                found = self.types.get(ref_id)
                if found is None:
                    raise Walk(child, f'<TNRef RefId="{ref_id}"> refers to no earlier <TN>')
                info = found
            elif part == _PART_TOSTRING:
                to_string = self.to_string(child.text or "")
                if info.kind == _ENUM:
                    break  # an enum is its name: skip its number
            elif part == _PART_TN:
                info = self.type_names(child)
            elif part == _PART_LIST:
                content = self.items(child)
            elif part == _PART_DICT:
                content = self.entries(child)
            elif info.kind != _ENUM or to_string is None:
                content = self.value(child)  # a primitive wrapped with type names or notes
        if info.kind == _ENUM and to_string is not None:
            value: object = to_string
        else:
            value = _nested(info, to_string, record, content, self.structured)
        own_id = element.get("RefId")
        if own_id is not None:
            self.objects[ref_key(own_id)] = value
        return value, record, content is not MISSING and value is content

    def top_level(self, element: etree._Element) -> tuple[str | None, Record]:
        """(stream name or None for output, record) of one top-level element."""
        return _top_level(self, element)


#: Stream names of the non-output records in a ``#< CLIXML`` stream or PSRP run.
STREAMS = ("error", "warning", "verbose", "debug", "information", "progress")
_STREAM_NAMES = {name: name for name in STREAMS}


def stream_name(attribute: str | None) -> str | None:
    """The stream of an ``S="..."`` attribute: None (output) unless it names a known
    stream; an unknown name is output, as psrpcore reads it, so no object is lost."""
    if attribute is None:
        return None
    return _STREAM_NAMES.get(attribute.lower())


def _progress(element: etree._Element) -> Record:
    """A progress record (<PR>): its fields by their PowerShell names."""
    record: Record = {}
    for child in element:
        name = local(child.tag)
        if name == "Nil":
            record.setdefault("CurrentOperation", None)
            continue
        field = _PROGRESS_FIELDS.get(name, name)
        text = child.text
        if name in ("AI", "PI", "PC", "SR"):
            record[field] = int(text or "")
        else:
            value = plain_string(text)
            record[field] = value.strip() if name == "SD" else value
    return record


def _nested(
    info: _TypeInfo, to_string: str | None, record: Record | None, content: object,
    structured: bool,
) -> object:
    """A nested object's plain value, from what its parts said."""
    kind = info.kind
    if kind == _ENUM:
        return to_string if to_string is not None else content
    if kind == _SIZE_KIND and not structured and to_string is not None:
        size = size_bytes(to_string)
        return size if size is not None else to_string
    if kind == _UNLIMITED and not structured:
        if (record or {}).get("IsUnlimited") is True or to_string == "Unlimited":
            return None
        inner = (record or {}).get("Value", to_string)
        if isinstance(inner, str):
            size = size_bytes(inner)
            return inner if size is None else size
        return inner
    if content is not MISSING:
        return content
    if kind == _EXCHANGE and not structured and to_string is not None:
        return to_string
    if record:
        return record
    return to_string


def _top_level(converter: Converter, element: etree._Element) -> tuple[str | None, Record]:
    """(stream name or None for output, record) of one top-level element."""
    stream = element.get("S")
    if element.tag in OBJ_TAGS:
        converter.saw_progress = False
        project = converter.wanted is not None
        if project:  # later objects may name type lists that skipped members define
            for type_list in _TYPE_LISTS(element):  # type: ignore[union-attr]
                converter.type_names(type_list)  # type: ignore[arg-type]
        value, record, wraps = converter.obj(element, project)
        if wraps and isinstance(value, dict):
            # a hashtable: its entries are the row, then any notes added to it
            row = {str(key): item for key, item in value.items()}
            row.update(record or {})
        elif wraps:
            # a value with notes (Get-Content's lines carry PSPath, ReadCount...): the
            # value beside its properties; a property named Value wins, as in PowerShell
            row = {"Value": value, **(record or {})}
        elif record:
            row = record
        elif isinstance(value, dict):
            row = {str(key): item for key, item in value.items()}
        else:
            row = {"Value": value}
        if converter.wanted is not None and row is not record:  # projected as members are
            row = {key: item for key, item in row.items() if key.casefold() in converter.wanted}
        if stream is None and converter.saw_progress:
            stream = "progress"
    else:
        found = converter.value(element)
        if element.tag in _REF_TAGS and isinstance(found, dict):
            # the same object output again: the same row (an Exchange object that
            # is a ToString when nested stays its ToString)
            row = {str(key): item for key, item in found.items()}
        else:
            row = {"Value": found}
        if converter.wanted is not None:
            row = {key: item for key, item in row.items() if key.casefold() in converter.wanted}
    return stream_name(stream), row
