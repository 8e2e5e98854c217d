"""CLIXML (Export-Clixml files, ``#< CLIXML`` streams, PSRP payloads) -> plain records -> frames.

The one place where PowerShell's serialized values become plain Python values:
str, int, float, Decimal, bool, None, datetime (always zoned), timedelta, bytes, list, dict.
The package's modules: ``_values`` (primitives), ``_convert`` (objects, RefIds, type
names), ``_document`` (a source read safely, item by item), ``_frames`` (records ->
typed columns), ``_scan`` (projected reads without a tree), ``_columnar`` with
``_members`` (an indented file of Exchange's objects, projected or whole, without a
tree), ``_export`` (the offline report's files, projected and in parallel).
``benchmarks/clixml_read.py`` measures the reader against pypsrp and a bare iterparse.

Rules (the README documents them for users):

- one record per top-level object: its adapted and extended properties, in order;
  a top-level primitive becomes ``{"Value": value}``; a primitive, list or dictionary
  that carries properties of its own (Get-Content's lines with PSPath, ReadCount...) keeps
  its value beside them: ``{"Value": value, **properties}`` (a hashtable: its entries,
  then its properties); nested, such a value is the value alone
- RefId/TNRef/Ref are document-wide (a later object may reuse an earlier object's type
  names or objects at any depth); a RefId defined again replaces the earlier one
- enums -> their name (flags: "Tls, Integrated"); LST/IE/STK/QUE -> list; DCT -> dict
- strings stay strings, even when they look like a size ("36 MB (37,748,736 bytes)"):
  typed conversion is for where the schema is known (bridge.sizes, from frames); objects
  whose type names say ByteQuantifiedSize -> int bytes, Unlimited`1 -> None when
  unlimited, else its value; MultiValuedProperty -> list; other nested Exchange objects
  (ADObjectId, SmtpAddress...) -> their ToString, as the Exchange endpoint sends them on
  the wire; other nested objects -> dict of properties
- ``_xHHHH_`` escapes are decoded; an unpaired surrogate (``_xD83C_``) is kept as the
  escape text, since no writer (UTF-8) can hold a lone surrogate
- dates keep their zone; a date without a zone is taken as UTC; dates and durations are
  truncated to the microsecond; ``<D>`` is an exact decimal.Decimal; ``<C>`` a
  one-character string
- SecureString is never decrypted: the value is :data:`SECURE_STRING`
- records of the error/warning/verbose/debug/information/progress streams are not
  rows: :func:`read_streams` returns them; any other stream name is output
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterator

import pandas as pd
from lxml import etree

from bridge.clixml._columnar import read_part
from bridge.clixml._convert import OBJ_TAGS, STREAMS, Converter, Record, Reread, Walk
from bridge.clixml._document import (
    NO_DTD,
    PARSER_OPTIONS,
    Document,
    Input,
    Source,
    located,
    where,
)
from bridge.clixml._export import read_export
from bridge.clixml._frames import records_to_frame
from bridge.clixml._scan import scan_records, usable
from bridge.clixml._values import (
    NS,
    SECURE_STRING,
    parse_datetime,
    parse_duration,
    plain_string,
)
from bridge.sizes import size_bytes

__all__ = [
    "SECURE_STRING",
    "STREAMS",
    "Record",
    "Source",
    "error_fields",
    "iter_records",
    "parse_datetime",
    "parse_duration",
    "parse_element",
    "parse_error_record",
    "read_clixml",
    "read_export",
    "read_streams",
    "records_to_frame",
    "size_bytes",
]


def iter_records(
    source: Source, *, structured: bool = False, columns: Collection[str] | None = None
) -> Iterator[Record]:
    """Yield one plain record per top-level output object of a CLIXML source.

    ``source`` is a path, bytes, CLIXML text (a str starting with ``<`` or ``#<``) or a
    binary file. ``structured=True`` keeps nested Exchange objects (ADObjectId, sizes)
    as dicts of their properties instead of their ToString / byte count. ``columns``
    (names, any case) keeps only those top-level properties: the others are skipped
    unconverted, which is faster. A projected read raises :class:`Reread` (internal)
    in the rare file where a kept value refers to a skipped object;
    :func:`read_clixml` then reads the file whole.
    """
    for stream, record in Document(source, structured=structured, columns=columns).items():
        if stream is None:
            yield record


def read_streams(source: Source) -> dict[str, list[Record]]:
    """The error/warning/verbose/debug/information/progress records, by stream name.

    A record from an ``<Obj>`` is its properties (error records as by
    :func:`parse_error_record`); a record from a string (``<S S="warning">``) is
    ``{"Message": text}``.
    """
    streams: dict[str, list[Record]] = {name: [] for name in STREAMS}
    for stream, record in Document(source).items():
        if stream is not None:
            if set(record) == {"Value"}:
                record = {"Message": record["Value"]}
            elif stream == "error":
                record = error_fields(record)
            streams.setdefault(stream, []).append(record)
    return streams


def _single_root(xml: bytes | str) -> tuple[etree._Element, Input]:
    data = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    source = Input(data, name="<element>")
    if b"<!DOCTYPE" in data[:4096]:
        raise located(source.name, NO_DTD, None, None)
    try:
        return etree.fromstring(data, etree.XMLParser(**PARSER_OPTIONS)), source
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        message = str(exc.msg or exc).split(", line ")[0]
        raise located(source.name, f"malformed XML: {message}", line, column) from exc


def parse_element(xml: bytes | str) -> Record:
    """One standalone serialized element (a PSRP message payload) -> its record.

    RefIds are scoped to the element, as in PSRP. The record is exactly what
    :func:`iter_records` gives for the same element at the top level of a file.
    """
    element, source = _single_root(xml)
    try:
        return Converter().top_level(element)[1]
    except Walk as exc:
        raise located(source.name, exc.message, *where(source, exc)) from None


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
    converter = Converter()
    try:
        value, record, _ = converter.obj(element) if element.tag in OBJ_TAGS else (None, None, 0)
    except Walk as exc:
        raise located(source.name, exc.message, *where(source, exc)) from None
    fields = error_fields(record or {})
    if fields["Message"] is None:
        text = element.findtext("ToString") or element.findtext(NS + "ToString")
        fields["Message"] = plain_string(text) if text is not None else value
    return fields


def _read_columnar(source: Source, converter: Converter) -> pd.DataFrame | None:
    """An indented Export-Clixml file of Exchange's objects read by the columnar reader
    (``converter.wanted``'s member lines, or every one); None for another source, or a
    file that reader is not sure of."""
    if hasattr(source, "read"):
        return None
    given = Input(source)
    if given.path is None:
        return None
    try:
        return read_part(given.path, converter)
    except (Reread, OSError, UnicodeDecodeError):
        return None


def read_clixml(
    source: Source, *, structured: bool = False, columns: Collection[str] | None = None
) -> pd.DataFrame:
    """Read a CLIXML file (or bytes, text, binary file) into a DataFrame, one row per object.

    ``columns`` (names, any case) reads only those properties, skipping the rest
    unconverted; the frame has the ones the file holds, in the file's order.
    """
    if columns is None:
        if not structured:
            frame = _read_columnar(source, Converter())
            if frame is not None:
                return frame
        return records_to_frame(iter_records(source, structured=structured))
    converter = Converter(structured=structured, columns=columns)
    if not hasattr(source, "read") and converter.wanted is not None and usable(converter.wanted):
        frame = _read_columnar(source, converter)
        if frame is not None:
            return frame
        converter = Converter(structured=structured, columns=columns)  # nothing half-read
        try:  # the regular-expression scan: only the wanted members, no tree
            return records_to_frame(scan_records(Input(source), converter))
        except Reread:
            pass  # something it does not read: lxml reads the file
    stream = source if hasattr(source, "read") else None
    start = stream.tell() if isinstance(stream, io.IOBase) and stream.seekable() else None
    try:
        return records_to_frame(iter_records(source, structured=structured, columns=columns))
    except Reread:
        if stream is not None and start is None:
            raise  # a stream that cannot be read again
    # a kept value refers to an object the projection skipped: read it all, then project
    if isinstance(stream, io.IOBase) and start is not None:
        stream.seek(start)
    frame = records_to_frame(iter_records(source, structured=structured))
    wanted = {name.casefold() for name in columns}
    return frame[[name for name in frame.columns if str(name).casefold() in wanted]]
