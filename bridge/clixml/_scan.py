"""A faster way through an Export-Clixml file when only some properties are wanted.

Building lxml's tree costs as much as a bare parse of every element, most of which a
report never reads. For a projected read (``read_clixml(columns=...)``) of a file shaped
as Export-Clixml writes it, one compiled regular expression finds only what matters: the
``<Obj>`` boundaries (to know the depth), type-name lists (``<TN>``), the wanted members
of top-level objects (converted as the full reader converts them) and any element that
would make a row more than its properties. A wanted member that is an object (a list,
an enum, a nested object) is handed to the full converter as its own small document.

Anything unusual (a DTD, a comment, a processing instruction, a stream other than
output, a top-level value or collection, a ``<Ref>``, an entity other than XML's own, a
member it cannot read) raises :class:`Reread` and the caller reads the file with lxml:
this path only ever gives what the full reader gives, faster.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from lxml import etree

from bridge.clixml._convert import ENUM, Converter, Record, Reread, Walk, type_info
from bridge.clixml._document import PARSER_OPTIONS, Input, head_codec
from bridge.clixml._values import plain_string

_CHUNK = 1 << 22
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HEAD = re.compile(r"^\s*(?:<\?xml[^>]*\?>\s*)?<Objs(?:\s[^>]*)?>\s*$")
_TAIL = re.compile(r"^\s*</Objs>\s*$")
_ENUM_MEMBER = re.compile(
    r'<Obj[^>]*>\s*<TNRef RefId="([^"]*)"\s*/>\s*<ToString>([^<]*)</ToString>')
_FIRST_OBJECT = re.compile(r"<Obj[\s>]")
_MEMBER_NAME = re.compile(r'\sN="([^"]*)"')
_STREAM = re.compile(r'\sS="([^"]*)"')
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#(\d+)|#x([0-9A-Fa-f]+));")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _token_pattern(wanted: frozenset[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(name) for name in sorted(wanted))
    return re.compile(
        r"<(?:"
        r"(?P<open>Obj)(?P<attrs>(?:\s[^>]*)?)>"
        r"|(?P<close>/Obj>)"
        r'|TN RefId="(?P<tn>[^"]*)">(?P<names>(?:\s*<T>[^<]*</T>)*)\s*</TN>'
        rf'|(?P<tag>[A-Za-z0-9]+) N="(?i:(?P<name>{names}))"'
        r"(?:(?P<empty>\s*/>)|>(?P<text>[^<]*)</(?P=tag)>|(?P<other>[\s>/]))"
        # any other tag without attributes but the parts of every object
        r"|(?P<bare>(?!(?:Props|MS|ToString)\b)[A-Za-z0-9]+)(?=\s*/?>)"
        r")"
    )


def _entity(match: re.Match[str]) -> str:
    named, decimal, hexadecimal = match.groups()
    if named:
        return _ENTITIES[named]
    return chr(int(decimal) if decimal else int(hexadecimal, 16))


def _xml_text(text: str) -> str:
    """Element text as an XML parser gives it: entities decoded, line ends normalised."""
    if "&" in text:
        decoded = _ENTITY.sub(_entity, text)
        if "&" in _ENTITY.sub("", text):
            raise Reread(None)  # an entity only a DTD could define
        text = decoded
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def usable(columns: frozenset[str]) -> bool:
    """Whether the scan can serve this projection (the full reader serves any)."""
    return bool(columns) and "value" not in columns and all(
        _SAFE_NAME.match(name) for name in columns)


def scan_records(source: Input, converter: Converter) -> Iterator[Record]:
    """Rows of a projected read (``converter.wanted``); raises Reread when unsure."""
    assert converter.wanted is not None
    token = _token_pattern(converter.wanted)
    parser = etree.XMLParser(**PARSER_OPTIONS)
    names = converter.names
    text_values = converter.text_values
    chunks = source.chunks()
    first = next(chunks, b"")
    bom, codec = head_codec(first[:4])
    decoder = codecs.getincrementaldecoder(codec)("strict")
    try:
        buffer = decoder.decode(first[bom:])
        first_object = _FIRST_OBJECT.search(buffer)
        start = first_object.start() if first_object else -1
        if start < 0 or not _HEAD.match(buffer[:start]):
            raise Reread(None)  # a ``#< CLIXML`` stream, a DTD, no object yet: not this path
        buffer = buffer[start:]
        done = False
        while True:
            if not done:
                chunk = next(chunks, None)
                if chunk is None:
                    buffer += decoder.decode(b"", final=True)
                    done = True
                else:
                    buffer += decoder.decode(chunk)
            if "<!" in buffer or "<?" in buffer:
                raise Reread(None)  # a comment, CDATA or processing instruction
            depth = 0
            safe = 0  # where the last complete top-level object ended
            row: Record = {}
            member_depth = 0
            member_start = 0
            member_name = ""
            complete = True
            for match in token.finditer(buffer):
                kind = match.lastgroup  # one call tells which alternative matched
                if kind == "text" or kind == "empty":  # a member with a plain value
                    if depth != 1 or member_depth:
                        continue  # inside a nested object: its own reader sees it
                    tag, raw, text = match.group("tag", "name", "text")
                    convert = text_values.get(tag)
                    if convert is None:
                        raise Reread(None)  # a <Ref> (or an element no reader knows)
                    name = names.get(raw) or converter.name(raw)
                    try:
                        row[name] = convert(None if text is None else _xml_text(text))
                    except (ValueError, TypeError, OverflowError) as exc:
                        raise Reread(None) from exc  # the full reader says where
                elif kind == "bare":  # a value, a collection or a list item
                    if depth == 1 and not member_depth:
                        raise Reread(None)  # the object has a value of its own
                elif kind == "attrs":  # <Obj ...>
                    attrs = match.group("attrs")
                    if attrs.endswith("/"):
                        raise Reread(None)  # <Obj/>: PowerShell never writes one
                    if depth == 0:
                        if buffer[safe:match.start()].strip():
                            raise Reread(None)
                        stream = _STREAM.search(attrs)
                        if stream is not None and stream.group(1).lower() != "output":
                            raise Reread(None)
                        row = {}
                    elif depth == 1 and member_depth == 0:
                        named = _MEMBER_NAME.search(attrs)
                        if named is not None and named.group(1).casefold() in converter.wanted:
                            member_depth, member_start = 2, match.start()
                            member_name = named.group(1)
                    depth += 1
                elif kind == "close":
                    depth -= 1
                    if depth == 0:
                        yield row
                        safe = match.end()
                    elif member_depth and depth == member_depth - 1:
                        enum = _ENUM_MEMBER.match(buffer, member_start, match.end())
                        known = converter.types.get(enum.group(1)) if enum else None
                        if enum is not None and known is not None and known.kind == ENUM:
                            # the commonest nested object, an enum: its name
                            value: object = converter.to_string(_xml_text(enum.group(2)))
                        else:  # anything else: the full converter, on this element alone
                            part = buffer[member_start:match.end()]
                            try:
                                value = converter.obj(etree.fromstring(part, parser))[0]
                            except (etree.XMLSyntaxError, Walk) as exc:
                                raise Reread(None) from exc
                        row[converter.name(member_name)] = value
                        member_depth = 0
                elif kind == "names":  # <TN RefId="..."><T>...</T>...</TN>
                    type_names = re.findall(r"<T>([^<]*)</T>", match.group("names"))
                    converter.types[match.group("tn")] = type_info(
                        tuple(plain_string(_xml_text(name)) for name in type_names))
                elif depth == 1 and not member_depth:  # "other": more than a plain text
                    tag = match.group("tag")
                    end = f"</{tag}>" if tag in text_values else ">"
                    if not done and buffer.find(end, match.end()) < 0:
                        complete = False  # cut off at the buffer's end: read on
                        break
                    raise Reread(None)  # a <Ref>, attributes or children: not this path
            if not complete or depth or member_depth:
                if done:
                    raise Reread(None)
            if done:
                if not _TAIL.match(buffer[safe:]):
                    raise Reread(None)
                return
            buffer = buffer[safe:]
    except UnicodeDecodeError as exc:
        raise Reread(None) from exc
