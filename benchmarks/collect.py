"""Collection strategies: wall time and round trips for per-mailbox (sequential and
concurrent) against bulk, on a sandbox with a fixed latency per command.

Three runs of bridge.exchange.collect against the same sandbox (served from its own
process), each in a forked child:

- per-mailbox, concurrency 1: the classic script (the baseline)
- per-mailbox, concurrency 3
- bulk: Get-Mailbox and Get-MobileDevice | Get-MobileDeviceStatistics in slices (by
  Name and DeviceId, each slice retried and checkpointed alone), side by side
- bulk, unsliced: the same as two whole commands, what bulk sent before slicing

Targets: bulk >= 20x faster than per-mailbox sequential; concurrency 3 >= 2.5x faster
than sequential. Round trips are the HTTP requests the sandbox served.

    python -m benchmarks.collect            # 2,000 mailboxes, 20 ms per command
    python -m benchmarks.collect --quick    # 200 mailboxes, a smoke run
    python -m benchmarks.collect --repeat 3 # best of three interleaved rounds
"""

from __future__ import annotations

import argparse
import functools

from benchmarks._measure import measure, ratio
from benchmarks._sandbox_process import SandboxProcess, sandbox_process
from bridge.exchange import collect
from bridge.remote import ConnectionSettings, Session


def _run(
    sb: SandboxProcess, strategy: str, concurrency: int, sliced: bool = True
) -> tuple[int, int, int]:
    settings = ConnectionSettings(
        server=sb.host, port=sb.port, auth="ntlm", username=sb.username, concurrency=concurrency
    )
    with Session(settings, sb.password) as session:
        result = collect(session, strategy, concurrency=concurrency, sliced=sliced)
    return len(result.mailboxes), len(result.devices), len(result.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="200 mailboxes")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="rounds of the three runs, interleaved; each keeps its best time (the machine "
             "is shared: the best is the least disturbed)",
    )  # fmt: skip
    args = parser.parse_args()
    mailboxes = 200 if args.quick else args.mailboxes
    latency = args.latency_ms / 1000

    with sandbox_process(mailboxes=mailboxes, seed=1, latency_per_command=latency) as sb:
        print(
            f"sandbox: {sb.mailboxes} mailboxes, {sb.devices} devices, "
            f"{args.latency_ms:g} ms per command, served from its own process"
        )
        _run(sb, "bulk", 1)  # warm-up: the sandbox serializes each object once
        runs = [
            ("per-mailbox, concurrency 1 (baseline)", "per-mailbox", 1, True),
            ("per-mailbox, concurrency 3", "per-mailbox", 3, True),
            ("bulk", "bulk", 3, True),
            ("bulk, unsliced", "bulk", 3, False),
        ]
        seconds: dict[str, float] = {}
        for round_number in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"round {round_number} of {args.repeat}")
            for label, strategy, concurrency, sliced in runs:
                before = sb.requests_served()
                measured = measure(functools.partial(_run, sb, strategy, concurrency, sliced))
                trips = sb.requests_served() - before
                key = strategy + str(concurrency) + ("" if sliced else "-unsliced")
                seconds[key] = min(seconds.get(key, measured.seconds), measured.seconds)
                found_mailboxes, found_devices, errors = measured.result
                print(
                    f"{label:40s} {measured.seconds:8.2f} s  {trips:6d} round trips  "
                    f"({found_mailboxes} mailboxes, {found_devices} devices, {errors} errors)"
                )
    if args.repeat > 1:
        print(
            f"best of {args.repeat}: sequential {seconds['per-mailbox1']:.2f} s, "
            f"concurrency 3 {seconds['per-mailbox3']:.2f} s, bulk {seconds['bulk3']:.2f} s"
        )
    baseline = seconds["per-mailbox1"]
    print(f"bulk vs per-mailbox sequential:           {ratio(baseline, seconds['bulk3'])} "
          "faster (target >= 20x)")  # fmt: skip
    print(f"concurrency 3 vs per-mailbox sequential:  {ratio(baseline, seconds['per-mailbox3'])} "
          "faster (target >= 2.5x)")  # fmt: skip
    print(f"bulk sliced vs unsliced:                  "
          f"{ratio(seconds['bulk3-unsliced'], seconds['bulk3'])} faster")


if __name__ == "__main__":
    main()
