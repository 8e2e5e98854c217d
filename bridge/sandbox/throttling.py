"""Exchange's throttling as the sandbox applies it: runspace and cmdlet budgets, and their texts.

Texts from Exchange 2013's code (EXCHANGE_OBJECTS.md, "Corrections and additions"): an
over-budget new command is refused by the HTTP module with HTTP 400 and a plain-text
body; a running cmdlet ends with OverBudgetException (category Context); a micro delay
is a warning from 10 s up, else a verbose record. The budget snapshots' exact contents
are unverified (no public capture): they follow the runspace-limit text's shape.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime

from bridge.sandbox.contract import ErrorSpec, VerboseMessage, WarningMessage

POLICY_DN = (
    "CN=GlobalThrottlingPolicy_{policy_id},CN=Global Settings,CN=First Organization,"
    "CN=Microsoft Exchange,CN=Services,CN=Configuration,{dc}"
)
CONCURRENCY_MESSAGE = (
    "[AuthZRequestId={request_id}][FailureCategory=AuthZ-AuthorizationException] Fail to "
    "create a runspace because you have exceeded the maximum number of connections allowed "
    ": {limit} for the policy party : MaxConcurrency. Please close existing runspace and try "
    "again.\r\nPolicy: {policy_dn}; \r\nSnapshot: "
    "Owner: Sid~{user}~PowerShell~false\r\nBudgetType: PowerShell\r\nActiveRunspaces: "
    "{limit}/{limit}\r\n"
)
MICRO_DELAY_MESSAGE = (
    "Micro delay applied. Actual delayed: {0} msecs, Enforced: True, Capped delay: {0} "
    "msecs, Required: False, Additional info: [Server={1}][Budget=PowerShellMaxCmdlets]."
)
OVER_BUDGET_MESSAGE = (
    "Operation aborted because the operation has exceeded your throttling policy budget. "
    "Please wait for {0} seconds."
)
OVER_BUDGET_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.OverBudgetException"
#: Exchange writes a micro delay as a warning from this many seconds up, else as verbose
WARNING_DELAY = 10.0


class HttpRefusal(Exception):
    """Answer the request with this HTTP status and plain-text body (no WSMan envelope)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


class Budgets:
    """One sandbox's throttling state: the cmdlets each user ran within the window."""

    def __init__(self, seed: int, server: str, budget: int | None, window: float) -> None:
        self.seed = seed
        self.server = server
        self.budget = budget
        self.window = window
        self._lock = threading.Lock()
        self._cmdlet_times: dict[str, deque[float]] = {}

    def policy_dn(self, user: str) -> str:
        domain = user.split("@", 1)[-1]
        dc = ",".join(f"DC={part}" for part in domain.split("."))
        return POLICY_DN.format(policy_id=uuid.UUID(int=self.seed), dc=dc)

    def snapshot(self, user: str, used: int) -> str:
        return (
            f"Owner: Sid~{user}~PowerShell~false\r\nBudgetType: PowerShell\r\n"
            f"Cmdlets: {used}/{self.budget}\r\n"
        )

    def concurrency_message(self, user: str, limit: int) -> str:
        return CONCURRENCY_MESSAGE.format(
            request_id=uuid.uuid4(), limit=limit, policy_dn=self.policy_dn(user), user=user
        )

    def charge(self, user: str, count: int) -> tuple[int, float]:
        """Record ``count`` cmdlets for ``user``; return the number used in the window
        (including these) and the seconds until the oldest leaves the window."""
        now = time.monotonic()
        with self._lock:
            times = self._cmdlet_times.setdefault(user, deque())
            while times and now - times[0] > self.window:
                times.popleft()
            times.extend(itertools.repeat(now, count))
            wait = self.window - (now - times[0]) if times else 0.0
            return len(times), max(0.0, wait)

    def http_refusal(self, user: str, used: int, wait: float) -> HttpRefusal:
        """Exchange's HTTP module refusing a new command over budget: HTTP 400, plain text."""
        text = (
            "[FailureCategory=AuthZ-OverBudgetException] "
            f"{OVER_BUDGET_MESSAGE.format(_seconds(wait))}"
            f"\r\nPolicy: {self.policy_dn(user)}; \r\nSnapshot: {self.snapshot(user, used)}"
        )
        return HttpRefusal(400, text)

    def micro_delay_note(
        self, user: str, used: int, delay: float
    ) -> WarningMessage | VerboseMessage:
        """The micro-delay note: a warning at 10 s or more, otherwise verbose only.

        Exchange writes the short form with WriteVerbose; whether a client that did not
        ask for -Verbose receives it depends on the session's VerbosePreference
        (unverified for Exchange's endpoint): the sandbox always sends it."""
        text = (
            MICRO_DELAY_MESSAGE.format(int(delay * 1000), self.server)
            + f"; PolicyDN: {self.policy_dn(user)}; Snapshot: {self.snapshot(user, used)}"
        )
        return WarningMessage(text) if delay >= WARNING_DELAY else VerboseMessage(text)

    def over_budget_error(self, command: str, user: str, wait: float) -> ErrorSpec:
        """A running cmdlet over budget: OverBudgetException, category Context (1003)."""
        stamp = datetime.now(UTC).strftime("%m/%d/%Y %I:%M:%S %p")
        message = (
            f"{OVER_BUDGET_MESSAGE.format(_seconds(wait))} (PolicyDN: {self.policy_dn(user)}; "
            f"Snapshot: {self.snapshot(user, 0).strip()}; Computer: {self.server})"
        )
        return ErrorSpec(
            message=message,
            exception_type=OVER_BUDGET_TYPE,
            category="Context",
            fully_qualified_error_id=(
                f"[Server={self.server},RequestId={uuid.uuid4()},TimeStamp={stamp}] "
                f"[FailureCategory=Cmdlet-OverBudgetException] 5A9F2B71,{command}"
            ),
            command_name=command,
            reason="OverBudgetException",
        )


def _seconds(wait: float) -> int:
    return max(1, round(wait))
