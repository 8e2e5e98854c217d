"""One cmdlet of an ``InvokeCommand`` body run over the sandbox's organisation, answered with
Exchange Online's JSON document (or its OData error).

The cmdlets are the on-premises sandbox's (:class:`~bridge.sandbox.cmdlets.ExchangeCmdlets`:
the same filtering, ResultSize default of 1000 and its warning, not-found and binding
errors); this module only translates Exchange Online identities on the way in and writes
JSON on the way out (:mod:`bridge.sandbox.exo_values`). Paging is by offset: the page's
``$skiptoken`` holds the offset and a hash of the body, so a client must re-post the same
body to a nextLink (a different body gets 400).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.sandbox.cmdlets import ExchangeCmdlets, organization_config_props
from bridge.sandbox.contract import CommandCall, ErrorSpec, WarningMessage
from bridge.sandbox.exchange_types import Prop
from bridge.sandbox.exo_values import DOMAIN_CONTROLLER, ExoNames, to_json_object
from bridge.sandbox.organisation import (
    Organisation,
    cas_mailbox_props,
    device_statistics_props,
    mailbox_props,
    mobile_device_props,
)

SUPPORTED = {
    name.lower(): name for name in (
        "Get-Mailbox", "Get-CASMailbox", "Get-MobileDevice", "Get-MobileDeviceStatistics",
        "Get-OrganizationConfig",
    )
}
_BUILDERS: dict[str, Callable[[Any], list[Prop]]] = {
    "Mailbox": mailbox_props,
    "CASMailbox": cas_mailbox_props,
    "MobileDevice": mobile_device_props,
    "MobileDeviceConfiguration": device_statistics_props,
}
_IDENTITY_PARAMETERS = ("identity", "mailbox")
_NOT_FOUND = ("ManagementObjectNotFoundException", "RecipientNotFoundException")
_NOT_FOUND_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
_EXECUTION_EXCEPTION = (
    "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException")


def error_id(exception_type: str) -> str:
    """Exchange's short error id (``Ex6F9304``): a fixed hash of the exception type here."""
    return "Ex" + hashlib.sha1(exception_type.encode()).hexdigest()[:6].upper()  # noqa: S324


def odata_error(code: str, exception_type: str, text: str, message: str = "Error executing "
                "cmdlet") -> dict[str, Any]:
    """Exchange Online's OData error document; ``details[0].message`` is
    ``<errorId>|<ExceptionType>|<text>`` as in a public capture (2023)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [{"code": "Client", "target": "",
                         "message": f"{error_id(exception_type)}|{exception_type}|{text}"}],
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "",
                "internalexception": {
                    "message": f"Exception of type '{_EXECUTION_EXCEPTION}' was thrown.",
                    "type": _EXECUTION_EXCEPTION,
                    "stacktrace": "",
                },
            },
        },
        "adminapi.warnings@odata.type": "#Collection(String)",
        "@adminapi.warnings": [],
    }


class RawValues:
    """A page's objects as their cached JSON texts, spliced into the answer unparsed (a page
    of 1000 mailboxes is megabytes: parsing and re-writing it would dominate)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def parsed(self) -> list[Any]:
        return [json.loads(text) for text in self.texts]


def render(document: dict[str, Any]) -> bytes:
    """The JSON bytes of an answer document whose ``value`` may be :class:`RawValues`."""
    values = document.get("value")
    if not isinstance(values, RawValues):
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    marker = "\u0000psbridge-values\u0000"
    text = json.dumps({**document, "value": marker}, ensure_ascii=False, separators=(",", ":"))
    head, _, tail = text.partition(json.dumps(marker))
    return f"{head}[{','.join(values.texts)}]{tail}".encode()


def plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """``document`` with its :class:`RawValues` parsed (a $batch answer nests it)."""
    if document is not None and isinstance(document.get("value"), RawValues):
        return {**document, "value": document["value"].parsed()}
    return document


@dataclass
class Outcome:
    """The answer to one InvokeCommand: HTTP status, JSON document (None: empty body)."""

    status: int
    document: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    cmdlet: str = ""


@dataclass(frozen=True)
class Page:
    """Which slice of the result a request asks for."""

    size: int = 1000
    offset: int = 0
    select: tuple[str, ...] = ()


class CmdletInvoker:
    """Runs InvokeCommand bodies over one organisation as Exchange Online would."""

    def __init__(self, organisation: Organisation, tenant_domain: str,
                 statistics_errors: frozenset[str] = frozenset()) -> None:
        self.organisation = organisation
        self.statistics_errors = statistics_errors
        self.names = ExoNames(organisation, tenant_domain)
        self.cmdlets = ExchangeCmdlets(organisation)
        self._cache_key = f"exo-json:{tenant_domain}:"

    @staticmethod
    def body_hash(body: dict[str, Any]) -> str:
        """A short hash of an InvokeCommand body (what a skiptoken is tied to)."""
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @staticmethod
    def skiptoken(offset: int, body_hash: str) -> str:
        return base64.urlsafe_b64encode(json.dumps([offset, body_hash]).encode()).decode()

    @staticmethod
    def parse_skiptoken(token: str) -> tuple[int, str] | None:
        try:
            offset, body_hash = json.loads(base64.urlsafe_b64decode(token.encode()))
            return int(offset), str(body_hash)
        except (ValueError, TypeError):
            return None

    def parse(self, body: Any) -> tuple[str, dict[str, Any]] | Outcome:
        """The cmdlet name and parameters of an InvokeCommand body, or a 400."""
        cmdlet_input = body.get("CmdletInput") if isinstance(body, dict) else None
        name = cmdlet_input.get("CmdletName") if isinstance(cmdlet_input, dict) else None
        parameters = cmdlet_input.get("Parameters", {}) if isinstance(cmdlet_input, dict) else {}
        if not isinstance(name, str) or not isinstance(parameters, dict | type(None)):
            return Outcome(400, {"error": {"code": "BadRequest", "message": "The request body "
                                           "must carry CmdletInput.CmdletName and Parameters."}})
        return name, dict(parameters or {})

    def invoke(self, name: str, parameters: dict[str, Any], page: Page,
               next_link: Callable[[int], str]) -> Outcome:
        """Run cmdlet ``name``; ``next_link(offset)`` is the URL of the page starting there."""
        canonical = SUPPORTED.get(name.lower())
        if canonical is None:  # unverified: the shape of the service's refusal
            text = (f"The term '{name}' is not recognized as the name of a cmdlet, function, "
                    "script file, or operable program.")
            return Outcome(400, odata_error(
                "BadRequest", "System.Management.Automation.CommandNotFoundException", text),
                {"X-ExceptionType": "CommandNotFoundException"}, name)
        if canonical == "Get-OrganizationConfig":
            return self._page(canonical, [self._organization_config()], [], [], page,
                              next_link)
        parameters = {key: self._exo_to_on_premises(key, value)
                      for key, value in parameters.items()
                      if not (key.lower() in _IDENTITY_PARAMETERS and value in (None, ""))}
        commands = [CommandCall(canonical, parameters)]
        if canonical == "Get-MobileDeviceStatistics" and not any(
                key.lower() in _IDENTITY_PARAMETERS for key in parameters):
            # a null identity returns every device, as the service does: the client must
            # never send one
            commands = [CommandCall("Get-MobileDevice", {"ResultSize": "Unlimited"}), *commands]
        outcome = self.cmdlets.invoke_entries(commands, "exo")
        objects: list[tuple[str, Any]] = []
        errors: list[ErrorSpec] = []
        warnings: list[str] = []
        if outcome.terminating is None:
            for event in outcome.events:
                if isinstance(event, tuple) and self._fails(event):
                    errors.append(self._statistics_error(canonical, event[1]))
                elif isinstance(event, tuple):
                    objects.append(event)
                elif isinstance(event, ErrorSpec):
                    errors.append(event)
                elif isinstance(event, WarningMessage):
                    warnings.append(event.text)
        if outcome.terminating is not None:
            return self._error_outcome(canonical, outcome.terminating)
        if errors and not objects:
            return self._error_outcome(canonical, errors[0])
        return self._page(canonical, objects, errors, warnings, page, next_link)

    def _fails(self, event: tuple[str, Any]) -> bool:
        shape, entry = event
        return shape == "MobileDeviceConfiguration" and entry.device_id in self.statistics_errors

    def _statistics_error(self, cmdlet: str, device: Any) -> ErrorSpec:
        # unverified: which error a partnership with a broken sync state writes online
        return ErrorSpec(
            message=f"The mobile device '{self.names.device_identity(device)}' cannot be "
                    "found.",
            exception_type=_NOT_FOUND_TYPE, category="NotSpecified",
            fully_qualified_error_id=f"{error_id(_NOT_FOUND_TYPE)},{cmdlet}", command_name=cmdlet)

    def _exo_to_on_premises(self, key: str, value: Any) -> Any:
        if key.lower() in _IDENTITY_PARAMETERS and isinstance(value, str):
            return self.names.on_premises_identity(value) or value
        return value

    def _error_outcome(self, cmdlet: str, spec: ErrorSpec) -> Outcome:
        short = spec.exception_type.rsplit(".", 1)[-1]
        status, code = (404, "NotFound") if short in _NOT_FOUND else (400, "BadRequest")
        text = spec.message.replace(self.organisation.domain_controller, DOMAIN_CONTROLLER)
        return Outcome(status, odata_error(code, spec.exception_type, text),
                       {"X-ExceptionType": short}, cmdlet)

    def _organization_config(self) -> str:
        tenant = self.names.tenant_domain
        overrides = {"Name": tenant, "Identity": tenant,
                     "DisplayName": self.organisation.organization,
                     "OriginatingServer": DOMAIN_CONTROLLER}
        props = [(name, kind, overrides.get(name, value))
                 for name, kind, value in organization_config_props(self.organisation)]
        return json.dumps(to_json_object(props), ensure_ascii=False, separators=(",", ":"))

    def object_json(self, shape: str, entry: Any) -> str:
        """The JSON text of ``entry`` as ``shape``, cached on the entry like its CLIXML."""
        key = self._cache_key + shape
        cached: str | None = entry.wire.get(key)
        if cached is None:
            props = self.names.props(shape, entry, _BUILDERS[shape](entry))
            cached = json.dumps(to_json_object(props), ensure_ascii=False, separators=(",", ":"))
            entry.wire[key] = cached
        return cached

    def _page(self, cmdlet: str, objects: list[Any], errors: list[ErrorSpec],
              warnings: list[str], page: Page, next_link: Callable[[int], str]) -> Outcome:
        chosen = objects[page.offset:page.offset + page.size]
        texts = [item if isinstance(item, str) else self.object_json(*item) for item in chosen]
        values: RawValues | list[dict[str, Any]] = RawValues(texts)
        if page.select:
            wanted = {name.lower() for name in page.select}
            values = [{key: value for key, value in json.loads(text).items()
                       if key.split("@", 1)[0].lower() in wanted} for text in texts]
        more = page.offset + page.size < len(objects)
        document: dict[str, Any] = {
            "@odata.context": "",  # filled in by the service (it knows the base URL)
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [] if more else warnings,
            "value": values,
        }
        if errors and not more:  # unverified: the shape of non-terminating errors
            document["@adminapi.errors"] = [
                {"code": "Client", "target": "", "message":
                 f"{error_id(spec.exception_type)}|{spec.exception_type}|{spec.message}"}
                for spec in errors]
        if more:
            document["@odata.nextLink"] = next_link(page.offset + page.size)
        return Outcome(200, document, {}, cmdlet)


__all__ = ["CmdletInvoker", "Outcome", "Page", "RawValues", "SUPPORTED", "odata_error", "plain",
           "render"]
