"""bridge.history: recording runs, changes between them, trend, schema, concurrency, damage."""

from __future__ import annotations

import multiprocessing as mp
import random
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from bridge import history
from bridge.errors import ExitCode, HistoryError
from bridge.frames import ReportOptions, build_report
from bridge.history import History
from bridge.sandbox.organisation import Organisation

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PROTOCOLS = ("REST (legacy)", "Outlook (native sync)", "Exchange ActiveSync")


def make_devices(count: int, *, seed: int = 1, prefix: str = "dev", started: datetime = START,
                 ) -> pd.DataFrame:
    """A Devices frame with the columns frames.build_report gives history to read."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        mailbox = index // 2
        platform = rng.choice(("iOS", "Android"))
        synced = None if rng.random() < 0.1 else started - timedelta(days=rng.randrange(0, 200))
        rows.append({
            "User": f"User {mailbox}",
            "UserPrincipalName": f"user{mailbox}@contoso.com",
            "MailboxExchangeGuid": f"00000000-0000-0000-0000-{mailbox:012d}",
            "MailboxIdentity": f"contoso.com/Users/User {mailbox}",
            "Identity": f"contoso.com/Users/User {mailbox}/ExchangeActiveSyncDevices/"
                        f"Outlook§{prefix}{index}",
            "DeviceId": f"{prefix}{index}",
            "DeviceType": "Outlook",
            "DeviceModel": "Outlook for iOS and Android",
            "SyncProtocol": rng.choice(PROTOCOLS),
            "Platform": platform,
            "OSVersion": f"{rng.randrange(14, 18)}.{rng.randrange(0, 3)}",
            "LastSuccessSync": synced,
            "DeviceAccessState": "Allowed",
        })
    frame = pd.DataFrame(rows)
    frame["LastSuccessSync"] = pd.to_datetime(frame["LastSuccessSync"], utc=True)
    frame["DaysSinceLastSync"] = ((started - frame["LastSuccessSync"]) // pd.Timedelta(days=1)
                                  ).astype("Int64")
    return frame


def record(store: History, devices: pd.DataFrame, started: datetime = START,
           organisation: str = "Contoso", **extra: object) -> int:
    return store.record(devices, organisation=organisation, started=started, **extra)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite"


def test_default_location_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(history.sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert history.default_history_path() == tmp_path / "data" / "psbridge" / "history.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert history.default_history_path() == (
        tmp_path / ".local" / "share" / "psbridge" / "history.sqlite")
    monkeypatch.setattr(history.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert history.default_history_path() == tmp_path / "Local" / "psbridge" / "history.sqlite"


def test_first_run_has_nothing_to_compare(db: Path) -> None:
    devices = make_devices(10)
    with History(db) as store:
        run_id = record(store, devices)
        view = store.view(run_id)
    assert view.previous is None
    assert view.changes.empty and list(view.changes.columns) == history.CHANGE_COLUMNS
    assert view.trend["Devices"].tolist() == [10]
    expected_protocols = devices["SyncProtocol"].value_counts()
    for protocol, count in expected_protocols.items():
        assert view.trend[protocol].tolist() == [count]
    assert set(view.protocol_columns) == set(expected_protocols.index)


def test_changes_are_exact_for_a_known_mutation(db: Path) -> None:
    before = make_devices(40, seed=2)
    after = before.copy()
    later = START + timedelta(days=45)
    after["DaysSinceLastSync"] = ((later - after["LastSuccessSync"]) // pd.Timedelta(days=1)
                                  ).astype("Int64")
    after.loc[3, "SyncProtocol"] = "Outlook (native sync)" if (
        before.loc[3, "SyncProtocol"] != "Outlook (native sync)") else "REST (legacy)"
    after.loc[5, "OSVersion"] = "18.1"
    after.loc[6, "OSVersion"] = "9.0"
    after.loc[7, "User"] = "Renamed Person"  # display-name change: not a change of partnership
    after.loc[7, "UserPrincipalName"] = "renamed@contoso.com"
    after = after.drop(index=[8, 9])
    newcomer = make_devices(1, seed=3, prefix="new", started=later)
    after = pd.concat([after, newcomer], ignore_index=True)
    with History(db) as store:
        first = record(store, before)
        second = record(store, after, started=later)
        view = store.view(second)
    assert view.previous is not None and view.previous.run_id == first

    def stale(frame: pd.DataFrame) -> pd.Series:
        return (frame["DaysSinceLastSync"] > 30).fillna(False)

    ids_before, ids_after = set(before["DeviceId"]), set(after["DeviceId"])
    old, new = before.set_index("DeviceId"), after.set_index("DeviceId")
    common = sorted(ids_before & ids_after)
    went_stale = {d for d in common if stale(new).loc[d] and not stale(old).loc[d]}
    expected = {
        history.NEW: ids_after - ids_before,
        history.REMOVED: ids_before - ids_after,
        history.PROTOCOL: {d for d in common
                           if old.loc[d, "SyncProtocol"] != new.loc[d, "SyncProtocol"]},
        history.BECAME_STALE: went_stale,
        history.OS_UPGRADE: {"dev5"},
        history.OS_CHANGE: {"dev6"},
    }
    got = {kind: set(view.changes.loc[view.changes["Change"] == kind, "DeviceId"])
           for kind in view.changes["Change"].unique()}
    assert got == {kind: ids for kind, ids in expected.items() if ids}
    assert went_stale  # 45 days later some recent devices are stale: the case is exercised
    switch = view.changes[view.changes["Change"] == history.PROTOCOL].iloc[0]
    assert (switch["Before"], switch["After"]) == (old.loc["dev3", "SyncProtocol"],
                                                   new.loc["dev3", "SyncProtocol"])
    upgrade = view.changes[view.changes["Change"] == history.OS_UPGRADE].iloc[0]
    assert (upgrade["Before"], upgrade["After"]) == (old.loc["dev5", "OSVersion"], "18.1")
    assert view.trend["Devices"].tolist() == [40, 39]


def test_never_synced_and_back_in_sync(db: Path) -> None:
    before = make_devices(6, seed=4)
    before["LastSuccessSync"] = pd.to_datetime([START - timedelta(days=1)] * 3 + [None] * 3,
                                               utc=True)
    before["DaysSinceLastSync"] = pd.array([1, 1, 1, None, None, None], dtype="Int64")
    after = before.copy()
    after["LastSuccessSync"] = pd.to_datetime([None, START, START, START, None, None], utc=True)
    after["DaysSinceLastSync"] = pd.array([None, 0, 0, 0, None, None], dtype="Int64")
    with History(db) as store:
        a = record(store, before)
        b = record(store, after, started=START + timedelta(days=1))
        changes = store.changes(a, b)
    assert changes[["Change", "DeviceId"]].values.tolist() == [
        [history.BECAME_NEVER, "dev0"], [history.BACK_IN_SYNC, "dev3"]]


def test_runs_are_compared_within_one_organisation_and_scope(db: Path) -> None:
    with History(db) as store:
        a = record(store, make_devices(4), organisation="Contoso")
        record(store, make_devices(4, prefix="f"), organisation="Fabrikam")
        record(store, make_devices(2), organisation="contoso", scope="all devices")
        b = record(store, make_devices(3), organisation=" CONTOSO ")
        view = store.view(b)
        assert view.previous is not None and view.previous.run_id == a
        assert view.changes[["Change", "DeviceId"]].values.tolist() == [
            [history.REMOVED, "dev3"]]
        assert view.trend["Run"].tolist() == [a, b]
        with pytest.raises(HistoryError, match="different organisations"):
            store.compare(a, 2)


def test_prune_keeps_newest_runs_per_organisation(db: Path) -> None:
    with History(db) as store:
        for day in range(4):
            record(store, make_devices(3), started=START + timedelta(days=day))
            record(store, make_devices(3), started=START + timedelta(days=day),
                   organisation="Fabrikam")
        assert store.prune(2) == 4
        assert [run.run_id for run in store.runs("Contoso")] == [5, 7]
        assert [run.run_id for run in store.runs("Fabrikam")] == [6, 8]
        record(store, make_devices(3), keep=1)
        assert [run.run_id for run in store.runs("Contoso")] == [9]
        assert store._db.execute("SELECT COUNT(*) FROM run_devices WHERE run_id < 6"
                                 ).fetchone() == (0,)


def _record_many(path: str, prefix: str, runs: int) -> None:
    with History(path, timeout=60) as store:
        for number in range(runs):
            record(store, make_devices(3000, seed=number, prefix=prefix),
                   started=START + timedelta(hours=number))


def test_concurrent_runs_neither_corrupt_nor_interleave(db: Path) -> None:
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_record_many, args=(str(db), prefix, 3))
               for prefix in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()
    # six runs, each holding exactly the 3000 devices one process recorded in it
    with History(db) as store:
        runs = store.runs()
        assert len(runs) == 6
        prefixes = []
        for run in runs:
            devices = store.devices(run.run_id)
            prefix = devices["device_id"].str[0]
            assert len(devices) == run.devices == 3000 and prefix.nunique() == 1
            expected = make_devices(3000, seed=int(run.started.hour - START.hour),
                                    prefix=prefix.iloc[0])
            assert devices["sync_protocol"].tolist() == expected["SyncProtocol"].tolist()
            prefixes.append(prefix.iloc[0])
    assert sorted(prefixes) == ["a"] * 3 + ["b"] * 3


def test_locked_database_gives_a_clear_error(db: Path) -> None:
    with History(db) as store:
        record(store, make_devices(3))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with History(db, timeout=0.2) as store, pytest.raises(HistoryError) as caught:
            record(store, make_devices(3))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(caught.value) == (
        f"history {db} is locked by another program (another psbridge run?) and stayed locked "
        "for 0.2 s; run again later or use --history PATH / --no-history.")
    assert caught.value.exit_code == ExitCode.INPUT
    with History(db) as store:  # nothing half-written
        assert len(store.runs()) == 1


def test_damaged_database_gives_a_clear_error(db: Path) -> None:
    db.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(HistoryError) as caught, History(db):
        pass
    assert str(caught.value) == (
        f"history {db} is damaged (file is not a database); move it away (a new one is "
        "created) or use --history PATH / --no-history.")


def test_truncated_database_gives_a_clear_error(db: Path) -> None:
    with History(db) as store:
        record(store, make_devices(3000))
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    content = db.read_bytes()
    db.write_bytes(content[: len(content) // 3])
    with pytest.raises(HistoryError, match=r"is damaged \(database disk image is malformed\)"):
        with History(db) as store:
            store.view(1)


def test_damaged_devices_blob_gives_a_clear_error(db: Path) -> None:
    with History(db) as store:
        first = record(store, make_devices(30))
        second = record(store, make_devices(30))
        store._db.execute("UPDATE run_devices SET devices = ? WHERE run_id = ?",
                          (b"ARROW1" + bytes(200), first))
        with pytest.raises(HistoryError, match=rf"^history {re.escape(str(db))} is damaged \("):
            store.view(second)


def test_newer_schema_is_refused(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(HistoryError, match=re.escape(
            "was written by a newer psbridge (schema 99, this one knows 2)")):
        History(db).open()


# The first released schema, frozen here as it was: upgrades must keep reading it.
SCHEMA_V1 = [
    """CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, org_key TEXT NOT NULL,
        organisation TEXT NOT NULL, server TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '', started TEXT NOT NULL, finished TEXT,
        psbridge_version TEXT NOT NULL DEFAULT '', stale_days INTEGER NOT NULL,
        mailboxes INTEGER, devices INTEGER NOT NULL, stale INTEGER NOT NULL,
        never_synced INTEGER NOT NULL)""",
    "CREATE INDEX runs_by_org ON runs (org_key, run_id)",
    """CREATE TABLE devices (run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        partnership TEXT NOT NULL, user TEXT, mailbox TEXT, device_type TEXT,
        device_id TEXT NOT NULL, device_model TEXT, sync_protocol TEXT, platform TEXT,
        os_version TEXT, last_success_sync INTEGER, stale INTEGER NOT NULL,
        PRIMARY KEY (run_id, partnership)) WITHOUT ROWID""",
    "PRAGMA user_version = 1",
]


def test_upgrade_from_the_first_schema(db: Path) -> None:
    connection = sqlite3.connect(db)
    for statement in SCHEMA_V1:
        connection.execute(statement)
    connection.execute(
        "INSERT INTO runs (org_key, organisation, started, stale_days, devices, stale, "
        "never_synced) VALUES ('contoso', 'Contoso', ?, 30, 2, 0, 0)", (START.isoformat(),))
    # partnership = casefolded mailbox key, DeviceType, DeviceId (unit separator between)
    key = "00000000-0000-0000-0000-000000000000\x1fOutlook\x1f"
    connection.executemany(
        "INSERT INTO devices (run_id, partnership, user, device_type, device_id, "
        "sync_protocol, platform, os_version, last_success_sync, stale) "
        "VALUES (1, ?, 'User 0', 'Outlook', ?, ?, 'iOS', '17.0', ?, 0)",
        [(key + "dev0", "dev0", "REST (legacy)", int(START.timestamp())),
         (key + "dev1", "dev1", "REST (legacy)", int(START.timestamp()))])
    connection.commit()
    connection.close()

    devices = make_devices(2)
    devices["SyncProtocol"] = ["Outlook (native sync)", "REST (legacy)"]
    devices["OSVersion"] = "17.0"
    devices["LastSuccessSync"] = pd.to_datetime([START, START], utc=True)
    devices["DaysSinceLastSync"] = pd.array([0, 0], dtype="Int64")
    with History(db) as store:
        assert store.schema_version == history.SCHEMA_VERSION
        assert store.counts(1, "SyncProtocol") == {"REST (legacy)": 2}  # backfilled
        second = record(store, devices, started=START + timedelta(days=1))
        view = store.view(second)
    assert view.previous is not None and view.previous.run_id == 1
    assert view.changes[["Change", "DeviceId", "Before", "After"]].values.tolist() == [
        [history.PROTOCOL, "dev0", "REST (legacy)", "Outlook (native sync)"]]
    assert view.trend["REST (legacy)"].tolist() == [2, 1]


def test_devices_without_a_mailbox_key_are_refused(db: Path) -> None:
    devices = make_devices(2).drop(columns=["MailboxExchangeGuid", "MailboxIdentity",
                                            "Identity"])
    with History(db) as store, pytest.raises(HistoryError, match="neither their mailbox"):
        record(store, devices)


OS_VERSION = re.compile(r"(\d+(?:\.\d+)*)")


def _truth(org: Organisation, classic: bool = False
           ) -> dict[tuple[str, str, str], dict[str, object]]:
    """Each partnership straight from the sandbox's ground truth (no frames, no history);
    ``classic``: only Outlook for iOS and Android under user mailboxes (the default report)."""
    now = org.reference_time
    truth = {}
    for device in org.iter_devices():
        if classic and (device.mailbox.kind != "user"
                        or device.model != "Outlook for iOS and Android"):
            continue
        synced = device.last_success
        version = OS_VERSION.search(device.os or "")
        truth[(device.mailbox.upn, device.device_type, device.device_id)] = {
            "protocol": device.client_type,
            "os": version.group(1) if version else None,
            "never": synced is None,
            "stale": synced is not None and (now - synced) // timedelta(days=1) > 30,
            "user": device.mailbox.display_name,
        }
    return truth


def _expected_changes(before: dict[tuple[str, str, str], dict[str, object]],
                      after: dict[tuple[str, str, str], dict[str, object]]
                      ) -> set[tuple[str, str, str, str]]:
    expected = {(history.NEW, *key) for key in after.keys() - before.keys()}
    expected |= {(history.REMOVED, *key) for key in before.keys() - after.keys()}
    for key in before.keys() & after.keys():
        old, new = before[key], after[key]
        if old["protocol"] != new["protocol"]:
            expected.add((history.PROTOCOL, *key))
        if new["never"] and not old["never"]:
            expected.add((history.BECAME_NEVER, *key))
        elif new["stale"] and not old["stale"]:
            expected.add((history.BECAME_STALE, *key))
        elif not new["never"] and not new["stale"] and (old["never"] or old["stale"]):
            expected.add((history.BACK_IN_SYNC, *key))
        if old["os"] != new["os"]:
            older = tuple(int(p) for p in str(old["os"]).split("."))
            newer = tuple(int(p) for p in str(new["os"]).split("."))
            expected.add((history.OS_UPGRADE if newer > older else history.OS_CHANGE, *key))
    return expected


def test_sandbox_runs_give_exactly_the_ground_truth_changes(db: Path) -> None:
    org = Organisation(mailboxes=60, seed=11, online_client_types=True)
    options = ReportOptions(all_devices=True,
                            recipient_types=("UserMailbox", "SharedMailbox", "RoomMailbox"))
    kinds_seen: set[str] = set()
    renamed = 0
    previous = None
    with History(db) as store:
        for step in range(4):
            if step:
                names = {mb.index: mb.display_name for mb in org.mailbox_entries}
                org.advance(60, seed=step)
                renamed += sum(names[mb.index] != mb.display_name for mb in org.mailbox_entries)
            report = build_report(org.mailboxes, org.devices, options=options,
                                  run_started=org.reference_time)
            run_id = store.record(report.devices, organisation=org.organization,
                                  started=org.reference_time, stale_days=options.stale_after)
            truth = _truth(org)
            view = store.view(run_id)
            assert view.current.devices == len(truth)
            assert view.current.stale == sum(bool(t["stale"]) for t in truth.values())
            if previous is not None:
                got = {(row.Change, row.Mailbox, row.DeviceType, row.DeviceId)
                       for row in view.changes.itertuples()}
                assert len(got) == len(view.changes)  # one row per change
                assert got == _expected_changes(previous, truth)
                kinds_seen |= {change[0] for change in got}
            previous = truth
        assert len(view.trend) == 4
    # the organisation really did all of this, so each kind of change was checked
    assert {history.NEW, history.REMOVED, history.PROTOCOL, history.BECAME_STALE,
            history.OS_UPGRADE} <= kinds_seen
    assert renamed > 0  # display names changed, and no partnership was new or removed for it
