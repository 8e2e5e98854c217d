"""Comparing runs: the change kinds, HistoryView, and History, which adds the changes
between two runs and the trend over many to _Runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bridge import eas
from bridge.errors import HistoryError
from bridge.history.runs import _EAS_DIMENSION, EAS_BELOW, RunInfo, _Runs, organisation_key

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

#: Columns of :attr:`HistoryView.changes`.
CHANGE_COLUMNS = ["Change", "User", "Mailbox", "DeviceType", "DeviceId", "DeviceModel",
                  "Before", "After", "LastSuccessSync"]


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


class History(_Runs):
    """A history database. Use as a context manager; every method may raise HistoryError.

    Its parts: _Database (file, schema, transactions), _Runs (record, read, prune) and,
    here, comparing runs.
    """


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
