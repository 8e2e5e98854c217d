"""Recording runs and reading them back: RunInfo, and _Runs (History's middle layer: record,
runs, devices, pruning)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from bridge import eas
from bridge.errors import HistoryError
from bridge.history.database import _Database
from bridge.history.observations import _observations
from bridge.history.schema import DEVICE_SCHEMA, _blob, _current_columns

#: Default threshold, in days since the last successful sync, for "stale".
DEFAULT_STALE_DAYS = 30
#: The Trend column of EAS clients below 16.1 (runs whose scope shows EAS devices).
EAS_BELOW = f"EAS below {eas.MINIMUM_TEXT}"
_EAS_DIMENSION = ("EAS", f"Below {eas.MINIMUM_TEXT}")


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


class _Runs(_Database):
    """Runs in the database: record one, read them, prune old ones."""

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
