"""The Exchange side of the sandbox: Exchange's recipient and mobile-device cmdlets over an
:class:`~bridge.sandbox.organisation.Organisation`, behind the :class:`CmdletHost` contract.

Implemented as Exchange 2019 behaves for a remote client: Get-Mailbox, Get-CASMailbox,
Get-MobileDevice, Get-MobileDeviceStatistics (also fed by ``Get-MobileDevice |``),
Get-OrganizationConfig (a small subset of its properties), the
default ResultSize of 1000 with Exchange's warning, non-terminating "couldn't be found"
errors, terminating parameter-binding errors. Objects are serialized once per
organisation object and streamed as :class:`SerializedObject`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bridge.sandbox.binding import (
    _AMBIGUOUS_TYPE,
    _CMDLETS,
    _MOBILE_CLIENT_SWITCHES,
    _RECIPIENT_NOT_FOUND_TYPE,
    AMBIGUOUS,
    RECIPIENT_NOT_FOUND,
    CmdletBinder,
    RecipientLookups,
    TerminatingError,
    _canonical_switch,
    _Cmdlet,
)
from bridge.sandbox.contract import (
    CommandCall,
    ErrorSpec,
    PipelineOutcome,
    SerializedObject,
    WarningMessage,
)
from bridge.sandbox.exchange_types import RefScope, serialize_object
from bridge.sandbox.opath import (
    Filter,
    filter_record,
)
from bridge.sandbox.organisation import (
    SERVERS,
    DeviceEntry,
    MailboxEntry,
    Organisation,
)

# re-exported: the Exchange Online emulation (exo_invoke) imports it from here
from bridge.sandbox.organization_config import (
    organization_config_props as organization_config_props,
)
from bridge.sandbox.shapes import SHAPES

DEFAULT_RESULT_SIZE = 1000

WARNING_DEFAULT_RESULT_SIZE = (
    "By default, only the first {0} items are returned. Use the ResultSize parameter to "
    "specify the number of items returned. To return all items, specify \"-ResultSize "
    "Unlimited\". Be aware that, depending on the actual number of items, returning all "
    "items can take a long time and consume a large amount of memory. Also, we don't "
    "recommend storing the results in a variable. Instead, pipe the results to another "
    "task or script to perform batch changes."
)
WARNING_MORE_RESULTS = (
    "There are more results available than are currently displayed. To view them, "
    "increase the value for the ResultSize parameter."
)
@dataclass(frozen=True)
class _Item:
    """An organisation object flowing through the pipeline, with the shape it has."""

    shape: str  # Mailbox | CASMailbox | MobileDevice | MobileDeviceConfiguration
    entry: Any  # MailboxEntry or DeviceEntry


def serialized(shape: str, entry: MailboxEntry | DeviceEntry) -> str:
    """The wire CLIXML of ``entry`` as ``shape``, built once and cached on the entry."""
    cached = entry.wire.get(shape)
    if cached is None:
        builder, to_string = SHAPES[shape]
        cached = serialize_object(shape, to_string(entry), builder(entry), RefScope())
        entry.wire[shape] = cached
    return cached


class ExchangeCmdlets(CmdletBinder, RecipientLookups):
    """A :class:`~bridge.sandbox.contract.CmdletHost` for configuration Microsoft.Exchange."""

    def __init__(self, organisation: Organisation, server: str = SERVERS[0]) -> None:
        self.organisation = organisation
        self.server = server
        self._index_generation = -1
        self._mailbox_index: dict[str, list[MailboxEntry]] = {}
        self._device_index: dict[str, DeviceEntry] = {}

    # ---- the contract -------------------------------------------------------------------

    def has_command(self, name: str) -> bool:
        """Whether the session has cmdlet ``name`` (case-insensitive)."""
        return name.lower() in _CMDLETS

    def invoke_entries(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        """As :meth:`invoke`, but organisation objects come out as ``(shape, entry)`` pairs,
        not CLIXML: for the Exchange Online emulation (exo_rest.py), which writes JSON."""
        return self.invoke(commands, user, serialize=False)

    def invoke(
        self, commands: list[CommandCall], user: str, serialize: bool = True
    ) -> PipelineOutcome:
        """Run ``commands`` as one pipeline; binding errors terminate before any output."""
        if not commands:
            return PipelineOutcome(events=iter(()))
        try:
            bound = [self._bind(command) for command in commands]
            first, params = bound[0]
            if first.name == "Get-MobileDeviceStatistics" and not (
                "Identity" in params or "Mailbox" in params
            ):  # nothing piped in to bind Identity from
                raise self._binding_error(
                    first, "Cannot process command because of one or more missing mandatory "
                    "parameters: Identity.", "MissingMandatoryParameter")
        except TerminatingError as exc:
            return PipelineOutcome(events=iter(()), terminating=exc.spec)
        outcome = PipelineOutcome(events=iter(()))
        outcome.events = self._run(bound, outcome, serialize)
        return outcome

    def _run(
        self, bound: list[tuple[_Cmdlet, dict[str, Any]]], outcome: PipelineOutcome,
        serialize: bool = True,
    ) -> Iterator[Any]:
        try:
            stream: Iterator[Any] | None = None
            for cmdlet, params in bound:
                stream = self._dispatch(cmdlet, params, stream)
            assert stream is not None
            for event in stream:
                if isinstance(event, _Item):
                    yield (SerializedObject(serialized(event.shape, event.entry)) if serialize
                           else (event.shape, event.entry))
                else:
                    yield event
        except TerminatingError as exc:
            outcome.terminating = exc.spec

    def _dispatch(
        self, cmdlet: _Cmdlet, params: dict[str, Any], upstream: Iterator[Any] | None
    ) -> Iterator[Any]:
        if cmdlet.name == "Get-Mailbox":
            return self._get_mailbox(params, "Mailbox", upstream)
        if cmdlet.name == "Get-CASMailbox":
            return self._get_mailbox(params, "CASMailbox", upstream)
        if cmdlet.name == "Get-MobileDevice":
            return self._get_mobile_device(params, upstream)
        if cmdlet.name == "Get-OrganizationConfig":
            return self._get_organization_config()
        return self._get_mobile_device_statistics(params, upstream)

    # ---- cmdlets ------------------------------------------------------------------------

    def _get_mailbox(
        self, params: dict[str, Any], shape: str, upstream: Iterator[Any] | None
    ) -> Iterator[Any]:
        cmdlet = "Get-Mailbox" if shape == "Mailbox" else "Get-CASMailbox"
        candidates: Iterable[Any]
        if "Identity" in params:
            found = self._find_mailboxes(str(params["Identity"]))
            if not found:
                yield self._not_found(cmdlet, str(params["Identity"]))
                return
            candidates = found
        elif upstream is not None:
            candidates = self._upstream_mailboxes(upstream)
        else:
            candidates = self.organisation.mailbox_entries
        types = params.get("RecipientTypeDetails")
        ou = str(params["OrganizationalUnit"]).lower() if "OrganizationalUnit" in params else None
        flt: Filter | None = params.get("Filter")
        selected = (
            candidate for candidate in candidates
            if not isinstance(candidate, MailboxEntry) or (
                (types is None or candidate.recipient_type_details in types)
                and (ou is None or candidate.ou.lower() == ou)
                and (flt is None or flt.matches(filter_record(shape, candidate)))
            )
        )
        yield from _limit(
            selected, params, lambda mb: _Item(shape, mb), isinstance_of=MailboxEntry)

    def _get_organization_config(self) -> Iterator[Any]:
        org = self.organisation
        yield SerializedObject(serialize_object(
            "OrganizationConfig", org.organization, organization_config_props(org), RefScope()))

    def _upstream_mailboxes(self, upstream: Iterator[Any]) -> Iterator[Any]:
        for event in upstream:
            if isinstance(event, _Item):
                entry = event.entry
                yield entry if isinstance(entry, MailboxEntry) else entry.mailbox
            else:
                yield event

    def _get_mobile_device(
        self, params: dict[str, Any], upstream: Iterator[Any] | None
    ) -> Iterator[Any]:
        cmdlet = "Get-MobileDevice"
        client_types = {ct for switch, ct in _MOBILE_CLIENT_SWITCHES.items()
                        if params.get(_canonical_switch(switch))}
        flt: Filter | None = params.get("Filter")
        devices: Iterable[Any]
        if "Identity" in params:
            device = self._find_device(str(params["Identity"]))
            if device is None:
                yield self._not_found(cmdlet, str(params["Identity"]))
                return
            devices = [device]
        elif "Mailbox" in params:
            resolved = self._resolve_one(cmdlet, str(params["Mailbox"]))
            if isinstance(resolved, ErrorSpec):
                yield resolved
                return
            devices = list(resolved.devices)
        elif upstream is not None:
            devices = self._devices_of(self._upstream_mailboxes(upstream))
        else:
            devices = self.organisation.iter_devices()
        selected = (
            device for device in devices
            if not isinstance(device, DeviceEntry) or (
                (not client_types or device.client_type in client_types)
                and (flt is None or flt.matches(filter_record("MobileDevice", device)))
            )
        )
        yield from _limit(
            selected, params, lambda d: _Item("MobileDevice", d), isinstance_of=DeviceEntry)

    def _devices_of(self, mailboxes: Iterator[Any]) -> Iterator[Any]:
        for mailbox in mailboxes:
            if isinstance(mailbox, MailboxEntry):
                yield from mailbox.devices
            else:
                yield mailbox

    def _find_device(self, identity: str) -> DeviceEntry | None:
        self._indexes()
        text = identity.strip()
        return self._device_index.get(text.lower()) or self._device_index.get(
            text.replace("\\", "/").lower())

    def _get_mobile_device_statistics(
        self, params: dict[str, Any], upstream: Iterator[Any] | None
    ) -> Iterator[Any]:
        cmdlet = "Get-MobileDeviceStatistics"
        client_types = {ct for switch, ct in _MOBILE_CLIENT_SWITCHES.items()
                        if params.get(_canonical_switch(switch))}
        if "Identity" in params:
            device = self._find_device(str(params["Identity"]))
            if device is None:
                yield self._not_found(cmdlet, str(params["Identity"]))
                return
            events: Iterable[Any] = [device]
        elif "Mailbox" in params:
            identity = str(params["Mailbox"])
            found = self._find_mailboxes(identity)
            if len(found) != 1:
                yield self._exchange_error(
                    cmdlet, RECIPIENT_NOT_FOUND.format(identity), _RECIPIENT_NOT_FOUND_TYPE,
                    "InvalidArgument") if not found else self._exchange_error(
                    cmdlet, AMBIGUOUS.format(identity), _AMBIGUOUS_TYPE, "NotSpecified")
                return
            events = list(found[0].devices)
        elif upstream is not None:
            events = (
                (event.entry if isinstance(event.entry, DeviceEntry) else event)
                if isinstance(event, _Item) else event
                for event in upstream
            )
            events = self._devices_of(iter(events))
        else:  # invoke() refused this at binding time
            return
        for event in events:
            if isinstance(event, DeviceEntry):
                if not client_types or event.client_type in client_types:
                    yield _Item("MobileDeviceConfiguration", event)
            else:
                yield event


def _limit(
    selected: Iterator[Any],
    params: dict[str, Any],
    wrap: Callable[[Any], _Item],
    isinstance_of: type,
) -> Iterator[Any]:
    """Apply ResultSize (default 1000) and write Exchange's warning when more remain."""
    explicit = "ResultSize" in params
    limit = params["ResultSize"] if explicit else DEFAULT_RESULT_SIZE
    emitted = 0
    for candidate in selected:
        if not isinstance(candidate, isinstance_of):
            yield candidate  # an upstream error or warning, passed through in order
            continue
        if limit is not None and emitted >= limit:
            yield WarningMessage(
                WARNING_MORE_RESULTS if explicit else WARNING_DEFAULT_RESULT_SIZE.format(limit))
            return
        emitted += 1
        yield wrap(candidate)
