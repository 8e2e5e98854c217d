"""Fetching objects through bridge.remote.Session against pypsrp's stock PowerShell.invoke().

Both fetch ``Get-Mailbox -ResultSize Unlimited`` for N mailboxes from the same sandbox
(served from its own process, after a warm-up so its CLIXML cache is filled) over
NTLM with message encryption, each in a forked child:

- baseline: pypsrp ``RunspacePool`` + ``PowerShell.add_cmdlet(...).invoke()``, building
  pypsrp's own output objects
- Session.run: the same messages, the output CLIXML read by bridge.clixml into rows

Target: Session >= 2x the baseline's objects/s.

    python -m benchmarks.fetch            # 10,000 mailboxes
    python -m benchmarks.fetch --quick    # 1,000 mailboxes, a smoke run
"""

from __future__ import annotations

import argparse
import functools

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from benchmarks._measure import Measurement, measure, ratio
from benchmarks._sandbox_process import SandboxProcess, sandbox_process
from bridge.remote import Command, ConnectionSettings, Session

GET_MAILBOX = Command("Get-Mailbox", {"ResultSize": "Unlimited"})


def _stock(sb: SandboxProcess) -> int:
    connection = WSMan(
        sb.host, port=sb.port, username=sb.username, password=sb.password, ssl=False,
        path="PowerShell", auth="ntlm",
    )  # fmt: skip
    with RunspacePool(connection, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Mailbox").add_parameter("ResultSize", "Unlimited")
        output = ps.invoke()
    return len(output)


def _session(sb: SandboxProcess) -> int:
    settings = ConnectionSettings(server=sb.host, port=sb.port, auth="ntlm", username=sb.username)
    with Session(settings, sb.password) as session:
        return len(session.run(GET_MAILBOX).rows)


def _line(label: str, measured: Measurement, trips: int) -> str:
    rate = measured.result / measured.seconds
    return (
        f"{label:40s} {measured.seconds:7.2f} s  {rate:9,.0f} objects/s  "
        f"{measured.peak_bytes / 2**20:7.1f} MiB peak  {trips:5d} round trips"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 mailboxes")
    args = parser.parse_args()
    mailboxes = 1000 if args.quick else args.mailboxes

    with sandbox_process(mailboxes=mailboxes, seed=1) as sb:
        print(f"sandbox: {sb.mailboxes} mailboxes, served from its own process")
        _session(sb)  # warm-up: the sandbox serializes each object once, then serves its cache
        results: dict[str, Measurement] = {}
        for label, fn in (
            ("pypsrp PowerShell.invoke() (baseline)", _stock),
            ("bridge.remote Session.run", _session),
        ):
            before = sb.requests_served()
            results[label] = measured = measure(functools.partial(fn, sb))
            assert measured.result == sb.mailboxes, (label, measured.result)
            print(_line(label, measured, sb.requests_served() - before))
    stock, ours = results.values()
    speedup = ratio(ours.result / ours.seconds, stock.result / stock.seconds)
    print(f"Session vs stock pypsrp: {speedup} the objects/s (target >= 2x)")


if __name__ == "__main__":
    main()
