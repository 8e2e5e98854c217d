"""How fast the sandbox endpoint streams objects to pypsrp, and how fast it starts.

Prints, each next to a baseline measured in the same run:
- objects/s that pypsrp receives from the sandbox (its own process, as a server would be)
  for Get-Mailbox -ResultSize Unlimited and Get-MobileDevice | Get-MobileDeviceStatistics
  on 10,000 mailboxes, against pypsrp deserializing the very same CLIXML in memory (the
  client's own floor: what is left is HTTP, NTLM encryption, WSMan and PSRP framing);
  with round trips (requests_served) and the client's peak memory;
- Sandbox(N).start() for 200 and 100,000 mailboxes against building Organisation(N)
  alone (what the server adds: the account, the NTLM user, the listening socket).

Run: python -m benchmarks.sandbox [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from benchmarks._measure import measure, ratio
from benchmarks._sandbox_process import SandboxProcess, sandbox_process
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall, SerializedObject
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox

PIPELINES: dict[str, list[CommandCall]] = {
    "Get-Mailbox -ResultSize Unlimited": [
        CommandCall("Get-Mailbox", {"ResultSize": "Unlimited"}),
    ],
    "Get-MobileDevice | Get-MobileDeviceStatistics": [
        CommandCall("Get-MobileDevice", {"ResultSize": "Unlimited"}),
        CommandCall("Get-MobileDeviceStatistics"),
    ],
}


def _invoke(runspace: RunspacePool, commands: list[CommandCall]) -> int:
    shell = PowerShell(runspace)
    for call in commands:
        shell.add_cmdlet(call.name)
        for name, value in call.parameters.items():
            shell.add_parameter(name, value)
    output = shell.invoke()
    if shell.had_errors:
        raise RuntimeError(f"pipeline failed: {[str(error) for error in shell.streams.error]}")
    return len(output)


def _stream(server: SandboxProcess, commands: list[CommandCall]) -> Callable[[], int]:
    def run() -> int:
        connection = WSMan(
            server.host, port=server.port, ssl=False, auth="ntlm", username=server.username,
            password=server.password, path="PowerShell",
        )  # fmt: skip
        with RunspacePool(connection, configuration_name="Microsoft.Exchange") as runspace:
            return _invoke(runspace, commands)

    return run


def _clixml(mailboxes: int, commands: list[CommandCall]) -> list[str]:
    host = ExchangeCmdlets(Organisation(mailboxes=mailboxes, seed=1))
    outcome = host.invoke(commands, "benchmark@contoso.com")
    return [event.clixml for event in outcome.events if isinstance(event, SerializedObject)]


def _deserialize(documents: list[str]) -> Callable[[], int]:
    def run() -> int:
        serializer = Serializer()
        return sum(1 for document in documents if serializer.deserialize(document) is not None)

    return run


def _start(mailboxes: int) -> Callable[[], float]:
    """Seconds from Sandbox(...) to accepting connections (stopping is not counted)."""

    def run() -> float:
        started = time.perf_counter()
        sandbox = Sandbox(mailboxes=mailboxes, seed=1).start()
        seconds = time.perf_counter() - started
        sandbox.stop()
        return seconds

    return run


def _organisation(mailboxes: int) -> Callable[[], int]:
    def run() -> int:
        return len(Organisation(mailboxes=mailboxes, seed=1).mailbox_entries)

    return run


def _per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args(argv)
    stream_size = 1_000 if args.quick else 10_000
    start_sizes = [200, 5_000] if args.quick else [200, 100_000]

    print(f"Streaming to pypsrp (NTLM over HTTP, sandbox in its own process), "
          f"{stream_size:,} mailboxes")
    with sandbox_process(mailboxes=stream_size, seed=1) as server:
        for name, commands in PIPELINES.items():
            documents = _clixml(stream_size, commands)
            baseline = measure(_deserialize(documents))
            before = server.requests_served()
            streamed = measure(_stream(server, commands))
            round_trips = server.requests_served() - before
            count: Any = streamed.result
            if count != len(documents):
                raise RuntimeError(f"{name}: streamed {count}, expected {len(documents)}")
            print(f"  {name}: {count:,} objects in {streamed.seconds:.2f} s = "
                  f"{_per_second(count, streamed.seconds)}, {round_trips} HTTP requests, "
                  f"client peak +{streamed.peak_bytes / 2**20:.0f} MiB")
            print(f"    baseline pypsrp deserializing the same CLIXML in memory: "
                  f"{baseline.seconds:.2f} s = {_per_second(count, baseline.seconds)}; "
                  f"end to end is {ratio(streamed.seconds, baseline.seconds)} the baseline")

    print("Start-up: Sandbox(N).start() until it accepts connections")
    for size in start_sizes:
        started = measure(_start(size))
        baseline = measure(_organisation(size))
        seconds: float = started.result
        print(f"  {size:,} mailboxes: {seconds:.3f} s, peak +"
              f"{started.peak_bytes / 2**20:.0f} MiB; baseline Organisation({size:,}) alone "
              f"{baseline.seconds:.3f} s ({ratio(seconds, baseline.seconds)})")


if __name__ == "__main__":
    main()
