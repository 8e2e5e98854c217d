"""Writing output files safely: atomic replace, and frames to CSV, Parquet or JSON.

Every writer in psbridge goes through :func:`atomic_write`, so a failed run (a workbook
open in Excel, a full disk, Ctrl+C) never leaves a half-written file and never destroys
the previous output.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import pandas as pd

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

from bridge.errors import OutputError
from bridge.paths import fitting_name

#: Output formats :func:`write_frame` can write, by file extension.
FRAME_FORMATS = (".csv", ".parquet", ".json")


def _output_error(path: Path, exc: OSError) -> OutputError:
    """One clear message for the ways writing a file fails in practice."""
    if isinstance(exc, PermissionError):
        return OutputError(
            f"cannot write {path}: permission denied. "
            "If the file is open in Excel, close it and run again."
        )
    if exc.errno == errno.ENOSPC:
        return OutputError(f"cannot write {path}: the disk is full. Free some space and run again.")
    reason = exc.strerror or exc.__class__.__name__
    return OutputError(f"cannot write {path}: {reason}.")


def _final_mode(target: Path) -> int:
    """The replaced file's mode, else what open() would give under the current umask."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _refuse_read_only(target: Path) -> None:
    """A file the user made read-only is one they meant to keep: say so, as Excel does,
    instead of replacing it (a rename over it would succeed, and as root or an
    administrator even writing into it would)."""
    try:
        mode = target.stat().st_mode
    except OSError:
        return  # no such file (or one we cannot inspect: the write will say why)
    if stat.S_ISREG(mode) and not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise OutputError(
            f"cannot write {target}: the file is read-only. Make it writable to replace it, "
            "or write another file with -o."
        )


def check_writable(path: Path | str) -> None:
    """Raise OutputError now, before minutes of collecting, when ``path`` cannot be
    written as :func:`atomic_write` would (no folder, a folder in the way, read-only)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputError(f"cannot write {target}: folder {target.parent} does not exist.")
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder.")
    _refuse_read_only(target)


@contextmanager
def atomic_write(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary file lives in the same folder so the final rename is atomic. On any
    failure (including KeyboardInterrupt) it is removed and ``path`` is left as it was.
    PermissionError (a workbook open in Excel) and ENOSPC become :class:`OutputError`.
    """
    target = Path(path)
    folder = target.parent
    check_writable(target)
    try:
        # mkstemp adds 8 random characters: the name must leave room for them
        prefix = fitting_name(f".{target.stem}", ".", reserve=8 + len(f".tmp{target.suffix}"))
        handle, temp_name = tempfile.mkstemp(
            prefix=prefix, suffix=f".tmp{target.suffix}", dir=folder
        )
    except OSError as exc:
        raise _output_error(target, exc) from exc
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        try:
            yield temp_path
            # mkstemp makes the file private (0600); a report is an ordinary file, so give
            # it the mode a plain open() would, or keep the mode of the file it replaces.
            os.chmod(temp_path, _final_mode(target))
            os.replace(temp_path, target)
        except OSError as exc:
            raise _output_error(target, exc) from exc
    finally:
        if temp_path.exists():
            temp_path.unlink()


class _FailOnce(io.RawIOBase):
    """A binary file that, once a write or flush has failed, ignores everything after.

    A zip writer (openpyxl's save) that fails on a full disk leaves its ZipFile open; the
    garbage collector then closes it, which writes again, fails again, and prints
    "Exception ignored in: ZipFile.__del__" with a traceback after psbridge's one-line
    error. The first failure is raised as usual; the writes after it go nowhere (the
    temporary file is deleted anyway).
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._failed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return 0 if self._failed else self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return 0 if self._failed else self._raw.seek(offset, whence)

    def write(self, data: ReadableBuffer) -> int:
        size = len(memoryview(data))
        if self._failed:
            return size
        try:
            return self._raw.write(data)
        except OSError:
            self._failed = True
            raise

    def flush(self) -> None:
        if not self._failed and not self._raw.closed:
            try:
                self._raw.flush()
            except OSError:
                self._failed = True
                raise

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._failed:
                self._raw.close()
        finally:
            with contextlib.suppress(OSError):
                self._raw.close()
            super().close()


@contextmanager
def open_for_writer(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for a library that writes a file itself (a zip package), such
    that a failure mid-way (a full disk) is raised once and never again from a
    garbage-collected writer."""
    guarded = _FailOnce(path.open("wb"))
    try:
        yield cast(BinaryIO, guarded)
    finally:
        guarded.close()


def _json_default(value: object) -> object:
    """JSON for the plain values clixml produces that json cannot write itself."""
    if value is pd.NaT:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta | pd.Timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _cell_text(value: object) -> object:
    """Lists and dicts as JSON text: CSV and Parquet cells hold one scalar."""
    if isinstance(value, list | dict):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex()
    return value


#: A cell starting with one of these is run as a formula by Excel, LibreOffice and Google
#: Sheets when a CSV is opened (OWASP "CSV injection"): = + - @, and tab and carriage
#: return, which some spreadsheet tools strip before looking.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: object) -> object:
    """A text value a spreadsheet would run as a formula, made literal with a leading ``'``
    (what spreadsheet tools expect: Excel shows the text without the quote). Numbers are
    numbers, not text, so a negative number is never touched."""
    if isinstance(value, str) and value.startswith(_FORMULA_TRIGGERS):
        return "'" + value
    return value


def _scalar_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose object columns hold one scalar type each (Parquet needs that)."""
    columns: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            column = column.map(_cell_text)
            kinds = {type(v) for v in column if v is not None and v is not pd.NaT}
            if len(kinds) > 1:
                column = column.map(lambda v: None if v is None else str(v))
        columns[str(name)] = column
    return pd.DataFrame(columns, index=frame.index)


def write_frame(path: Path | str, frame: pd.DataFrame) -> None:
    """Write ``frame`` to .csv (UTF-8 with BOM, for Excel), .parquet or .json, atomically.

    In CSV a text value starting with ``= + - @``, tab or CR gets a leading ``'`` so no
    spreadsheet runs it as a formula; Parquet and JSON keep every value as it was.

    Lists and dicts go to CSV/Parquet as JSON text; JSON output keeps them as arrays and
    objects. Datetimes are written in ISO 8601 with their zone.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FRAME_FORMATS:
        raise OutputError(
            f"cannot write {target}: unknown output type '{target.suffix}'; "
            "use .xlsx, .csv, .parquet or .json."
        )
    with atomic_write(target) as temp_path:
        if suffix == ".csv":
            scalar = _scalar_frame(frame)
            for name in scalar.columns:
                if scalar[name].dtype == object or pd.api.types.is_string_dtype(scalar[name]):
                    scalar[name] = scalar[name].map(_csv_text)
            # CRLF, as RFC 4180 and Excel write it; it also makes the csv module quote a
            # value holding a bare CR, which would otherwise split its row in two
            scalar.to_csv(temp_path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
        elif suffix == ".parquet":
            try:
                _scalar_frame(frame).to_parquet(temp_path, index=False)
            except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError
                raise OutputError(f"cannot write {target} as Parquet: {exc}") from exc
        else:
            records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
            with temp_path.open("w", encoding="utf-8") as stream:
                json.dump(records, stream, default=_json_default, ensure_ascii=False, indent=1)
                stream.write("\n")
