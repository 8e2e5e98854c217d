"""Past runs, what changed since the last one, and the trend: a local SQLite history.

Every ``psbridge mobile`` run records its devices here (one transaction), so the next
run can say which partnerships are new or gone, which switched protocol, went stale or
upgraded their OS, and how the counts move over time. Several organisations can share
one file: runs are keyed by organisation (or server when no organisation is known).

Storage: a ``runs`` row and per-run counts (SyncProtocol, Platform) in SQL, and the run's
devices as one Arrow IPC blob (zstd) in ``run_devices``. Writing 100,000 devices as one
blob and comparing two runs with Arrow's hash kernels takes a fraction of a second,
where row-by-row SQL took seconds (benchmarks/history.py). This is the only package that
imports pyarrow.

A device partnership keeps its identity across runs through its mailbox (ExchangeGuid,
else the mailbox's identity) plus DeviceType and DeviceId, never the display name.

Concurrency: the database runs in WAL mode and each run is written in one
``BEGIN IMMEDIATE`` transaction, so two runs at once queue behind each other (up to
``timeout`` seconds) instead of interleaving. Every sqlite3 failure becomes a
:class:`~bridge.errors.HistoryError` that says what to do; the CLI turns it into a warning
and still writes the report.

Modules: ``schema`` (version, devices blob, migrations), ``observations`` (a Devices frame
as history keeps it), ``database`` (file, WAL, transactions, errors), ``runs`` (record,
read, prune), ``changes`` (History, HistoryView, the change kinds), ``recording`` (one
report run: settings, default path, record_and_view).
"""

from __future__ import annotations

import sys  # noqa: F401  (tests set history.sys.platform to try each platform's default path)

from bridge.history.changes import (
    BACK_IN_SYNC,
    BECAME_NEVER,
    BECAME_STALE,
    CHANGE_COLUMNS,
    CHANGE_KINDS,
    EAS_UPGRADE,
    NEW,
    OS_CHANGE,
    OS_UPGRADE,
    PROTOCOL,
    REMOVED,
    History,
    HistoryView,
)
from bridge.history.database import DEFAULT_TIMEOUT
from bridge.history.recording import (
    HistorySettings,
    default_history_path,
    record_and_view,
    report_scope,
)
from bridge.history.runs import DEFAULT_STALE_DAYS, EAS_BELOW, RunInfo, organisation_key
from bridge.history.schema import DEVICE_SCHEMA, SCHEMA_VERSION

__all__ = [
    "BACK_IN_SYNC", "BECAME_NEVER", "BECAME_STALE", "CHANGE_COLUMNS", "CHANGE_KINDS",
    "DEFAULT_STALE_DAYS", "DEFAULT_TIMEOUT", "DEVICE_SCHEMA", "EAS_BELOW", "EAS_UPGRADE",
    "NEW", "OS_CHANGE", "OS_UPGRADE",
    "PROTOCOL", "REMOVED", "SCHEMA_VERSION", "History", "HistorySettings", "HistoryView",
    "RunInfo", "default_history_path", "organisation_key", "record_and_view", "report_scope",
]
