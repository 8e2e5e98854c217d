"""Reading one CLIXML source (path, bytes, text, binary file) safely, item by item.

Speed comes from lxml doing the parsing in C with no per-element events: after each
chunk fed to the parser, every top-level item it has moved past is converted by one
recursive walk, then dropped, so memory stays flat however large the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any, TypeAlias, cast

from lxml import etree

from bridge.clixml._convert import Converter, Record, Walk, local
from bridge.clixml._values import tags
from bridge.errors import ClixmlError

Source: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | IO[bytes]"

_OBJS_TAGS = tags("Objs")
_NAMESPACE_DECLARATION = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'
_CHUNK = 1 << 18
NO_DTD = "a DTD (<!DOCTYPE>) is not allowed in CLIXML; nothing was expanded or fetched"
_WRAPPER = "_CLIXML"  # same length as "#< CLIXML", so lines and columns stay true
PARSER_OPTIONS: dict[str, Any] = {
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


def _line(element: etree._Element) -> int | None:
    line = element.sourceline
    return line if isinstance(line, int) else None


class Input:
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
    bom, codec = head_codec(raw[:4])
    return raw[bom:].decode(codec, "replace")


def head_codec(head: bytes) -> tuple[int, str]:
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


def located(name: str, message: str, line: int | None, column: int | None) -> ClixmlError:
    where = ""
    if line:
        where = f" line {line}" + (f", column {column}" if column else "") + ":"
    return ClixmlError(f"{name}:{where} {message}")


def where(source: Input, exc: Walk) -> tuple[int | None, int | None]:
    """Line and column of the element a conversion failed at (lxml knows only the line)."""
    line = _line(exc.element)
    text = source.line(line) if line else None
    if text is None:
        return line, None
    tag = local(exc.element.tag)
    ref_id = exc.element.get("RefId")
    starts = [m.start() for m in re.finditer(rf"<{re.escape(tag)}[\s/>]", text)]
    if ref_id is not None:
        starts = [at for at in starts if f'RefId="{ref_id}"' in text[at:].split(">")[0]]
    return line, (starts[0] + 1 if starts else None)


class Document:
    """Reads one source with a safe pull parser; yields (stream, record) per top-level item."""

    def __init__(
        self,
        source: Source,
        *,
        structured: bool = False,
        columns: Collection[str] | None = None,
    ) -> None:
        self.input = Input(source)
        self.converter = Converter(structured=structured, columns=columns)
        self.wrapped = False

    def error(self, message: str, line: int | None, column: int | None = None) -> ClixmlError:
        return located(self.input.name, message, line, column)

    def walk_error(self, exc: Walk) -> ClixmlError:
        return located(self.input.name, exc.message, *where(self.input, exc))

    def _prepare(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Reject DTDs and turn a ``#< CLIXML`` prefix into a wrapper element."""
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= 4096:
                break
        if not head.strip(b"\x00\t\r\n \xef\xbb\xbf\xff\xfe"):
            raise self.error("empty file: no CLIXML data", None)
        bom, codec = head_codec(head)
        text = head[bom:].decode(codec, "ignore")
        start = text.lstrip()
        doctype = text.find("<!DOCTYPE")
        if doctype != -1 and ("<Obj" not in text or doctype < text.find("<Obj")):
            before = text[:doctype]
            raise self.error(NO_DTD, before.count("\n") + 1, doctype - before.rfind("\n"))
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
            raise self.error(NO_DTD, None)

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
        parser = etree.XMLPullParser(events=("start",), tag=sorted(_OBJS_TAGS), **PARSER_OPTIONS)
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
                        raise Walk(block, "<Objs> inside another element")
                    blocks.append(block)
                yield from self._drain(blocks, complete=False)
            root = parser.close()
            yield from self._drain(blocks, complete=True)
        except etree.XMLSyntaxError as exc:
            line, column = exc.position
            message = str(exc.msg or exc).split(", line ")[0]
            raise self.error(f"malformed XML: {message}", line, column) from exc
        except Walk as exc:
            raise self.walk_error(exc) from None
        self._refuse_dtd(root)
        if root.tag not in _OBJS_TAGS and root.tag != _WRAPPER:
            raise self.error(
                f"not CLIXML: the root element is <{local(root.tag)}>, expected <Objs>",
                _line(root),
                1,
            )
        if root.tag == _WRAPPER and len(root):
            stray = root[0]
            raise self.error(
                f"unexpected <{local(stray.tag)}> between <Objs> blocks", _line(stray)
            )
