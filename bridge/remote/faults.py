"""Failures: pypsrp/requests exceptions and PowerShell error records -> BridgeError or retry.

:func:`_classify` turns what pypsrp and the libraries under it raise into the BridgeError
it means (fatal) or :class:`_Transient` (retried on a new connection): TLS handshakes,
HTTP status lines, WSMan faults, Exchange's throttling texts.
"""

from __future__ import annotations

import html
import re
import socket
import ssl
from typing import Any

import requests
from pypsrp.exceptions import (
    AuthenticationError,
    FragmentError,
    InvalidPSRPOperation,
    SerializationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from spnego.exceptions import SpnegoError

from bridge import kerberos, throttling
from bridge.commands import ErrorRecord
from bridge.errors import (
    AuthenticationFailed,
    CommandNotFound,
    ConfigError,
    ConnectionFailed,
    RemoteCommandError,
)
from bridge.remote.settings import ConnectionSettings

#: System.Management.Automation.ErrorCategory, by value.
ERROR_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected",
    "InvalidArgument", "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType",
    "MetadataError", "NotImplemented", "NotInstalled", "ObjectNotFound", "OperationStopped",
    "OperationTimeout", "SyntaxError", "ParserError", "PermissionDenied", "ResourceBusy",
    "ResourceExists", "ResourceUnavailable", "ReadError", "WriteError", "FromStdErr",
    "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
    "LimitsExceeded", "QuotaExceeded", "NotEnabled",
)  # fmt: skip

# Exchange's throttling texts (EXCHANGE_OBJECTS.md "Messages, exactly"): a refusal to be
# retried later, possibly with the server's own wait.
_THROTTLED = throttling.THROTTLED

#: what pypsrp and the libraries under it raise; each is turned into a BridgeError
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    WinRMError, requests.exceptions.RequestException, SpnegoError, *kerberos.LIBRARY_ERRORS
)


class _Transient(Exception):
    """A failure worth retrying on a new connection (drop, 5xx, throttling, timeout)."""

    def __init__(
        self, message: str, *, server_wait: float | None = None, keep_connection: bool = False
    ) -> None:
        super().__init__(message)
        self.server_wait = server_wait
        # True when the server answered normally (a throttled command): the connection
        # is fine, and a new one would spend Exchange's runspace budget for nothing
        self.keep_connection = keep_connection
        # True when the command had reached the server: it may have run, in part or whole
        self.maybe_ran = False
        # True when the server refused the request before running anything (throttling)
        self.refused = False


class _Stopped(_Transient):
    """The server ended the pipeline Stopped: retried, and a command error at the end."""


def _fault_text(exc: WSManFaultError) -> str:
    text = exc.reason or exc.provider_fault or str(exc)
    return " ".join(str(text).split())


def _server_wait(text: str) -> float | None:
    return throttling.server_wait(text)


def _classify(exc: BaseException, settings: ConnectionSettings, *, first_contact: bool) -> None:
    """Raise the BridgeError (fatal) or :class:`_Transient` (retry) that ``exc`` means."""
    where = settings.url
    context = exc.__context__
    if (
        isinstance(exc, WSManFaultError)
        and exc.code is None and exc.reason is None and exc.provider_fault is None
        and isinstance(context, WinRMTransportError)
    ):  # fmt: skip
        # an HTML error page that happens to be well-formed XML (IIS's 500 page) is no
        # fault: pypsrp parsed it as one with no details; judge the HTTP answer instead
        exc = context
    if isinstance(exc, AuthenticationError):
        raise AuthenticationFailed(
            f"the server refused the credentials of {settings.who} (auth: {settings.auth}) "
            f"at {where}. Check the user name (UPN or DOMAIN\\user) and password."
        ) from exc
    if isinstance(exc, (SpnegoError, *kerberos.LIBRARY_ERRORS)):
        failure = kerberos.sign_in_failure(
            exc, server=settings.server, service=settings.spn_service, username=settings.username
        )
        if failure is not None:  # a Kerberos failure with its own line: no ticket, no SPN...
            raise failure from exc
        # pyspnego (Kerberos/NTLM) could not even build a token: no ticket, no password
        detail = (
            "no Kerberos ticket or password is available here"
            if (settings.username is None)
            else "the Kerberos/NTLM exchange failed"
        )
        raise AuthenticationFailed(
            f"cannot sign in as {settings.who} (auth: {settings.auth}) at {where}: {detail}. "
            "Give --user (the password from PSBRIDGE_PASSWORD or the prompt), or get a "
            "Kerberos ticket first (kinit)."
        ) from exc
    if isinstance(exc, requests.exceptions.SSLError):
        raise _tls_failure(exc, settings) from exc
    if isinstance(exc, requests.exceptions.ConnectionError) and first_contact:
        # A connection that never worked: wrong name, nothing listening, firewall.
        reason = _socket_reason(exc)
        raise ConnectionFailed(f"cannot connect to {where}: {reason}.") from exc
    if isinstance(exc, requests.exceptions.Timeout):
        # (a connect timeout on first contact was handled above as a ConnectionError)
        raise _Transient(f"no answer from {where} within the read timeout") from exc
    if isinstance(exc, requests.exceptions.ConnectionError):
        raise _Transient(f"the connection to {where} dropped") from exc
    if isinstance(exc, WSManFaultError | WinRMTransportError) and _denied(exc):
        raise AuthenticationFailed(
            f"access is denied for {settings.who} at {where}: the account signed in but may "
            "not use remote PowerShell (Set-User -RemotePowerShellEnabled $true) or lacks an "
            "RBAC role."
        ) from exc
    if isinstance(exc, WSManFaultError):
        text = _fault_text(exc)
        if "session configuration" in text.lower() and "cannot find" in text.lower():
            raise ConnectionFailed(
                f"the server has no PowerShell configuration {settings.configuration!r} at "
                f"{where} (Exchange uses Microsoft.Exchange): check --configuration."
            ) from exc
        if _THROTTLED.search(text):
            raise _Transient(f"throttled by the server: {text}", server_wait=_server_wait(text))
        raise _Transient(f"the server answered with a fault: {text}") from exc
    if isinstance(exc, WinRMTransportError):
        if exc.code == 404:
            raise ConnectionFailed(
                f"no PowerShell endpoint at {where} (HTTP 404): check --path and --port."
            ) from exc
        if throttling.http_over_budget(exc.code, exc.response_text):
            # Exchange's HTTP module refused a new command over budget: the connection
            # and shell are fine; wait what it says, then send the command again
            text = str(exc.response_text)
            refusal = _Transient(
                f"throttled by the server: {throttling.summary(text)}",
                server_wait=throttling.server_wait(text), keep_connection=True,
            )
            refusal.refused = True
            raise refusal from exc
        if exc.code in (500, 502, 503, 504, 429):
            raise _Transient(_http_status_line(exc.code, exc.response_text, where)) from exc
        raise ConnectionFailed(f"{_http_status_line(exc.code, None, where)}.") from exc
    if isinstance(exc, InvalidPSRPOperation | FragmentError | SerializationError):
        text = str(exc)
        if _THROTTLED.search(text):
            raise _Transient(f"throttled by the server: {text}", server_wait=_server_wait(text))
        raise _Transient(f"the PowerShell session broke: {text}") from exc
    if isinstance(exc, WinRMError):
        raise _Transient(f"WinRM error: {exc}") from exc
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.URLRequired):
        raise ConfigError(f"{where} is not a valid endpoint: check --server and --path") from exc
    if isinstance(exc, requests.exceptions.RequestException):
        # a broken response (chunked encoding, decoding): the connection is suspect
        raise _Transient(f"a broken answer from {where}: {exc.__class__.__name__}") from exc
    if isinstance(exc, ValueError):
        # pypsrp checks its arguments with ValueError (e.g. an auth without its inputs)
        raise ConfigError(f"invalid connection settings: {exc}") from exc


#: OpenSSL's reasons when the answer to a ClientHello is no TLS record at all: a plain
#: HTTP server on that port ("record layer failure" is OpenSSL 3.2+'s name for it)
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
     "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH"}
)  # fmt: skip
_SSL_TEXT = re.compile(r"^\[SSL(?:: [A-Z0-9_]+)?\]\s*|\s*\(_ssl\.c:\d+\)$")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError buried in requests' SSLError (args, causes, urllib3's .reason)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError):
            return item
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
        stack.extend(item.args)
    return None


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the certificate is trusted but for other names
_HOSTNAME_MISMATCH = 62


def _certificate_names(settings: ConnectionSettings) -> list[str]:
    """The DNS names and addresses the server's certificate holds, read by a second
    handshake that checks the chain but not the name; [] when that fails too."""
    context = ssl.create_default_context(cafile=settings.ca_bundle or None)
    context.check_hostname = False
    try:
        with socket.create_connection((settings.server, settings.effective_port),
                                      timeout=settings.connect_timeout) as raw, \
                context.wrap_socket(raw, server_hostname=settings.server) as tls:
            certificate = tls.getpeercert() or {}
    except (OSError, ValueError):
        return []
    names: tuple[tuple[str, str], ...] = certificate.get("subjectAltName", ())  # type: ignore[assignment]
    return [str(value) for kind, value in names if kind in ("DNS", "IP Address")]


def _tls_failure(exc: BaseException, settings: ConnectionSettings) -> ConnectionFailed:
    """A failed TLS handshake -> what it means: plain HTTP, an untrusted certificate, other."""
    where = settings.url
    cause = _ssl_cause(exc)
    reason = str(getattr(cause, "reason", "") or "") if cause is not None else ""
    detail = str(cause.args[1]) if cause is not None and len(cause.args) > 1 else str(cause or exc)
    detail = _SSL_TEXT.sub("", detail).strip() or reason.replace("_", " ").lower()
    if reason in _NOT_TLS_REASONS:
        return ConnectionFailed(
            f"the server at {where} does not speak HTTPS (TLS handshake failed: {detail}); "
            "check --https/--http and --port."
        )
    if settings.verify and getattr(cause, "verify_code", None) == _HOSTNAME_MISMATCH:
        names = _certificate_names(settings)
        holds = f"it holds {', '.join(names)}" if names else "its names could not be read"
        return ConnectionFailed(
            f"the TLS certificate of {where} is not for the name {settings.server}: {holds}. "
            "Connect with a name the certificate holds (--server), or have the certificate "
            "reissued with this name."
        )
    if settings.verify and (
        isinstance(cause, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED"
    ):
        return ConnectionFailed(
            f"TLS certificate verification failed for {where}. Give the issuing CA with "
            "--ca-bundle FILE (or, for a test lab only, --no-verify)."
        )
    return ConnectionFailed(f"the TLS handshake with {where} failed: {detail}.")


_MARKUP_SKIPPED = re.compile(
    r"<!--.*?-->|<!DOCTYPE[^>]*>|<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")
_BODY_TEXT_LIMIT = 150
#: reason phrases of the statuses an endpoint answers with (http.HTTPStatus has them,
#: but the stdlib http package stays in the sandbox's server module)
_HTTP_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 413: "Content Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def _http_status_line(code: int | None, body: object, where: str) -> str:
    """``HTTP 503 Service Unavailable from URL: <the page's text, tags stripped, short>``.

    An IIS error page repeats its title in a heading: each piece of text is kept once,
    and not at all when it only repeats the reason phrase."""
    reason = _HTTP_REASONS.get(code or 0, "")
    head = f"HTTP {code} {reason}".rstrip() + f" from {where}"
    text = html.unescape(_MARKUP_SKIPPED.sub(" ", str(body or "")))
    pieces: list[str] = []
    for chunk in _TAG.split(text):
        piece = " ".join(chunk.split())
        if piece and piece.lower() != reason.lower() and piece not in pieces:
            pieces.append(piece)
    summary = " ".join(pieces)
    if len(summary) > _BODY_TEXT_LIMIT:
        summary = summary[: _BODY_TEXT_LIMIT - 3].rsplit(" ", 1)[0] + "..."
    return f"{head}: {summary}" if summary else head


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _denied(exc: WSManFaultError | WinRMTransportError) -> bool:
    """Signed in, but refused (HTTP 403, or Exchange's "Access is denied." fault)."""
    if isinstance(exc, WinRMTransportError):
        return bool(exc.code == 403)
    return "access is denied" in _fault_text(exc).lower()


def _socket_reason(exc: requests.exceptions.ConnectionError) -> str:
    text = str(exc)
    if "Name or service not known" in text or "getaddrinfo" in text or "nodename" in text:
        return "the name does not resolve (check --server)"
    if "Connection refused" in text or "refused" in text.lower():
        return "connection refused (is the port right, and is the server up?)"
    if "timed out" in text:
        return "the connection timed out"
    return "the connection failed"

def _error_record(record: Any) -> ErrorRecord:
    """pypsrp's ErrorRecord object -> :class:`ErrorRecord`."""
    message = str(record) if record is not None else ""
    exception = getattr(record, "exception", None)
    adapted = getattr(exception, "adapted_properties", None) or {}
    if isinstance(adapted, dict) and adapted.get("Message"):
        message = str(adapted["Message"])
    category_value = getattr(record, "category", 0)
    try:
        category = ERROR_CATEGORIES[int(category_value)]
    except (TypeError, ValueError, IndexError):
        category = str(category_value)
    return ErrorRecord(
        message=" ".join(message.split()) if message else "",
        category=category,
        reason=str(getattr(record, "reason", "") or ""),
        error_id=str(getattr(record, "fq_error", "") or ""),
        target=str(getattr(record, "target_name", "") or ""),
    )


def _warning_text(record: Any) -> str:
    return str(getattr(record, "message", None) or record)


def _raise_terminating(label: str, record: ErrorRecord, settings: ConnectionSettings) -> None:
    text = record.message or record.error_id or "the pipeline failed"
    if record.reason == "CommandNotFoundException" or "CommandNotFound" in record.error_id:
        raise CommandNotFound(
            f"{label}: the endpoint has no such cmdlet (or your RBAC roles do not grant it): {text}"
        )
    if "ScriptsNotAllowed" in record.error_id or "no-language mode" in text:
        raise RemoteCommandError(
            f"{label}: the endpoint {settings.configuration} runs in NoLanguage mode and "
            "accepts only cmdlets with parameters."
        )
    if _THROTTLED.search(text):
        raise _Transient(
            f"throttled by the server: {text}", server_wait=_server_wait(text), keep_connection=True
        )
    raise RemoteCommandError(f"{label}: {text}", record=record)
