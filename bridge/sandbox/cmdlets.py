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

import random
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.sandbox.contract import (
    CommandCall,
    ErrorSpec,
    PipelineOutcome,
    SerializedObject,
    WarningMessage,
)
from bridge.sandbox.exchange_types import Prop, RefScope, serialize_object, to_record
from bridge.sandbox.organisation import (
    SERVER_OFFSET,
    SERVERS,
    DeviceEntry,
    MailboxEntry,
    Organisation,
    cas_mailbox_props,
    device_statistics_props,
    mailbox_props,
    mobile_device_props,
)

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
NOT_FOUND_ON = (
    "The operation couldn't be performed because object '{0}' couldn't be found on '{1}'."
)
AMBIGUOUS = "The operation couldn't be performed because '{0}' matches multiple entries."
RECIPIENT_NOT_FOUND = "Couldn't find '{0}' as a recipient."
NO_LANGUAGE = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in "
    "no-language mode."
)
COMMAND_NOT_FOUND = (
    "The term '{0}' is not recognized as the name of a cmdlet, function, script file, or "
    "operable program. Check the spelling of the name, or if a path was included, verify "
    "that the path is correct and try again."
)

RECIPIENT_TYPE_DETAILS = (
    "None", "UserMailbox", "LinkedMailbox", "SharedMailbox", "LegacyMailbox", "RoomMailbox",
    "EquipmentMailbox", "MailContact", "MailUser", "MailUniversalDistributionGroup",
    "MailNonUniversalGroup", "MailUniversalSecurityGroup", "DynamicDistributionGroup",
    "PublicFolder", "SystemAttendantMailbox", "SystemMailbox", "MailForestContact", "User",
    "Contact", "UniversalDistributionGroup", "UniversalSecurityGroup", "NonUniversalGroup",
    "DisabledUser", "MicrosoftExchange", "ArbitrationMailbox", "MailboxPlan",
    "LinkedUser", "RoomList", "DiscoveryMailbox", "RoleGroup", "RemoteUserMailbox",
    "Computer", "RemoteRoomMailbox", "RemoteEquipmentMailbox", "RemoteSharedMailbox",
    "PublicFolderMailbox", "TeamMailbox", "RemoteTeamMailbox", "MonitoringMailbox",
    "GroupMailbox", "LinkedRoomMailbox", "AuditLogMailbox", "RemoteGroupMailbox",
    "SchedulingMailbox", "GuestMailUser", "AuxAuditLogMailbox", "SupervisoryReviewPolicyMailbox",
)
_RTD_BY_LOWER = {name.lower(): name for name in RECIPIENT_TYPE_DETAILS}

# parameters every cmdlet accepts (PowerShell's common parameters) plus Exchange's own
# no-op ones; they are bound and ignored
_COMMON = (
    "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable",
    "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable",
    "DomainController",
)

_CLASS = {
    "Get-Mailbox": "Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
    "Get-CASMailbox": "Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox",
    "Get-MobileDevice": "Microsoft.Exchange.Management.Tasks.GetMobileDevice",
    "Get-MobileDeviceStatistics": "Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics",
    # unverified: the task class name is assumed from Exchange's naming pattern
    "Get-OrganizationConfig":
        "Microsoft.Exchange.Management.SystemConfigurationTasks.GetOrganizationConfig",
}

_NOT_FOUND_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
_AMBIGUOUS_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
_RECIPIENT_NOT_FOUND_TYPE = "Microsoft.Exchange.Management.AirSync.RecipientNotFoundException"
_BINDING_TYPE = "System.Management.Automation.ParameterBindingException"

_MOBILE_CLIENT_SWITCHES = {
    "activesync": "EAS",
    "owafordevices": "MOWA",
    "restapi": "REST",
    "universaloutlook": "UniversalOutlook",
}


class TerminatingError(Exception):
    """Raised inside a cmdlet to end the pipeline Failed with ``spec``."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


@dataclass(frozen=True)
class _Item:
    """An organisation object flowing through the pipeline, with the shape it has."""

    shape: str  # Mailbox | CASMailbox | MobileDevice | MobileDeviceConfiguration
    entry: Any  # MailboxEntry or DeviceEntry


_SHAPES: dict[str, tuple[Callable[[Any], list[Prop]], Callable[[Any], str]]] = {
    "Mailbox": (mailbox_props, lambda mb: mb.name),
    "CASMailbox": (cas_mailbox_props, lambda mb: mb.name),
    "MobileDevice": (mobile_device_props, lambda device: device.name),
    "MobileDeviceConfiguration": (
        device_statistics_props,
        lambda device: "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
    ),
}


def serialized(shape: str, entry: MailboxEntry | DeviceEntry) -> str:
    """The wire CLIXML of ``entry`` as ``shape``, built once and cached on the entry."""
    cached = entry.wire.get(shape)
    if cached is None:
        builder, to_string = _SHAPES[shape]
        cached = serialize_object(shape, to_string(entry), builder(entry), RefScope())
        entry.wire[shape] = cached
    return cached


@dataclass
class _Cmdlet:
    name: str
    parameters: dict[str, str]  # canonical name -> kind (value | switch)
    positional: tuple[str, ...]


_CMDLETS = {
    "get-mailbox": _Cmdlet(
        "Get-Mailbox",
        {"Identity": "value", "RecipientTypeDetails": "value", "ResultSize": "value",
         "Filter": "value", "IgnoreDefaultScope": "switch", "ReadFromDomainController": "switch",
         "OrganizationalUnit": "value"},
        ("Identity",),
    ),
    "get-casmailbox": _Cmdlet(
        "Get-CASMailbox",
        {"Identity": "value", "ResultSize": "value", "Filter": "value",
         "IgnoreDefaultScope": "switch", "ReadFromDomainController": "switch"},
        ("Identity",),
    ),
    "get-mobiledevice": _Cmdlet(
        "Get-MobileDevice",
        {"Identity": "value", "Mailbox": "value", "ResultSize": "value", "Filter": "value",
         "ActiveSync": "switch", "OWAforDevices": "switch", "RestApi": "switch",
         "UniversalOutlook": "switch"},
        ("Identity",),
    ),
    "get-mobiledevicestatistics": _Cmdlet(
        "Get-MobileDeviceStatistics",
        {"Identity": "value", "Mailbox": "value", "ActiveSync": "switch",
         "OWAforDevices": "switch", "RestApi": "switch", "UniversalOutlook": "switch",
         "ShowRecoveryPassword": "switch"},
        ("Identity",),
    ),
    "get-organizationconfig": _Cmdlet("Get-OrganizationConfig", {}, ()),
}


class ExchangeCmdlets:
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

    # ---- binding ------------------------------------------------------------------------

    def _bind(self, command: CommandCall) -> tuple[_Cmdlet, dict[str, Any]]:
        if command.is_script:
            raise TerminatingError(ErrorSpec(
                message=NO_LANGUAGE,
                exception_type="System.Management.Automation.ParseException",
                category="ParserError",
                fully_qualified_error_id="ScriptsNotAllowed",
                target_name=command.name,
                target_type="String",
                reason="ParseException",
            ))
        cmdlet = _CMDLETS.get(command.name.lower())
        if cmdlet is None:
            raise TerminatingError(ErrorSpec(
                message=COMMAND_NOT_FOUND.format(command.name),
                exception_type="System.Management.Automation.CommandNotFoundException",
                category="ObjectNotFound",
                fully_qualified_error_id="CommandNotFoundException",
                target_name=command.name,
                target_type="String",
                reason="CommandNotFoundException",
            ))
        bound: dict[str, Any] = {}
        known = {name.lower(): name for name in (*cmdlet.parameters, *_COMMON)}
        for raw_name, value in command.parameters.items():
            name = self._resolve_parameter(cmdlet, known, str(raw_name))
            if name in bound:
                raise self._binding_error(
                    cmdlet, f"Cannot bind parameter because parameter '{name}' is specified "
                    "more than once. To provide multiple values to parameters that can accept "
                    "multiple values, use the array syntax. For example, "
                    '"-parameter value1,value2,value3".', "ParameterAlreadyBound")
            bound[name] = value
        positions = iter(cmdlet.positional)
        for argument in command.arguments:
            name = next(positions, "")
            if not name or name in bound:
                raise self._binding_error(
                    cmdlet, "A positional parameter cannot be found that accepts argument "
                    f"'{argument}'.", "PositionalParameterNotFound")
            bound[name] = argument
        for name in list(bound):
            if name in _COMMON:
                del bound[name]
            elif cmdlet.parameters[name] == "switch":
                bound[name] = bound[name] is None or bool(bound[name])
        if "ResultSize" in bound:
            bound["ResultSize"] = self._result_size(cmdlet, bound["ResultSize"])
        if "RecipientTypeDetails" in bound:
            bound["RecipientTypeDetails"] = self._recipient_types(
                cmdlet, bound["RecipientTypeDetails"])
        if "Filter" in bound:
            bound["Filter"] = self._parse_filter(cmdlet, bound["Filter"])
        if cmdlet.name == "Get-MobileDeviceStatistics" and (
            "Identity" in bound and "Mailbox" in bound
        ):
            raise self._binding_error(
                cmdlet, "Parameter set cannot be resolved using the specified named parameters.",
                "AmbiguousParameterSet")
        if cmdlet.name == "Get-MobileDevice" and "Identity" in bound and "Mailbox" in bound:
            raise self._binding_error(
                cmdlet, "Parameter set cannot be resolved using the specified named parameters.",
                "AmbiguousParameterSet")
        return cmdlet, bound

    def _resolve_parameter(self, cmdlet: _Cmdlet, known: dict[str, str], raw: str) -> str:
        lowered = raw.lstrip("-").lower()
        if lowered in known:
            return known[lowered]
        matches = sorted({name for key, name in known.items() if key.startswith(lowered)})
        if len(matches) == 1 and lowered:
            return matches[0]
        if len(matches) > 1:
            raise self._binding_error(
                cmdlet, f"Parameter cannot be processed because the parameter name '{raw}' is "
                f"ambiguous. Possible matches include: {' '.join('-' + m for m in matches)}.",
                "AmbiguousParameter")
        raise self._binding_error(
            cmdlet, f"A parameter cannot be found that matches parameter name '{raw}'.",
            "NamedParameterNotFound")

    def _binding_error(self, cmdlet: _Cmdlet, message: str, error_id: str) -> TerminatingError:
        return TerminatingError(ErrorSpec(
            message=message,
            exception_type=_BINDING_TYPE,
            category="InvalidArgument",
            fully_qualified_error_id=f"{error_id},{_CLASS[cmdlet.name]}",
            command_name=cmdlet.name,
            reason="ParameterBindingException",
        ))

    def _result_size(self, cmdlet: _Cmdlet, value: Any) -> int | None:
        if isinstance(value, bool):
            value = str(value)
        if isinstance(value, int) and value > 0:
            return int(value)
        text = str(value).strip()
        if text.lower() == "unlimited":
            return None
        if text.isdigit() and int(text) > 0:
            return int(text)
        raise self._binding_error(
            cmdlet, f"Cannot bind parameter 'ResultSize'. Cannot convert value \"{text}\" to type "
            '"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]". Error: "The value '
            f'"{text}" is not a valid value for Unlimited."',
            "CannotConvertArgumentNoMessage")

    def _recipient_types(self, cmdlet: _Cmdlet, value: Any) -> set[str]:
        names: list[str] = []
        for item in value if isinstance(value, list | tuple) else [value]:
            names.extend(part.strip() for part in str(item).split(","))
        result = set()
        for name in names:
            canonical = _RTD_BY_LOWER.get(name.lower())
            if canonical is None:
                raise self._binding_error(
                    cmdlet, "Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value "
                    f'"{name}" to type "Microsoft.Exchange.Data.Directory.Recipient.'
                    'RecipientTypeDetails". Error: "Unable to match the identifier name '
                    f"{name} to a valid enumerator name. Specify one of the following "
                    f'enumerator names and try again: {", ".join(RECIPIENT_TYPE_DETAILS)}"',
                    "CannotConvertArgumentNoMessage")
            result.add(canonical)
        return result

    def _parse_filter(self, cmdlet: _Cmdlet, value: Any) -> _Filter:
        text = str(value)
        properties = _FILTERABLE[cmdlet.name]
        try:
            return _FilterParser(text, properties).parse()
        except _FilterSyntaxError as exc:
            raise self._binding_error(
                cmdlet, "Cannot bind parameter 'Filter' to the target. Exception setting "
                f'"Filter": "{exc}"', "ParameterBindingFailed") from None

    # ---- lookups ------------------------------------------------------------------------

    def _indexes(self) -> None:
        if self._index_generation == self.organisation.generation:
            return
        mailbox_index: dict[str, list[MailboxEntry]] = {}
        device_index: dict[str, DeviceEntry] = {}
        for mb in self.organisation.mailbox_entries:
            keys = {
                mb.identity, mb.name, mb.alias, mb.smtp, mb.upn, mb.guid, mb.exchange_guid,
                mb.distinguished_name, mb.sam, f"CONTOSO\\{mb.sam}", mb.display_name,
            }
            for key in keys:
                mailbox_index.setdefault(key.lower(), []).append(mb)
            for device in mb.devices:
                device_index[device.identity.lower()] = device
                device_index[device.distinguished_name.lower()] = device
                device_index[device.guid] = device
        self._mailbox_index = mailbox_index
        self._device_index = device_index
        self._index_generation = self.organisation.generation

    def _find_mailboxes(self, identity: str) -> list[MailboxEntry]:
        self._indexes()
        text = identity.strip()
        if "*" in text:
            pattern = _wildcard(text)
            return [mb for mb in self.organisation.mailbox_entries
                    if pattern.match(mb.name) or pattern.match(mb.alias)]
        return list(self._mailbox_index.get(text.lower(), ()))

    def _not_found(self, cmdlet: str, identity: str) -> ErrorSpec:
        return self._exchange_error(
            cmdlet, NOT_FOUND_ON.format(identity, self.organisation.domain_controller),
            _NOT_FOUND_TYPE, "NotSpecified")

    def _exchange_error(
        self, cmdlet: str, message: str, exception_type: str, category: str
    ) -> ErrorSpec:
        short = exception_type.rsplit(".", 1)[-1]
        stamp = datetime.now(UTC).astimezone(timezone(SERVER_OFFSET))
        clock = stamp.strftime("%I:%M:%S %p").lstrip("0")
        when = f"{stamp.month}/{stamp.day}/{stamp.year} {clock}"
        fqid = (
            f"[Server={self.server},RequestId={uuid.uuid4()},TimeStamp={when}] "
            f"[FailureCategory=Cmdlet-{short}] {_ERROR_HASH[short]},{_CLASS[cmdlet]}"
        )
        return ErrorSpec(
            message=message, exception_type=exception_type, category=category,
            fully_qualified_error_id=fqid, command_name=cmdlet, reason=short,
        )

    def _resolve_one(self, cmdlet: str, identity: str) -> MailboxEntry | ErrorSpec:
        found = self._find_mailboxes(identity)
        if not found:
            return self._not_found(cmdlet, identity)
        if len(found) > 1:
            return self._exchange_error(
                cmdlet, AMBIGUOUS.format(identity), _AMBIGUOUS_TYPE, "NotSpecified")
        return found[0]

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
        flt: _Filter | None = params.get("Filter")
        selected = (
            candidate for candidate in candidates
            if not isinstance(candidate, MailboxEntry) or (
                (types is None or candidate.recipient_type_details in types)
                and (ou is None or candidate.ou.lower() == ou)
                and (flt is None or flt.matches(_filter_record(shape, candidate)))
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
        flt: _Filter | None = params.get("Filter")
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
                and (flt is None or flt.matches(_filter_record("MobileDevice", device)))
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


def organization_config_props(org: Organisation) -> list[Prop]:
    """Get-OrganizationConfig's properties: a small subset of the 200-odd Exchange sends.

    Names, kinds and the Name/DisplayName/DistinguishedName/LegacyExchangeDN/ObjectClass
    shapes follow the corpus's Exchange 2019 export (DisplayName empty on-prem; ADObjectIds
    as strings, as the remote endpoint sends them). Unverified: the Guid (derived from the
    seed here), the version strings and WhenCreated.
    """
    dc = ",".join(f"DC={part}" for part in org.domain.split("."))
    name = org.organization
    guid = str(uuid.UUID(int=random.Random(f"org-{org.seed}").getrandbits(128), version=4))
    return [
        ("DisplayName", "S", ""),
        ("IsDehydrated", "B", False),
        ("IsMixedMode", "B", False),
        ("MapiHttpEnabled", "B", True),
        ("OrganizationId", "S", ""),
        ("AdminDisplayName", "S", None),
        ("ExchangeVersion", "S", "0.20 (15.0.0.0)"),  # unverified
        ("Name", "S", name),
        ("DistinguishedName", "S",
         f"CN={name},CN=Microsoft Exchange,CN=Services,CN=Configuration,{dc}"),
        ("Identity", "S", name),
        ("Guid", "G", guid),
        ("ObjectCategory", "S",
         f"{org.domain}/Configuration/Schema/ms-Exch-Organization-Container"),
        ("ObjectClass", "MV:StringCollection", ["top", "container", "msExchOrganizationContainer"]),
        # unverified: any date years back will do
        ("WhenCreated", "DTL", (org.reference_time - timedelta(days=2190)).astimezone(
            timezone(SERVER_OFFSET))),
        ("LegacyExchangeDN", "S", f"/o={name}"),
        ("OriginatingServer", "S", org.domain_controller),
        ("IsValid", "B", True),
        ("ObjectState", "S", "Unchanged"),
    ]


def _canonical_switch(lowered: str) -> str:
    return {"activesync": "ActiveSync", "owafordevices": "OWAforDevices", "restapi": "RestApi",
            "universaloutlook": "UniversalOutlook"}[lowered]


# a fixed stack-trace hash per exception kind (Exchange's is a hash of the throwing frame)
_ERROR_HASH = {
    "ManagementObjectNotFoundException": "C2BA0E4D",
    "ManagementObjectAmbiguousException": "5F1B7A22",
    "RecipientNotFoundException": "9E3D6C11",
}


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


# ---- OPATH filters (the simple subset admins use) ---------------------------------------


def _filter_record(shape: str, entry: Any) -> dict[str, Any]:
    builder = _SHAPES[shape][0]
    return to_record(builder(entry))


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL)


class _FilterSyntaxError(Exception):
    pass


class _Filter:
    def matches(self, record: dict[str, Any]) -> bool:
        raise NotImplementedError


@dataclass
class _Compare(_Filter):
    prop: str
    operator: str
    value: Any

    def matches(self, record: dict[str, Any]) -> bool:
        actual = record.get(self.prop)
        if self.operator in _ORDERING:
            return _ordered(actual, self.operator, self.value)
        if self.operator in ("eq", "ne"):
            equal = _equal(actual, self.value)
            return equal if self.operator == "eq" else not equal
        pattern = _wildcard(str(self.value))
        values = actual if isinstance(actual, list) else [actual]
        hit = any(v is not None and pattern.match(_text(v)) for v in values)
        return hit if self.operator == "like" else not hit


@dataclass
class _Logical(_Filter):
    operator: str
    parts: list[_Filter]

    def matches(self, record: dict[str, Any]) -> bool:
        if self.operator == "and":
            return all(part.matches(record) for part in self.parts)
        return any(part.matches(record) for part in self.parts)


@dataclass
class _Not(_Filter):
    part: _Filter

    def matches(self, record: dict[str, Any]) -> bool:
        return not self.part.matches(record)


_ORDERING = ("lt", "le", "gt", "ge")


def _ordered(actual: Any, operator: str, expected: Any) -> bool:
    """-lt/-le/-gt/-ge on dates (ISO or US "M/d/yyyy [h:mm:ss tt]", UTC) and numbers."""
    if actual is None or isinstance(actual, bool | list):
        return False
    limit: Any
    if isinstance(actual, datetime):
        limit = _filter_date(str(expected))
        if limit is None:
            return False
    elif isinstance(actual, int):
        try:
            limit = int(str(expected))
        except ValueError:
            return False
    else:
        actual, limit = str(actual).lower(), str(expected).lower()
    if operator == "lt":
        return bool(actual < limit)
    if operator == "le":
        return bool(actual <= limit)
    if operator == "gt":
        return bool(actual > limit)
    return bool(actual >= limit)


def _filter_date(text: str) -> datetime | None:
    formats = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for layout in formats:
            try:
                value = datetime.strptime(text, layout)
                break
            except ValueError:
                continue
        else:
            return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _equal(actual: Any, expected: Any) -> bool:
    if expected is None:
        return actual is None or actual == [] or actual == ""
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    if isinstance(expected, bool):
        return actual is expected
    if actual is None:
        return False
    return _text(actual).lower() == _text(expected).lower()


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<op>-[A-Za-z]+)"
    r"|'(?P<sq>(?:[^']|'')*)'|\"(?P<dq>(?:[^\"]|\"\")*)\"|(?P<var>\$[A-Za-z]+)"
    r"|(?P<word>[^\s()'\"]+))"
)


class _FilterParser:
    """``A -eq 'x' -and (B -like 'y*' -or -not C -eq $true)``, ``FirstSyncTime -gt
    '2025-01-01'``: the subset of Exchange's OPATH that admins type."""

    def __init__(self, text: str, properties: dict[str, str]) -> None:
        self.text = text
        self.properties = properties
        self.tokens: list[tuple[str, Any, int]] = []
        position = 0
        stripped = text.rstrip()
        while position < len(stripped):
            match = _TOKEN_RE.match(stripped, position)
            if match is None or match.end() == position:
                raise self._syntax(position)
            kind = match.lastgroup or ""
            value: Any = match.group(kind)
            if kind == "sq":
                value = value.replace("''", "'")
            elif kind == "dq":
                value = value.replace('""', '"')
            self.tokens.append((kind, value, match.start(kind) + 1))
            position = match.end()
        self.position = 0

    def _syntax(self, position: int) -> _FilterSyntaxError:
        return _FilterSyntaxError(
            "Invalid filter syntax. For a description of the filter parameter syntax see the "
            f'command help.\n"{self.text}" at position {position + 1}.')

    def _peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self) -> tuple[str, Any, int]:
        token = self._peek()
        if token is None:
            raise self._syntax(len(self.text))
        self.position += 1
        return token

    def parse(self) -> _Filter:
        result = self._or()
        if self._peek() is not None:
            raise self._syntax(self._peek()[2] - 1)  # type: ignore[index]
        return result

    def _or(self) -> _Filter:
        parts = [self._and()]
        while (token := self._peek()) and token[0] == "op" and token[1].lower() == "-or":
            self.position += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _Logical("or", parts)

    def _and(self) -> _Filter:
        parts = [self._unary()]
        while (token := self._peek()) and token[0] == "op" and token[1].lower() == "-and":
            self.position += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else _Logical("and", parts)

    def _unary(self) -> _Filter:
        token = self._next()
        if token[0] == "op" and token[1].lower() == "-not":
            return _Not(self._unary())
        if token[0] == "lparen":
            inner = self._or()
            closing = self._next()
            if closing[0] != "rparen":
                raise self._syntax(closing[2] - 1)
            return inner
        if token[0] != "word":
            raise self._syntax(token[2] - 1)
        prop = self.properties.get(token[1].lower())
        if prop is None:
            raise _FilterSyntaxError(
                f'"{token[1]}" is not a recognized filterable property. For a description of '
                "the filterable properties see the command help.")
        operator = self._next()
        op = operator[1].lower().lstrip("-") if operator[0] == "op" else ""
        if op not in ("eq", "ne", "like", "notlike", *_ORDERING):
            raise self._syntax(operator[2] - 1)
        kind, raw, _ = self._next()
        value: Any
        if kind in ("sq", "dq", "word"):
            value = raw
        elif kind == "var" and raw.lower() in ("$true", "$false", "$null"):
            value = {"$true": True, "$false": False, "$null": None}[raw.lower()]
        else:
            raise self._syntax(self.tokens[self.position - 1][2] - 1)
        return _Compare(prop, op, value)


def _property_names(shape_props: list[Prop]) -> dict[str, str]:
    return {name.lower(): name for name, _kind, _value in shape_props}


def _schema_names(shape: str) -> dict[str, str]:
    org = Organisation(mailboxes=12, seed=0)
    mailbox = org.mailbox_entries[0]
    device = next(org.iter_devices())
    entry = mailbox if shape in ("Mailbox", "CASMailbox") else device
    return _property_names(_SHAPES[shape][0](entry))


_FILTERABLE = {
    "Get-Mailbox": _schema_names("Mailbox"),
    "Get-CASMailbox": _schema_names("CASMailbox"),
    "Get-MobileDevice": _schema_names("MobileDevice"),
}
