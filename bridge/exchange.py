"""Which Exchange cmdlets to run, and in what order: the two collection strategies.

``bulk`` (default): ``Get-Mailbox`` once and ``Get-MobileDevice -ResultSize Unlimited |
Get-MobileDeviceStatistics`` once (both at the same time when concurrency allows).
``per-mailbox``: the classic script: ``Get-Mailbox``, then
``Get-MobileDeviceStatistics -Mailbox <identity>`` for each mailbox, concurrently.
Both give the same mailboxes and devices; ``-ResultSize Unlimited`` is never left out
(without it Exchange silently stops at 1000).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from bridge.checkpoint import Checkpoint
from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    is_read_only,
    pipeline_text,
)
from bridge.errors import (
    BridgeError,
    CommandNotFound,
    ConfigError,
    ConnectionFailed,
    RemoteCommandError,
)
from bridge.source import Source
from bridge.throttling import FailureStreak, is_throttling

Row = dict[str, object]
_T = TypeVar("_T")

STRATEGIES = ("bulk", "per-mailbox")
DEFAULT_RECIPIENT_TYPES = ("UserMailbox",)

#: the separator between a mailbox's identity and its devices (on-prem "/", EXO "\")
DEVICE_CONTAINERS = ("/ExchangeActiveSyncDevices/", "\\ExchangeActiveSyncDevices\\")

PHASE_MAILBOXES = "mailboxes"
PHASE_DEVICES = "devices"  # bulk: the one pipeline
PHASE_MAILBOX_DEVICES = "mailbox-devices"  # per-mailbox: one unit per mailbox


class Progress(Protocol):
    """What collect reports progress to (the CLI's progress bar, or nothing)."""

    def start(self, label: str, total: int | None) -> None: ...

    def advance(self, count: int = 1) -> None: ...

    def finish(self) -> None: ...


# Progress: ``start(label, total)`` begins a phase; ``total`` None means a running count
# of objects received (bulk: how many will come is unknown), in which ``advance`` may be
# negative when a retried command starts over.


@dataclass
class Collection:
    """Rows as Exchange gave them, plus error rows and facts about the run."""

    mailboxes: list[Row]
    devices: list[Row]
    errors: list[Row]
    meta: dict[str, object] = field(default_factory=dict)


def mailbox_command(recipient_types: Sequence[str] = DEFAULT_RECIPIENT_TYPES) -> Command:
    return Command(
        "Get-Mailbox",
        {"RecipientTypeDetails": list(recipient_types), "ResultSize": "Unlimited"},
    )


def device_pipeline(device_filter: str | None = None) -> list[Command]:
    """``Get-MobileDevice -ResultSize Unlimited [-Filter F] | Get-MobileDeviceStatistics``."""
    parameters: dict[str, object] = {"ResultSize": "Unlimited"}
    if device_filter:
        parameters["Filter"] = device_filter
    return [Command("Get-MobileDevice", parameters), Command("Get-MobileDeviceStatistics")]


def organization_command() -> Command:
    """``Get-OrganizationConfig``: its Name is what Export-PsbridgeData.ps1 records."""
    return Command("Get-OrganizationConfig", {})


def organization_name(session: Source) -> tuple[str | None, str | None]:
    """The organisation's name from ``Get-OrganizationConfig``, or (None, why not).

    On-prem the Name is the organisation ("Contoso"); in Exchange Online the tenant's
    initial domain. The same name as the export script's manifest, so live and offline
    runs of one organisation share a history. Never fails the run: a user whose RBAC
    roles lack the cmdlet, or any failure, gives None and the reason.
    """
    try:
        result = session.run(organization_command())
    except CommandNotFound:
        return None, "Get-OrganizationConfig is not available to this user"
    except BridgeError as exc:
        return None, f"Get-OrganizationConfig failed: {exc}"
    for row in result.rows:
        name = row.get("Name")
        if isinstance(name, str) and name.strip():
            return name.strip(), None
    if result.errors:
        return None, f"Get-OrganizationConfig failed: {result.errors[0].message}"
    return None, "Get-OrganizationConfig returned no name"


def mailbox_devices_command(identity: str) -> Command:
    return Command("Get-MobileDeviceStatistics", {"Mailbox": identity})


def mailbox_identity(mailbox: Row) -> str:
    """The identity a per-mailbox query names the mailbox by (as the classic script)."""
    for key in ("Identity", "Guid", "PrimarySmtpAddress", "Alias"):
        value = mailbox.get(key)
        if value:
            return str(value)
    raise RemoteCommandError(f"Get-Mailbox returned a mailbox without identity: {mailbox!r}")


def device_parent(device: Row) -> str | None:
    """The mailbox identity a device sits under (its Identity's parent), if it has one."""
    identity = device.get("Identity")
    if not isinstance(identity, str):
        return None
    for container in DEVICE_CONTAINERS:
        at = identity.find(container)
        if at > 0:
            return identity[:at]
    return None


def error_row(
    message: str, category: str, *, mailbox: str | None = None, command: str | None = None
) -> Row:
    return {
        "Mailbox": mailbox,
        "Command": command,
        "Category": category,
        "Message": message,
        "When": datetime.now(UTC),
    }


def _record_rows(records: Sequence[ErrorRecord], *, mailbox: str | None, command: str) -> list[Row]:
    return [
        error_row(record.message, record.kind, mailbox=mailbox, command=command)
        for record in records
    ]


_RESULT_SIZE_WARNING = "By default, only the first"


def run_cmdlet(
    session: Source, name: str, parameters: dict[str, object]
) -> tuple[Command, CommandResult]:
    """Run one cmdlet for ``psbridge run``; never stop at Exchange's default 1000 items.

    When the server warns that it stopped at its default ResultSize and the caller did
    not choose one, the cmdlet is run again with ``-ResultSize Unlimited`` (a read-only
    one only: a Set- or Remove- one run again would make its change twice).
    """
    command = Command(name, parameters)
    result = session.run(command)
    chose_size = any(key.lower() == "resultsize" for key in parameters)
    warned = any(w.startswith(_RESULT_SIZE_WARNING) for w in result.warnings)
    if not chose_size and warned and is_read_only(command):
        command = Command(name, {**parameters, "ResultSize": "Unlimited"})
        result = session.run(command)
    return command, result


def _completed(futures: Iterable[cf.Future[_T]]) -> Iterator[cf.Future[_T]]:
    """``cf.as_completed``, but never blocking more than 0.2 s at a time.

    On Windows before Python 3.14 Ctrl+C does not interrupt a lock wait (CPython
    gh-74157), and as_completed blocks in one until a future finishes: in a bulk run
    Ctrl+C went unnoticed until a whole Get-MobileDevice pipeline had finished.
    """
    pending = set(futures)
    while pending:
        done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
        yield from done


class _NoProgress:
    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


def collect(
    session: Source,
    strategy: str = "bulk",
    recipient_types: Sequence[str] = DEFAULT_RECIPIENT_TYPES,
    device_filter: str | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
    concurrency: int | None = None,
) -> Collection:
    """Collect mailboxes and their mobile-device statistics from ``session``.

    ``device_filter`` is an OPATH filter for Get-MobileDevice (bulk only: the classic
    per-mailbox query cannot filter on the server, so the report filters afterwards).
    With a ``checkpoint`` every finished unit is saved at once and skipped on resume.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}: use {' or '.join(STRATEGIES)}")
    if not recipient_types:
        raise ConfigError("at least one recipient type is needed")
    workers = max(1, concurrency or session.concurrency)
    if workers > session.concurrency:
        session.set_concurrency(workers)
    bar = progress or _NoProgress()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    before = dataclasses.replace(session.stats)
    warnings: list[str] = []
    # One cheap command for the organisation's name: beside the others when a second
    # connection is allowed, else first.
    naming = cf.ThreadPoolExecutor(max_workers=1) if workers >= 2 else None
    try:
        if naming is not None:
            named = naming.submit(organization_name, session)
        else:
            organization, organization_note = organization_name(session)
        if strategy == "bulk":
            mailboxes, devices, errors = _bulk(
                session, recipient_types, device_filter, checkpoint, bar, workers, warnings
            )
        else:
            mailboxes, devices, errors = _per_mailbox(
                session, recipient_types, checkpoint, bar, workers, warnings
            )
        if naming is not None:
            for future in _completed([named]):
                organization, organization_note = future.result()
    finally:
        if naming is not None:
            naming.shutdown(wait=False, cancel_futures=True)
    meta: dict[str, object] = {
        "strategy": strategy,
        "recipient_types": list(recipient_types),
        # the OPATH filter the server applied (per-mailbox cannot: the report filters)
        "device_filter": device_filter if strategy == "bulk" else None,
        "device_filter_requested": device_filter,
        "server": session.endpoint,
        "configuration": session.configuration,
        # Get-OrganizationConfig's Name; None: it could not be read (organization_note
        # says why) and the report names the organisation by its mailboxes' domain
        "organization": organization,
        "organization_note": organization_note,
        "user": session.user,
        "concurrency": workers,
        "started": started,
        "finished": datetime.now(UTC),
        "seconds": round(time.perf_counter() - clock, 3),
        "commands": session.stats.commands - before.commands,
        "retries": session.stats.retries - before.retries,
        "reconnects": session.stats.reconnects - before.reconnects,
        "micro_delays": session.stats.micro_delays - before.micro_delays,
        "resumed": bool(checkpoint and checkpoint.resumed),
        # micro-delay warnings are Exchange pacing psbridge already follows (and counts in
        # micro_delays); each carries its own numbers, so listing them would only be noise
        "warnings": sorted({w for w in warnings if not w.startswith("Micro delay applied")}),
    }
    return Collection(mailboxes=mailboxes, devices=devices, errors=errors, meta=meta)


def _run_unit(
    session: Source,
    phase: str,
    commands: Command | list[Command],
    checkpoint: Checkpoint | None,
    warnings: list[str],
    on_output: Callable[[int], None] | None = None,
) -> tuple[list[Row], list[Row]]:
    """Run one whole-command unit, or read it back from the checkpoint when it is done."""
    if checkpoint is not None and checkpoint.is_done(phase):
        return checkpoint.rows(phase).get("", []), []
    label = pipeline_text(commands)
    result = session.run(commands, on_output=on_output)
    warnings.extend(result.warnings)
    errors = _record_rows(result.errors, mailbox=None, command=label)
    if checkpoint is not None:
        checkpoint.save(phase, "", result.rows, errors)
    return result.rows, errors


def _bulk(
    session: Source,
    recipient_types: Sequence[str],
    device_filter: str | None,
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
) -> tuple[list[Row], list[Row], list[Row]]:
    # How many objects will come is unknown: the bar counts them as they arrive.
    bar.start("Mailboxes and devices", None)
    units: list[tuple[str, Command | list[Command]]] = [
        (PHASE_MAILBOXES, mailbox_command(recipient_types)),
        (PHASE_DEVICES, device_pipeline(device_filter)),
    ]
    received = {phase: 0 for phase, _ in units}

    def counter(phase: str) -> Callable[[int], None]:
        def on_output(count: int) -> None:  # called from the thread running ``phase``
            bar.advance(count - received[phase])
            received[phase] = count

        return on_output

    results: dict[str, tuple[list[Row], list[Row]]] = {}
    for phase, _ in units:
        if checkpoint is not None and checkpoint.is_done(phase):  # an earlier, interrupted run
            results[phase] = (checkpoint.rows(phase).get("", []), [])
            bar.advance(len(results[phase][0]))
    todo = [(phase, commands) for phase, commands in units if phase not in results]
    if workers >= 2 and len(todo) == 2:
        # The two commands do not depend on each other: run them side by side. The
        # checkpoint is written from this thread only.
        unit_warnings: dict[str, list[str]] = {phase: [] for phase, _ in todo}
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                pool.submit(
                    _run_unit, session, phase, commands, None, unit_warnings[phase],
                    counter(phase),
                ): phase
                for phase, commands in todo
            }  # fmt: skip
            try:
                for future in _completed(futures):
                    phase = futures[future]
                    rows, errors = future.result()
                    if checkpoint is not None:
                        checkpoint.save(phase, "", rows, errors)
                    results[phase] = (rows, errors)
                    warnings.extend(unit_warnings[phase])
            except BaseException:
                # Ctrl+C or a fatal error: the other command stops at its next round
                # trip instead of streaming on; what finished is in the checkpoint
                session.abort()
                raise
    else:
        for phase, commands in todo:
            results[phase] = _run_unit(
                session, phase, commands, checkpoint, warnings, counter(phase)
            )
    bar.finish()
    mailboxes, mailbox_errors = results[PHASE_MAILBOXES]
    all_devices, device_errors = results[PHASE_DEVICES]
    errors = mailbox_errors + device_errors
    if checkpoint is not None:  # this run's errors and those of earlier, interrupted tries
        errors = checkpoint.errors()
    # Get-MobileDevice covers every mailbox; keep the devices of the mailboxes asked for,
    # joined by identity (never by display name).
    in_scope = {str(m.get("Identity")) for m in mailboxes}
    devices = [d for d in all_devices if device_parent(d) in in_scope]
    return mailboxes, devices, errors


def _per_mailbox(
    session: Source,
    recipient_types: Sequence[str],
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
) -> tuple[list[Row], list[Row], list[Row]]:
    mailboxes, mailbox_errors = _run_unit(
        session, PHASE_MAILBOXES, mailbox_command(recipient_types), checkpoint, warnings
    )
    identities = [mailbox_identity(m) for m in mailboxes]
    done = checkpoint.done_keys(PHASE_MAILBOX_DEVICES) if checkpoint else set()
    todo = [identity for identity in dict.fromkeys(identities) if identity not in done]
    found: dict[str, list[Row]] = {}
    new_errors: list[Row] = list(mailbox_errors)
    bar.start("Mailboxes", len(todo))
    # A mailbox whose command gave up after its retries is one error row while other
    # mailboxes still succeed; that many give-ups in a row mean the server is gone: the
    # run stops, and those mailboxes (never saved) are asked again on --resume.
    streak = FailureStreak(limit=max(2, workers))
    gave_up: list[tuple[str, list[Row]]] = []

    def query(identity: str) -> tuple[str, list[Row], list[Row], ConnectionFailed | None]:
        command = mailbox_devices_command(identity)
        label = pipeline_text(command)
        try:
            result: CommandResult = session.run(command)
        except CommandNotFound:
            raise  # the cmdlet is missing for every mailbox: stop the run
        except RemoteCommandError as exc:
            # a terminating error for this one mailbox: record it, carry on
            record = exc.record if isinstance(exc.record, ErrorRecord) else None
            category = record.kind if record else "RemoteCommandError"
            message = record.message if record and record.message else str(exc)
            row = error_row(message, category, mailbox=identity, command=label)
            return identity, [], [row], None
        except ConnectionFailed as exc:
            # given up after its retries: this mailbox's trouble, or the server's? keep() tells
            category = "Throttled" if is_throttling(str(exc)) else "ConnectionFailed"
            return identity, [], [error_row(str(exc), category, mailbox=identity)], exc
        warnings.extend(result.warnings)
        rows = [{**row, "QueriedMailbox": identity} for row in result.rows]
        return identity, rows, _record_rows(result.errors, mailbox=identity, command=label), None

    def save(identity: str, rows: list[Row], errors: list[Row]) -> None:
        if checkpoint is not None:
            checkpoint.save(PHASE_MAILBOX_DEVICES, identity, rows, errors)
        found[identity] = rows
        new_errors.extend(errors)

    def keep(
        identity: str, rows: list[Row], errors: list[Row], failure: ConnectionFailed | None
    ) -> None:
        if failure is not None:
            gave_up.append((identity, errors))
            if streak.failed():
                raise failure
        else:
            streak.succeeded()  # the server answers: those given up on are error rows
            for failed, failed_errors in gave_up:
                save(failed, [], failed_errors)
            gave_up.clear()
            save(identity, rows, errors)
        bar.advance()

    if workers == 1:
        for identity in todo:
            keep(*query(identity))
    else:
        pool = cf.ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(query, identity) for identity in todo]
            for future in _completed(futures):
                keep(*future.result())
        except BaseException:
            # on Ctrl+C or a fatal error: queued mailboxes are dropped, those in flight
            # stop at their next round trip; everything kept so far is in the checkpoint
            session.abort()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    for failed, failed_errors in gave_up:  # the last ones, with too few to judge the server
        save(failed, [], failed_errors)
    bar.finish()
    if checkpoint is not None:
        found = {**checkpoint.rows(PHASE_MAILBOX_DEVICES), **found}
        errors = checkpoint.errors()
    else:
        errors = new_errors
    # devices in mailbox order, whatever order the answers came in
    devices = [row for identity in dict.fromkeys(identities) for row in found.get(identity, [])]
    return mailboxes, devices, errors
