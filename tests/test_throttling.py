"""Exchange's throttling as it really throttles, against the sandbox over real HTTP: the
HTTP 400 refusal is waited out, micro delays in the verbose stream slow the pace, and in
per-mailbox runs one mailbox that keeps failing is an error row while a dead server stops."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pytest

from bridge import throttling
from bridge.errors import ConnectionFailed
from bridge.exchange import collect
from bridge.remote import Command, ConnectionSettings, RetryPolicy, Session
from bridge.remote.budget import CmdletBudget
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall, PipelineOutcome
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox

HTTP_400_BODY = (
    "[FailureCategory=AuthZ-OverBudgetException] Operation aborted because the operation has "
    "exceeded your throttling policy budget. Please wait for 7 seconds.\r\nPolicy: "
    "CN=GlobalThrottlingPolicy_1,CN=Global Settings,DC=contoso,DC=com; \r\nSnapshot: Owner: "
    "Sid~admin~PowerShell~false\r\nBudgetType: PowerShell\r\n"
)


def settings_for(sb: Sandbox, retry: RetryPolicy, concurrency: int = 1) -> ConnectionSettings:
    return ConnectionSettings(
        server=sb.host, port=sb.port, auth="ntlm", username=sb.username,
        concurrency=concurrency, retry=retry,
    )  # fmt: skip


# -- the texts -----------------------------------------------------------------------


def test_http_400_is_throttling_only_with_exchanges_over_budget_body() -> None:
    assert throttling.http_over_budget(400, HTTP_400_BODY)
    assert not throttling.http_over_budget(400, "<html>Bad Request</html>")
    assert not throttling.http_over_budget(503, HTTP_400_BODY)
    assert throttling.server_wait(HTTP_400_BODY) == 7.0
    assert throttling.summary(HTTP_400_BODY) == (
        "[FailureCategory=AuthZ-OverBudgetException] Operation aborted because the operation "
        "has exceeded your throttling policy budget. Please wait for 7 seconds."
    )


def test_micro_delays_are_read_from_warning_and_verbose_texts() -> None:
    texts = [
        "Micro delay applied. Actual delayed: 250 msecs, Enforced: True, Capped delay: 250 "
        "msecs, Required: False, Additional info: [Server=EXCH01].; PolicyDN: CN=x; Snapshot: y",
        "By default, only the first 1000 items are returned.",
    ]
    assert throttling.micro_delays_ms(texts) == [250]


# -- over the wire ---------------------------------------------------------------------


@pytest.fixture
def no_learned_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    """psbridge's pacing to the budget (bridge.remote.budget) off, so a command reaches
    the server's HTTP 400 refusal instead of being held back before it."""
    monkeypatch.setattr(CmdletBudget, "over_budget", lambda self: None)


@pytest.mark.usefixtures("no_learned_pacing")
def test_http_400_over_budget_is_waited_out_as_told_and_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retry = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_server_wait=300)
    with Sandbox(mailboxes=3, seed=2, cmdlet_budget=1, budget_window=2.0) as sb:
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        with caplog.at_level(logging.WARNING, logger="bridge.remote"):
            with Session(settings_for(sb, retry), sb.password, sleep=sleep) as session:
                for _ in range(3):
                    assert len(session.run(Command("Get-Mailbox")).rows) == 3
                assert session.stats.reconnects == 0  # the connection was fine
        assert sb.internal_errors == []
    # the third command is over twice the budget: HTTP 400, "Please wait for 2 seconds."
    assert 2.0 in sleeps
    [note] = [r.getMessage() for r in caplog.records if "throttling" in r.getMessage()]
    assert note == (
        "Get-Mailbox: Exchange is throttling (throttled by the server: "
        "[FailureCategory=AuthZ-OverBudgetException] Operation aborted because the operation "
        "has exceeded your throttling policy budget. Please wait for 2 seconds.); waiting 2 s"
    )


@pytest.mark.usefixtures("no_learned_pacing")
def test_http_400_waits_are_bounded_and_the_retry_budget_ends_them() -> None:
    retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, max_server_wait=0.1)
    with Sandbox(mailboxes=3, seed=2, cmdlet_budget=1, budget_window=60.0) as sb:
        sleeps: list[float] = []
        with Session(settings_for(sb, retry), sb.password, sleep=sleeps.append) as session:
            session.run(Command("Get-Mailbox"))
            session.run(Command("Get-Mailbox"))
            with pytest.raises(ConnectionFailed) as caught:
                session.run(Command("Get-Mailbox"))
        assert sb.internal_errors == []
    # "Please wait for 60 seconds", bounded by max_server_wait (the rest: micro-delay pacing)
    assert max(sleeps) == 0.1 and 0.1 in sleeps
    assert str(caught.value).startswith(
        "Get-Mailbox: gave up after 2 tries: throttled by the server: "
        "[FailureCategory=AuthZ-OverBudgetException] Operation aborted"
    )
    assert caught.value.exit_code == 5


def test_verbose_micro_delays_set_the_pace() -> None:
    retry = RetryPolicy(attempts=3, base_delay=0.01, max_delay=5.0)
    with Sandbox(mailboxes=3, seed=2, cmdlet_budget=2, budget_window=30.0, micro_delay=0.3) as sb:
        sleeps: list[float] = []
        with Session(settings_for(sb, retry), sb.password, sleep=sleeps.append) as session:
            results = [session.run(Command("Get-Mailbox")) for _ in range(4)]
            assert session.stats.micro_delays == 2  # the third and fourth were over budget
        assert sb.internal_errors == []
    # the notes came as verbose records (under 10 s), not as warnings ...
    assert all(result.warnings == [] for result in results)
    # ... and set the pace: the third command's showed the budget (the 3 commands sent in
    # the 5 s period, less a margin: 2), so the fourth waited for the first to leave it
    assert sleeps and 4.0 < sum(sleeps) <= 5.1


class _Throttled:
    """The sandbox's cmdlets; Get-MobileDeviceStatistics for ``bad`` always ends with
    OverBudgetException, and after ``dies_after`` statistics calls every request is 503."""

    def __init__(self, organisation: Organisation, bad: str | None, dies_after: int | None) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.bad = bad
        self.dies_after = dies_after
        self.calls = 0
        self.sandbox: Any = None

    def has_command(self, name: str) -> bool:
        return self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name == "Get-MobileDeviceStatistics":
            self.calls += 1
            if self.dies_after is not None and self.calls >= self.dies_after:
                self.sandbox.knobs = dataclasses.replace(
                    self.sandbox.knobs, http_error_every=1, http_error_status=503
                )
            if commands[0].parameters.get("Mailbox") == self.bad:
                spec = self.sandbox.budgets.over_budget_error(commands[0].name, user, 1.0)
                return PipelineOutcome(events=iter(()), terminating=spec)
        return self.real.invoke(commands, user)


def test_per_mailbox_one_mailbox_throttled_beyond_retries_is_an_error_row() -> None:
    organisation = Organisation(mailboxes=12, seed=3)
    users = [m for m in organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    bad = str(users[1]["Identity"])
    retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, max_server_wait=0.05)
    host = _Throttled(organisation, bad, None)
    with Sandbox(organisation=organisation, host=host) as sb:
        host.sandbox = sb
        with Session(settings_for(sb, retry, 2), sb.password) as session:
            result = collect(session, "per-mailbox", concurrency=2)
        assert sb.internal_errors == []
    [error] = result.errors
    assert error["Mailbox"] == bad and error["Category"] == "Throttled"
    assert str(error["Message"]).startswith(
        f"Get-MobileDeviceStatistics -Mailbox '{bad}': gave up after 2 tries: throttled by "
        "the server: Operation aborted because the operation has exceeded your throttling "
        "policy budget. Please wait for 1 seconds."
    )
    expected = [d for d in organisation.devices if d["MailboxIdentity"] != bad]
    expected = [d for d in expected if d["MailboxIdentity"] in {m["Identity"] for m in users}]
    assert len(result.devices) == len(expected) > 0


def test_per_mailbox_a_dead_server_still_stops_the_run() -> None:
    retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)
    organisation = Organisation(mailboxes=12, seed=3)
    host = _Throttled(organisation, None, dies_after=3)
    with Sandbox(organisation=organisation, host=host) as sb:
        host.sandbox = sb
        with Session(settings_for(sb, retry, 1), sb.password) as session:
            with pytest.raises(ConnectionFailed, match="gave up after 2 tries: HTTP 503"):
                collect(session, "per-mailbox", concurrency=1)


def test_failure_streak_needs_a_run_of_give_ups() -> None:
    streak = throttling.FailureStreak(limit=2)
    assert not streak.failed()
    streak.succeeded()
    assert not streak.failed()
    assert streak.failed()
