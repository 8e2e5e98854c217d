"""The offline mobile report as a whole: Export-Clixml files -> formatted workbook.

For each ``--mailboxes N`` it writes the Export-Clixml pair of a sandbox organisation of
N mailboxes (``bridge.sandbox.export``, the files ``psbridge sandbox export`` writes:
UTF-16, Deserialized objects, shapes as Exchange's) and runs, each in its own process,
measured from outside: wall time; the peak memory of the process and all its workers
(PSS, so pages a forked worker shares with its parent count once), sampled from /proc
every 50 ms; and the largest single process's peak RSS (VmHWM):

- psbridge: ``python -m bridge.cli mobile --from-clixml DIR --all-devices -o FILE.xlsx``
- the obvious pipeline, once, at ``--baseline-mailboxes`` (default 10,000): pypsrp's
  ``Serializer.deserialize`` of every object, rows into pandas, the devices joined to
  their mailboxes, ``DataFrame.to_excel`` with openpyxl (two unformatted sheets)

and prints the times (psbridge: the median of ``--repeat`` runs, default 3, since a
shared VM's wall times vary by a quarter from run to run), the peak RSS, psbridge's
speed-up over the baseline at the same size, and how time and memory grow from the
first size to the others.

Targets (issue 14, 2 cores): 100,000 mailboxes in at most 15 s and 600 MB; at least 25x
the baseline at 10,000 mailboxes; 300,000 mailboxes within 3x the 100,000 figures.

    python -m benchmarks.end_to_end --mailboxes 100000 300000
    python -m benchmarks.end_to_end --mailboxes 2000 --baseline-mailboxes 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation

ROOT = Path(__file__).resolve().parents[1]
TIME_TARGET = 15.0
MEMORY_TARGET_MB = 600.0
SPEED_TARGET = 25.0
GROWTH_TARGET = 3.0


@dataclass(frozen=True)
class Run:
    """One measured command: wall seconds, peak PSS of its process tree, largest process."""

    seconds: float
    tree_peak_bytes: int
    process_peak_bytes: int


def _tree_memory(pid: int) -> tuple[int, int]:
    """(proportional resident bytes (PSS) of a process and its descendants, the largest
    peak RSS (VmHWM) among them): forked workers share pages with their parent, which
    plain RSS would count twice."""
    total = largest = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        largest = max(largest, int(line.split()[1]) * 1024)
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total, largest


def measure_command(command: list[str]) -> Run:
    """Run ``command`` to completion; its wall time and peak memory, seen from outside."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak = largest = 0
    while process.poll() is None:
        tree, single = _tree_memory(process.pid)
        peak, largest = max(peak, tree), max(largest, single)
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode not in (0, 3):  # 3: the report has an Errors sheet
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr}")
    return Run(seconds, peak, largest)


def export(mailboxes: int, folder: Path, seed: int) -> tuple[int, int]:
    """The Export-Clixml pair of a sandbox organisation; (devices, bytes on disk)."""
    summary = export_organisation(Organisation(mailboxes=mailboxes, seed=seed), folder)
    size = sum(path.stat().st_size for path in summary.files)
    return summary.devices, size


def psbridge(folder: Path, output: Path) -> Run:
    return measure_command([sys.executable, "-m", "bridge.cli", "mobile", "--from-clixml",
                            str(folder), "--all-devices", "--no-history", "-o", str(output)])


def baseline(folder: Path, output: Path) -> Run:
    return measure_command([sys.executable, "-m", "benchmarks.end_to_end", "--baseline-run",
                            str(folder), str(output)])


def run_baseline(folder: Path, output: Path) -> None:
    """The obvious pipeline: pypsrp's deserializer, pandas, to_excel with openpyxl."""
    import pandas as pd
    from lxml import etree
    from pypsrp.serializer import Serializer

    namespace = ' xmlns="http://schemas.microsoft.com/powershell/2004/04"'

    def rows(path: Path) -> list[dict[str, object]]:
        serializer = Serializer()
        found = []
        for _event, element in etree.iterparse(str(path), events=("end",),
                                               tag="{*}Obj"):
            parent = element.getparent()
            if parent is None or parent.getparent() is not None:
                continue  # nested objects are read with their top-level object
            # as PSRP carries an object: without the document's namespace
            text = etree.tostring(element, encoding="unicode").replace(namespace, "")
            obj = serializer.deserialize(text, clear=False)  # TNRef across objects
            found.append({**obj.adapted_properties, **obj.extended_properties})
            element.clear()
        return found

    mailboxes = pd.DataFrame(rows(folder / "Mailboxes.xml"))
    devices = pd.DataFrame(rows(folder / "MobileDeviceStatistics.xml"))
    devices["Mailbox"] = devices["Identity"].astype(str).str.split(
        "/ExchangeActiveSyncDevices/").str[0]
    joined = devices.merge(mailboxes, left_on="Mailbox", right_on="Identity", how="left",
                           suffixes=("", "_Mailbox"))
    without = mailboxes[~mailboxes["Identity"].isin(devices["Mailbox"])]
    with pd.ExcelWriter(output, engine="openpyxl") as writer:
        joined.astype(str).to_excel(writer, sheet_name="Devices", index=False)
        without.astype(str).to_excel(writer, sheet_name="Users without devices", index=False)


def _median(runs: list[Run]) -> Run:
    """The median time of the runs (a shared VM's wall times vary by a quarter from run
    to run) with the largest peaks any of them had."""
    return Run(statistics.median_high(run.seconds for run in runs),
               max(run.tree_peak_bytes for run in runs),
               max(run.process_peak_bytes for run in runs))


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f} MB" if value else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mailboxes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--baseline-mailboxes", type=int, default=10_000,
                        help="size of the baseline's run (0: none)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="psbridge runs a size (the median time is compared)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-run", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_run:
        run_baseline(*args.baseline_run)
        return
    results: dict[int, tuple[int, int, Run]] = {}
    with tempfile.TemporaryDirectory() as temp:
        sizes = sorted(set(args.mailboxes) | ({args.baseline_mailboxes} - {0}))
        base: Run | None = None
        for count in sizes:
            folder = Path(temp) / f"export-{count}"
            devices, size = export(count, folder, args.seed)
            os.sync()  # a user's export was written before: not the disk's writeback too
            print(f"{count:,} mailboxes, {devices:,} devices: {size / 1e6:,.0f} MB of "
                  f"Export-Clixml", flush=True)
            runs = [psbridge(folder, Path(temp) / f"report-{count}.xlsx")
                    for _ in range(args.repeat)]
            run = _median(runs)
            results[count] = (devices, size, run)
            each = ", ".join(f"{one.seconds:.1f}" for one in runs)
            print(f"  psbridge mobile --from-clixml: {run.seconds:6.1f} s (median of "
                  f"{each} s), peak {_mb(run.tree_peak_bytes)} (all processes, the "
                  f"largest of the runs; largest one process {_mb(run.process_peak_bytes)})",
                  flush=True)
            if count == args.baseline_mailboxes:
                base = baseline(folder, Path(temp) / f"baseline-{count}.xlsx")
                print(f"  baseline (pypsrp + to_excel/openpyxl): {base.seconds:6.1f} s, "
                      f"peak {_mb(base.tree_peak_bytes)}", flush=True)
                print(f"  psbridge is {base.seconds / run.seconds:.1f}x faster "
                      f"(target >= {SPEED_TARGET:g}x)", flush=True)
            for path in folder.iterdir():
                path.unlink()  # the next size needs the disk more
    print(f"Targets: 100,000 mailboxes <= {TIME_TARGET:g} s and <= {MEMORY_TARGET_MB:g} MB;"
          f" larger runs within {GROWTH_TARGET:g}x the first size's figures.")
    first = min(args.mailboxes)
    _d, _s, reference = results[first]
    for count in sorted(args.mailboxes):
        if count == first:
            continue
        _d, _s, run = results[count]
        print(f"  {count:,} vs {first:,} mailboxes ({count / first:.1f}x the rows): time "
              f"{run.seconds / reference.seconds:.2f}x, peak memory "
              f"{run.tree_peak_bytes / reference.tree_peak_bytes:.2f}x")
    print(f"(2 cores shared with other work: wall times are upper bounds; "
          f"load average at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
