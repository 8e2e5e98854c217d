"""What a collection run has fetched so far, saved as it arrives so it can resume.

A run folder holds one SQLite file (WAL). Each finished unit of work (one command for
the bulk strategy, one mailbox for per-mailbox) is saved in ONE transaction together
with its "done" mark, so a Ctrl+C or crash loses at most the units in flight, and a
resumed run neither re-queries a finished unit nor duplicates its rows.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from bridge.errors import ConfigError, InputError
from bridge.paths import fitting_name, run_folder_elsewhere, sqlite_fits

Row = dict[str, object]

CHECKPOINT_FILE = "checkpoint.sqlite"
LOCK_FILE = "psbridge.lock"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (
    phase TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (phase, key)
);
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY, phase TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY, phase TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_phase ON rows (phase, key);
"""


RUN_FOLDER_SUFFIX = ".psbridge-run"


def default_run_dir(output: Path | str) -> Path:
    """The run folder beside an output: ``report.xlsx`` -> ``report.xlsx.psbridge-run``.

    An output name near the file system's 255-byte limit gets a shortened name (with a
    digest, so it stays unique); an output so deep that SQLite could not open the
    checkpoint there gets its run folder under psbridge's data folder instead, named
    after the output's absolute path so ``--resume`` finds it.
    """
    path = Path(output)
    folder = path.with_name(fitting_name(path.name, RUN_FOLDER_SUFFIX))
    if not sqlite_fits(folder / CHECKPOINT_FILE):
        return run_folder_elsewhere(path, RUN_FOLDER_SUFFIX)
    return folder


# ---- row encoding: JSON, with the few non-JSON plain values tagged ("$dt", ...)

_TAGS = ("$dt", "$d", "$td", "$b", "$dec", "$uuid", "$dict")


def _encode(value: object) -> object:
    if isinstance(value, dict):
        items = {str(k): _encode(v) for k, v in value.items()}
        # a real dict that looks like a tag is wrapped so it reads back as itself
        if len(items) == 1 and next(iter(items)) in _TAGS:
            # as pairs: json's object_hook runs inside out, so an inner dict would be
            # read as a tag before the wrapper is seen
            return {"$dict": [[k, v] for k, v in items.items()]}
        return items
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, UUID):
        return {"$uuid": str(value)}
    return value


def _decode_object(obj: dict[str, object]) -> object:
    if len(obj) != 1:
        return obj
    tag, payload = next(iter(obj.items()))
    if tag == "$dt":
        return datetime.fromisoformat(str(payload))
    if tag == "$d":
        return date.fromisoformat(str(payload))
    if tag == "$td" and isinstance(payload, list):
        return timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])
    if tag == "$b":
        return base64.b64decode(str(payload))
    if tag == "$dec":
        return Decimal(str(payload))
    if tag == "$uuid":
        return UUID(str(payload))
    if tag == "$dict" and isinstance(payload, list):
        return {str(pair[0]): pair[1] for pair in payload}
    return obj


def encode_row(row: Mapping[str, object]) -> str:
    return json.dumps(_encode(dict(row)), ensure_ascii=False, separators=(",", ":"))


def decode_row(text: str) -> Row:
    value = json.loads(text, object_hook=_decode_object)
    if not isinstance(value, dict):
        raise InputError("a checkpoint row is not an object")
    return value


# ---- the run folder's lock: one run at a time

#: where the lock sits: a byte past any content, so the holder's PID stays readable
#: (Windows refuses reads of a locked range)
_LOCK_OFFSET = 1 << 16


class RunFolderLock:
    """An exclusive lock on a run folder for the life of a run.

    A byte-range lock on ``psbridge.lock`` (``flock`` on POSIX, ``msvcrt.locking`` on
    Windows): the operating system drops it when the process ends, however it ends, so
    a crashed run never leaves a stale lock. The file holds the holder's PID and host for
    the message a second run gets; it is left in place when the run keeps its progress.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot use the run folder {self.path.parent}: {_os_reason(exc)}"
            ) from exc
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                f"cannot lock the run folder {self.path.parent}: {_os_reason(exc)}"
            ) from exc
        if not locked:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(
                f"another psbridge run is using {self.path.parent}{holder}; "
                "wait for it to finish"
            )
        with contextlib.suppress(OSError):  # the PID is for messages only
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def __del__(self) -> None:
        # a store dropped without close() (a library caller's slip) frees the folder as
        # a dropped file object frees its handle
        self.release()

    def release(self, *, remove: bool = False) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove and sys.platform != "win32":
            # POSIX: unlink while still locked, so no other run can lock the old file
            # just before it disappears
            with contextlib.suppress(OSError):
                self.path.unlink()
        _unlock(fd)
        os.close(fd)
        if remove and sys.platform == "win32":
            with contextlib.suppress(OSError):  # another run may have it open: it stays
                self.path.unlink()


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting; False when another process (or open file) holds it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):  # closing the file drops the lock anyway
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    """`` (pid N)`` or `` (pid N on HOST)`` from the lock file, or "" when unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").split()
    except OSError:
        return ""
    if not text or not text[0].isdigit():
        return ""
    host = text[1] if len(text) > 1 else ""
    if host and host != socket.gethostname():
        return f" (pid {text[0]} on {host})"
    return f" (pid {text[0]})"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _make_folder(path: Path) -> None:
    """Create the run folder, or one clear ConfigError line saying why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # the name is taken by a file
        raise ConfigError(
            f"cannot create the run folder {path}: a file of that name is in the way "
            "(give another --run-dir or output name)"
        ) from exc
    except OSError as exc:
        # POSIX says "Not a directory", Windows "cannot find the path": name the file
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is None:
            raise ConfigError(f"cannot create the run folder {path}: {_os_reason(exc)}") from exc
        raise ConfigError(
            f"cannot create the run folder {path}: {blocker} is a file, not a folder (give "
            "another --run-dir or output path)"
        ) from exc


class Checkpoint:
    """A run folder's store. Open with :meth:`open`; write from one thread.

    It holds the folder's lock until :meth:`close` or :meth:`discard`: a second run of
    the same command meanwhile gets a ConfigError instead of sharing the store."""

    def __init__(
        self, folder: Path, connection: sqlite3.Connection, resumed: bool,
        lock: RunFolderLock | None = None,
    ) -> None:  # fmt: skip
        self.folder = folder
        self.resumed = resumed
        self._db = connection
        self._lock = lock

    @classmethod
    def open(cls, folder: Path | str, run_key: Mapping[str, object], *, resume: bool) -> Checkpoint:
        """Start a run in ``folder``, or continue the one saved there when ``resume``.

        ``run_key`` describes what is collected (server, strategy, filters): a saved run
        is only resumed with the same key, since mixing two runs' rows would be wrong.
        Without ``resume`` an existing saved run is an error (rather than silently lost).
        """
        path = Path(folder)
        file = path / CHECKPOINT_FILE
        key_text = json.dumps(_encode(dict(run_key)), sort_keys=True)
        created = not path.exists()
        _make_folder(path)
        lock = RunFolderLock(path)
        try:
            lock.acquire()
        except ConfigError:
            if created:  # leave no empty folder behind
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        try:
            return cls._open_locked(path, file, key_text, lock, resume=resume)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls, path: Path, file: Path, key_text: str, lock: RunFolderLock, *, resume: bool
    ) -> Checkpoint:
        if file.exists() and not resume:
            raise ConfigError(
                f"an interrupted run is saved in {path}: add --resume to continue it, "
                "or delete that folder to start over"
            )
        try:
            db = sqlite3.connect(file, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed unit survives a crash of the process
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot use the run folder {path}: {exc}") from exc
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta:
            if meta.get("schema") != SCHEMA_VERSION or meta.get("run_key") != key_text:
                db.close()
                raise ConfigError(
                    f"the run saved in {path} was started with other settings "
                    f"({meta.get('run_key', '?')}); it cannot be resumed with these. "
                    "Use the same options, or delete the folder to start over"
                )
        else:
            with db:
                db.execute("BEGIN")
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.execute("INSERT INTO meta VALUES ('run_key', ?)", (key_text,))
        return cls(path, db, resumed=bool(meta), lock=lock)

    # ---- reading

    def is_done(self, phase: str, key: str = "") -> bool:
        found = self._db.execute(
            "SELECT 1 FROM done WHERE phase = ? AND key = ?", (phase, key)
        ).fetchone()
        return found is not None

    def has_progress(self) -> bool:
        """Whether any unit has been saved (so there is something to resume)."""
        return self._db.execute("SELECT 1 FROM done LIMIT 1").fetchone() is not None

    def done_keys(self, phase: str) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM done WHERE phase = ?", (phase,))}

    def rows(self, phase: str) -> dict[str, list[Row]]:
        """Saved rows of ``phase`` by unit key, in the order they were saved."""
        found: dict[str, list[Row]] = {}
        for key, text in self._db.execute(
            "SELECT key, row FROM rows WHERE phase = ? ORDER BY id", (phase,)
        ):
            found.setdefault(key, []).append(decode_row(text))
        return found

    def errors(self) -> list[Row]:
        return [
            decode_row(text) for (text,) in self._db.execute("SELECT row FROM errors ORDER BY id")
        ]

    # ---- writing

    def save(self, phase: str, key: str, rows: Iterable[Row], errors: Iterable[Row] = ()) -> None:
        """Save one finished unit and mark it done, all or nothing."""
        encoded_rows = [(phase, key, encode_row(row)) for row in rows]
        encoded_errors = [(phase, key, encode_row(row)) for row in errors]
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                # the primary key refuses a second "done": its rows roll back with it
                self._db.execute("INSERT INTO done VALUES (?, ?)", (phase, key))
                self._db.executemany(
                    "INSERT INTO rows (phase, key, row) VALUES (?, ?, ?)", encoded_rows
                )
                self._db.executemany(
                    "INSERT INTO errors (phase, key, row) VALUES (?, ?, ?)", encoded_errors
                )
        except sqlite3.IntegrityError as exc:
            raise InputError(f"checkpoint: {phase} {key!r} was already saved") from exc
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot save progress in {self.folder}: {exc}") from exc

    def close(self) -> None:
        """Close the store and release the run folder (its saved progress stays)."""
        self._db.close()
        if self._lock is not None:
            self._lock.release()

    def discard(self) -> None:
        """Delete the run's files once its results are safely written elsewhere, and the
        folder when nothing else is in it (``--run-dir`` may name a folder in use)."""
        self._db.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.folder / (CHECKPOINT_FILE + suffix)).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release(remove=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty
