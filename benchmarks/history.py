"""What history adds to a run: record 100,000 devices and diff them against the previous run.

Baseline, measured in the same run on the same frame: writing the report workbook
(``workbook.write_report`` when it exists, else the Devices sheet through
``workbook.write_tables``). Target: history (record + changes + trend + the two sheets)
adds under 20% to that.

    python -m benchmarks.history            # 100,000 devices
    python -m benchmarks.history --quick    # 5,000 devices, a smoke run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook

from benchmarks._measure import measure, ratio
from bridge import workbook
from bridge.history import History

STARTED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TARGET = 0.20


def devices_frame(count: int, seed: int, started: datetime) -> pd.DataFrame:
    """A Devices frame shaped like frames.build_report's (the columns history reads and the
    Devices sheet shows), about two devices per mailbox."""
    rng = np.random.default_rng(seed)
    mailbox = np.arange(count) // 2
    ids = np.char.add("dev", np.arange(count).astype(str))
    platform = rng.choice(["iOS", "Android"], count)
    major = np.where(platform == "iOS", rng.integers(15, 18, count), rng.integers(12, 15, count))
    minor = rng.integers(0, 4, count).astype(str)
    version = np.char.add(np.char.add(major.astype(str), "."), minor)
    days = rng.integers(0, 400, count).astype("float64")
    days[rng.random(count) < 0.05] = np.nan
    last_sync = pd.Series(pd.Timestamp(started) - pd.to_timedelta(days, unit="D"))
    user = np.char.add("User ", mailbox.astype(str))
    identity = np.char.add("contoso.com/Users/", user)
    frame = pd.DataFrame({
        "User": user,
        "Device": "Outlook for iOS and Android",
        "DeviceOS": np.char.add(np.char.add(platform, " "), version),
        "ClientType": rng.choice(["REST", "Outlook"], count, p=[0.3, 0.7]),
        "LastSuccessSync": last_sync,
        "PrimarySmtpAddress": np.char.add(np.char.add("user", mailbox.astype(str)),
                                          "@contoso.com"),
        "DeviceModel": "Outlook for iOS and Android",
        "DeviceType": "Outlook",
        "ClientVersion": "1.0",
        "FirstSyncTime": last_sync - pd.Timedelta(days=400),
        "DeviceAccessState": "Allowed",
        "DeviceId": ids,
        "Identity": np.char.add(np.char.add(identity, "/ExchangeActiveSyncDevices/Outlook§"),
                                ids),
        "MailboxIdentity": identity,
        "MailboxExchangeGuid": np.char.add("guid-", mailbox.astype(str)),
        "Platform": platform,
        "OSVersion": version,
    })
    frame["UserPrincipalName"] = frame["PrimarySmtpAddress"]
    frame["SyncProtocol"] = frame["ClientType"].map(
        {"REST": "REST (legacy)", "Outlook": "Outlook (native sync)"})
    frame["DaysSinceLastSync"] = pd.array(days, dtype="Int64")
    return frame


def next_run(previous: pd.DataFrame, seed: int, days: int) -> pd.DataFrame:
    """The organisation ``days`` later: 2% partnerships gone, 2% new, 5% switched protocol,
    3% upgraded their OS, everything aged."""
    rng = np.random.default_rng(seed)
    count = len(previous)
    frame = previous[rng.random(count) >= 0.02].copy()
    newcomers = devices_frame(count // 50, seed + 1000, STARTED)
    newcomers["DeviceId"] = "new" + newcomers["DeviceId"]
    frame = pd.concat([frame, newcomers], ignore_index=True)
    switch = rng.random(len(frame)) < 0.05
    frame.loc[switch, "SyncProtocol"] = "Outlook (native sync)"
    upgrade = rng.random(len(frame)) < 0.03
    frame.loc[upgrade, "OSVersion"] = "18.0"
    frame["DaysSinceLastSync"] = frame["DaysSinceLastSync"] + days
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 devices (smoke run)")
    args = parser.parse_args()
    count = 5_000 if args.quick else args.devices

    first = devices_frame(count, seed=1, started=STARTED)
    second = next_run(first, seed=2, days=30)
    later = STARTED + timedelta(days=30)
    folder = Path(tempfile.mkdtemp(prefix="psbridge-bench-"))
    seeded = folder / "seeded.sqlite"
    with History(seeded) as store:  # the previous run, recorded before anything is timed
        store.record(first, organisation="Contoso", started=STARTED)

    sheet_columns = [c for c in second.columns if c not in ("Identity", "MailboxIdentity",
                                                            "MailboxExchangeGuid")]

    def write_workbook() -> int:
        target = folder / "report.xlsx"
        workbook.write_tables(target, {"Devices": second[sheet_columns]})
        return target.stat().st_size

    def record_and_diff() -> tuple[int, int]:
        path = folder / "history.sqlite"
        shutil.copyfile(seeded, path)
        with History(path) as store:
            run_id = store.record(second, organisation="Contoso", started=later)
            view = store.view(run_id)
        sheets = Workbook(write_only=True)
        workbook.write_history_sheets(sheets, view)
        sheets.save(folder / "sheets.xlsx")
        return len(view.changes), path.stat().st_size

    def record_only() -> int:
        path = folder / "record.sqlite"
        shutil.copyfile(seeded, path)
        with History(path) as store:
            return store.record(second, organisation="Contoso", started=later)

    baseline = measure(write_workbook)
    recorded = measure(record_only)
    history = measure(record_and_diff)
    changes, size = history.result
    mib = 1024 * 1024
    print(f"devices: {len(second):,} (previous run {len(first):,}); changes found: {changes:,}")
    print(f"baseline  write the Devices workbook:        {baseline.seconds:7.2f} s  "
          f"peak +{baseline.peak_bytes / mib:6.1f} MiB")
    print(f"history   record the run only:               {recorded.seconds:7.2f} s  "
          f"peak +{recorded.peak_bytes / mib:6.1f} MiB")
    print(f"history   record + changes + trend + sheets: {history.seconds:7.2f} s  "
          f"peak +{history.peak_bytes / mib:6.1f} MiB  (database {size / mib:.1f} MiB)")
    share = history.seconds / baseline.seconds if baseline.seconds else float("inf")
    verdict = "meets" if share < TARGET else "MISSES"
    print(f"history / workbook time: {ratio(history.seconds, baseline.seconds)} "
          f"(+{share:.0%} of the run; target under +{TARGET:.0%}: {verdict})")
    print(f"history / workbook peak memory: {ratio(history.peak_bytes, baseline.peak_bytes)}")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
