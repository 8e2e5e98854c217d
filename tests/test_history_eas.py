"""History follows the EAS figures: clients moved to 16.1, and EAS below 16.1 per run."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pandas as pd

from bridge import history
from bridge.history import History
from bridge.history.schema import _blob
from tests.test_history import START, make_devices


def _eas(devices: pd.DataFrame, versions: dict[int, str]) -> pd.DataFrame:
    """Rows ``versions`` made EAS clients (iPhone) of those ClientVersions."""
    devices = devices.copy()
    devices["ClientType"], devices["ClientVersion"] = "REST", "1.0"
    for row, version in versions.items():
        devices.loc[row, ["ClientType", "ClientVersion", "DeviceModel"]] = ["EAS", version,
                                                                          "iPhone15C4"]
    return devices


def test_moved_to_16_1_and_the_count_per_run(tmp_path: Path) -> None:
    base = make_devices(8)
    with History(tmp_path / "h.sqlite") as store:
        outlook_only = store.record(base, organisation="Contoso", started=START)
        first = store.record(_eas(base, {0: "14.1", 1: "16.0", 2: "16.1", 3: "12.1"}),
                             organisation="Contoso", started=START + timedelta(days=7))
        second = store.record(_eas(base, {0: "16.1", 1: "16.0", 2: "16.1", 3: "14.1"}),
                              organisation="Contoso", started=START + timedelta(days=14))
        view = store.view(second)
        assert store.view(first).change_counts == {}  # no EAS version before: no move
        trend = view.trend
    assert view.change_counts == {history.EAS_UPGRADE: 1}
    (moved,) = view.changes.itertuples(index=False)
    assert (moved.Change, moved.DeviceId, moved.Before, moved.After) == (
        "Moved to EAS 16.1", "dev0", "14.1", "16.1")
    assert history.EAS_UPGRADE in history.CHANGE_KINDS
    # the run without EAS devices has no count (NA), not a zero
    assert trend["Run"].tolist() == [outlook_only, first, second]
    assert trend[history.EAS_BELOW].tolist() == [pd.NA, 3, 2]
    assert list(trend.columns[:6]) == ["Run", "Started", "Devices", "Stale", "Never synced",
                                       "EAS below 16.1"]


def test_runs_recorded_before_eas_versions_still_compare(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    base = make_devices(6)
    with History(path) as store:
        old = store.record(base, organisation="Contoso", started=START)
    # what an older psbridge stored: the blob without the eas_version column
    with History(path) as store:
        table = store._load(old)[0].drop_columns(["eas_version"])
    connection = sqlite3.connect(path)
    connection.execute("UPDATE run_devices SET devices = ? WHERE run_id = ?",
                       (_blob(table), old))
    connection.commit()
    connection.close()
    with History(path) as store:
        assert "eas_version" in store.devices(old).columns
        new = store.record(_eas(base, {0: "16.1"}), organisation="Contoso",
                           started=START + timedelta(days=1))
        assert store.view(new).change_counts == {}


def test_the_trend_sheet_charts_eas_below_16_1(tmp_path: Path) -> None:
    import openpyxl

    from bridge.workbook import write_history_workbook

    base = make_devices(8)
    with History(tmp_path / "h.sqlite") as store:
        store.record(base, organisation="Contoso", started=START)
        store.record(_eas(base, {0: "14.1", 1: "16.0"}), organisation="Contoso",
                     started=START + timedelta(days=7))
        last = store.record(_eas(base, {0: "16.1", 1: "16.0"}), organisation="Contoso",
                            started=START + timedelta(days=14))
        view = store.view(last)
    write_history_workbook(tmp_path / "diff.xlsx", view)
    trend = openpyxl.load_workbook(tmp_path / "diff.xlsx")["Trend"]
    headers = [cell.value for cell in trend[4]]
    column = headers.index("EAS below 16.1")
    assert [row[column] for row in trend.iter_rows(min_row=5, max_row=7, values_only=True)] == [
        None, 2, 1]
    titles = ["".join(run.t for p in chart.title.tx.rich.p for run in (p.r or []))
              for chart in trend._charts]
    assert titles[-1] == "Exchange ActiveSync clients below 16.1" and len(titles) == 4
