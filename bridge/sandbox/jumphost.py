"""A Windows jump host's ``Microsoft.PowerShell`` configuration, emulated for psbridge's scripts.

THIS RUNS NO POWERSHELL. A real jump host executes the script text it is sent. This
emulation only accepts the text of psbridge's own scripts (ps_scripts/, matched by their
exact content), binds the parameters against the script's ``param()`` block the way
PowerShell would (names, parameter sets, mandatory parameters, ValidatePattern), and then
answers with what ``Get-PsbridgeExoData.ps1`` would emit for the sandbox's organisation:
its mailboxes and device statistics tagged ``PsbridgeKind``, an ``Error`` object for each
mailbox whose devices cannot be read, and a closing ``Manifest``. Connecting to Exchange
Online is emulated too: a wrong tenant or app id fails as Connect-ExchangeOnline does.

Register it on a sandbox with :func:`enable_jumphost` (after ``Sandbox.start()``). The
same output is available as one CLIXML document (:func:`exo_script_document`), as
``pwsh -OutputFormat xml`` would print it, for tests of the ``--via pwsh`` path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.sandbox.contract import CommandCall, ErrorSpec, PipelineOutcome, SerializedObject
from bridge.sandbox.exchange_types import RefScope, escape, serialize_object
from bridge.sandbox.organisation import (
    MailboxEntry,
    Organisation,
    device_statistics_props,
    mailbox_props,
)

CONFIGURATION = "Microsoft.PowerShell"
EXO_SCRIPT = "Get-PsbridgeExoData.ps1"
OUTLOOK_MODEL = "Outlook for iOS and Android"
KNOWN_RECIPIENT_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")
DEFAULT_APP_ID = "5c1a4e2f-3b7d-4c8e-9f01-2a3b4c5d6e7f"

_RUNTIME = "System.Management.Automation.RuntimeException"
_BINDING = "System.Management.Automation.ParameterBindingException"
_VALIDATION = "System.Management.Automation.ParameterBindingValidationException"
# Connect-ExchangeOnline's sign-in failures come from MSAL; exact type and id: best guess.
_MSAL = "Microsoft.Identity.Client.MsalServiceException"


# --------------------------------------------------------------------------- the scripts


def scripts_dir() -> Path:
    """ps_scripts/ inside the installed package, else the checkout's (the sandbox may not
    import bridge.scripts, so this small lookup is repeated here)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "ps_scripts", package.parent / "ps_scripts"):
        if (candidate / EXO_SCRIPT).is_file():
            return candidate
    raise FileNotFoundError(f"psbridge's ps_scripts folder not found near {package}")


def _normalise(text: str) -> str:
    return text.lstrip("\ufeff").replace("\r\n", "\n").strip()


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a script's param() block, as far as binding needs it."""

    name: str
    type_name: str  # the last type literal, e.g. "string", "string[]", "switch"
    mandatory: bool = False
    parameter_set: str | None = None  # None: in every set
    patterns: tuple[str, ...] = ()  # ValidatePattern regexes


@dataclass(frozen=True)
class ScriptSpec:
    """A psbridge script: its name, parameters and default parameter set."""

    name: str
    parameters: dict[str, ParameterSpec]
    default_set: str | None = None


def _split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split at ``separator`` outside brackets and quotes (PowerShell's quoting rules)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                if text[index + 1 : index + 2] == quote:  # '' or "" inside a string
                    index += 1
                else:
                    quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and depth == 0:
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _balanced(text: str, open_at: int) -> int:
    """The index of the bracket closing the one at ``open_at``."""
    depth = 0
    quote: str | None = None
    for index in range(open_at, len(text)):
        char = text[index]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError("unbalanced brackets in the param() block")


def parse_param_block(text: str) -> tuple[str | None, dict[str, ParameterSpec]]:
    """The script-level ``[CmdletBinding(...)] param(...)``: default set and parameters.

    Enough of PowerShell's grammar for psbridge's own scripts (tests check it against
    the tree-sitter PowerShell grammar's reading of the same block).
    """
    body = re.sub(r"<#.*?#>", lambda m: " " * len(m.group(0)), text, flags=re.DOTALL)
    binding = re.search(r"^\s*\[CmdletBinding\(([^)]*)\)\]", body, re.MULTILINE | re.IGNORECASE)
    default_set = None
    if binding:
        found = re.search(r"DefaultParameterSetName\s*=\s*'([^']+)'", binding.group(1))
        default_set = found.group(1) if found else None
    start = re.search(r"^\s*param\s*\(", body, re.MULTILINE | re.IGNORECASE)
    if start is None:
        return default_set, {}
    open_at = start.end() - 1
    block = body[open_at + 1 : _balanced(body, open_at)]
    parameters: dict[str, ParameterSpec] = {}
    for chunk in _split_top_level(block):
        if not chunk.strip():
            continue
        # the name is the first $variable outside an attribute's brackets
        depth = 0
        name_at = -1
        for index, char in enumerate(chunk):
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
            elif char == "$" and depth == 0:
                name_at = index
                break
        if name_at < 0:
            raise ValueError(f"no parameter name in {chunk.strip()!r}")
        name = re.match(r"\$(\w+)", chunk[name_at:])
        if name is None:
            raise ValueError(f"no parameter name in {chunk.strip()!r}")
        attributes = chunk[:name_at]
        parameter_set = re.search(r"ParameterSetName\s*=\s*'([^']+)'", attributes)
        types = re.findall(r"\[([A-Za-z_.]+(?:\[\])?)\]", attributes)
        patterns = tuple(
            pattern.replace("''", "'")
            for pattern in re.findall(r"ValidatePattern\(\s*'((?:[^']|'')*)'\s*\)", attributes)
        )
        parameters[name.group(1)] = ParameterSpec(
            name=name.group(1),
            type_name=types[-1] if types else "object",
            mandatory=bool(re.search(r"Mandatory\s*=\s*\$true", attributes, re.IGNORECASE)),
            parameter_set=parameter_set.group(1) if parameter_set else None,
            patterns=patterns,
        )
    return default_set, parameters


def psbridge_scripts(folder: Path | None = None) -> dict[str, ScriptSpec]:
    """psbridge's scripts by their normalised text (line endings, BOM and edges ignored)."""
    scripts: dict[str, ScriptSpec] = {}
    for path in sorted((folder or scripts_dir()).glob("*.ps1")):
        text = path.read_text(encoding="utf-8-sig")
        default_set, parameters = parse_param_block(text)
        scripts[_normalise(text)] = ScriptSpec(path.name, parameters, default_set)
    return scripts


# --------------------------------------------------------------------------- binding


class ScriptFailure(Exception):
    """The emulated script stops with a terminating error."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


def _binding_error(message: str, error_id: str, target: str = "") -> ScriptFailure:
    return ScriptFailure(
        ErrorSpec(
            message=message,
            exception_type=_BINDING,
            category="InvalidArgument",
            fully_qualified_error_id=error_id,
            target_name=target,
            reason="ParameterBindingException",
        )
    )


def bind_parameters(
    script: ScriptSpec, given: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Bind ``given`` as PowerShell would (exact names, case-insensitive; no prefixes):
    unknown names, unresolvable parameter sets, missing mandatory parameters and failed
    ValidatePattern checks raise with PowerShell's messages. Returns (set, bound values)."""
    by_lower = {name.lower(): spec for name, spec in script.parameters.items()}
    bound: dict[str, Any] = {}
    for name, value in given.items():
        spec = by_lower.get(name.lower())
        if spec is None:
            raise _binding_error(
                f"A parameter cannot be found that matches parameter name '{name}'.",
                "NamedParameterNotFound",
                name,
            )
        if spec.type_name == "switch" and value is None:
            value = True  # a switch sent without a value is present
        bound[spec.name] = value
    sets = {s.parameter_set for s in script.parameters.values() if s.parameter_set is not None}
    candidates = set(sets)
    for name in bound:
        chosen = script.parameters[name].parameter_set
        if chosen is not None:
            candidates &= {chosen}
    if sets and not candidates:
        raise _binding_error(
            "Parameter set cannot be resolved using the specified named parameters.",
            "AmbiguousParameterSet",
        )
    if len(candidates) > 1:
        candidates = {script.default_set} if script.default_set in candidates else candidates
    parameter_set = min(candidates) if candidates else None
    missing = [
        spec.name
        for spec in script.parameters.values()
        if spec.mandatory and spec.parameter_set in (None, parameter_set) and spec.name not in bound
    ]
    if missing:
        raise _binding_error(
            "Cannot process command because of one or more missing mandatory parameters: "
            f"{' '.join(missing)}.",
            "MissingMandatoryParameter",
        )
    for name, value in bound.items():
        for pattern in script.parameters[name].patterns:
            values = value if isinstance(value, list) else [value]
            for item in values:
                if not re.search(pattern, str(item), re.IGNORECASE):
                    raise ScriptFailure(
                        ErrorSpec(
                            message=(
                                f"Cannot validate argument on parameter '{name}'. The argument "
                                f'"{item}" does not match the "{pattern}" pattern. Supply an '
                                f'argument that matches "{pattern}" and try the command again.'
                            ),
                            exception_type=_VALIDATION,
                            category="InvalidData",
                            fully_qualified_error_id=f"ParameterArgumentValidationError,{name}",
                            target_name=name,
                            reason="ParameterBindingValidationException",
                        )
                    )
    return parameter_set, bound


def _thrown(message: str) -> ScriptFailure:
    """What ``throw 'message'`` in a script gives."""
    return ScriptFailure(
        ErrorSpec(
            message=message,
            exception_type=_RUNTIME,
            category="OperationStopped",
            fully_qualified_error_id=message,
            target_name=message,
            target_type="String",
            reason="RuntimeException",
        )
    )


# --------------------------------------------------------------------------- the emulation


def _with_notes(clixml: str, notes: Iterable[tuple[str, str]]) -> str:
    """Add note properties (Add-Member -NotePropertyName) to a serialized ``<Obj>``."""
    members = "".join(f'<S N="{escape(name)}">{escape(value)}</S>' for name, value in notes)
    at = clixml.rstrip().rfind("</Obj>")
    return f"{clixml[:at]}<MS>{members}</MS>{clixml[at:]}"


def _custom_object(properties: Iterable[tuple[str, Any]], scope: RefScope) -> str:
    """A PSCustomObject (``[pscustomobject]@{...}``) as PowerShell serializes it."""
    type_ref = scope.type_refs.get("PSCustomObject")
    if type_ref is None:
        type_ref = len(scope.type_refs)
        scope.type_refs["PSCustomObject"] = type_ref
        type_names = (
            f'<TN RefId="{type_ref}"><T>System.Management.Automation.PSCustomObject</T>'
            "<T>System.Object</T></TN>"
        )
    else:
        type_names = f'<TNRef RefId="{type_ref}" />'
    members = []
    for name, value in properties:
        attr = f'N="{escape(name)}"'
        if isinstance(value, bool):
            members.append(f"<B {attr}>{'true' if value else 'false'}</B>")
        elif isinstance(value, int):
            members.append(f"<I32 {attr}>{value}</I32>")
        else:
            members.append(f"<S {attr}>{escape(str(value))}</S>")
    return f'<Obj RefId="{scope.obj_id()}">{type_names}<MS>{"".join(members)}</MS></Obj>'


@dataclass
class ExoTenant:
    """The Exchange Online side of the emulation: which tenant and app sign in."""

    organisation: Organisation
    app_id: str = DEFAULT_APP_ID
    # mailboxes (by identity) whose Get-EXOMobileDeviceStatistics fails
    failing_mailboxes: set[str] = field(default_factory=set)

    @property
    def tenant(self) -> str:
        """The tenant's initial domain, e.g. contoso.onmicrosoft.com."""
        return f"{self.organisation.domain.split('.')[0]}.onmicrosoft.com"


def exo_script_output(
    tenant: ExoTenant, bound: Mapping[str, Any], *, new_scope: bool = True
) -> Iterator[str]:
    """The CLIXML ``<Obj>`` elements Get-PsbridgeExoData.ps1 writes, in order.

    ``new_scope``: RefIds per element, as PSRP messages carry them; False numbers them
    through one document, as ``pwsh -OutputFormat xml`` writes it.
    """
    organization = str(bound["Organization"])
    recipient_types = [
        part.strip()
        for value in (bound.get("RecipientTypeDetails") or ["UserMailbox"])
        for part in str(value).split(",")
        if part.strip()
    ]
    if not recipient_types:
        raise _thrown(f"No recipient type given. Use one of: {', '.join(KNOWN_RECIPIENT_TYPES)}.")
    for recipient_type in recipient_types:
        if recipient_type not in KNOWN_RECIPIENT_TYPES:
            raise _thrown(
                f"Unknown recipient type '{recipient_type}'. Use one of: "
                f"{', '.join(KNOWN_RECIPIENT_TYPES)}."
            )
    if bound.get("CertificatePasswordVariable"):
        # the variable would have to exist on the jump host: it never does here
        raise _thrown(
            f"The environment variable {bound['CertificatePasswordVariable']} named by "
            "-CertificatePasswordVariable is empty."
        )
    if organization.lower() != tenant.tenant:
        raise ScriptFailure(
            ErrorSpec(
                message=(
                    f"AADSTS90002: Tenant '{organization}' not found. Check to make sure you "
                    "have the correct tenant ID and are signing into the correct cloud."
                ),
                exception_type=_MSAL,
                category="NotSpecified",
                fully_qualified_error_id=_MSAL,
                reason="MsalServiceException",
            )
        )
    if str(bound["AppId"]).lower() != tenant.app_id.lower():
        raise ScriptFailure(
            ErrorSpec(
                message=(
                    f"AADSTS700016: Application with identifier '{bound['AppId']}' was not "
                    f"found in the directory '{organization}'."
                ),
                exception_type=_MSAL,
                category="NotSpecified",
                fully_qualified_error_id=_MSAL,
                reason="MsalServiceException",
            )
        )
    started = datetime.now(UTC)
    document_scope = RefScope()

    def scope() -> RefScope:
        return RefScope() if new_scope else document_scope

    mailboxes: list[MailboxEntry] = [
        mailbox
        for mailbox in tenant.organisation.mailbox_entries
        if mailbox.recipient_type_details in recipient_types
    ]
    for mailbox in mailboxes:
        element = serialize_object("Mailbox", mailbox.name, mailbox_props(mailbox), scope())
        yield _with_notes(element, [("PsbridgeKind", "Mailbox")])
    devices = errors = 0
    for mailbox in mailboxes:
        if mailbox.identity in tenant.failing_mailboxes:
            errors += 1
            yield _custom_object(
                [
                    # the script names mailboxes by UserPrincipalName (Get-EXOMailbox
                    # has no Identity in its default set)
                    ("Mailbox", mailbox.upn),
                    ("Category", "NotSpecified"),
                    (
                        "Message",
                        f"The operation couldn't be performed because "
                        f"'{mailbox.upn}' couldn't be found.",
                    ),
                    ("When", datetime.now(UTC).isoformat()),
                    ("PsbridgeKind", "Error"),
                ],
                scope(),
            )
            continue
        for device in mailbox.devices:
            if bound.get("OutlookOnly") and device.model != OUTLOOK_MODEL:
                continue
            devices += 1
            element = serialize_object(
                "MobileDeviceConfiguration",
                "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
                device_statistics_props(device),
                scope(),
            )
            yield _with_notes(
                element,
                [("QueriedMailbox", mailbox.upn), ("PsbridgeKind", "MobileDeviceStatistics")],
            )
    yield _custom_object(
        [
            ("created", started.isoformat()),
            ("finished", datetime.now(UTC).isoformat()),
            ("user", str(bound["AppId"])),
            ("computer", "JUMP01"),
            ("organization", organization),
            ("source", EXO_SCRIPT),
            ("module_version", "3.5.1"),
            ("recipient_types", ",".join(recipient_types)),
            ("all_devices", not bound.get("OutlookOnly")),
            ("mailboxes", len(mailboxes)),
            ("devices", devices),
            ("errors", errors),
            ("PsbridgeKind", "Manifest"),
        ],
        scope(),
    )


def exo_script_document(tenant: ExoTenant, parameters: Mapping[str, Any]) -> str:
    """What ``pwsh -OutputFormat xml -File Get-PsbridgeExoData.ps1`` prints on stdout:
    ``#< CLIXML`` and one document, each object marked ``S="Output"``."""
    script = _exo_spec()
    _, bound = bind_parameters(script, parameters)
    elements = (
        element.replace("<Obj RefId=", '<Obj S="Output" RefId=', 1)
        for element in exo_script_output(tenant, bound, new_scope=False)
    )
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        + "".join(elements)
        + "</Objs>"
    )


def _exo_spec() -> ScriptSpec:
    for spec in psbridge_scripts().values():
        if spec.name == EXO_SCRIPT:
            return spec
    raise FileNotFoundError(EXO_SCRIPT)


# --------------------------------------------------------------------------- the host


class JumpHost:
    """:class:`~bridge.sandbox.contract.CmdletHost` for ``Microsoft.PowerShell``: accepts
    psbridge's own scripts only and emulates their effect (see the module docstring)."""

    def __init__(self, tenant: ExoTenant, scripts: dict[str, ScriptSpec] | None = None) -> None:
        self.tenant = tenant
        self.scripts = scripts if scripts is not None else psbridge_scripts()
        self.runs: list[tuple[str, dict[str, Any]]] = []  # (script name, bound parameters)

    def has_command(self, name: str) -> bool:
        # Only script text is emulated; a bare cmdlet is not found here.
        return False

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if len(commands) != 1 or not commands[0].is_script:
            return PipelineOutcome(iter(()), terminating=self._not_psbridge("a pipeline"))
        script = self.scripts.get(_normalise(commands[0].name))
        if script is None:
            return PipelineOutcome(iter(()), terminating=self._not_psbridge("this script text"))
        try:
            _, bound = bind_parameters(script, commands[0].parameters)
            if script.name != EXO_SCRIPT:
                raise _thrown(
                    f"The emulated jump host does not emulate {script.name}: it writes files "
                    "on the Windows host; run it there and use psbridge mobile --from-clixml."
                )
            self.runs.append((script.name, bound))
            elements = list(exo_script_output(self.tenant, bound))
        except ScriptFailure as failure:
            return PipelineOutcome(iter(()), terminating=failure.spec)
        return PipelineOutcome(SerializedObject(element) for element in elements)

    @staticmethod
    def _not_psbridge(what: str) -> ErrorSpec:
        return ErrorSpec(
            message=(
                f"The sandbox's emulated jump host runs only psbridge's own scripts "
                f"(ps_scripts/, matched by content); {what} is not one of them."
            ),
            exception_type="System.Management.Automation.PSNotSupportedException",
            category="NotImplemented",
            fully_qualified_error_id="PsbridgeSandboxScriptNotEmulated",
            reason="PSNotSupportedException",
        )


def enable_jumphost(sandbox: Any, *, app_id: str = DEFAULT_APP_ID) -> JumpHost:
    """Serve the emulated jump host as configuration Microsoft.PowerShell on a started
    sandbox, for its organisation. Returns the host (its ``tenant`` names the tenant and
    app id a client must use; ``tenant.failing_mailboxes`` makes mailboxes fail)."""
    if sandbox.organisation is None:
        raise RuntimeError("start the sandbox before enabling the jump host")
    host = JumpHost(ExoTenant(sandbox.organisation, app_id=app_id))
    sandbox.register_configuration(CONFIGURATION, host, no_language=False)
    return host
