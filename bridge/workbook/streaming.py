"""Fast row streaming: the only module that relies on XlsxWriter's internals.

XlsxWriter (constant-memory mode) writes a workbook's structure: sheets, header rows,
formats, tables. The table sheets' data rows are rendered here as SpreadsheetML
(_SheetRows, _HistoryRows) and spliced into the closed package (_stream_rows_into), and
each table's range is widened in XlsxWriter's private state to cover them
(_add_streamed_table). Callers use one function, :func:`streamed_workbook`, around the
whole write, and the :class:`StreamedBook` it yields; tests/test_workbook_streaming.py
fails, naming the XlsxWriter version and the attribute, when a release changes what this
relies on
(pyproject caps XlsxWriter below the next minor release for the same reason).
"""

from __future__ import annotations

import queue
import re
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import IO, Any

import pandas as pd
import xlsxwriter
import xlsxwriter.exceptions
from xlsxwriter.utility import xl_col_to_name, xl_range

from bridge.errors import OutputError
from bridge.frames import NEVER
from bridge.output import _output_error, atomic_write
from bridge.workbook.cells import _ILLEGAL_TEXT, MAX_CELL_TEXT, _kind, _serials, _text
from bridge.workbook.styles import _REPORT_TABLE_STYLE

_ROWS_PER_CHUNK = 5_000
#: zlib's level for the streamed rows: level 6 (zipfile's default) took longer than
#: rendering them; 3 compresses twice as fast, the file 16% larger (123,000 devices:
#: 18.2 MB -> 21.1 MB, 2.6 s -> 1.2 s of compressing)
_ROWS_LEVEL = 3
_EXCEL_ESCAPE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")  # Excel reads "_x0041_" as "A"
_DIMENSION = re.compile(r'<dimension ref="[^"]*"/>')
# column-wise rendering pays per chunk, not per cell: larger chunks than _SheetRows'
_HISTORY_ROWS_PER_CHUNK = 50_000


def _add_streamed_table(
    sheet: Any,
    rows: int,
    headers: Sequence[str],
    name: str,
    formats: Sequence[Any],
    header_format: Any = None,
    *,
    first_row: int = 0,
) -> None:
    """An Excel table (banded, autofilter) over the header row (``first_row``) and ``rows``
    rows below it.

    XlsxWriter refuses add_table in constant-memory mode (it would write cells out of
    order) and records every cell of a table's range in a dict (hundreds of MB for
    100,000 rows). So: add it over the header and one row while the sheet is still
    empty, with the mode briefly off, then widen its range.
    tests/test_workbook_streaming.py checks the XlsxWriter internals this relies on.
    """
    last_col = len(headers) - 1
    columns = [
        {"header": header, "format": cell_format}
        for header, cell_format in zip(headers, formats, strict=True)
    ]
    options = {
        "columns": columns,
        "name": name,
        "style": _REPORT_TABLE_STYLE,
        "autofilter": True,
        "banded_rows": True,
    }
    memory = sheet.constant_memory
    sheet.constant_memory = False
    try:
        sheet.add_table(first_row, 0, first_row + 1, last_col, options)
    finally:
        sheet.constant_memory = memory
    # as in-line strings, as constant memory writes them; the explicit header format
    # shows the header in viewers that ignore table styles (LibreOffice)
    for col, header in enumerate(headers):
        sheet.write_string(first_row, col, _text(header), header_format)
    table = sheet.tables[-1]
    full = xl_range(first_row, 0, first_row + max(1, rows), last_col)
    table["range"] = table["a_range"] = table["autofilter"] = full


def _sheet_part(sheet: Any) -> str:
    """The name of ``sheet``'s XML part in the package, the key of its rows in ``streams``."""
    # XlsxWriter names worksheet parts sheet1.xml, sheet2.xml, ... in order
    return f"xl/worksheets/sheet{sheet.index + 1}.xml"


def _xf_index(cell_format: Any) -> int:
    """The index of ``cell_format`` in the package's styles: the ``s="..."`` of a cell."""
    index: int = cell_format._get_xf_index()
    return index


_INLINE = ' t="inlineStr"><is><t>'
_INLINE_SPACED = ' t="inlineStr"><is><t xml:space="preserve">'


def _inline_string(value: object, style: str = "") -> str:
    """The rest of a ``<c r="..."`` element holding ``value`` as an in-line string."""
    text = _text(str(value))
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "_x" in escaped:
        escaped = _EXCEL_ESCAPE.sub(r"_x005F_\1", escaped)
    opening = _INLINE if text == text.strip() else _INLINE_SPACED
    return f"{style}{opening}{escaped}</t></is></c>"


def _inline_strings(values: Iterable[object]) -> list[str]:
    """:func:`_inline_string` of each value; checked at once in the common case, text
    with nothing to escape, remove or cut (a third of the time for a Devices sheet)."""
    texts = [value if type(value) is str else str(value) for value in values]
    joined = "\n".join(texts)
    if ("&" in joined or "<" in joined or ">" in joined or "_x" in joined
            or _ILLEGAL_TEXT.search(joined)
            or (len(joined) > MAX_CELL_TEXT and max(map(len, texts)) > MAX_CELL_TEXT)):
        return [_inline_string(text) for text in texts]
    return [(_INLINE if text == text.strip() else _INLINE_SPACED) + text + "</t></is></c>"
            for text in texts]


class _SheetRows:
    """A table sheet's data rows as SpreadsheetML, made chunk by chunk.

    Formatting XlsxWriter's way costs about 10 microseconds a cell (every string escaped
    and checked one by one); here each distinct value of a chunk is rendered once and
    rows are joined from those pieces, so 100,000 devices stream in seconds with only
    one chunk in memory. The XML is what XlsxWriter writes in constant-memory mode.
    """

    def __init__(self, frame: pd.DataFrame, kinds: Sequence[str], never_col: int,
                 date_xf: int, never_xf: int) -> None:
        self.frame = frame
        self.kinds = list(kinds)
        self.never_col = never_col
        self.date_style = f' s="{date_xf}"'
        self.never = _inline_string(NEVER, f' s="{never_xf}"')
        self.letters = [xl_col_to_name(index) for index in range(frame.shape[1])]

    def dimension(self) -> str:
        return f'<dimension ref="A1:{self.letters[-1]}{len(self.frame) + 1}"/>'

    def _bodies(self, column: pd.Series, kind: str, never: bool) -> list[str | None]:
        if kind == "date":
            serials = _serials(column)
            date_style = self.date_style
            missing = self.never if never else None
            return [missing if value is None else f"{date_style}><v>{value!r}</v></c>"
                    for value in serials]
        codes, uniques = pd.factorize(column.astype(object).where(column.notna(), None))
        if kind == "int":
            rendered = [f"><v>{int(value)}</v></c>" for value in uniques]
        elif kind == "number":
            rendered = [f"><v>{float(value)!r}</v></c>" for value in uniques]
        elif kind == "bool":
            rendered = [f' t="b"><v>{int(bool(value))}</v></c>' for value in uniques]
        else:
            rendered = _inline_strings(uniques)
        pieces: list[str | None] = [*rendered, None]  # code -1 (missing) -> None
        return [pieces[code] for code in codes.tolist()]

    def chunks(self) -> Iterator[str]:
        """The ``<row>`` elements from row 2 on, a chunk of rows per string."""
        frame, letters = self.frame, self.letters
        for start in range(0, len(frame), _ROWS_PER_CHUNK):
            block = frame.iloc[start:start + _ROWS_PER_CHUNK]
            bodies = [self._bodies(block.iloc[:, index], kind, index == self.never_col)
                      for index, kind in enumerate(self.kinds)]
            # a column at a time, then one join of every piece in row order
            numbers = [str(number) for number in range(start + 2, start + 2 + len(block))]
            pieces = [[f'<row r="{number}">' for number in numbers]]
            for letter, cells in zip(letters, bodies, strict=True):
                ref = '<c r="' + letter
                pieces.append([f'{ref}{number}"{body}' if body is not None else ""
                               for number, body in zip(numbers, cells, strict=True)])
            pieces.append(["</row>"] * len(numbers))
            yield "".join(chain.from_iterable(zip(*pieces, strict=True)))


def _stream_rows_into(package: Path, target: Path, streams: dict[str, _SheetRows]) -> None:
    """Copy the XlsxWriter ``package`` to ``target`` with each streamed sheet's rows added."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(
            target, "w", compression=zipfile.ZIP_DEFLATED) as result:
        for info in source.infolist():
            data = source.read(info)
            rows = streams.get(info.filename)
            if rows is None:
                result.writestr(info, data)
                continue
            head, tail = data.decode("utf-8").split("</sheetData>", 1)
            head = _DIMENSION.sub(rows.dimension(), head, count=1)
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED
            # ZipInfo.compress_level from Python 3.13, _compresslevel before
            setattr(entry, "compress_level" if hasattr(entry, "compress_level")
                    else "_compresslevel", _ROWS_LEVEL)
            with result.open(entry, "w", force_zip64=True) as stream, _Deflater(
                    stream) as write:
                write(head.encode("utf-8"))
                for chunk in rows.chunks():
                    write(chunk.encode("utf-8"))
                write(f"</sheetData>{tail}".encode())


class _Deflater:
    """Writes into a zip entry from a thread of its own: zlib compresses (and checksums)
    without holding the GIL, so the next rows are rendered on the other core meanwhile.
    A write error is raised in the caller at its next write or at the end."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.pending: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="psbridge-deflate", daemon=True)

    def _run(self) -> None:
        while (data := self.pending.get()) is not None:
            if self.error is None:
                try:
                    self.stream.write(data)
                except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                    self.error = exc

    def __enter__(self) -> Callable[[bytes], None]:
        self.thread.start()
        return self.write

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.pending.put(data)

    def __exit__(self, *exc_info: object) -> None:
        self.pending.put(None)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


@contextmanager
def _streamed_workbook(
    path: Path | str, properties: dict[str, str]
) -> Iterator[tuple[xlsxwriter.Workbook, dict[str, _SheetRows]]]:
    """An XlsxWriter book in constant-memory mode whose table rows are streamed in after.

    The caller writes the book's structure and fills the yielded ``streams`` (sheet XML
    name -> rows); on leaving, the package is closed, the rows are streamed into it and
    the result replaces ``path`` atomically. Row data waits in temporary files beside the
    output (not in a small /tmp), in a folder of their own so a failed run leaves nothing.
    """
    target = Path(path)
    with (
        atomic_write(target) as temp_path,
        tempfile.TemporaryDirectory(
            prefix=".psbridge-", dir=temp_path.parent, ignore_cleanup_errors=True
        ) as rows_dir,
    ):
        package = Path(rows_dir) / "package.xlsx"
        book = xlsxwriter.Workbook(
            str(package),
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "tmpdir": rows_dir,
            },
        )
        book.set_properties(properties)
        streams: dict[str, _SheetRows] = {}
        yield book, streams
        try:
            book.close()
        except xlsxwriter.exceptions.FileCreateError as exc:
            if exc.args and isinstance(exc.args[0], OSError):  # a full disk says so
                raise _output_error(target, exc.args[0]) from exc
            raise OutputError(f"cannot write {target}: {exc.args[0]}") from exc
        try:
            _stream_rows_into(package, temp_path, streams)
        except OSError as exc:
            raise _output_error(target, exc) from exc


class StreamedBook:
    """The XlsxWriter workbook :func:`streamed_workbook` yields: XlsxWriter's own API
    (add_worksheet, add_format, add_chart... are passed through), plus the one thing this
    module adds, :meth:`stream_table`."""

    def __init__(self, book: xlsxwriter.Workbook, streams: dict[str, _SheetRows]) -> None:
        self.book = book
        self._streams = streams

    def __getattr__(self, name: str) -> Any:
        return getattr(self.book, name)

    def stream_table(self, sheet: Any, headers: Sequence[str], name: str,
                     formats: Sequence[Any], header_format: Any = None, *, rows: int,
                     first_row: int = 0, data: _SheetRows | None = None) -> None:
        """An Excel table over the header row ``first_row`` and ``rows`` rows below it;
        ``data`` (rows rendered by :class:`_SheetRows`/:class:`_HistoryRows`) goes into the
        package after XlsxWriter closes it, else the caller writes the cells itself."""
        _add_streamed_table(sheet, rows, headers, name, formats, header_format,
                            first_row=first_row)
        if data is not None:
            self._streams[_sheet_part(sheet)] = data

    def xf_index(self, cell_format: Any) -> int:
        """The style index of ``cell_format``, as :class:`_SheetRows` needs it."""
        return _xf_index(cell_format)


@contextmanager
def streamed_workbook(path: Path | str, properties: dict[str, str]) -> Iterator[StreamedBook]:
    """The one entry point for writing a workbook with streamed tables: the other
    modules of bridge.workbook use this and :class:`StreamedBook`'s methods only."""
    with _streamed_workbook(path, properties) as (book, streams):
        yield StreamedBook(book, streams)


class _HistoryRows(_SheetRows):
    """A history table's data rows as SpreadsheetML, the same XML as _SheetRows makes, but
    starting below the sheet's heading (``first_row``: the Excel row of the first data
    row) and built column-wise with pandas string operations: a list of changes has
    mostly distinct values, which _SheetRows renders one by one."""

    def __init__(self, frame: pd.DataFrame, first_row: int, date_xf: int) -> None:
        super().__init__(frame, [_kind(frame[name]) for name in frame.columns], -1, date_xf,
                         date_xf)
        self.first_row = first_row

    def dimension(self) -> str:
        return f'<dimension ref="A1:{self.letters[-1]}{self.first_row + len(self.frame) - 1}"/>'

    def _column_xml(self, column: pd.Series, kind: str, refs: pd.Series) -> pd.Series:
        """Each cell's ``<c>`` element, "" where the value is missing."""
        if kind == "date":
            serials = pd.Series(_serials(column), index=column.index, dtype="Float64")
            body = self.date_style + "><v>" + serials.astype("string") + "</v></c>"
        elif kind in ("int", "number"):
            values = column.astype("Int64" if kind == "int" else "Float64")
            body = "><v>" + values.astype("string") + "</v></c>"
        elif kind == "bool":
            flags = column.astype("boolean").map({True: "1", False: "0"}).astype("string")
            body = ' t="b"><v>' + flags + "</v></c>"
        else:
            text = column.astype("string").str.replace(_ILLEGAL_TEXT.pattern, "", regex=True)
            text = text.str.slice(0, MAX_CELL_TEXT)
            escaped = (text.str.replace("&", "&amp;", regex=False)
                       .str.replace("<", "&lt;", regex=False)
                       .str.replace(">", "&gt;", regex=False)
                       .str.replace(_EXCEL_ESCAPE.pattern, r"_x005F_\1", regex=True))
            space = (text != text.str.strip()).map(
                {True: ' xml:space="preserve"', False: ""}).astype("string")
            body = ' t="inlineStr"><is><t' + space + ">" + escaped + "</t></is></c>"
        return ("<c r=" + refs + body).fillna("")

    def chunks(self) -> Iterator[str]:
        frame = self.frame
        for start in range(0, len(frame), _HISTORY_ROWS_PER_CHUNK):
            block = frame.iloc[start:start + _HISTORY_ROWS_PER_CHUNK].reset_index(drop=True)
            first = self.first_row + start
            numbers = pd.Series([str(n) for n in range(first, first + len(block))],
                                dtype="string")
            rows = '<row r="' + numbers + '">'
            for index, (letter, kind) in enumerate(zip(self.letters, self.kinds, strict=True)):
                refs = '"' + letter + numbers + '"'
                rows = rows + self._column_xml(block.iloc[:, index], kind, refs)
            yield "".join((rows + "</row>").tolist())
