"""Which Exchange cmdlets to run, and in what order: the two collection strategies.

``bulk`` (default): ``Get-Mailbox`` once and ``Get-MobileDevice -ResultSize Unlimited |
Get-MobileDeviceStatistics`` once (both at the same time when concurrency allows).
``per-mailbox``: the classic script: ``Get-Mailbox``, then
``Get-MobileDeviceStatistics -Mailbox <identity>`` for each mailbox, concurrently.
Both give the same mailboxes and devices; ``-ResultSize Unlimited`` is never left out
(without it Exchange silently stops at 1000).

Large reads go in slices: ``Get-Mailbox`` by ranges of the mailbox Name and
``Get-MobileDevice`` by ranges of the DeviceId (``-Filter "Name -ge 'c' -and Name -lt
'f'"``), each slice its own command and checkpoint unit, so a dropped connection, HTTP
5xx or IIS recycle redoes one slice instead of the whole organisation.
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
_R = TypeVar("_R")

STRATEGIES = ("bulk", "per-mailbox")
DEFAULT_RECIPIENT_TYPES = ("UserMailbox",)

#: the separator between a mailbox's identity and its devices (on-prem "/", EXO "\")
DEVICE_CONTAINERS = ("/ExchangeActiveSyncDevices/", "\\ExchangeActiveSyncDevices\\")

# Checkpoint phases. The slices' phases have names of their own: a run folder of a
# version that saved whole commands ("mailboxes", "devices") is then read as not done,
# never as rows to add to the slices'.
PHASE_MAILBOXES = "mailboxes-by-name"  # one unit per Name slice
PHASE_DEVICES = "devices-by-id"  # bulk: one unit per DeviceId slice
PHASE_MAILBOX_DEVICES = "mailbox-devices"  # per-mailbox: one unit per mailbox
PHASE_PARTNERSHIPS = "partnerships"  # one cmdlet per request: Get-MobileDevice

#: Where Get-Mailbox's Name slices start (case-insensitive, as the directory compares).
#: Each slice is ``Name -ge lower -and Name -lt upper`` and the first and last are open
#: (``Name -lt 'c'``, ``Name -ge 't'``): complementary bounds put every name in exactly one
#: slice whatever the server's collation, digits, punctuation and non-ASCII included.
#: Chosen so the slices of an English-named organisation are of similar size.
MAILBOX_NAME_BOUNDS = ("c", "f", "j", "m", "p", "t")
#: Where Get-MobileDevice's DeviceId slices start. Real DeviceIds cluster by maker
#: ("Appl..." iOS, "android...", "SEC..." Samsung) or are hex (Outlook): the bounds split
#: the iOS cluster and keep the hex ids apart from it.
DEVICE_ID_BOUNDS = ("4", "8", "a", "applm", "b", "s")


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


@dataclass(frozen=True)
class Slice:
    """A range of one property's values: from ``lower`` (included) to ``upper`` (not
    included); None leaves that end open."""

    lower: str | None = None
    upper: str | None = None

    @property
    def key(self) -> str:
        """The slice's checkpoint key, e.g. ``c..f``, ``..c``, ``t..``; ``..`` is all."""
        return f"{self.lower or ''}..{self.upper or ''}"

    def opath(self, prop: str) -> str | None:
        """The OPATH filter selecting the slice on ``prop``; None for the whole range."""
        parts = [f"{prop} -ge '{_quoted(self.lower)}'"] if self.lower is not None else []
        if self.upper is not None:
            parts.append(f"{prop} -lt '{_quoted(self.upper)}'")
        return " -and ".join(parts) or None


def _quoted(value: str) -> str:
    return value.replace("'", "''")


def slices(bounds: Sequence[str]) -> list[Slice]:
    """The slices between ``bounds`` (sorted): ``..b0``, ``b0..b1``, ..., ``bn..``; no
    bounds give one slice holding everything."""
    edges: list[str | None] = [None, *bounds, None]
    return [Slice(lower, upper) for lower, upper in zip(edges, edges[1:], strict=False)]


WHOLE = Slice()


def mailbox_command(
    recipient_types: Sequence[str] = DEFAULT_RECIPIENT_TYPES, name_slice: Slice = WHOLE
) -> Command:
    """``Get-Mailbox -RecipientTypeDetails T -ResultSize Unlimited [-Filter <Name slice>]``."""
    parameters: dict[str, object] = {
        "RecipientTypeDetails": list(recipient_types), "ResultSize": "Unlimited",
    }  # fmt: skip
    name_filter = name_slice.opath("Name")
    if name_filter:
        parameters["Filter"] = name_filter
    return Command("Get-Mailbox", parameters)


def device_pipeline(device_filter: str | None = None, id_slice: Slice = WHOLE) -> list[Command]:
    """``Get-MobileDevice -ResultSize Unlimited [-Filter F] | Get-MobileDeviceStatistics``;
    F is ``device_filter`` and the DeviceId slice's filter, both when both are given."""
    parameters: dict[str, object] = {"ResultSize": "Unlimited"}
    slice_filter = id_slice.opath("DeviceId")
    if device_filter and slice_filter:
        parameters["Filter"] = f"({device_filter}) -and ({slice_filter})"
    elif device_filter or slice_filter:
        parameters["Filter"] = device_filter or slice_filter
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


def mailbox_answer(
    identity: str, command: Command, outcome: CommandResult | RemoteCommandError,
    warnings: list[str],
) -> tuple[list[Row], list[Row]]:
    """One mailbox's Get-MobileDeviceStatistics answer as device rows (each naming the
    mailbox asked) and error rows; a terminating error is that mailbox's error row."""
    label = pipeline_text(command)
    if isinstance(outcome, RemoteCommandError):
        record = outcome.record if isinstance(outcome.record, ErrorRecord) else None
        category = record.kind if record else "RemoteCommandError"
        message = record.message if record and record.message else str(outcome)
        return [], [error_row(message, category, mailbox=identity, command=label)]
    warnings.extend(outcome.warnings)
    rows = [{**row, "QueriedMailbox": identity} for row in outcome.rows]
    return rows, _record_rows(outcome.errors, mailbox=identity, command=label)


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
    sliced: bool = True,
) -> Collection:
    """Collect mailboxes and their mobile-device statistics from ``session``.

    ``device_filter`` is an OPATH filter for Get-MobileDevice (bulk only: the classic
    per-mailbox query cannot filter on the server, so the report filters afterwards).
    With a ``checkpoint`` every finished unit is saved at once and skipped on resume.
    ``sliced`` (default) reads mailboxes and devices in slices (see
    :data:`MAILBOX_NAME_BOUNDS`), so a fault redoes one slice; False sends each read as
    one command (benchmarks compare the two).
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
        if strategy == "bulk" and not session.pipelines:
            # one cmdlet per request (Exchange Online's REST endpoint): bridge.batches,
            # imported here because it builds on this module's helpers
            from bridge.batches import collect_without_pipelines

            mailboxes, devices, errors = collect_without_pipelines(
                session, recipient_types, device_filter, checkpoint, bar, workers, warnings
            )
        elif strategy == "bulk":
            mailboxes, devices, errors = _bulk(
                session, recipient_types, device_filter, checkpoint, bar, workers, warnings,
                sliced,
            )
        else:
            mailboxes, devices, errors = _per_mailbox(
                session, recipient_types, checkpoint, bar, workers, warnings, sliced
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


@dataclass(frozen=True)
class _Unit:
    """One command of a strategy, saved to the checkpoint as (phase, key) when done."""

    phase: str
    key: str
    commands: Command | list[Command]


def _run_units(
    session: Source,
    units: Sequence[_Unit],
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
) -> dict[tuple[str, str], tuple[list[Row], list[Row]]]:
    """Run ``units`` (side by side when ``workers`` allows), each saved to the checkpoint
    as it finishes, or read back from it when an earlier, interrupted run finished it.

    The bar counts objects as they arrive; a retried unit's count starts over.
    """
    results: dict[tuple[str, str], tuple[list[Row], list[Row]]] = {}
    if checkpoint is not None:
        for phase in dict.fromkeys(unit.phase for unit in units):
            saved = checkpoint.rows(phase)
            for key in checkpoint.done_keys(phase):
                results[(phase, key)] = (saved.get(key, []), [])
                bar.advance(len(results[(phase, key)][0]))
    todo = [unit for unit in units if (unit.phase, unit.key) not in results]
    received = {(unit.phase, unit.key): 0 for unit in todo}

    def run(unit: _Unit) -> tuple[_Unit, CommandResult]:
        name = (unit.phase, unit.key)

        def on_output(count: int) -> None:  # called from the thread running ``unit``
            bar.advance(count - received[name])
            received[name] = count

        return unit, session.run(unit.commands, on_output=on_output)

    def keep(unit: _Unit, result: CommandResult) -> None:  # in this thread only
        warnings.extend(result.warnings)
        errors = _record_rows(result.errors, mailbox=None, command=pipeline_text(unit.commands))
        if checkpoint is not None:
            checkpoint.save(unit.phase, unit.key, result.rows, errors)
        results[(unit.phase, unit.key)] = (result.rows, errors)

    _each(session, workers, todo, run, lambda done: keep(*done))
    return results


def _each(session: Source, workers: int, items: Sequence[_T], work: Callable[[_T], _R],
          keep: Callable[[_R], None]) -> None:
    """``keep(work(item))`` for every item, ``workers`` at once (one: in this thread), each
    kept in this thread as it finishes. On Ctrl+C, a stop signal or a fatal error the
    commands in flight stop (their shells deleted) instead of streaming on, queued items
    are dropped, and no worker stuck in a request to a hung server is waited for."""
    if workers == 1 or len(items) <= 1:
        for item in items:
            keep(work(item))
        return
    pool = cf.ThreadPoolExecutor(max_workers=min(workers, len(items)))
    try:
        for future in _completed([pool.submit(work, item) for item in items]):
            keep(future.result())
    except BaseException:
        session.abort()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _joined(
    results: dict[tuple[str, str], tuple[list[Row], list[Row]]], units: Sequence[_Unit]
) -> tuple[list[Row], list[Row]]:
    """The rows and errors of ``units``, in the units' order."""
    rows: list[Row] = []
    errors: list[Row] = []
    for unit in units:
        unit_rows, unit_errors = results[(unit.phase, unit.key)]
        rows.extend(unit_rows)
        errors.extend(unit_errors)
    return rows, errors


def mailbox_units(recipient_types: Sequence[str], sliced: bool = True) -> list[_Unit]:
    """Get-Mailbox, one unit per Name slice (or one for all when not ``sliced``)."""
    return [
        _Unit(PHASE_MAILBOXES, part.key, mailbox_command(recipient_types, part))
        for part in slices(MAILBOX_NAME_BOUNDS if sliced else ())
    ]


def device_units(device_filter: str | None, sliced: bool = True) -> list[_Unit]:
    """Get-MobileDevice | Get-MobileDeviceStatistics, one unit per DeviceId slice."""
    return [
        _Unit(PHASE_DEVICES, part.key, device_pipeline(device_filter, part))
        for part in slices(DEVICE_ID_BOUNDS if sliced else ())
    ]


def _bulk(
    session: Source,
    recipient_types: Sequence[str],
    device_filter: str | None,
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
    sliced: bool,
) -> tuple[list[Row], list[Row], list[Row]]:
    # How many objects will come is unknown: the bar counts them as they arrive.
    bar.start("Mailboxes and devices", None)
    mailbox_parts = mailbox_units(recipient_types, sliced)
    device_parts = device_units(device_filter, sliced)
    # the slices do not depend on each other: all run side by side as workers allow
    results = _run_units(
        session, [*mailbox_parts, *device_parts], checkpoint, bar, workers, warnings
    )
    bar.finish()
    mailboxes, mailbox_errors = _joined(results, mailbox_parts)
    all_devices, device_errors = _joined(results, device_parts)
    errors = mailbox_errors + device_errors
    if checkpoint is not None:  # this run's errors and those of earlier, interrupted tries
        errors = checkpoint.errors()
    # Get-MobileDevice covers every mailbox; keep the devices of the mailboxes asked for,
    # joined by identity (never by display name), in mailbox order as per-mailbox gives
    # them (the slices come in DeviceId order).
    order = {str(m.get("Identity")): at for at, m in enumerate(mailboxes)}
    devices = [d for d in all_devices if device_parent(d) in order]
    devices.sort(key=lambda d: order[str(device_parent(d))])
    return mailboxes, devices, errors


def _per_mailbox(
    session: Source,
    recipient_types: Sequence[str],
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
    sliced: bool,
) -> tuple[list[Row], list[Row], list[Row]]:
    mailbox_parts = mailbox_units(recipient_types, sliced)
    results = _run_units(session, mailbox_parts, checkpoint, _NoProgress(), workers, warnings)
    mailboxes, mailbox_errors = _joined(results, mailbox_parts)
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
        try:
            outcome: CommandResult | RemoteCommandError = session.run(command)
        except CommandNotFound:
            raise  # the cmdlet is missing for every mailbox: stop the run
        except RemoteCommandError as exc:
            outcome = exc  # a terminating error for this one mailbox: record it, carry on
        except ConnectionFailed as exc:
            # given up after its retries: this mailbox's trouble, or the server's? keep() tells
            category = "Throttled" if is_throttling(str(exc)) else "ConnectionFailed"
            return identity, [], [error_row(str(exc), category, mailbox=identity)], exc
        return (identity, *mailbox_answer(identity, command, outcome, warnings), None)

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

    # everything kept is in the checkpoint, whatever stops the run
    _each(session, workers, todo, query, lambda answer: keep(*answer))
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

