"""Collection strategies against the sandbox: same rows as the ground truth, either way,
and an interrupted run resumes without re-querying or doubling anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.checkpoint import Checkpoint
from bridge.errors import CommandNotFound
from bridge.exchange import (
    DEVICE_ID_BOUNDS,
    MAILBOX_NAME_BOUNDS,
    PHASE_DEVICES,
    PHASE_MAILBOXES,
    collect,
    device_parent,
)
from bridge.remote import ConnectionSettings, RetryPolicy, Session
from bridge.remote.budget import CmdletBudget
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall, ErrorSpec, PipelineOutcome
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox

MAILBOX_SLICES = len(MAILBOX_NAME_BOUNDS) + 1
DEVICE_SLICES = len(DEVICE_ID_BOUNDS) + 1
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
KEY = {"strategy": "per-mailbox"}


def settings_for(sb: Sandbox, concurrency: int = 3) -> ConnectionSettings:
    return ConnectionSettings(
        server=sb.host, port=sb.port, auth="ntlm", username=sb.username,
        concurrency=concurrency, retry=FAST_RETRY,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=25, seed=7) as sb:
        yield sb
        assert sb.internal_errors == []


def truth(sb: Sandbox, types: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Identities of the mailboxes of ``types`` and of their devices, in Exchange's order."""
    mailboxes = [m for m in sb.organisation.mailboxes if m["RecipientTypeDetails"] in types]
    names = {m["Identity"] for m in mailboxes}
    devices = [d["Identity"] for d in sb.organisation.devices if d["MailboxIdentity"] in names]
    return [str(m["Identity"]) for m in mailboxes], devices


def ids(rows: list[dict[str, object]]) -> list[str]:
    """The rows' identities, sorted: the slices come in Name (DeviceId) order, not in
    Exchange's; equal sorted lists also mean nothing lost or doubled."""
    return sorted(str(row["Identity"]) for row in rows)


def plain(devices: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in d.items() if k != "QueriedMailbox"} for d in devices]


@pytest.mark.parametrize("types", [("UserMailbox",), ("UserMailbox", "SharedMailbox")])
def test_both_strategies_give_the_ground_truth(sandbox: Sandbox, types: tuple[str, ...]) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        bulk = collect(session, "bulk", recipient_types=types)
        classic = collect(session, "per-mailbox", recipient_types=types, concurrency=3)
    mailbox_ids, device_ids = truth(sandbox, types)
    assert ids(bulk.mailboxes) == sorted(mailbox_ids)
    assert ids(bulk.devices) == sorted(device_ids)
    assert bulk.mailboxes == classic.mailboxes
    by_identity = lambda row: str(row["Identity"])  # noqa: E731
    assert sorted(plain(classic.devices), key=by_identity) == sorted(bulk.devices, key=by_identity)
    assert all(d["QueriedMailbox"] == device_parent(d) for d in classic.devices)
    assert bulk.errors == classic.errors == []
    # each run also asks Get-OrganizationConfig for the organisation's name; Get-Mailbox
    # and Get-MobileDevice go in slices
    assert bulk.meta["commands"] == MAILBOX_SLICES + DEVICE_SLICES + 1
    assert classic.meta["commands"] == MAILBOX_SLICES + 1 + len(mailbox_ids)
    assert bulk.meta["organization"] == classic.meta["organization"] == "Contoso"


def test_a_device_under_two_mailboxes_is_kept_under_both(sandbox: Sandbox) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        both = collect(session, "bulk", recipient_types=("UserMailbox", "SharedMailbox"))
    seen: dict[object, set[object]] = {}
    for device in both.devices:
        seen.setdefault(device["DeviceID"], set()).add(device_parent(device))
    assert any(len(parents) == 2 for parents in seen.values())


def test_bulk_filter_is_applied_on_the_server(sandbox: Sandbox) -> None:
    outlook = "DeviceModel -eq 'Outlook for iOS and Android'"
    with Session(settings_for(sandbox), sandbox.password) as session:
        filtered = collect(session, "bulk", device_filter=outlook)
    _, device_ids = truth(sandbox, ("UserMailbox",))
    expected = [
        d["Identity"] for d in sandbox.organisation.devices
        if d["Identity"] in set(device_ids) and d["DeviceModel"] == "Outlook for iOS and Android"
    ]  # fmt: skip
    assert expected and ids(filtered.devices) == sorted(expected)
    assert filtered.meta["device_filter"] == outlook
    with Session(settings_for(sandbox), sandbox.password) as session:
        classic = collect(session, "per-mailbox", device_filter=outlook)
    assert classic.meta["device_filter"] is None  # not applied on the server
    assert len(classic.devices) == len(device_ids)


class _Recorder:
    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.total = 0
        self.finished = 0

    def start(self, label: str, total: int | None) -> None:
        self.phases.append((label, total))

    def advance(self, count: int = 1) -> None:
        self.total += count

    def finish(self) -> None:
        self.finished += 1


def test_progress_counts_objects_in_bulk_and_mailboxes_per_mailbox(sandbox: Sandbox) -> None:
    bulk, classic = _Recorder(), _Recorder()
    with Session(settings_for(sandbox), sandbox.password) as session:
        result = collect(session, "bulk", progress=bulk)
        collect(session, "per-mailbox", progress=classic)
    assert bulk.phases == [("Mailboxes and devices", None)] and bulk.finished == 1
    # every object received: the mailboxes, and the devices of all mailboxes
    assert bulk.total == len(result.mailboxes) + len(sandbox.organisation.devices)
    assert classic.phases == [("Mailboxes", len(result.mailboxes))]
    assert classic.total == len(result.mailboxes)


class _Interrupt:
    """A progress reporter that presses Ctrl+C after ``after`` mailboxes."""

    def __init__(self, after: int) -> None:
        self.after, self.done = after, 0

    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.done >= self.after:
            raise KeyboardInterrupt

    def finish(self) -> None:
        pass


@pytest.mark.parametrize("concurrency", [1, 3])
def test_interrupted_run_resumes_without_requery_or_duplicates(
    sandbox: Sandbox, tmp_path: Path, concurrency: int
) -> None:
    folder = tmp_path / "run"
    with Session(settings_for(sandbox), sandbox.password) as session:
        straight = collect(session, "per-mailbox", concurrency=concurrency)
        store = Checkpoint.open(folder, KEY, resume=False)
        with pytest.raises(KeyboardInterrupt):
            collect(session, "per-mailbox", checkpoint=store, progress=_Interrupt(7),
                    concurrency=concurrency)  # fmt: skip
        store.close()

    resumed_store = Checkpoint.open(folder, KEY, resume=True)
    saved = len(resumed_store.done_keys("mailbox-devices"))
    assert saved == 7
    with Session(settings_for(sandbox), sandbox.password) as session:
        resumed = collect(session, "per-mailbox", checkpoint=resumed_store, concurrency=concurrency)
    # only the mailboxes not yet saved were queried again (Get-Mailbox was saved too),
    # plus Get-OrganizationConfig
    assert resumed.meta["commands"] == len(straight.mailboxes) - saved + 1
    assert resumed.meta["resumed"] is True
    assert resumed.mailboxes == straight.mailboxes
    assert resumed.devices == straight.devices


def test_pipelines_the_server_stopped_are_saved_and_counted_once(tmp_path: Path) -> None:
    # the server stops two pipelines midway: each is run again whole, and neither the
    # checkpoint nor the progress count sees the rows of a stopped try
    with Sandbox(mailboxes=25, seed=7, stop_after_objects=5, pipeline_stops=2) as sb:
        progress = _Recorder()
        store = Checkpoint.open(tmp_path, KEY, resume=False)
        with Session(settings_for(sb), sb.password) as session:
            result = collect(session, "bulk", checkpoint=store, progress=progress)
            assert session.stats.retries == 2
        store.close()
        assert sb.internal_errors == []
    mailbox_ids, device_ids = truth(sb, ("UserMailbox",))
    assert ids(result.mailboxes) == sorted(mailbox_ids)
    assert ids(result.devices) == sorted(device_ids)
    assert result.errors == []
    assert progress.total == len(result.mailboxes) + len(sb.organisation.devices)
    saved = Checkpoint.open(tmp_path, KEY, resume=True)
    assert ids([row for rows in saved.rows(PHASE_MAILBOXES).values() for row in rows]) == ids(
        result.mailboxes)
    assert sum(len(rows) for rows in saved.rows(PHASE_DEVICES).values()) == len(
        sb.organisation.devices)


def test_bulk_resume_skips_finished_commands(sandbox: Sandbox, tmp_path: Path) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        first = collect(session, "bulk", checkpoint=Checkpoint.open(tmp_path, KEY, resume=False))
        again = collect(session, "bulk", checkpoint=Checkpoint.open(tmp_path, KEY, resume=True))
    assert again.meta["commands"] == 1  # Get-OrganizationConfig only
    assert (again.mailboxes, again.devices) == (first.mailboxes, first.devices)


class _FailingHost:
    """The sandbox's Exchange cmdlets, except a terminating error for one mailbox, or
    Get-MobileDeviceStatistics missing altogether (RBAC)."""

    def __init__(self, organisation: Organisation, bad_identity: str | None) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.bad_identity = bad_identity

    def has_command(self, name: str) -> bool:
        if self.bad_identity is None and name.lower() == "get-mobiledevicestatistics":
            return False
        return self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        mailbox = commands[0].parameters.get("Mailbox")
        if mailbox is not None and mailbox == self.bad_identity:
            spec = ErrorSpec(
                message=f"Couldn't find '{mailbox}' as a recipient.",
                exception_type="Microsoft.Exchange.Management.AirSync.RecipientNotFoundException",
                category="InvalidArgument",
                fully_qualified_error_id="RecipientNotFound,GetMobileDeviceStatistics",
                reason="RecipientNotFoundException",
            )
            return PipelineOutcome(events=iter(()), terminating=spec)
        return self.real.invoke(commands, user)


def _sandbox_with(bad_identity: str | None) -> Any:
    organisation = Organisation(mailboxes=12, seed=3)
    return Sandbox(organisation=organisation, host=_FailingHost(organisation, bad_identity))


def test_one_failing_mailbox_is_an_error_row_not_the_end() -> None:
    organisation = Organisation(mailboxes=12, seed=3)
    users = [m for m in organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    bad = str(users[2]["Identity"])
    with Sandbox(organisation=organisation, host=_FailingHost(organisation, bad)) as sb:
        with Session(settings_for(sb), sb.password) as session:
            result = collect(session, "per-mailbox")
        assert sb.internal_errors == []
    [error] = result.errors
    assert error["Mailbox"] == bad
    assert error["Category"] == "RecipientNotFoundException"
    assert error["Message"] == f"Couldn't find '{bad}' as a recipient."
    assert str(error["Command"]).startswith("Get-MobileDeviceStatistics -Mailbox ")
    assert {d["QueriedMailbox"] for d in result.devices} <= {m["Identity"] for m in users} - {bad}
    assert len(result.mailboxes) == len(users)


def test_a_cmdlet_missing_for_rbac_stops_the_run() -> None:
    with _sandbox_with(None) as sb:
        with Session(settings_for(sb), sb.password) as session:
            with pytest.raises(CommandNotFound, match="Get-MobileDeviceStatistics -Mailbox"):
                collect(session, "per-mailbox")


class _InterruptAfterSave(Checkpoint):
    """Ctrl+C (in the main thread, as a real one) right after the first unit is saved."""

    def save(self, phase: str, key: str, rows: Any, errors: Any = ()) -> None:
        super().save(phase, key, rows, errors)
        raise KeyboardInterrupt


def test_ctrl_c_in_bulk_stops_the_other_command_promptly(tmp_path: Path) -> None:
    # 0.1 s per object: Get-Mailbox for the shared and room mailboxes takes ~0.2 s, the
    # device pipeline (every mailbox's devices) ~2 s. Ctrl+C when the mailboxes are in
    # must not wait for the devices to finish streaming.
    with Sandbox(mailboxes=20, seed=7, latency_per_object=0.1) as sb:
        device_seconds = 0.1 * len(sb.organisation.devices)
        types = ("SharedMailbox", "RoomMailbox")
        store = _InterruptAfterSave.open(tmp_path / "run", KEY, resume=False)
        with Session(settings_for(sb), sb.password) as session:
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                collect(session, "bulk", types, checkpoint=store)
            elapsed = time.monotonic() - started
        store.close()
        assert elapsed < device_seconds - 0.5
        resumed_store = Checkpoint.open(tmp_path / "run", KEY, resume=True)
        done = len(resumed_store.done_keys(PHASE_MAILBOXES) | resumed_store.done_keys(
            PHASE_DEVICES))
        assert done == 1  # the one slice saved before Ctrl+C
        with Session(settings_for(sb), sb.password) as session:
            resumed = collect(session, "bulk", types, checkpoint=resumed_store)
        # the other slices, Get-OrganizationConfig
        assert resumed.meta["commands"] == MAILBOX_SLICES + DEVICE_SLICES - 1 + 1
        assert ids(resumed.devices) == sorted(truth(sb, types)[1]) != []
        assert sb.internal_errors == []


def test_micro_delays_are_counted_not_listed_as_warnings(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # pacing to the budget is off here (test_remote tests it): it would wait out 5 s
    monkeypatch.setattr(CmdletBudget, "over_budget", lambda self: None)
    with Sandbox(mailboxes=6, seed=2, cmdlet_budget=10, budget_window=5.0, micro_delay=0.01
                 ) as sb:
        with Session(settings_for(sb), sb.password) as session:
            result = collect(session, "per-mailbox", concurrency=1)
        assert sb.internal_errors == []
    assert result.meta["micro_delays"] >= 1
    assert result.meta["warnings"] == []


class _ThrottledDevicesHost:
    """Exchange Online's budget refusal ("Please wait for N seconds") for every device
    pipeline; Get-Mailbox answers after a moment, once the device pipeline is waiting."""

    def __init__(self, organisation: Organisation, wait_seconds: int) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.wait_seconds = wait_seconds

    def has_command(self, name: str) -> bool:
        return self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name.lower() == "get-mobiledevice":
            spec = ErrorSpec(
                message="Operation aborted because the operation has exceeded your throttling "
                f"policy budget. Please wait for {self.wait_seconds} seconds.",
                exception_type="System.Management.Automation.RemoteException",
                category="NotSpecified",
                fully_qualified_error_id="OverBudget",
            )
            return PipelineOutcome(events=iter(()), terminating=spec)
        time.sleep(0.3)
        return self.real.invoke(commands, user)


def test_ctrl_c_does_not_wait_out_another_commands_retry_backoff(tmp_path: Path) -> None:
    # the device pipeline is told to wait 20 s before retrying; Ctrl+C meanwhile (right
    # after Get-Mailbox is saved) must end the run at once, not after the wait
    organisation = Organisation(mailboxes=8, seed=3)
    with Sandbox(organisation=organisation, host=_ThrottledDevicesHost(organisation, 20)) as sb:
        store = _InterruptAfterSave.open(tmp_path / "run", KEY, resume=False)
        with Session(settings_for(sb), sb.password) as session:
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                collect(session, "bulk", checkpoint=store)
            elapsed = time.monotonic() - started
        store.close()
        assert sb.internal_errors == []
    assert elapsed < 5


class _NoOrganizationConfigHost:
    """The sandbox's Exchange cmdlets without Get-OrganizationConfig (RBAC), or with it
    failing (a terminating error)."""

    def __init__(self, organisation: Organisation, missing: bool) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.missing = missing

    def has_command(self, name: str) -> bool:
        if self.missing and name.lower() == "get-organizationconfig":
            return False
        return self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name.lower() == "get-organizationconfig":
            spec = ErrorSpec(
                message="Active Directory operation failed on DC01.contoso.com.",
                exception_type="Microsoft.Exchange.Data.Directory.ADOperationException",
                category="WriteError",
                fully_qualified_error_id="GetOrganizationConfig",
            )
            return PipelineOutcome(events=iter(()), terminating=spec)
        return self.real.invoke(commands, user)


@pytest.mark.parametrize("strategy", ["bulk", "per-mailbox"])
@pytest.mark.parametrize("missing", [True, False])
def test_no_organization_config_falls_back_quietly(strategy: str, missing: bool) -> None:
    organisation = Organisation(mailboxes=12, seed=3)
    host = _NoOrganizationConfigHost(organisation, missing)
    with Sandbox(organisation=organisation, host=host) as sb:
        with Session(settings_for(sb), sb.password) as session:
            result = collect(session, strategy)
        assert sb.internal_errors == []
    users = [m for m in organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    assert len(result.mailboxes) == len(users) and result.errors == []
    assert result.meta["organization"] is None
    note = str(result.meta["organization_note"])
    if missing:
        assert note == "Get-OrganizationConfig is not available to this user"
    else:
        assert note.startswith("Get-OrganizationConfig failed: ")
        assert "Active Directory operation failed on DC01.contoso.com." in note
