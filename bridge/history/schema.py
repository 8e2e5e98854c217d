"""The history file's layout: the schema version, a run's devices as one Arrow IPC blob
(DEVICE_SCHEMA), and the migrations from older versions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.ipc as ipc

#: The schema version this psbridge writes (PRAGMA user_version).
SCHEMA_VERSION = 2

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


def _current_columns(devices: pa.Table) -> pa.Table:
    """A stored run's devices with every DEVICE_SCHEMA column (older runs lack eas_version)."""
    for name in DEVICE_SCHEMA.names:
        if name not in devices.column_names:
            devices = devices.append_column(
                DEVICE_SCHEMA.field(name), pa.nulls(len(devices), DEVICE_SCHEMA.field(name).type))
    return devices
