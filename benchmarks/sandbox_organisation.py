"""Start-up of the sandbox organisation and how fast its cmdlets hand objects to the protocol.

Prints, each next to a baseline measured in the same run:
- building Organisation(N) for 200 and 100,000 mailboxes, against allocating the same
  number of bare 20-attribute objects (the floor of any in-memory organisation);
- Get-Mailbox -ResultSize Unlimited and Get-MobileDevice | Get-MobileDeviceStatistics
  through ExchangeCmdlets on 10,000 mailboxes, first call (serializes every object)
  against the second (the cached CLIXML, what a long-running sandbox serves).

Run: python -m benchmarks.sandbox_organisation [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from benchmarks._measure import measure, ratio
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall
from bridge.sandbox.organisation import Organisation


class _Bare:
    __slots__ = tuple(f"a{n}" for n in range(20))

    def __init__(self, value: int) -> None:
        for name in self.__slots__:
            setattr(self, name, value)


def _build(mailboxes: int) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        org = Organisation(mailboxes=mailboxes, seed=1)
        return len(org.mailbox_entries), sum(len(m.devices) for m in org.mailbox_entries)

    return run


def _bare(count: int) -> Callable[[], int]:
    def run() -> int:
        return len([_Bare(n) for n in range(count)])

    return run


def _stream(mailboxes: int) -> Callable[[], dict[tuple[str, str], Any]]:
    def run() -> dict[tuple[str, str], Any]:
        host = ExchangeCmdlets(Organisation(mailboxes=mailboxes, seed=1))
        timings: dict[tuple[str, str], Any] = {}
        pipelines = {
            "Get-Mailbox": [CommandCall("Get-Mailbox", {"ResultSize": "Unlimited"})],
            "Get-MobileDevice | Get-MobileDeviceStatistics": [
                CommandCall("Get-MobileDevice", {"ResultSize": "Unlimited"}),
                CommandCall("Get-MobileDeviceStatistics"),
            ],
        }
        for name, commands in pipelines.items():
            for attempt in ("first", "cached"):
                started = time.perf_counter()
                count = sum(1 for _ in host.invoke(commands, "bench").events)
                timings[(name, attempt)] = (count, time.perf_counter() - started)
        return timings

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = parser.parse_args()
    small, large, stream = (200, 5_000, 1_000) if args.quick else (200, 100_000, 10_000)

    for size in (small, large):
        built = measure(_build(size))
        mailboxes, devices = built.result
        floor = measure(_bare(mailboxes + devices))
        print(f"Organisation({size:,}): {built.seconds:.3f} s, peak +{built.peak_bytes / 2**20:.0f}"
              f" MiB ({mailboxes:,} mailboxes, {devices:,} devices); baseline "
              f"{mailboxes + devices:,} bare objects: {floor.seconds:.3f} s "
              f"-> {ratio(built.seconds, floor.seconds)}")

    timings = measure(_stream(stream)).result
    for name in ("Get-Mailbox", "Get-MobileDevice | Get-MobileDeviceStatistics"):
        count, first = timings[(name, "first")]
        _, cached = timings[(name, "cached")]
        print(f"{name} on {stream:,} mailboxes: {count:,} objects; first call "
              f"{count / first:,.0f} objects/s (baseline), cached {count / cached:,.0f} "
              f"objects/s -> {ratio(first, cached)} faster")


if __name__ == "__main__":
    main()
