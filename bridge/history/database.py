"""The history database file: opening it in WAL mode, migrating its schema, write
transactions, and sqlite3's failures as HistoryError (_Database, History's base)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from bridge.errors import HistoryError
from bridge.history.schema import _MIGRATIONS, SCHEMA_VERSION

#: Default seconds a run waits for another run holding the write lock.
DEFAULT_TIMEOUT = 15.0

class _Database:
    """The connection and schema part of :class:`History`; every method may raise HistoryError."""

    def __init__(self, path: Path | str, *, timeout: float = DEFAULT_TIMEOUT,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.timeout = timeout
        #: False for commands that only read or tidy a history (list, show, prune, diff):
        #: they must not turn a file that is not one (an empty file, a typo) into one
        self.create = create
        self._connection: sqlite3.Connection | None = None

    # -- connection and schema ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Open (creating if needed and allowed) and bring the schema up to date."""
        if not self.create:
            self._check_existing()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"cannot create the folder for history {self.path}: "
                               f"{exc.strerror or exc}.") from exc
        with self._errors():
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._connection = connection
            connection.execute("PRAGMA foreign_keys = ON")
            self._use_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")
            self._migrate(connection)

    def _check_existing(self) -> None:
        """Refuse an empty file: SQLite would make it a new, empty history. (A file that
        is not a database at all SQLite refuses by itself, writing nothing.)"""
        try:
            empty = self.path.stat().st_size == 0
        except FileNotFoundError as exc:
            raise HistoryError(f"there is no history at {self.path}.") from exc
        except OSError as exc:
            raise HistoryError(f"cannot read history {self.path}: "
                               f"{exc.strerror or exc}.") from exc
        if empty:
            raise HistoryError(f"{self.path} is an empty file, not a psbridge history; give "
                               "the file psbridge records to (see --history in --help).")

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Switch a new file to WAL; another run may be switching it at the same moment."""
        deadline = time.monotonic() + self.timeout
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        while mode != "wal":
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                mode = ""
            if mode != "wal":
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked")
                time.sleep(0.05)
                mode = connection.execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def schema_version(self) -> int:
        with self._errors():
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.open()
        assert self._connection is not None
        return self._connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history {self.path} was written by a newer psbridge (schema {version}, this "
                f"one knows {SCHEMA_VERSION}); upgrade psbridge or use --history PATH."
            )
        if version == SCHEMA_VERSION:
            return
        with self._transaction(connection):
            # re-read under the write lock: another run may have migrated meanwhile
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    if callable(statement):
                        statement(connection)
                    else:
                        connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection | None = None) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT: takes the write lock up front, so runs never interleave."""
        db = connection or self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3's exceptions as one HistoryError that says what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise HistoryError(
                    f"history {self.path} is locked by another program (another psbridge run?) "
                    f"and stayed locked for {self.timeout:g} s; run again later or use "
                    "--history PATH / --no-history."
                ) from exc
            raise HistoryError(f"cannot use history {self.path}: {text}.") from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed image, ...
            raise HistoryError(
                f"history {self.path} is damaged ({exc}); move it away (a new one is created) "
                "or use --history PATH / --no-history."
            ) from exc
        except (sqlite3.Error, OverflowError) as exc:
            # a value SQLite cannot store (a number past 64 bits), a misuse: whatever it
            # is, the caller warns and the report is still written
            raise HistoryError(f"cannot use history {self.path}: {exc}.") from exc
