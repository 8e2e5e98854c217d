"""The fastest way through a large Export-Clixml file when a report wants a few columns.

Export-Clixml writes with .NET's XmlWriter, indenting two spaces a level, and no CLIXML
element holds both text and elements: so a start tag's indentation is its depth, and
every ``<`` in the file is markup (a ``<`` in a value is written ``&lt;``). A top-level
object starts a line with two spaces and ``<Obj RefId="N">``; its members (in ``<Props>``
or ``<MS>``) start lines with six. This reader finds those lines with ``str.find`` (C,
skipping along the text) and never looks at the other properties' elements, which are
most of the file: no tokenizer, no tree, no Python per element.

The file is read in chunks; a UTF-16 chunk (what Windows PowerShell writes) becomes a
one-byte string for the searching (numpy; a character beyond Latin-1 becomes U+0080
there), and only the wanted values are decoded from the original bytes. Values become
typed columns directly: dates are parsed a column at a time by pandas.

It gives exactly what the full reader gives, or raises :class:`Reread`: a file not
indented as Export-Clixml indents, a top-level object that is not ``<Obj RefId="N">``,
anything after an object but another object, a comment, CDATA or processing instruction,
a value with child elements, an entity only a DTD could define, a wanted ``<Ref>``. The
caller then reads the file with the regular-expression scan or lxml.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd

from bridge.clixml._convert import Converter, Reread, type_info
from bridge.clixml._members import Layout, Members, Text
from bridge.clixml._scan import _xml_text
from bridge.clixml._values import plain_string

#: Raw bytes read at a time (a UTF-16 chunk is half as many characters): small enough
#: that a chunk's copies stay in the CPU's cache, which makes them several times faster.
CHUNK = 1 << 21
_TOP = "\n  <Obj "  # a top-level object's line
# a top-level object's start tag, its parts on the lines below (as PowerShell indents)
_OBJ_OPEN = re.compile(r'<Obj RefId="\d+">\r?\n')
_TYPE_HEAD = re.compile(r'\s*<(TN|TNRef) RefId="([^"]*)"')
_TYPE_LIST = re.compile(r'<TN RefId="([^"]*)">((?:\s*<T>[^<]*</T>)*)\s*</TN>')
# the types whose objects all have the same properties (their class's), so the first
# object of a type tells where every later one's wanted members are
_EXCHANGE_TYPE = re.compile(r"(?:Deserialized\.)?(?:Selected\.)?Microsoft\.Exchange\.")
_HEAD = re.compile(r"^\s*(?:<\?xml[^>]*\?>\s*)?<Objs(?:\s[^>]*)?>\s*$")
_TAIL = re.compile(r"\s*</Objs>\s*")


def encoding(head: bytes) -> tuple[int, int] | None:
    """(bytes a character, BOM length) of a file this reader can take, else None."""
    if head.startswith(b"\xff\xfe"):
        return 2, 2
    if head.startswith(b"\xef\xbb\xbf"):
        return 1, 3
    if head[:1] in (b"<", b" ", b"\r", b"\n", b"\t"):
        return 1, 0
    return None  # UTF-16BE, UTF-32, a #< CLIXML stream...


def split_points(path: Path, pieces: int) -> list[int]:
    """Byte offsets of top-level objects that cut the file into about ``pieces`` parts
    (each a ``<Obj`` that starts a line with two spaces); [] for one part."""
    with path.open("rb") as stream:
        head = stream.read(4)
        found = encoding(head)
        if found is None or pieces < 2:
            return []
        unit, _bom = found
        size = path.stat().st_size
        needle = _TOP.encode("utf-16-le" if unit == 2 else "ascii")
        points: list[int] = []
        for part in range(1, pieces):
            offset = size * part // pieces
            offset -= offset % unit
            stream.seek(offset)
            window = stream.read(1 << 20)
            at = window.find(needle)
            while at >= 0 and at % unit:
                at = window.find(needle, at + 1)
            if at < 0:
                continue
            point = offset + at + 3 * unit  # the "<" of "<Obj"
            if not points or point > points[-1]:
                points.append(point)
        return points


class _Reader:
    """The wanted columns of the top-level objects in bytes [start, stop) of a file."""

    def __init__(self, path: Path, converter: Converter, start: int, stop: int) -> None:
        self.path = path
        self.converter = converter
        self.members = Members(converter, self._find_type)
        self.start, self.stop = start, stop
        self.unit = 1
        self.bom = 0
        self.layouts: dict[str, Layout] = {}  # type RefId -> layout

    # -- the file, chunk by chunk --------------------------------------------------------

    def read(self) -> pd.DataFrame:
        with self.path.open("rb") as stream:
            found = encoding(stream.read(4))
            if found is None:
                raise Reread(None)
            self.unit, self.bom = found
            stream.seek(max(self.start, self.bom))
            self._chunks(stream)
        return self.members.frame()

    def _chunks(self, stream: io.BufferedReader) -> None:
        position = max(self.start, self.bom)
        leftover = b""
        first = self.start == 0
        # one buffer for every chunk: a fresh one each time costs its page faults again
        buffer = bytearray(2 * CHUNK)
        while True:
            kept = len(leftover)
            if len(buffer) < kept + CHUNK:
                buffer = bytearray(2 * (kept + CHUNK))  # an object larger than a chunk
            buffer[:kept] = leftover
            space = memoryview(buffer)
            read = stream.readinto(space[kept:kept + min(CHUNK, self.stop - position)])
            position += read
            final = position >= self.stop or not read
            if not final and read % self.unit:
                raise Reread(None)
            chunk = Text(space[:kept + read], self.unit)
            view = chunk.view
            # a comment, CDATA, a DTD or a processing instruction (looking for "!" and "?"
            # first: a one-character search is twenty times faster)
            if ("!" in view and "<!" in view) or ("?" in view and view.find(
                    "<?", max(view.find("<Objs"), 0) if first else 0) >= 0):
                raise Reread(None)
            at = 0
            if first:
                at = view.find(_TOP)
                if at < 0:
                    if not final:
                        leftover = bytes(chunk.raw)
                        continue
                    raise Reread(None)  # no object at all: the full reader tells
                if not _HEAD.match(view[:at + 1]):
                    raise Reread(None)
                at += 3
                first = False
            at = self._objects(chunk, at, final)
            if final:
                return
            leftover = bytes(chunk.raw[at * self.unit:])

    def _objects(self, chunk: Text, at: int, final: bool) -> int:
        """Read the whole objects from ``at`` (a "<Obj"); where the first unread one starts."""
        view = chunk.view
        while True:
            following = view.find(_TOP, at + 1)
            if following < 0 and not final:
                return at  # read on: the object ends in a later chunk
            if not _OBJ_OPEN.match(view, at):
                # another top-level element, <Obj> with S="...", or its parts on its line
                raise Reread(None)
            if following < 0:
                end = self._last_end(view)
            else:
                end = following
            closing = end - 1 if view[end - 1:end] == "\r" else end
            if not view.startswith("</Obj>", closing - 6):
                raise Reread(None)  # something after the object's end, or no end
            self._object(chunk, at, end)
            if following < 0:
                return len(view)
            at = following + 3

    def _last_end(self, view: str) -> int:
        """Where the text after the last object starts (a line end), checked."""
        if self.stop < self.path.stat().st_size:  # the next part starts with an object
            if not view.endswith("\n  "):
                raise Reread(None)
            return len(view) - 3
        close = view.rfind("</Obj>")
        if close < 0 or not _TAIL.fullmatch(view, close + 6):
            raise Reread(None)
        return close + 6

    # -- one object ----------------------------------------------------------------------

    def _object(self, chunk: Text, start: int, end: int) -> None:
        view = chunk.view
        head = _TYPE_HEAD.match(view, view.index(">", start) + 1)
        type_ref = head.group(2) if head else ""
        body = start  # member lines come after the type names' <T> lines
        if head is not None:
            body = view.find("</TN>", head.end(), end) if head.group(1) == "TN" else head.end()
        layout = self.layouts.get(type_ref)
        if layout is None:
            if head is None:
                raise Reread(None)  # an object without type names
            if type_ref not in self.converter.types:
                self._find_type(chunk, type_ref, end)
            names = self.converter.types[type_ref].names
            if not names or not _EXCHANGE_TYPE.match(names[0]):
                raise Reread(None)  # not one of Exchange's types (see the module's notes)
            layout = self.layouts[type_ref] = self.members.learn(view, body, end)
        self.members.read(chunk, layout, start, body, end)

    def _find_type(self, chunk: Text, ref_id: str, before: int) -> None:
        """Register the type names <TN RefId="ref_id"> defined earlier in the file."""
        needle = f'<TN RefId="{ref_id}">'
        at = chunk.view.rfind(needle, 0, before)
        if at >= 0:
            self._type_at(chunk, at)
            return
        with self.path.open("rb") as stream:  # defined before this chunk: rare
            stream.seek(self.bom)
            carry = b""
            while True:
                new = stream.read(CHUNK)
                if not new:
                    raise Reread(None)
                earlier = Text(carry + new, self.unit)
                at = earlier.view.find(needle)
                if at >= 0 and earlier.view.find("</TN>", at) >= 0:
                    self._type_at(earlier, at)
                    return
                keep = max(len(earlier.view) - 65536, 0)
                carry = bytes(earlier.raw[keep * self.unit:])

    def _type_at(self, chunk: Text, at: int) -> None:
        match = _TYPE_LIST.match(chunk.view, at)
        if match is None:
            raise Reread(None)
        names = chunk.text(match.start(2), match.end(2))
        self.converter.types[match.group(1)] = type_info(tuple(
            plain_string(_xml_text(name)) for name in re.findall(r"<T>([^<]*)</T>", names)))

def read_part(path: Path, converter: Converter, start: int = 0, stop: int | None = None
              ) -> pd.DataFrame:
    """The wanted columns (``converter.wanted``) of the objects in bytes [start, stop)
    of an Export-Clixml file, where ``start`` is 0 or a point from :func:`split_points`;
    raises :class:`Reread` when unsure."""
    size = path.stat().st_size
    return _Reader(path, converter, start, size if stop is None else stop).read()
