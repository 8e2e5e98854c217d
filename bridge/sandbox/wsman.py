"""WS-Management SOAP for the sandbox: parse the requests pypsrp sends, build the answers.

Only the shell operations PSRP uses (MS-WSMV): Create, Command, Send, Receive, Signal,
Delete and Get on ``http://schemas.microsoft.com/powershell/<configuration>``.
Answers are built from string templates because Receive is the hot path.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_COMMAND = _SHELL + "Command"
ACTION_RECEIVE = _SHELL + "Receive"
ACTION_SEND = _SHELL + "Send"
ACTION_SIGNAL = _SHELL + "Signal"
RESPONSE_ACTIONS = {
    ACTION_CREATE: ACTION_CREATE + "Response",
    ACTION_DELETE: ACTION_DELETE + "Response",
    ACTION_GET: ACTION_GET + "Response",
    ACTION_COMMAND: ACTION_COMMAND + "Response",
    ACTION_RECEIVE: ACTION_RECEIVE + "Response",
    ACTION_SEND: ACTION_SEND + "Response",
    ACTION_SIGNAL: ACTION_SIGNAL + "Response",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
POWERSHELL_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
COMMAND_STATE_DONE = _SHELL + "CommandState/Done"
COMMAND_STATE_RUNNING = _SHELL + "CommandState/Running"
SIGNAL_TERMINATE = _SHELL + "signal/Terminate"
SIGNAL_PS_CTRL_C = "powershell/signal/ctrl_c"

# WSManFault codes pypsrp and PowerShell react to
OPERATION_TIMEOUT = 2150858793  # 0x80338029: pypsrp polls again
INVALID_SELECTORS = 2150858843  # 0x8033805B: shell not found; pypsrp is_alive -> False
SESSION_OPEN_FAILED = 2150858819  # 0x80338043 (-2144108477, PSSessionOpenFailed)
PLUGIN_CONFIGURATION_NOT_FOUND = 2150858752  # 0x80338000; exact code unverified
INTERNAL_ERROR = 2150858752

TIMEOUT_MESSAGE = (
    "The WS-Management service cannot complete the operation within the time specified "
    "in OperationTimeout.  "
)
SHELL_NOT_FOUND_MESSAGE = (
    "The request for the Windows Remote Shell with ShellId {0} failed because the shell "
    "was not found on the server. Possible causes are: the specified ShellId is incorrect "
    "or the shell no longer exists on the server. Provide the correct ShellId or create a "
    "new shell and retry the operation. "
)


class WSManFault(Exception):
    """A fault to answer with HTTP 500 and a WSManFault body."""

    def __init__(self, code: int, message: str, subcode: str = "w:InternalError") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode


@dataclass
class Request:
    """The parts of a WSMan request the sandbox acts on."""

    action: str
    message_id: str
    resource_uri: str
    max_envelope_size: int
    operation_timeout: float
    selectors: dict[str, str]
    options: dict[str, str]
    body: ET.Element | None = field(repr=False)


_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$")


def parse_duration(text: str | None, default: float) -> float:
    """``PT20S`` / ``PT20.000S`` -> seconds."""
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match:
        return default
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(xml: bytes) -> Request:
    """Parse a SOAP envelope; raises WSManFault when it is not one."""
    try:
        envelope = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise WSManFault(INTERNAL_ERROR, f"The request is not valid XML: {exc}") from exc
    header = envelope.find("s:Header", NS)
    if header is None:
        raise WSManFault(INTERNAL_ERROR, "The SOAP envelope has no header.")

    def text(path: str) -> str:
        node = header.find(path, NS)
        return (node.text or "").strip() if node is not None else ""

    max_envelope = text("wsman:MaxEnvelopeSize")
    selectors = {
        node.get("Name", ""): (node.text or "")
        for node in header.findall("wsman:SelectorSet/wsman:Selector", NS)
    }
    options = {
        node.get("Name", ""): (node.text or "")
        for node in header.findall("wsman:OptionSet/wsman:Option", NS)
    }
    body = envelope.find("s:Body", NS)
    return Request(
        action=text("wsa:Action"),
        message_id=text("wsa:MessageID"),
        resource_uri=text("wsman:ResourceURI"),
        max_envelope_size=int(max_envelope) if max_envelope.isdigit() else 153600,
        operation_timeout=parse_duration(text("wsman:OperationTimeout"), 60.0),
        selectors=selectors,
        options=options,
        body=body[0] if body is not None and len(body) else None,
    )


def envelope(action: str, relates_to: str, body: str) -> bytes:
    """A response envelope whose RelatesTo is the request's MessageID (pypsrp checks it)."""
    return (
        '<s:Envelope xml:lang="en-US" '
        f'xmlns:s="{NS["s"]}" xmlns:a="{NS["wsa"]}" xmlns:x="{NS["wst"]}" '
        f'xmlns:w="{NS["wsman"]}" xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["wsmv"]}">'
        "<s:Header>"
        f"<a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault_envelope(relates_to: str, fault: WSManFault, machine: str) -> bytes:
    """A WSManFault as WinRM writes it (answered with HTTP 500)."""
    message = escape(fault.message)
    body = (
        "<s:Fault>"
        "<s:Code><s:Value>s:Receiver</s:Value>"
        f"<s:Subcode><s:Value>{fault.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{NS["wsmanfault"]}" Code="{fault.code}" Machine="{machine}">'
        f"<f:Message>{message}</f:Message></f:WSManFault>"
        "</s:Detail></s:Fault>"
    )
    return envelope(FAULT_ACTION, relates_to, body)


def create_response(endpoint: str, resource_uri: str, shell_id: str, owner: str) -> str:
    return (
        "<x:ResourceCreated>"
        f"<a:Address>{escape(endpoint)}</a:Address>"
        "<a:ReferenceParameters>"
        f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI>"
        f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
        "</a:ReferenceParameters></x:ResourceCreated>"
        + shell_fields(shell_id, resource_uri, owner)
    )


def shell_fields(shell_id: str, resource_uri: str, owner: str, state: str = "") -> str:
    state_xml = f"<rsp:State>{state}</rsp:State>" if state else ""
    return (
        f'<rsp:Shell xmlns:rsp="{NS["rsp"]}">'
        f"<rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(owner)}</rsp:Owner>"
        "<rsp:ClientIP>127.0.0.1</rsp:ClientIP>"
        f"{state_xml}"
        "<rsp:IdleTimeOut>PT900.000S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin pr</rsp:InputStreams>"
        "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
        "</rsp:Shell>"
    )


def command_response(command_id: str) -> str:
    return f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"


def receive_response(payload_b64: str, command_id: str | None, done: bool) -> str:
    command_attr = f' CommandId="{command_id}"' if command_id else ""
    stream = (
        f'<rsp:Stream Name="stdout"{command_attr}>{payload_b64}</rsp:Stream>'
        if payload_b64
        else ""
    )
    state = ""
    if command_id:
        state_uri = COMMAND_STATE_DONE if done else COMMAND_STATE_RUNNING
        state = f'<rsp:CommandState{command_attr} State="{state_uri}"/>'
    return f"<rsp:ReceiveResponse>{stream}{state}</rsp:ReceiveResponse>"


def receive_overhead(relates_to: str, command_id: str | None) -> int:
    """Bytes a Receive answer takes besides its base64 payload, plus a margin."""
    body = receive_response("", command_id, done=False)
    stream = f'<rsp:Stream Name="stdout" CommandId="{command_id or ""}"></rsp:Stream>'
    return len(envelope(RESPONSE_ACTIONS[ACTION_RECEIVE], relates_to, body + stream)) + 64
