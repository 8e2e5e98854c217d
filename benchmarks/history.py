"""What history adds to a run: record 100,000 devices and diff them against the previous run.

A sandbox organisation of about 100,000 device partnerships is reported once (the
previous run, recorded before anything is timed), aged 30 days with
``organisation.advance`` and reported again. Measured in forked children, on the same
Report:

- baseline: ``workbook.write_report`` alone (what a run writes without history), and
  a whole offline run without history (``psbridge mobile --from-clixml``: read the
  Export-Clixml files, build_report, write_report), the fastest kind of run there is;
- with history: record the run, compute its changes and trend, and write_report with
  the Changes and Trend sheets.

Target: history adds under 20% to a run's time (judged against the whole offline run;
the share of write_report alone is printed beside it).

    python -m benchmarks.history            # about 100,000 devices
    python -m benchmarks.history --quick    # about 5,000 devices, a smoke run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks._measure import Measurement, measure, ratio
from bridge import workbook
from bridge.frames import Report, ReportOptions, build_report, load_exports
from bridge.history import History, HistoryView
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation

TARGET = 0.20
DEVICES_PER_MAILBOX = 1.21  # what the sandbox generates with all recipient types
OPTIONS = ReportOptions(all_devices=True,
                        recipient_types=("UserMailbox", "SharedMailbox", "RoomMailbox"))


def report_of(org: Organisation) -> Report:
    return build_report(org.mailboxes, org.devices, options=OPTIONS,
                        run_started=org.reference_time)


def run_details(org: Organisation) -> workbook.RunDetails:
    return workbook.RunDetails(
        command_line="psbridge mobile --from-clixml export", organisation=org.organization,
        server="EXCH01", endpoint="", source="offline", strategy="", started=org.reference_time,
        finished=org.reference_time, version="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="about 5,000 devices (smoke run)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measure each step this many times and keep the fastest (the "
                             "machine may be shared)")
    args = parser.parse_args()
    wanted = 5_000 if args.quick else args.devices

    org = Organisation(mailboxes=round(wanted / DEVICES_PER_MAILBOX), seed=1)
    previous = report_of(org)
    folder = Path(tempfile.mkdtemp(prefix="psbridge-bench-"))
    seeded = folder / "seeded.sqlite"
    with History(seeded) as store:
        store.record(previous.devices, organisation=org.organization,
                     started=previous.run_started, stale_days=OPTIONS.stale_after)
    org.advance(30, seed=2)
    report = report_of(org)
    details = run_details(org)
    export = folder / "export"
    export_organisation(org, export)

    def fresh_history(name: str) -> Path:
        path = folder / name
        shutil.copyfile(seeded, path)
        return path

    def record(store: History) -> int:
        return store.record(report.devices, organisation=org.organization,
                            started=report.run_started, stale_days=OPTIONS.stale_after)

    def run_without_history() -> int:
        exported = load_exports([export])
        offline = build_report(exported.mailboxes, exported.devices, exported.errors,
                               options=OPTIONS, run_started=org.reference_time)
        target = folder / "run.xlsx"
        workbook.write_report(target, offline, details)
        return target.stat().st_size

    def workbook_alone() -> int:
        target = folder / "alone.xlsx"
        workbook.write_report(target, report, details)
        return target.stat().st_size

    def record_only() -> int:
        with History(fresh_history("record.sqlite")) as store:
            return record(store)

    def record_and_view() -> tuple[int, int]:
        with History(fresh_history("view.sqlite")) as store:
            view = store.view(record(store))
        return len(view.changes), len(view.trend)

    def history_alone() -> int:
        with History(fresh_history("alone.sqlite")) as store:
            view = store.view(record(store))
        target = folder / "history-sheets.xlsx"
        workbook.write_history_workbook(target, view)
        return len(view.changes)

    def workbook_with_history() -> tuple[int, int]:
        with History(fresh_history("full.sqlite")) as store:
            view: HistoryView = store.view(record(store))
        target = folder / "with-history.xlsx"
        workbook.write_report(target, report, details, history=view)
        return len(view.changes), target.stat().st_size

    steps: list[Callable[[], object]] = [workbook_alone, run_without_history, record_only,
                                         record_and_view, history_alone, workbook_with_history]
    timings: list[list[Measurement]] = [[] for _ in steps]
    for _ in range(max(1, args.repeat)):  # rounds, so a burst of load hits no step alone
        for step, fn in enumerate(steps):
            timings[step].append(measure(fn))
    baseline, whole, recorded, viewed, sheets, full = (min(runs, key=lambda m: m.seconds)
                                                       for runs in timings)
    shutil.rmtree(folder)

    changes, _size = full.result
    print(f"devices: {len(report.devices):,} (previous run {len(previous.devices):,}); "
          f"changes: {changes:,}; best of {max(1, args.repeat)} round(s)")

    def line(label: str, m: Measurement) -> str:
        return f"{label:<58} {m.seconds:7.2f} s  peak +{m.peak_bytes / 2**20:7.1f} MiB"

    print(line("baseline: write_report alone", baseline))
    print(line("baseline: offline run (read CLIXML, build, write)", whole))
    print(line("history: record the run", recorded))
    print(line("history: record + changes + trend", viewed))
    print(line("history: record + changes + trend + Changes/Trend sheets", sheets))
    print(line("write_report with history (record, view, all sheets)", full))
    run_share = sheets.seconds / whole.seconds if whole.seconds else float("inf")
    verdict = "meets" if run_share < TARGET else "MISSES"
    print(f"history adds {sheets.seconds:.2f} s = +{run_share:.0%} to a whole offline run "
          f"(target: under +{TARGET:.0%} of a run's time: {verdict}); "
          f"= {ratio(sheets.seconds, baseline.seconds)} of write_report alone; "
          f"record + diff alone: {ratio(viewed.seconds, baseline.seconds)} of write_report")
    print(f"difference of the two full runs: {full.seconds - baseline.seconds:+.2f} s; peak "
          f"memory of history alone / write_report alone: "
          f"{ratio(sheets.peak_bytes, baseline.peak_bytes)}")


if __name__ == "__main__":
    main()
