"""Pacing under Exchange Online's cmdlet budget: commands/s of a per-mailbox run against
the rate the budget allows.

The sandbox (its own process) allows ``--budget`` cmdlets per ``--window`` seconds (the
default 100 per 5 s: 20/s); over it, commands run after a micro delay with a warning,
over twice it they fail with the throttling error and are retried after a wait. The
per-mailbox strategy at concurrency 3 sends one command per mailbox, faster than that
budget unpaced. Printed: commands/s against the budget's rate (target >= 0.9 of it),
micro delays and throttling retries; and the same run without a budget, the ceiling.

    python -m benchmarks.pacing                   # 300 mailboxes, 100 cmdlets per 5 s
    python -m benchmarks.pacing --mailboxes 600   # longer: the steady rate
"""

from __future__ import annotations

import argparse
import time

from benchmarks._sandbox_process import SandboxProcess, sandbox_process
from bridge.exchange import collect
from bridge.remote import ConnectionSettings, Session


def _run(sb: SandboxProcess) -> tuple[float, int, int, int, int]:
    settings = ConnectionSettings(server=sb.host, port=sb.port, auth="ntlm",
                                  username=sb.username, concurrency=3)
    with Session(settings, sb.password) as session:
        started = time.perf_counter()
        result = collect(session, "per-mailbox", concurrency=3)
        seconds = time.perf_counter() - started
        stats = session.stats
    return seconds, stats.commands, stats.micro_delays, stats.retries, len(result.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=300)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    allowed = args.budget / args.window
    for label, knobs in (
        ("no budget (the ceiling)", {}),
        (f"budget {args.budget} per {args.window:g} s ({allowed:g}/s)",
         {"cmdlet_budget": args.budget, "budget_window": args.window, "micro_delay": 0.05}),
    ):
        with sandbox_process(mailboxes=args.mailboxes, seed=1, **knobs) as sb:
            seconds, commands, delays, retries, errors = _run(sb)
        rate = commands / seconds
        share = f"  {rate / allowed:.2f} of the budget's rate (target >= 0.9)" if knobs else ""
        print(f"{label:32s} {commands:5d} commands in {seconds:6.2f} s = {rate:5.1f}/s{share}; "
              f"{delays} micro delays, {retries} retries, {errors} errors")


if __name__ == "__main__":
    main()
