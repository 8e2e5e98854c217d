"""The columnar reader's half that reads members: where a wanted member's line is in an
object (found one by one, or all member lines at once when most are wanted), its value,
and the typed columns they make. ``_columnar`` walks the file and its objects.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lxml import etree

from bridge.clixml._convert import ENUM, MISSING, Converter, Reread, Walk
from bridge.clixml._convert import _nested as nested_value
from bridge.clixml._document import PARSER_OPTIONS
from bridge.clixml._frames import _column
from bridge.clixml._scan import _xml_text

_MEMBER = "      <"  # a top-level member's line, after its line end
_CLOSE = "\n      </Obj>"  # where a member that is an object ends
_TYPE_REFS = re.compile(r'<TNRef RefId="([^"]*)"')
# a member line: tag, name, and the text of a plain value (group 3) up to its end tag
_VALUE = re.compile(r'\n      <([A-Za-z0-9]+) N="([^"]*)"(?:>([^<]*)</\1>)?')
# every member line: tag, name, ">" when a text and end tag follow, the text
_LISTED = re.compile(r'\n      <([A-Za-z0-9]+) N="([^"]*)"(?:(>)([^<]*)</\1>)?')
_MEMBER_LINE = re.compile(r'\n      <([A-Za-z0-9]+) N="([^"]*)"')
# a member that is an object of a type whose names came before: its type's RefId
_OBJECT_HEAD = r'<Obj N="[^"]*" RefId="\d+">\r?\n {8}<TNRef RefId="([^"]*)" ?/>'
# an enum (as a local Export-Clixml writes one): its name, then its number
_ENUM_VALUE = re.compile(_OBJECT_HEAD + r"\r?\n {8}<ToString>([^<]*)</ToString>"
                         r"\r?\n {8}<([A-Za-z0-9]+)>[^<]*</\3>\r?\n      </Obj>")
# a list (a MultiValuedProperty of plain values), maybe empty
_LIST_VALUE = re.compile(_OBJECT_HEAD + r"(?:\r?\n {8}<ToString>([^<]*)</ToString>)?"
                         r"\r?\n {8}(?:<LST ?/>|<LST>((?:\r?\n {10}<([A-Za-z0-9]+)>[^<]*</\4>)*)"
                         r"\r?\n {8}</LST>)\r?\n      </Obj>")
_LIST_ITEM = re.compile(r"\n {10}<([A-Za-z0-9]+)>([^<]*)</\1>")
# a start tag followed on its line by another (an indented file has one a line at most)
_TWO_TAGS = re.compile(r"<[^/!?][^<\n]*<[^/]")
_PART_LINE = re.compile(r"\n    <([A-Za-z0-9]+)")  # what a top-level object holds
_OBJECT_PARTS = frozenset({"TN", "TNRef", "ToString", "Props", "MS"})

#: find_type(chunk, RefId, before): register type names defined earlier in the file
FindType = Callable[["Text", str, int], None]


class _Every:
    """The wanted names of a read without projection: all of them."""

    def __contains__(self, name: object) -> bool:
        return True


_EVERY_MEMBER = _Every()


@dataclass
class Column:
    """One wanted member: its values so far, and how to find it in the text."""

    name: str  # as the file spells it (first seen), decoded
    raw: str  # as it is in the file
    needle: str  # ' N="Name"'
    values: list[Any] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    object_line: str = field(init=False)  # '\n      <Obj N="Name"': where it is an object

    def __post_init__(self) -> None:
        self.object_line = f"\n{_MEMBER}Obj{self.needle}"


@dataclass
class Layout:
    """The wanted members of one type, in the order its first object had them."""

    columns: list[Column]
    count: int = 0  # member lines
    # (place among the member lines, column) when most members are wanted, else None
    listed: list[tuple[int, Column]] | None = None


class Text:
    """One chunk: the searchable one-byte view and the raw bytes its values come from."""

    def __init__(self, raw: bytes | memoryview, unit: int) -> None:
        self.raw = memoryview(raw)
        self.unit = unit
        if unit == 1:
            self.view = codecs.latin_1_decode(self.raw)[0]
        else:
            codes = np.frombuffer(raw, "<u2")
            low = codes.astype(np.uint8)
            if codes.size and int(codes.max()) > 0xFF:
                # never markup: a value with U+0080 in the view is decoded from raw
                low[np.flatnonzero(codes > 0xFF)] = 0x80
            self.view = codecs.latin_1_decode(low.data)[0]  # (bytes.decode copies once more)

    def text(self, start: int, stop: int) -> str:
        """The characters [start, stop) of the chunk, decoded."""
        value = self.view[start:stop]
        if self.unit == 1:
            if value.isascii():
                return value
            return codecs.utf_8_decode(self.raw[start:stop], "strict", True)[0]
        if "\x80" not in value:
            return value
        return codecs.utf_16_le_decode(self.raw[2 * start:2 * stop], "strict", True)[0]


class ObjectValues:
    """Wanted members that are objects: enums and lists of plain values whose types came
    before, read from their lines; anything else by the full converter, on that element
    alone."""

    def __init__(self, converter: Converter, find_type: FindType) -> None:
        self.converter = converter
        self.find_type = find_type
        self.parser = etree.XMLParser(**PARSER_OPTIONS)

    def value(self, chunk: Text, start: int, stop: int) -> object:
        """A wanted member that is an object: an enum whose type came before is its
        <ToString> text, as the full converter's short path reads it; else the full
        converter, on that element alone."""
        enum = _ENUM_VALUE.match(chunk.view, start, stop)
        if enum is not None and enum.end() == stop:
            info = self.converter.types.get(enum.group(1))
            if info is not None and info.kind == ENUM:
                return self.converter.to_string(
                    _xml_text(chunk.text(enum.start(2), enum.end(2))))
        listed = _LIST_VALUE.match(chunk.view, start, stop)
        if listed is not None and listed.end() == stop:
            value = self._list_value(chunk, listed)
            if value is not MISSING:
                return value
        return self._nested(chunk, start, stop)

    def _list_value(self, chunk: Text, listed: re.Match[str]) -> object:
        """A list of plain values whose type came before, as the full converter reads
        it; MISSING when it needs the full converter."""
        converter = self.converter
        info = converter.types.get(listed.group(1))
        if info is None or info.kind == ENUM:
            return MISSING
        items: list[object] = []
        body = (listed.start(3), listed.end(3)) if listed.group(3) is not None else (0, 0)
        for item in _LIST_ITEM.finditer(chunk.view, *body):
            convert = converter.text_values.get(item.group(1))
            if convert is None:
                return MISSING
            try:
                items.append(convert(_xml_text(chunk.text(item.start(2), item.end(2)))))
            except (ValueError, TypeError, OverflowError) as exc:
                raise Reread(None) from exc  # the full reader says where
        to_string = listed.group(2)
        if to_string is not None:
            to_string = converter.to_string(_xml_text(chunk.text(listed.start(2),
                                                                 listed.end(2))))
        return nested_value(info, to_string, None, items, converter.structured)

    def _nested(self, chunk: Text, start: int, stop: int) -> object:
        """A wanted member that is an object: the full converter, on that element alone."""
        text = chunk.text(start, stop)
        for ref_id in _TYPE_REFS.findall(text):
            if ref_id not in self.converter.types:
                self.find_type(chunk, ref_id, start)
        try:
            return self.converter.enum(etree.fromstring(text, self.parser))
        except (etree.XMLSyntaxError, Walk) as exc:
            raise Reread(None) from exc


class Members:
    """The wanted members of the objects read so far, as columns."""

    def __init__(self, converter: Converter, find_type: FindType) -> None:
        self.converter = converter
        # no projection (columns=None): every member is wanted
        self.wanted: Container[str] = (_EVERY_MEMBER if converter.wanted is None
                                       else converter.wanted)
        self.objects = ObjectValues(converter, find_type)
        self.columns: dict[str, Column] = {}  # casefolded name -> column
        self.rows = 0

    def read(self, chunk: Text, layout: Layout, start: int, body: int, end: int) -> None:
        """One more row: the wanted members of the object [start, end) of ``chunk``."""
        row = self.rows
        if layout.listed is None or not self.listed(chunk, layout, body, end, row):
            self.found(chunk, layout, start, end, row)
        self.rows += 1

    def listed(self, chunk: Text, layout: Layout, body: int, end: int, row: int) -> bool:
        """Most members wanted: all member lines at once (one C call), those wanted read
        by their place in the type's list; False (nothing kept) for anything unusual."""
        assert layout.listed is not None
        hits = _LISTED.findall(chunk.view, body, end)
        if len(hits) != layout.count:
            return False
        string, strings = self.converter.string, self.converter.strings
        text_values = self.converter.text_values
        done = 0
        for index, column in layout.listed:
            tag, name, closed, text = hits[index]
            if name != column.raw:
                break
            values = column.values
            if not closed:
                if tag == "Nil":
                    values.append(None)
                elif tag == "S":
                    values.append("")  # <S N="..." />, as the full reader reads it
                elif tag == "Obj":  # an enum, a list...: read where it is
                    at = chunk.view.find(column.object_line, body, end)
                    close = chunk.view.find(_CLOSE, at, end) if at >= 0 else -1
                    if close < 0:
                        break
                    values.append(self.objects.value(chunk, at + 7, close + len(_CLOSE)))
                    column.tags.add("Obj")
                    done += 1
                    continue
                else:
                    break  # an empty value of another kind
            elif tag != "S" and tag != "DT" and tag not in text_values:
                break  # a <Ref>, or an element no reader knows
            else:
                # beyond ASCII in UTF-8, beyond Latin-1 in UTF-16: decoded from the bytes
                if not text.isascii() and (chunk.unit == 1 or "\x80" in text):
                    line = self._member(chunk.view, column.needle, body, body, end)
                    at = line + 7 + len(tag) + len(column.needle) + 1
                    text = chunk.text(at, at + len(text))
                if "&" in text or "\r" in text:
                    text = _xml_text(text)
                if tag == "S":
                    known = strings.get(text)
                    values.append(known if known is not None else string(text))
                elif tag == "DT":
                    values.append(text)
                else:
                    try:
                        values.append(text_values[tag](text))
                    except (ValueError, TypeError, OverflowError) as exc:
                        raise Reread(None) from exc
                if tag not in column.tags:
                    column.tags.add(tag)
            done += 1
        if done == len(layout.listed):
            self._fill(layout, row)
            return True
        for column in layout.columns:
            del column.values[row:]
        return False

    def _fill(self, layout: Layout, row: int) -> None:
        """Columns of other types' members get a missing value for this row."""
        if len(layout.columns) != len(self.columns):
            for column in self.columns.values():
                if len(column.values) <= row:
                    column.values.append(None)

    def found(self, chunk: Text, layout: Layout, start: int, end: int, row: int) -> None:
        """Few members wanted: each found with str.find from the last one (C, skipping
        along the text), in the order the type's first object had them."""
        view = chunk.view
        cursor = start
        complete = True
        find, rfind, match = view.find, view.rfind, _VALUE.match
        string = self.converter.string
        for column in layout.columns:
            # the common case inline: the next wanted member, a plain value
            at = find(column.needle, cursor, end)
            hit = match(view, rfind("\n", start, at)) if at >= 0 else None
            if hit is None or hit.end(2) != at + len(column.needle) - 1:
                line = self._member(view, column.needle, cursor, start, end)
                if line < 0:
                    complete = False
                    break
                cursor = self._value(chunk, column, line, end, row)
                continue
            tag, text = hit.group(1, 3)
            cursor = hit.end()
            if len(column.values) > row:
                raise Reread(None)  # two members of one name: the full reader keeps the last
            if text is None:
                if tag == "Nil" and view.startswith(" />", cursor):
                    column.values.append(None)
                    continue
                cursor = self._value(chunk, column, rfind("\n", start, at) + 1, end, row)
                continue
            if not text.isascii() and (chunk.unit == 1 or "\x80" in text):
                text = chunk.text(hit.start(3), hit.end(3))
            if "&" in text or "\r" in text:
                text = _xml_text(text)
            if tag == "S":
                column.values.append(string(text))
            elif tag == "DT":
                column.values.append(text)
            else:
                convert = self.converter.text_values.get(tag)
                if convert is None:
                    raise Reread(None)
                try:
                    column.values.append(convert(text))
                except (ValueError, TypeError, OverflowError) as exc:
                    raise Reread(None) from exc
            if tag not in column.tags:
                column.tags.add(tag)
        if not complete:
            self._unusual(chunk, start, end, row)  # another shape: every member line
            for column in self.columns.values():
                if len(column.values) <= row:
                    column.values.append(None)
        else:
            self._fill(layout, row)

    def _member(self, view: str, needle: str, cursor: int, start: int, end: int) -> int:
        """Where the member line with ``needle`` starts (after its line end), or -1."""
        at = view.find(needle, cursor, end)
        if at < 0 and cursor > start:
            at = view.find(needle, start, cursor)
        while at >= 0:
            line = view.rfind("\n", start, at) + 1
            if view.startswith(_MEMBER, line) and view[line + 7:at].isalnum():
                return line
            at = view.find(needle, at + 1, end)  # a nested object's member of that name
        return -1

    def learn(self, view: str, start: int, end: int) -> Layout:
        """The wanted members of an object of a type not seen yet, in file order."""
        if set(_PART_LINE.findall(view, start, end)) - _OBJECT_PARTS:
            raise Reread(None)  # an object with a value of its own (a list, a table...)
        if _TWO_TAGS.search(view, start, end):
            raise Reread(None)  # elements side by side on a line: not indented throughout
        lines = _MEMBER_LINE.findall(view, start, end)
        columns: list[Column] = []
        places: list[tuple[int, Column]] = []
        for place, (_tag, raw) in enumerate(lines):
            name = self.converter.name(raw)
            key = name.casefold()
            if key in self.wanted:
                column = self.columns.get(key)
                if column is None:
                    column = self.columns[key] = Column(name, raw, f' N="{raw}"')
                    column.values.extend([None] * self.rows)
                if column in columns:
                    raise Reread(None)  # two members of one name: the full reader keeps the last
                columns.append(column)
                places.append((place, column))
        # reading every member line costs about what finding three wanted ones does
        dense = len(columns) * 3 >= len(lines)
        return Layout(columns, len(lines), places if dense else None)

    def _unusual(self, chunk: Text, start: int, end: int, row: int) -> None:
        """An object whose member lines are not its type's first object's: each wanted
        member line, read one by one."""
        for column in self.columns.values():
            del column.values[row:]
        for match in _MEMBER_LINE.finditer(chunk.view, start, end):
            name = self.converter.name(match.group(2))
            key = name.casefold()
            if key not in self.wanted:
                continue
            known = self.columns.get(key)
            if known is None:
                known = self.columns[key] = Column(name, match.group(2),
                                                    f' N="{match.group(2)}"')
                known.values.extend([None] * self.rows)
            self._value(chunk, known, match.start() + 1, end, row)

    def _value(self, chunk: Text, column: Column, line: int, end: int, row: int) -> int:
        """Read the member whose line starts at ``line`` into ``column``; where it ends."""
        view = chunk.view
        tag_end = view.index(" ", line + 7)
        tag = view[line + 7:tag_end]
        after = view.index('"', tag_end + 4) + 1  # past N="..."
        if len(column.values) > row:
            raise Reread(None)  # two members of one name: the full reader keeps the last
        if view.startswith(">", after):
            close = view.find("<", after + 1, end)
            if close < 0 or not view.startswith(f"</{tag}>", close):
                raise Reread(None)  # a value with elements in it
            text: str | None = chunk.text(after + 1, close) if close > after + 1 else None
            stop = close
        elif view.startswith(" />", after) or view.startswith("/>", after):
            text, stop = None, after
            if tag == "Nil":
                column.values.append(None)  # missing, of no kind (as in found and listed)
                return stop
        elif tag == "Obj":
            close = view.find(_CLOSE, after, end)
            if close < 0:
                raise Reread(None)
            stop = close + len(_CLOSE)
            column.values.append(self.objects.value(chunk, line + 6, stop))
            column.tags.add("Obj")
            return stop
        else:
            raise Reread(None)  # a <Ref>, or attributes a value does not have
        if tag == "DT":  # parsed with the whole column
            if text is None:
                raise Reread(None)  # an empty date: the full reader says where
            column.values.append(_xml_text(text) if "&" in text or "\r" in text else text)
        else:
            convert: Callable[[Any], object] | None = self.converter.text_values.get(tag)
            if convert is None:
                raise Reread(None)
            try:
                column.values.append(convert(None if text is None else _xml_text(text)))
            except (ValueError, TypeError, OverflowError) as exc:
                raise Reread(None) from exc  # the full reader says where
        column.tags.add(tag)
        return stop

    def frame(self) -> pd.DataFrame:
        return columns_frame(self.columns.values(), self.rows)


def columns_frame(columns: Iterable[Column], rows: int) -> pd.DataFrame:
    """The columns' values as a frame of ``rows`` rows (a column short of them is filled
    with missing values); the columns are emptied."""
    arrays: dict[str, Any] = {}
    for column in columns:
        values = column.values
        if len(values) < rows:
            values.extend([None] * (rows - len(values)))
        if "DT" in column.tags:
            arrays[column.name] = _dates(values, column.tags)
        else:
            arrays[column.name] = _column(values)
        column.values = []
    return pd.DataFrame(arrays, index=pd.RangeIndex(rows))


def _dates(values: list[Any], tags: set[str]) -> Any:
    """A column with <DT> values (texts here): the full reader's datetime64[ns, UTC]."""
    if tags - {"DT"}:
        raise Reread(None)  # dates and other kinds in one column: the full reader's way
    texts: pd.Series[Any] = pd.Series(values, dtype=object)
    stamps = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce")
    odd = stamps.isna() & texts.notna()
    if odd.any():  # out of range (0001-01-01) or not a date: the full reader decides
        convert = Converter().text_values["DT"]
        for text in texts[odd]:
            try:
                convert(text)
            except (ValueError, TypeError, OverflowError) as exc:
                raise Reread(None) from exc
    index = pd.DatetimeIndex(stamps.dt.floor("us")).as_unit("ns")
    return index
