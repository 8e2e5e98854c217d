"""What a collection run has fetched so far, saved as it arrives so it can resume.

A run folder holds one SQLite file (WAL). Each finished unit of work (one command for
the bulk strategy, one mailbox for per-mailbox) is saved in ONE transaction together
with its "done" mark, so a Ctrl+C or crash loses at most the units in flight, and a
resumed run neither re-queries a finished unit nor duplicates its rows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from bridge.errors import ConfigError, InputError

Row = dict[str, object]

CHECKPOINT_FILE = "checkpoint.sqlite"
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


def default_run_dir(output: Path | str) -> Path:
    """The run folder beside an output: ``report.xlsx`` -> ``report.xlsx.psbridge-run``."""
    path = Path(output)
    return path.with_name(path.name + ".psbridge-run")


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


class Checkpoint:
    """A run folder's store. Open with :meth:`open`; write from one thread."""

    def __init__(self, folder: Path, connection: sqlite3.Connection, resumed: bool) -> None:
        self.folder = folder
        self.resumed = resumed
        self._db = connection

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
        existed = file.exists()
        if existed and not resume:
            raise ConfigError(
                f"an interrupted run is saved in {path}: add --resume to continue it, "
                "or delete that folder to start over"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
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
        return cls(path, db, resumed=bool(meta))

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
        self._db.close()

    def discard(self) -> None:
        """Delete the run's files once its results are safely written elsewhere, and the
        folder when nothing else is in it (``--run-dir`` may name a folder in use)."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.folder / (CHECKPOINT_FILE + suffix)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty
