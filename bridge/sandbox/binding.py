"""The sandbox cmdlets' parameters and recipients: binding a call as PowerShell does, and
finding the mailboxes an Identity names, with Exchange's errors when it cannot."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from typing import Any

from bridge.sandbox.contract import CommandCall, ErrorSpec
from bridge.sandbox.opath import FILTERABLE, Filter, FilterParser, FilterSyntaxError, wildcard
from bridge.sandbox.organisation import SERVER_OFFSET, DeviceEntry, MailboxEntry, Organisation

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



class CmdletBinder:
    """Binds a CommandCall to its cmdlet's parameters (a part of ExchangeCmdlets)."""

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

    def _parse_filter(self, cmdlet: _Cmdlet, value: Any) -> Filter:
        text = str(value)
        properties = FILTERABLE[cmdlet.name]
        try:
            return FilterParser(text, properties).parse()
        except FilterSyntaxError as exc:
            raise self._binding_error(
                cmdlet, "Cannot bind parameter 'Filter' to the target. Exception setting "
                f'"Filter": "{exc}"', "ParameterBindingFailed") from None


class RecipientLookups:
    """Identity -> mailboxes and devices, indexed per organisation generation (a part of
    ExchangeCmdlets, which sets the attributes below)."""

    organisation: Organisation
    server: str
    _index_generation: int
    _mailbox_index: dict[str, list[MailboxEntry]]
    _device_index: dict[str, DeviceEntry]

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
            pattern = wildcard(text)
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


def _canonical_switch(lowered: str) -> str:
    return {"activesync": "ActiveSync", "owafordevices": "OWAforDevices", "restapi": "RestApi",
            "universaloutlook": "UniversalOutlook"}[lowered]


# a fixed stack-trace hash per exception kind (Exchange's is a hash of the throwing frame)
_ERROR_HASH = {
    "ManagementObjectNotFoundException": "C2BA0E4D",
    "ManagementObjectAmbiguousException": "5F1B7A22",
    "RecipientNotFoundException": "9E3D6C11",
}
