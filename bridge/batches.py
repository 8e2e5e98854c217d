"""The bulk plan for sources that run one cmdlet per request (Exchange Online's REST endpoint).

No pipeline ``Get-MobileDevice | Get-MobileDeviceStatistics`` there: Get-Mailbox and
Get-MobileDevice -ResultSize Unlimited (paged) side by side, then
Get-MobileDeviceStatistics -Mailbox only for the mailboxes in scope that have a
partnership, :data:`STATISTICS_PER_REQUEST` per request (``$batch``) where the source can,
else one by one. Each mailbox's answer is checkpointed as it comes, as per-mailbox's are.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bridge.checkpoint import Checkpoint
from bridge.commands import Command, CommandResult
from bridge.errors import BridgeError, CommandNotFound, RemoteCommandError
from bridge.exchange import (
    PHASE_MAILBOX_DEVICES,
    PHASE_MAILBOXES,
    PHASE_PARTNERSHIPS,
    Progress,
    Row,
    _completed,
    _run_units,
    _Unit,
    device_parent,
    mailbox_answer,
    mailbox_command,
    mailbox_devices_command,
    mailbox_identity,
)
from bridge.source import Source

#: statistics of this many mailboxes per request (a $batch's limit)
STATISTICS_PER_REQUEST = 10


@runtime_checkable
class BatchSource(Protocol):
    """A source that sends several cmdlets in one request (Exchange Online's ``$batch``)."""

    def run_batch(self, commands: Sequence[Command]) -> list[CommandResult | RemoteCommandError]:
        ...


def run_many(session: Source, commands: Sequence[Command]
             ) -> list[CommandResult | RemoteCommandError]:
    """Each command's result or its terminating error: in one batch where the source
    can, else one by one (WSMan). A missing cmdlet still stops the run."""
    if isinstance(session, BatchSource):
        return session.run_batch(commands)
    outcomes: list[CommandResult | RemoteCommandError] = []
    for command in commands:
        try:
            outcomes.append(session.run(command))
        except CommandNotFound:
            raise
        except RemoteCommandError as exc:
            outcomes.append(exc)
    return outcomes


def statistics_identity(mailbox: Row) -> str:
    """What ``Get-MobileDeviceStatistics -Mailbox`` names a mailbox by in Exchange Online:
    its ExternalDirectoryObjectId (unique, never ambiguous), else its UPN, else its
    identity; never empty (an empty identity returns every mailbox's devices)."""
    for key in ("ExternalDirectoryObjectId", "UserPrincipalName"):
        value = mailbox.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return mailbox_identity(mailbox)


def collect_without_pipelines(
    session: Source,
    recipient_types: Sequence[str],
    device_filter: str | None,
    checkpoint: Checkpoint | None,
    bar: Progress,
    workers: int,
    warnings: list[str],
) -> tuple[list[Row], list[Row], list[Row]]:
    """Mailboxes, devices and error rows, as :func:`bridge.exchange.collect` returns them;
    ``workers`` requests at once (see the module docstring)."""
    bar.start("Mailboxes and devices", None)
    parameters: dict[str, object] = {"ResultSize": "Unlimited"}
    if device_filter:
        parameters["Filter"] = device_filter
    # one unit each, not Name/DeviceId slices: a page that fails is asked again on its own
    # (the same nextLink), so a fault never redoes a whole listing
    units = [_Unit(PHASE_MAILBOXES, "", mailbox_command(recipient_types)),
             _Unit(PHASE_PARTNERSHIPS, "", Command("Get-MobileDevice", parameters))]
    results = {phase: rows for (phase, _key), rows in
               _run_units(session, units, checkpoint, bar, workers, warnings).items()}
    bar.finish()
    mailboxes, mailbox_errors = results[PHASE_MAILBOXES]
    partnerships, partnership_errors = results[PHASE_PARTNERSHIPS]
    by_identity = {str(m.get("Identity")).casefold(): m for m in mailboxes if m.get("Identity")}
    owners: dict[str, Row] = {}  # mailbox identity -> mailbox, in partnership order
    for device in partnerships:
        parent = device_parent(device)
        mailbox = by_identity.get(parent.casefold()) if parent else None
        if mailbox is not None:
            owners.setdefault(str(mailbox["Identity"]), mailbox)
    done = checkpoint.done_keys(PHASE_MAILBOX_DEVICES) if checkpoint else set()
    todo = [identity for identity in owners if identity not in done]
    found: dict[str, list[Row]] = {}
    new_errors = mailbox_errors + partnership_errors
    bar.start("Mailboxes with devices", len(todo))

    def query(identities: list[str]) -> list[tuple[str, list[Row], list[Row]]]:
        commands = [mailbox_devices_command(statistics_identity(owners[identity]))
                    for identity in identities]
        return [(identity, *mailbox_answer(identity, command, outcome, warnings))
                for identity, command, outcome in zip(identities, commands,
                                                      run_many(session, commands), strict=True)]

    groups = iter([todo[at:at + STATISTICS_PER_REQUEST]
                   for at in range(0, len(todo), STATISTICS_PER_REQUEST)])

    def keep(future: cf.Future[list[tuple[str, list[Row], list[Row]]]]) -> None:
        for identity, rows, errors in future.result():
            if checkpoint is not None:
                checkpoint.save(PHASE_MAILBOX_DEVICES, identity, rows, errors)
            found[identity] = rows
            new_errors.extend(errors)
            bar.advance()

    # At most ``workers`` requests in flight, the next one sent only when one is answered:
    # after a failure nothing new starts, and what was in flight is still kept (saved for
    # --resume) before the error ends the run.
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    failure: BridgeError | None = None
    try:
        running = {pool.submit(query, group) for group in itertools.islice(groups, workers)}
        while running:
            answered = next(_completed(running))
            running.discard(answered)
            try:
                keep(answered)
            except BridgeError as exc:
                failure = failure or exc
            if failure is None:
                running.update(pool.submit(query, group) for group in itertools.islice(groups, 1))
    except BaseException:
        session.abort()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if failure is not None:
        raise failure
    bar.finish()
    if checkpoint is not None:
        found = {**checkpoint.rows(PHASE_MAILBOX_DEVICES), **found}
        errors = checkpoint.errors()
    else:
        errors = new_errors
    devices = [row for identity in owners for row in found.get(identity, [])]
    if device_filter:  # a mailbox's statistics cover all its devices, not only the filtered
        wanted = {str(d.get("Identity")).casefold() for d in partnerships}
        devices = [d for d in devices if str(d.get("Identity")).casefold() in wanted]
    return mailboxes, devices, errors
