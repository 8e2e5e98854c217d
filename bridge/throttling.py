"""Exchange's throttling, read from its own texts: how long it says to wait, and when to stop.

Pure functions over the texts Exchange sends (EXCHANGE_OBJECTS.md, "Corrections and
additions"): the HTTP 400 an over-budget new command gets, the OverBudgetException a
running cmdlet ends with, and the micro-delay notes (a warning at 10 s or more, else a
verbose record). No third-party imports: the transports call these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: a refusal to be retried later, possibly with the server's own wait: the runspace
#: limits, the budget texts, and the failure category Exchange's HTTP module writes
THROTTLED = re.compile(
    r"exceeded the maximum number of connections|exceeded your budget|"
    r"throttling policy budget|Please close existing runspace|OverBudgetException",
    re.IGNORECASE,
)
_WAIT_SECONDS = re.compile(r"Please wait for (\d+) seconds", re.IGNORECASE)
_MICRO_DELAY = re.compile(r"Micro delay applied\. Actual delayed: (\d+) msecs", re.IGNORECASE)
#: what opens the plain-text body of Exchange's HTTP 400 for an over-budget command
_HTTP_OVER_BUDGET = "[FailureCategory=AuthZ-OverBudgetException]"
#: where Exchange's texts append the policy and the budget snapshot: not for a user's eyes
_POLICY_TAIL = re.compile(r"\s*(?:\r?\n\s*Policy:|\(PolicyDN:|; PolicyDN:).*\Z", re.DOTALL)


def is_throttling(text: str) -> bool:
    """Whether ``text`` (a fault, an error record, an HTTP body) is Exchange throttling."""
    return bool(THROTTLED.search(text))


def server_wait(text: str) -> float | None:
    """The seconds Exchange asks for ("Please wait for N seconds."), if it names any."""
    match = _WAIT_SECONDS.search(text)
    return float(match.group(1)) if match else None


def http_over_budget(status: int | None, body: object) -> bool:
    """Whether an HTTP answer is Exchange's over-budget refusal of a new command: HTTP 400
    with a plain-text body that names the AuthZ-OverBudgetException failure category. Any
    other 400 stays what it was (a broken request: fatal)."""
    return status == 400 and _HTTP_OVER_BUDGET in str(body or "")


def summary(text: str) -> str:
    """A throttling text on one line, without the policy DN and budget snapshot."""
    return " ".join(_POLICY_TAIL.sub("", text).split())


def micro_delays_ms(texts: Iterable[str]) -> list[int]:
    """The micro delays (in ms) that warning or verbose texts report."""
    return [int(match.group(1)) for text in texts if (match := _MICRO_DELAY.search(text))]


def retry_note(label: str, reason: str, delay: float, *, throttled: bool) -> str:
    """The line shown above the progress bar while a command waits to be tried again."""
    if throttled:
        seconds = f"{delay:.0f}" if delay >= 1 else f"{delay:.1f}"
        return f"{label}: Exchange is throttling ({summary(reason)}); waiting {seconds} s"
    return f"{label}: {reason}; retrying in {delay:.1f} s"


@dataclass
class FailureStreak:
    """Per-mailbox runs: tells one mailbox whose command keeps failing from a dead server.

    A mailbox that gave up after its retries while other mailboxes' commands still
    succeed is one error row; ``limit`` give-ups in a row, with no success between,
    mean the server itself is gone and the run stops (its progress saved).
    """

    limit: int
    failures: int = 0

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self) -> bool:
        """Count one give-up; True when the run should stop."""
        self.failures += 1
        return self.failures >= self.limit
