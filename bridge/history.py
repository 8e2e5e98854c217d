"""Past runs, what changed since the last one, and the trend: a local SQLite history.

Every ``psbridge mobile`` run records its devices here (one transaction), so the next
run can say which partnerships are new or gone, which switched protocol, went stale or
upgraded their OS, and how the counts move over time. Several organisations can share
one file: runs are keyed by organisation (or server when no organisation is known).

Storage: a ``runs`` row and per-run counts (SyncProtocol, Platform) in SQL, and the run's
devices as one Arrow IPC blob (zstd) in ``run_devices``. Writing 100,000 devices as one
blob and comparing two runs with Arrow's hash kernels takes a fraction of a second,
where row-by-row SQL took seconds (benchmarks/history.py). This is the only module that
imports pyarrow.

A device partnership keeps its identity across runs through its mailbox (ExchangeGuid,
else the mailbox's identity) plus DeviceType and DeviceId, never the display name.

Concurrency: the database runs in WAL mode and each run is written in one
``BEGIN IMMEDIATE`` transaction, so two runs at once queue behind each other (up to
``timeout`` seconds) instead of interleaving. Every sqlite3 failure becomes a
:class:`~bridge.errors.HistoryError` that says what to do; the CLI turns it into a warning
and still writes the report.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from bridge import eas
from bridge.errors import HistoryError

if TYPE_CHECKING:
    from bridge.frames import Report

#: The schema version this psbridge writes (PRAGMA user_version).
SCHEMA_VERSION = 2
#: Default seconds a run waits for another run holding the write lock.
DEFAULT_TIMEOUT = 15.0
#: Default threshold, in days since the last successful sync, for "stale".
DEFAULT_STALE_DAYS = 30

# Change kinds, in the order the Changes sheet lists them.
NEW = "New partnership"
REMOVED = "Removed partnership"
PROTOCOL = "Protocol switch"
EAS_UPGRADE = f"Moved to EAS {eas.MINIMUM_TEXT}"
BECAME_STALE = "Became stale"
BECAME_NEVER = "Became never-synced"
BACK_IN_SYNC = "Back in sync"
OS_UPGRADE = "OS upgrade"
OS_CHANGE = "OS change"
CHANGE_KINDS = (NEW, REMOVED, PROTOCOL, EAS_UPGRADE, BECAME_STALE, BECAME_NEVER, BACK_IN_SYNC,
                OS_UPGRADE, OS_CHANGE)
#: The Trend column of EAS clients below 16.1 (runs whose scope shows EAS devices).
EAS_BELOW = f"EAS below {eas.MINIMUM_TEXT}"
_EAS_DIMENSION = ("EAS", f"Below {eas.MINIMUM_TEXT}")

#: Columns of :attr:`HistoryView.changes`.
CHANGE_COLUMNS = ["Change", "User", "Mailbox", "DeviceType", "DeviceId", "DeviceModel",
                  "Before", "After", "LastSuccessSync"]

# Device-frame columns history reads, first present (per row: first non-empty) wins.
# The mailbox key prefers ExchangeGuid: it survives renames, unlike names and addresses.
_MAILBOX_KEY_COLUMNS = ("MailboxExchangeGuid", "ExchangeGuid", "MailboxGuid", "MailboxIdentity",
                        "QueriedMailbox")
_USER_COLUMNS = ("User", "DisplayName", "MailboxDisplayName", "UserDisplayName")
_MAILBOX_COLUMNS = ("UserPrincipalName", "PrimarySmtpAddress", "MailboxPrimarySmtpAddress",
                    "WindowsEmailAddress")
_DEVICE_PATH_MARK = r"[\\/]ExchangeActiveSyncDevices[\\/].*$"

#: The columns of a run's devices blob (one row per partnership).
DEVICE_SCHEMA = pa.schema([
    ("partnership", pa.string()),  # casefolded mailbox key, DeviceType, DeviceId; \x1f apart
    ("user", pa.string()),
    ("mailbox", pa.string()),
    ("device_type", pa.string()),
    ("device_id", pa.string()),
    ("device_model", pa.string()),
    ("sync_protocol", pa.string()),
    ("platform", pa.string()),
    ("os_version", pa.string()),
    ("last_success_sync", pa.timestamp("us", tz="UTC")),
    ("stale", pa.bool_()),
    ("access_state", pa.string()),
    ("eas_version", pa.float64()),  # EAS protocol of EAS clients (absent before issue 15)
])
_BLOB_OPTIONS = ipc.IpcWriteOptions(compression="zstd")


def _blob(devices: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, devices.schema, options=_BLOB_OPTIONS) as writer:
        writer.write_table(devices)
    return bytes(sink.getvalue().to_pybytes())


def _devices_to_blobs(connection: sqlite3.Connection) -> None:
    """Schema 1 -> 2: each run's device rows become one blob."""
    added_later = ("access_state", "eas_version")  # schema 1 had neither
    columns = [name for name in DEVICE_SCHEMA.names if name not in added_later]
    # schema 1 kept epoch seconds and 0/1 flags
    selected = [{"last_success_sync": "last_success_sync * 1000000",
                 "stale": "stale <> 0"}.get(name, name) for name in columns]
    run_ids = [row[0] for row in connection.execute("SELECT run_id FROM runs ORDER BY run_id")]
    for run_id in run_ids:
        rows = connection.execute(
            f"SELECT {', '.join(selected)} FROM devices WHERE run_id = ? ORDER BY partnership",
            (run_id,)).fetchall()
        values: list[Sequence[object]] = (list(zip(*rows, strict=True)) if rows
                                           else [[] for _ in columns])
        arrays = {name: list(column) for name, column in zip(columns, values, strict=True)}
        arrays["stale"] = [bool(flag) for flag in arrays["stale"]]
        for name in added_later:
            arrays[name] = [None] * len(rows)
        table = pa.table({name: pa.array(arrays[name], type=DEVICE_SCHEMA.field(name).type)
                          for name in DEVICE_SCHEMA.names})
        connection.execute("INSERT INTO run_devices (run_id, devices) VALUES (?, ?)",
                           (run_id, _blob(table)))


# One list of steps per schema version: _MIGRATIONS[n] takes version n to n + 1; a step is
# an SQL statement or a function of the connection. Never edit a released entry; append
# a new one and bump SCHEMA_VERSION.
_MIGRATIONS: list[list[str | Callable[[sqlite3.Connection], None]]] = [
    [  # 0 -> 1: runs and the devices each run saw, one row per device
        """CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            org_key TEXT NOT NULL,
            organisation TEXT NOT NULL,
            server TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            started TEXT NOT NULL,
            finished TEXT,
            psbridge_version TEXT NOT NULL DEFAULT '',
            stale_days INTEGER NOT NULL,
            mailboxes INTEGER,
            devices INTEGER NOT NULL,
            stale INTEGER NOT NULL,
            never_synced INTEGER NOT NULL)""",
        "CREATE INDEX runs_by_org ON runs (org_key, run_id)",
        """CREATE TABLE devices (
            run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            partnership TEXT NOT NULL,
            user TEXT,
            mailbox TEXT,
            device_type TEXT,
            device_id TEXT NOT NULL,
            device_model TEXT,
            sync_protocol TEXT,
            platform TEXT,
            os_version TEXT,
            last_success_sync INTEGER,
            stale INTEGER NOT NULL,
            PRIMARY KEY (run_id, partnership)) WITHOUT ROWID""",
    ],
    [  # 1 -> 2: the report's scope (runs compare only within one), per-run counts (the
        # Trend sheet without reading devices), and devices as one blob per run (speed)
        "ALTER TABLE runs ADD COLUMN scope TEXT NOT NULL DEFAULT ''",
        "DROP INDEX runs_by_org",
        "CREATE INDEX runs_by_org ON runs (org_key, scope, run_id)",
        """CREATE TABLE run_counts (
            run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            devices INTEGER NOT NULL,
            PRIMARY KEY (run_id, dimension, value)) WITHOUT ROWID""",
        """INSERT INTO run_counts (run_id, dimension, value, devices)
            SELECT run_id, 'SyncProtocol', COALESCE(sync_protocol, 'Unknown'), COUNT(*)
            FROM devices GROUP BY run_id, COALESCE(sync_protocol, 'Unknown')""",
        """INSERT INTO run_counts (run_id, dimension, value, devices)
            SELECT run_id, 'Platform', COALESCE(platform, 'Unknown'), COUNT(*)
            FROM devices GROUP BY run_id, COALESCE(platform, 'Unknown')""",
        """CREATE TABLE run_devices (
            run_id INTEGER PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            devices BLOB NOT NULL)""",
        _devices_to_blobs,
        "DROP TABLE devices",
    ],
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


def default_history_path() -> Path:
    """Where history lives unless ``--history`` says otherwise (per user, not per folder).

    Windows: ``%LOCALAPPDATA%\\psbridge\\history.sqlite``; elsewhere
    ``$XDG_DATA_HOME/psbridge/history.sqlite`` (``~/.local/share`` when unset).
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "psbridge" / "history.sqlite"


def organisation_key(organisation: str) -> str:
    """The key runs are grouped by: case and surrounding blanks do not matter."""
    return organisation.strip().casefold()


@dataclass(frozen=True)
class RunInfo:
    """One recorded run, as ``history list`` shows it."""

    run_id: int
    organisation: str
    server: str
    source: str
    scope: str
    started: datetime
    devices: int
    stale: int
    never_synced: int
    mailboxes: int | None
    stale_days: int
    psbridge_version: str


@dataclass(frozen=True)
class HistoryView:
    """What the workbook shows from history: changes against a previous run, and the trend.

    ``previous`` is None on the first run of an organisation (nothing to compare yet).
    ``trend`` has one row per run (oldest first): Run, Started, Devices, Stale,
    Never synced, EAS below 16.1 (when a run's scope shows EAS devices; NA for runs
    without the count), then one column per SyncProtocol (``protocol_columns``) and per
    Platform (``platform_columns``).
    """

    current: RunInfo
    previous: RunInfo | None
    changes: pd.DataFrame
    trend: pd.DataFrame
    protocol_columns: list[str] = field(default_factory=list)
    platform_columns: list[str] = field(default_factory=list)

    @property
    def change_counts(self) -> dict[str, int]:
        """How many changes of each kind, in sheet order, kinds without changes left out."""
        counts = self.changes["Change"].value_counts()
        return {kind: int(counts[kind]) for kind in CHANGE_KINDS if kind in counts.index}


def _text_column(devices: pd.DataFrame, candidates: Sequence[str]) -> pd.Series:
    """The first non-empty value per row among ``candidates`` (absent columns skipped)."""
    result = pd.Series(pd.NA, index=devices.index, dtype="string")
    for name in candidates:
        if name in devices.columns:
            column = devices[name].astype("string").str.strip()
            result = result.fillna(column.where(column != ""))
    return result


def _display_column(devices: pd.DataFrame, candidates: Sequence[str]) -> pd.Series:
    """A column only shown, never matched on: as _text_column, without the cleaning."""
    present = [name for name in candidates if name in devices.columns]
    if len(present) == 1:
        return devices[present[0]].astype("string")
    return _text_column(devices, candidates)


def _partnership_keys(devices: pd.DataFrame) -> pd.Series:
    """mailbox + DeviceType + DeviceId: the identity of a partnership across runs."""
    mailbox = _text_column(devices, _MAILBOX_KEY_COLUMNS)
    if "Identity" in devices.columns and mailbox.isna().any():
        parent = devices["Identity"].astype("string").str.replace(_DEVICE_PATH_MARK, "",
                                                                  regex=True)
        mailbox = mailbox.fillna(parent)
    if mailbox.isna().any():
        raise HistoryError(
            "cannot record history: some devices have neither their mailbox's ExchangeGuid "
            "nor an Identity to tell which mailbox they belong to."
        )
    device_type = _text_column(devices, ("DeviceType",)).fillna("")
    device_id = _text_column(devices, ("DeviceId", "DeviceID")).fillna("")
    return mailbox.str.casefold() + "\x1f" + device_type + "\x1f" + device_id


def _timestamps(devices: pd.DataFrame, name: str) -> pd.Series:
    """A datetime column in UTC to the microsecond (NaT when missing or absent)."""
    if name not in devices.columns:
        return pd.Series(pd.NaT, index=devices.index, dtype="datetime64[us, UTC]")
    return pd.to_datetime(devices[name], utc=True, errors="coerce").astype(
        "datetime64[us, UTC]")


def _stale_flags(devices: pd.DataFrame, last_sync: pd.Series, stale_days: int,
                 started: datetime) -> pd.Series:
    """True where the last successful sync is more than ``stale_days`` days old.

    Uses the report's DaysSinceLastSync when present, so history and report agree.
    """
    if "DaysSinceLastSync" in devices.columns:
        days = pd.to_numeric(devices["DaysSinceLastSync"], errors="coerce")
    else:
        days = (pd.Timestamp(started) - last_sync).dt.total_seconds() / 86_400
    return ((days > stale_days) & last_sync.notna()).fillna(False).astype(bool)


def _observations(devices: pd.DataFrame, stale_days: int, started: datetime) -> pd.DataFrame:
    """The report's Devices frame as history keeps it: DEVICE_SCHEMA's columns, one row per
    partnership (a partnership listed twice, e.g. the same file given twice, counts once)."""
    keys = _partnership_keys(devices)
    last_sync = _timestamps(devices, "LastSuccessSync")
    frame = pd.DataFrame({
        "partnership": keys,
        "user": _display_column(devices, _USER_COLUMNS),
        "mailbox": _display_column(devices, _MAILBOX_COLUMNS),
        "device_type": _display_column(devices, ("DeviceType",)),
        "device_id": _display_column(devices, ("DeviceId", "DeviceID")).fillna(""),
        "device_model": _display_column(devices, ("DeviceModel",)),
        "sync_protocol": _text_column(devices, ("SyncProtocol",)).fillna("Unknown"),
        "platform": _text_column(devices, ("Platform",)).fillna("Unknown"),
        "os_version": _text_column(devices, ("OSVersion",)),
        "last_success_sync": last_sync,
        "stale": _stale_flags(devices, last_sync, stale_days, started),
        "access_state": _display_column(devices, ("DeviceAccessState",)),
        "eas_version": eas.eas_versions(devices).astype("float64"),
    })
    return frame[~keys.duplicated().to_numpy()]


def _version_key(version: object) -> tuple[int, ...] | None:
    if not isinstance(version, str):
        return None
    parts = version.strip().split(".")
    if not parts or not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _os_change(before: object, after: object) -> str:
    old, new = _version_key(before), _version_key(after)
    return OS_UPGRADE if old is not None and new is not None and new > old else OS_CHANGE


class History:
    """A history database. Use as a context manager; every method may raise HistoryError."""

    def __init__(self, path: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None

    # -- connection and schema ---------------------------------------------------------

    def __enter__(self) -> History:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Open (creating if needed) and bring the schema up to date."""
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

    # -- recording ---------------------------------------------------------------------

    def record(
        self,
        devices: pd.DataFrame,
        *,
        organisation: str,
        started: datetime,
        server: str = "",
        source: str = "",
        scope: str = "",
        finished: datetime | None = None,
        mailboxes: int | None = None,
        stale_days: int = DEFAULT_STALE_DAYS,
        keep: int | None = None,
        psbridge_version: str = "",
    ) -> int:
        """Record one run's Devices frame; returns its run id. ``keep`` prunes old runs.

        Reads DeviceId, DeviceType, DeviceModel, SyncProtocol, Platform, OSVersion,
        LastSuccessSync, DaysSinceLastSync, DeviceAccessState, the mailbox's ExchangeGuid
        (or Identity) and its display name/UPN; absent columns are recorded as unknown.
        """
        if not organisation.strip():
            raise HistoryError("cannot record history: the run has no organisation or server.")
        frame = _observations(devices, stale_days, started)
        try:
            blob = _blob(pa.Table.from_pandas(frame, schema=DEVICE_SCHEMA,
                                              preserve_index=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise HistoryError(f"cannot record history: {exc}") from exc
        counts = [("SyncProtocol", str(value), int(n))
                  for value, n in frame["sync_protocol"].value_counts().items()]
        counts += [("Platform", str(value), int(n))
                   for value, n in frame["platform"].value_counts().items()]
        if eas.eas_rows(devices).any():
            counts.append((*_EAS_DIMENSION, int((frame["eas_version"] < float(
                eas.MINIMUM_TEXT)).sum())))
        with self._errors(), self._transaction():
            db = self._db
            cursor = db.execute(
                "INSERT INTO runs (org_key, organisation, server, source, scope, started, "
                "finished, psbridge_version, stale_days, mailboxes, devices, stale, never_synced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (organisation_key(organisation), organisation.strip(), server, source, scope,
                 _iso(started), _iso(finished) if finished else None, psbridge_version,
                 stale_days, mailboxes, len(frame), int(frame["stale"].sum()),
                 int(frame["last_success_sync"].isna().sum())),
            )
            run_id = int(cursor.lastrowid or 0)
            db.execute("INSERT INTO run_devices (run_id, devices) VALUES (?, ?)",
                       (run_id, blob))
            db.executemany(
                "INSERT INTO run_counts (run_id, dimension, value, devices) VALUES (?, ?, ?, ?)",
                [(run_id, *count) for count in counts],
            )
            if keep is not None:
                self._prune(keep, organisation_key(organisation))
        return run_id

    # -- reading -----------------------------------------------------------------------

    def runs(self, organisation: str | None = None) -> list[RunInfo]:
        """Recorded runs, oldest first, of one organisation or all."""
        query = f"SELECT {_RUN_FIELDS} FROM runs"
        parameters: tuple[object, ...] = ()
        if organisation is not None:
            query += " WHERE org_key = ?"
            parameters = (organisation_key(organisation),)
        with self._errors():
            return [_run_info(row) for row in self._db.execute(query + " ORDER BY run_id",
                                                               parameters)]

    def run(self, run_id: int) -> RunInfo:
        """One run; HistoryError when there is no such run."""
        with self._errors():
            row = self._db.execute(f"SELECT {_RUN_FIELDS} FROM runs WHERE run_id = ?",
                                   (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"there is no run {run_id} in history {self.path}; "
                               "see 'psbridge history list'.")
        return _run_info(row)

    def previous_run(self, run_id: int) -> RunInfo | None:
        """The run of the same organisation and scope recorded just before ``run_id``."""
        with self._errors():
            row = self._db.execute(
                f"SELECT {_RUN_FIELDS} FROM runs WHERE (org_key, scope) = "
                "(SELECT org_key, scope FROM runs WHERE run_id = ?) AND run_id < ? "
                "ORDER BY run_id DESC LIMIT 1",
                (run_id, run_id),
            ).fetchone()
        return None if row is None else _run_info(row)

    def counts(self, run_id: int, dimension: str) -> dict[str, int]:
        """Devices of one run by 'SyncProtocol' or 'Platform'."""
        with self._errors():
            rows = self._db.execute(
                "SELECT value, devices FROM run_counts WHERE run_id = ? AND dimension = ? "
                "ORDER BY devices DESC, value", (run_id, dimension)).fetchall()
        return {str(value): int(n) for value, n in rows}

    def devices(self, run_id: int) -> pd.DataFrame:
        """The devices a run recorded (DEVICE_SCHEMA's columns), one row per partnership."""
        frame: pd.DataFrame = self._load(run_id)[0].to_pandas()
        return frame

    def _load(self, *run_ids: int) -> list[pa.Table]:
        """The device tables of runs, read in one snapshot."""
        for run_id in run_ids:
            self.run(run_id)
        blobs: list[bytes] = []
        with self._errors():
            db = self._db
            db.execute("BEGIN")
            try:
                for run_id in run_ids:
                    row = db.execute("SELECT devices FROM run_devices WHERE run_id = ?",
                                     (run_id,)).fetchone()
                    if row is None:
                        raise HistoryError(f"history {self.path} is damaged (run {run_id} has "
                                           "no devices); move it away or use --history PATH.")
                    blobs.append(row[0])
            finally:
                db.execute("COMMIT")
        try:
            return [_current_columns(ipc.open_file(pa.BufferReader(blob)).read_all())
                    for blob in blobs]
        except (pa.ArrowInvalid, OSError) as exc:
            raise HistoryError(f"history {self.path} is damaged ({exc}); move it away (a new "
                               "one is created) or use --history PATH / --no-history.") from exc

    def changes(self, before: int, after: int) -> pd.DataFrame:
        """What changed from run ``before`` to run ``after`` (columns: CHANGE_COLUMNS).

        Partnerships are matched with Arrow's hash kernels; only changed rows become pandas.
        """
        old, new = self._load(before, after)
        position = pc.index_in(new["partnership"], value_set=old["partnership"])
        matched = pc.is_valid(position)
        parts = [_change_part(NEW, new.filter(pc.invert(matched))),
                 _change_part(REMOVED, old.filter(pc.invert(
                     pc.is_in(old["partnership"], value_set=new["partnership"]))))]
        # the partnerships in both runs, old and new side by side
        now, was = new.filter(matched), old.take(pc.drop_null(position))
        protocol = pc.not_equal(was["sync_protocol"].fill_null(""),
                                now["sync_protocol"].fill_null(""))
        parts.append(_change_part(PROTOCOL, now.filter(protocol),
                                  was["sync_protocol"].filter(protocol),
                                  now["sync_protocol"].filter(protocol)))
        moved = pa.array(eas.moved_to_minimum(was["eas_version"].to_pandas(),
                                              now["eas_version"].to_pandas()).to_numpy())
        parts.append(_change_part(EAS_UPGRADE, now.filter(moved),
                                  _version_text(was["eas_version"].filter(moved)),
                                  _version_text(now["eas_version"].filter(moved))))
        never_was = pc.is_null(was["last_success_sync"])
        never_now = pc.is_null(now["last_success_sync"])
        stale_was, stale_now = was["stale"], now["stale"]
        became_never = pc.and_(never_now, pc.invert(never_was))
        parts.append(_change_part(BECAME_NEVER, now.filter(became_never), "Synced", "Never"))
        became_stale = pc.and_(stale_now, pc.invert(stale_was))
        parts.append(_change_part(BECAME_STALE, now.filter(became_stale),
                                  pc.if_else(never_was, "Never", "Recent").filter(became_stale),
                                  "Stale"))
        back = pc.and_(pc.invert(pc.or_(never_now, stale_now)), pc.or_(never_was, stale_was))
        parts.append(_change_part(BACK_IN_SYNC, now.filter(back),
                                  pc.if_else(never_was, "Never", "Stale").filter(back),
                                  "Recent"))
        os_changed = pc.not_equal(was["os_version"].fill_null(""),
                                  now["os_version"].fill_null(""))
        os_rows = _change_part(OS_UPGRADE, now.filter(os_changed),
                               was["os_version"].filter(os_changed),
                               now["os_version"].filter(os_changed))
        os_rows["Change"] = [_os_change(a, b) for a, b in zip(os_rows["Before"].tolist(),
                                                               os_rows["After"].tolist(),
                                                               strict=True)]
        parts.append(os_rows)
        frame = pd.concat([part for part in parts if len(part)] or [parts[0]],
                          ignore_index=True)
        order = frame["Change"].map({kind: n for n, kind in enumerate(CHANGE_KINDS)})
        frame = frame.assign(_order=order).sort_values(
            ["_order", "User", "Mailbox", "DeviceId"], kind="stable", na_position="last")
        return frame.drop(columns="_order").reset_index(drop=True)

    def trend(self, organisation: str, *, scope: str | None = None, upto: int | None = None,
              since: int | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
        """Per run of ``organisation`` (oldest first): figures, protocol and platform columns."""
        runs = [run for run in self.runs(organisation)
                if (upto is None or run.run_id <= upto) and (since is None or run.run_id >= since)
                and (scope is None or run.scope == scope)]
        ids = [run.run_id for run in runs]
        with self._errors():
            counts = pd.DataFrame(
                self._db.execute(
                    "SELECT run_id, dimension, value, devices FROM run_counts WHERE run_id IN "
                    "(SELECT run_id FROM runs WHERE org_key = ?)",
                    (organisation_key(organisation),)).fetchall(),
                columns=["run_id", "dimension", "value", "devices"],
            )
        counts = counts[counts["run_id"].isin(ids)]
        trend = pd.DataFrame({
            "Run": ids,
            "Started": pd.to_datetime([run.started for run in runs], utc=True),
            "Devices": [run.devices for run in runs],
            "Stale": [run.stale for run in runs],
            "Never synced": [run.never_synced for run in runs],
        })
        eas_counts = counts[(counts["dimension"] == _EAS_DIMENSION[0])
                            & (counts["value"] == _EAS_DIMENSION[1])]
        if len(eas_counts):  # runs without the count (scope without EAS, older psbridge): NA
            below = dict(zip(eas_counts["run_id"], eas_counts["devices"], strict=True))
            trend[EAS_BELOW] = pd.array([below.get(run_id) for run_id in ids], dtype="Int64")
        named: dict[str, list[str]] = {}
        for dimension in ("SyncProtocol", "Platform"):
            part = counts[counts["dimension"] == dimension]
            # columns ordered by how many devices they hold in the latest run
            wide = part.pivot_table(index="run_id", columns="value", values="devices",
                                    aggfunc="sum", fill_value=0)
            wide = wide.reindex(ids, fill_value=0)
            order = wide.iloc[-1].sort_values(ascending=False, kind="stable").index if len(
                wide) else wide.columns
            named[dimension] = []
            for value in order:
                # a value that is also another column's name (e.g. "Unknown") gets a prefix
                name = str(value) if str(value) not in trend.columns else f"{dimension}: {value}"
                trend[name] = wide[value].astype(int).to_numpy()
                named[dimension].append(name)
        return trend, named["SyncProtocol"], named["Platform"]

    def view(self, run_id: int) -> HistoryView:
        """Changes of ``run_id`` against the previous run of its organisation, and its trend."""
        current = self.run(run_id)
        previous = self.previous_run(run_id)
        changes = (self.changes(previous.run_id, run_id) if previous is not None
                   else pd.DataFrame(columns=CHANGE_COLUMNS))
        trend, protocols, platforms = self.trend(current.organisation, scope=current.scope,
                                                 upto=run_id)
        return HistoryView(current, previous, changes, trend, protocols, platforms)

    def compare(self, before: int, after: int) -> HistoryView:
        """Changes between any two runs of one organisation, and the trend between them."""
        old, new = self.run(before), self.run(after)
        if organisation_key(old.organisation) != organisation_key(new.organisation):
            raise HistoryError(
                f"runs {before} ({old.organisation}) and {after} ({new.organisation}) belong "
                "to different organisations; compare runs of one organisation."
            )
        first, last = sorted((before, after))
        trend, protocols, platforms = self.trend(new.organisation, upto=last, since=first)
        return HistoryView(new, old, self.changes(before, after), trend, protocols, platforms)

    # -- retention ---------------------------------------------------------------------

    def prune(self, keep: int, organisation: str | None = None) -> int:
        """Keep the newest ``keep`` runs of each organisation (or of one); returns runs removed."""
        with self._errors(), self._transaction():
            removed = self._prune(keep, None if organisation is None
                                  else organisation_key(organisation))
        return removed

    def _prune(self, keep: int, org_key: str | None) -> int:
        if keep < 1:
            raise HistoryError("keep at least 1 run per organisation.")
        doomed = [row[0] for row in self._db.execute(
            "SELECT run_id FROM (SELECT run_id, org_key, ROW_NUMBER() OVER "
            "(PARTITION BY org_key ORDER BY run_id DESC) AS age FROM runs) "
            "WHERE age > ? AND (? IS NULL OR org_key = ?)", (keep, org_key, org_key))]
        for table in ("run_devices", "run_counts", "runs"):
            self._db.executemany(f"DELETE FROM {table} WHERE run_id = ?",
                                 [(run_id,) for run_id in doomed])
        return len(doomed)

    def vacuum(self) -> None:
        """Give the space of pruned runs back to the file system."""
        with self._errors():
            self._db.execute("VACUUM")


_RUN_FIELDS = ("run_id, organisation, server, source, scope, started, devices, stale, "
               "never_synced, mailboxes, stale_days, psbridge_version")


def _run_info(row: Sequence[object]) -> RunInfo:
    (run_id, organisation, server, source, scope, started, devices, stale, never, mailboxes,
     stale_days, version) = row
    return RunInfo(int(str(run_id)), str(organisation), str(server), str(source), str(scope),
                   datetime.fromisoformat(str(started)), int(str(devices)), int(str(stale)),
                   int(str(never)), None if mailboxes is None else int(str(mailboxes)),
                   int(str(stale_days)), str(version))


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise HistoryError("run times must carry a time zone.")
    return moment.astimezone(UTC).isoformat()


def _current_columns(devices: pa.Table) -> pa.Table:
    """A stored run's devices with every DEVICE_SCHEMA column (older runs lack eas_version)."""
    for name in DEVICE_SCHEMA.names:
        if name not in devices.column_names:
            devices = devices.append_column(
                DEVICE_SCHEMA.field(name), pa.nulls(len(devices), DEVICE_SCHEMA.field(name).type))
    return devices


def _version_text(versions: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """EAS versions as the Changes sheet shows them ("14.1")."""
    return [None if value is None else f"{value:.1f}" for value in versions.to_pylist()]


def _change_part(kind: str, rows: pa.Table, before: pa.Array | str | None = None,
                 after: pa.Array | str | None = None) -> pd.DataFrame:
    """Changes of one kind as CHANGE_COLUMNS (``before``/``after``: per row, or one value)."""
    def column(values: pa.Array | pa.ChunkedArray | str | None) -> object:
        if isinstance(values, pa.Array | pa.ChunkedArray):
            return values.to_pandas().to_numpy(dtype=object, na_value=None)
        return values

    return pd.DataFrame({
        "Change": kind,
        "User": rows["user"].to_pandas(),
        "Mailbox": rows["mailbox"].to_pandas(),
        "DeviceType": rows["device_type"].to_pandas(),
        "DeviceId": rows["device_id"].to_pandas(),
        "DeviceModel": rows["device_model"].to_pandas(),
        "Before": column(before),
        "After": column(after),
        "LastSuccessSync": rows["last_success_sync"].to_pandas(),
    }, columns=CHANGE_COLUMNS)


@dataclass(frozen=True)
class HistorySettings:
    """What ``--history PATH`` / ``--no-history`` / ``--history-keep N`` asked for.

    ``path`` None means history is off for this run.
    """

    path: Path | None
    keep: int | None = None
    timeout: float = DEFAULT_TIMEOUT


def report_scope(report: Report) -> str:
    """Which devices a report lists, in words: runs are compared only within one scope."""
    described = report.options.describe()
    return "; ".join(described[key] for key in ("Devices", "Recipient types", "Stale filter"))


def record_and_view(
    settings: HistorySettings,
    report: Report,
    *,
    organisation: str,
    server: str = "",
    source: str = "",
    finished: datetime | None = None,
    psbridge_version: str = "",
) -> HistoryView | None:
    """Record a report run and return what its Changes and Trend sheets show.

    None when history is off. Raises HistoryError (damaged, locked, ...): the caller
    warns and writes the report without the history sheets.
    """
    if settings.path is None:
        return None
    with History(settings.path, timeout=settings.timeout) as history:
        run_id = history.record(
            report.devices, organisation=organisation, started=report.run_started,
            server=server, source=source, scope=report_scope(report), finished=finished,
            mailboxes=report.figures.mailboxes_checked, stale_days=report.options.stale_after,
            keep=settings.keep, psbridge_version=psbridge_version,
        )
        return history.view(run_id)
