"""The mobile device report for 100,000 devices: frames plus the formatted workbook.

Measures, each in a forked child (benchmarks/_measure.py: wall time, peak RSS growth):
- psbridge: ``frames.build_report`` from Get-Mailbox / Get-MobileDeviceStatistics rows,
  then ``workbook.write_report`` (Summary with charts, Devices table with conditional
  formats, Users without devices, Run);
- the baseline: pandas' plain ``DataFrame.to_excel(engine="openpyxl")`` of the same
  Devices frame (one unformatted sheet), measured in the same run;
- and, for the breakdown, the frames and the workbook alone.

Targets: the complete formatted workbook in at most 1/2 the time and at most 40% of the
peak memory of the baseline.

Run: python -m benchmarks.report [--devices N] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks._measure import Measurement, measure, ratio
from bridge.frames import Report, ReportOptions, build_report
from bridge.sandbox.organisation import Organisation
from bridge.workbook import RunDetails, write_report

TIME_TARGET = 0.5
MEMORY_TARGET = 0.4
DEVICES_PER_MAILBOX = 1.2  # about what the sandbox organisation gives (all kinds)
OPTIONS = ReportOptions(all_devices=True,
                        recipient_types=("UserMailbox", "SharedMailbox", "RoomMailbox"))


def _inputs(devices: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], datetime]:
    """Get-Mailbox and Get-MobileDeviceStatistics rows with exactly ``devices`` devices."""
    mailboxes = max(10, int(devices / DEVICES_PER_MAILBOX))
    while True:
        org = Organisation(mailboxes=mailboxes, seed=1)
        if len(org.devices) >= devices:
            return org.mailboxes, org.devices[:devices], org.reference_time
        mailboxes = int(mailboxes * 1.1) + 1


def _run_details(started: datetime) -> RunDetails:
    return RunDetails(command_line="python -m benchmarks.report", organisation="Contoso",
                      server="sandbox", endpoint="(generated rows)", source="benchmark",
                      strategy="none", started=started, finished=started, version="bench")


def _mib(measurement: Measurement) -> str:
    return f"{measurement.peak_bytes / 2**20:8.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 devices: a smoke run")
    args = parser.parse_args(argv)
    devices = 5_000 if args.quick else args.devices

    clock = time.perf_counter()
    mailbox_rows, device_rows, reference = _inputs(devices)
    prepared = build_report(mailbox_rows, device_rows, options=OPTIONS, run_started=reference)
    baseline_frame = prepared.devices_sheet()
    for name in baseline_frame.columns:  # Excel has no time zones: pandas refuses zoned dates
        if isinstance(baseline_frame[name].dtype, pd.DatetimeTZDtype):
            baseline_frame[name] = baseline_frame[name].dt.tz_localize(None)
    print(f"inputs: {len(mailbox_rows):,} mailboxes, {len(device_rows):,} devices, "
          f"Devices sheet {baseline_frame.shape[0]:,} x {baseline_frame.shape[1]} "
          f"(prepared in {time.perf_counter() - clock:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="psbridge-bench-") as folder:
        out = Path(folder)
        run = _run_details(datetime.now(UTC))

        def psbridge() -> int:
            report = build_report(mailbox_rows, device_rows, options=OPTIONS,
                                  run_started=reference)
            write_report(out / "report.xlsx", report, run)
            return report.figures.devices

        def frames_only() -> int:
            report: Report = build_report(mailbox_rows, device_rows, options=OPTIONS,
                                          run_started=reference)
            return report.figures.devices

        def workbook_only() -> int:
            write_report(out / "workbook-only.xlsx", prepared, run)
            return prepared.figures.devices

        def baseline() -> int:
            baseline_frame.to_excel(out / "baseline.xlsx", engine="openpyxl", index=False)
            return len(baseline_frame)

        base = measure(baseline)
        ours = measure(psbridge)
        only_frames = measure(frames_only)
        only_workbook = measure(workbook_only)
        sizes = {name: (out / name).stat().st_size for name in ("report.xlsx", "baseline.xlsx")}

    assert ours.result == base.result == devices, (ours.result, base.result, devices)
    print(f"{'pandas to_excel(openpyxl), plain':40s} {base.seconds:7.2f} s {_mib(base)}"
          f"   {sizes['baseline.xlsx'] / 2**20:5.1f} MiB file   (baseline)")
    print(f"{'psbridge frames + formatted workbook':40s} {ours.seconds:7.2f} s {_mib(ours)}"
          f"   {sizes['report.xlsx'] / 2**20:5.1f} MiB file")
    print(f"{'  of which frames (build_report)':40s} {only_frames.seconds:7.2f} s "
          f"{_mib(only_frames)}")
    print(f"{'  of which workbook (write_report)':40s} {only_workbook.seconds:7.2f} s "
          f"{_mib(only_workbook)}")
    time_share = ours.seconds / base.seconds
    memory_share = ours.peak_bytes / base.peak_bytes if base.peak_bytes else 0.0
    time_ok = time_share <= TIME_TARGET
    memory_ok = memory_share <= MEMORY_TARGET
    print(f"time:   {ratio(ours.seconds, base.seconds)} of the baseline "
          f"(target <= {TIME_TARGET:.2f}x): {'met' if time_ok else 'MISSED'}")
    print(f"memory: {ratio(ours.peak_bytes, base.peak_bytes)} of the baseline "
          f"(target <= {MEMORY_TARGET:.2f}x): {'met' if memory_ok else 'MISSED'}")
    return 0 if (time_ok and memory_ok) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
