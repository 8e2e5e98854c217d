"""Talking to Exchange PowerShell over WSMan/PSRP: the only module that imports pypsrp.

A :class:`Session` holds up to ``settings.concurrency`` connections, each with its own
RunspacePool, and runs :class:`Command` pipelines on them (cmdlets and parameters only:
Exchange's endpoint is NoLanguage). Output objects are read by :mod:`bridge.clixml`, so
live and Export-Clixml input give identical rows. Every pypsrp/requests failure becomes
a :class:`bridge.errors.BridgeError` here; transient ones are retried with backoff.
"""

from __future__ import annotations

import html
import importlib
import logging
import random
import re
import ssl
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import (
    AuthenticationError,
    FragmentError,
    InvalidPSRPOperation,
    SerializationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan, WSManAction
from spnego.exceptions import SpnegoError

from bridge import throttling
from bridge.clixml import parse_element
from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    Row,
    SessionStats,
    is_cmdlet_name,
    is_read_only,
    parameter_value,
    parse_parameter,
    pipeline_text,
)
from bridge.errors import (
    AuthenticationFailed,
    BridgeError,
    CommandNotFound,
    ConfigError,
    ConnectionFailed,
    RemoteCommandError,
)

log = logging.getLogger(__name__)

__all__ = [
    "AUTH_METHODS", "Command", "CommandResult", "ConnectionSettings", "ErrorRecord",
    "RetryPolicy", "Session", "SessionStats", "is_cmdlet_name", "is_read_only",
    "parameter_value", "parse_parameter", "pipeline_text",
]


AUTH_METHODS = ("negotiate", "kerberos", "ntlm", "basic", "credssp", "certificate")

#: pypsrp's default; every WinRM/IIS host accepts it (Server 2008 R2 and later).
MAX_ENVELOPE_SIZE = 153600

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


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for transient failures."""

    attempts: int = 5  # tries in all, the first included
    base_delay: float = 1.0
    max_delay: float = 30.0
    #: the longest wait psbridge accepts when Exchange says "Please wait for N seconds"
    max_server_wait: float = 300.0

    def delay(self, attempt: int, rng: random.Random, server_wait: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * float(2 ** (attempt - 1)))
        # "equal jitter": at least half the backoff, so retries never bunch up at zero
        backoff = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if server_wait is not None:
            return max(backoff, min(server_wait, self.max_server_wait))
        return backoff


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect. Holds no secret: the password is given to :class:`Session`."""

    server: str
    port: int | None = None  # None: 443 with https, 80 without (Exchange's IIS endpoint)
    https: bool = False
    path: str = "PowerShell"
    configuration: str = "Microsoft.Exchange"
    auth: str = "negotiate"
    username: str | None = None  # None: the current Windows/Kerberos identity
    ca_bundle: str | None = None
    verify: bool = True
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    operation_timeout: int = 20  # below read_timeout, or pypsrp gives up first (#182)
    concurrency: int = 3  # connections (runspaces) at once; Exchange Online allows 3
    #: Kerberos service of the server's SPN; None: HTTP for Exchange's IIS endpoint
    #: (/PowerShell, and the only SPN a load-balanced namespace has), WSMAN for /wsman
    kerberos_service: str | None = None
    certificate_pem: str | None = None  # auth=certificate
    certificate_key_pem: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.server:
            raise ConfigError("no server given: use --server NAME or a profile with server = ...")
        if self.auth not in AUTH_METHODS:
            raise ConfigError(
                f"unknown auth method {self.auth!r}: use one of {', '.join(AUTH_METHODS)}"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not between 1 and 65535")
        if self.operation_timeout < 1:
            # 0 would make every Receive return at once: a busy loop against the server
            raise ConfigError("the operation timeout must be at least 1 s")
        if self.connect_timeout <= 0:
            raise ConfigError("the connect timeout must be above 0 s")
        if self.operation_timeout >= self.read_timeout:
            raise ConfigError(
                f"operation timeout ({self.operation_timeout} s) must be below the read "
                f"timeout ({self.read_timeout:g} s)"
            )
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.auth == "basic" and not self.https:
            raise ConfigError(
                "basic authentication needs --https: over HTTP only Kerberos/NTLM "
                "can encrypt the traffic (and Exchange refuses Basic over HTTP)"
            )
        if self.auth == "certificate" and not self.https:
            raise ConfigError(
                "certificate authentication needs --https: the client certificate is "
                "presented in the TLS handshake, which plain HTTP does not have"
            )
        if self.auth == "certificate" and not (self.certificate_pem and self.certificate_key_pem):
            raise ConfigError("certificate authentication needs certificate_pem and key_pem")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.https else 80)

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://mail.contoso.com:80/PowerShell``."""
        scheme = "https" if self.https else "http"
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"{scheme}://{host}:{self.effective_port}/{self.path.strip('/')}"

    @property
    def spn_service(self) -> str:
        if self.kerberos_service:
            return self.kerberos_service
        return "WSMAN" if self.path.strip("/").lower() == "wsman" else "HTTP"

    @property
    def who(self) -> str:
        """The identity for messages: the user name, or the current Windows/Kerberos one."""
        return self.username or "the current Windows/Kerberos identity"


# --------------------------------------------------------------------------- fast output


class _RawOutput:
    """The CLIXML of one PIPELINE_OUTPUT message, not yet read."""

    __slots__ = ("xml",)

    def __init__(self, xml: str) -> None:
        self.xml = xml


class _RawOutputSerializer(Serializer):
    """pypsrp's Serializer, except that pipeline output is left as raw CLIXML.

    Why: about 70% of pypsrp's client CPU goes into building its own objects for every
    output element (re-serializing each child with ET.tostring on the way). psbridge
    reads that CLIXML with bridge.clixml instead, the same reader as for files.

    Where: pypsrp.messages.Message.unpack deserializes a PIPELINE_OUTPUT (and
    PIPELINE_INPUT, which a client never receives) with ``serializer.deserialize(text)``:
    a str, no metadata, ``clear=True``. Every other message passes an ObjectMeta, and
    the serializer's own recursive calls pass ``clear=False``, so this test picks exactly
    the output messages. The pypsrp range is pinned (<0.10) in pyproject.toml, and
    :func:`_install_fast_output` checks the hooks it relies on exist.
    """

    def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
        if metadata is None and clear and isinstance(element, str):
            return _RawOutput(element)
        return super().deserialize(element, metadata, clear)


def _install_fast_output(pool: RunspacePool) -> None:
    fragmenter = getattr(pool, "_fragmenter", None)
    if fragmenter is None or not isinstance(getattr(fragmenter, "serializer", None), Serializer):
        raise RuntimeError("this pypsrp version lays out RunspacePool differently: pin <0.10")
    fragmenter.serializer = _RawOutputSerializer()


# --------------------------------------------------------------------------- failures

#: what pypsrp and the libraries under it raise; each is turned into a BridgeError
_LIBRARY_ERRORS = (WinRMError, requests.exceptions.RequestException, SpnegoError)


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
    if isinstance(exc, SpnegoError):
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


_AUTH_PACKAGES = {
    # auth -> (module, how to get it); checked before connecting, so a missing library
    # is one clear line instead of an ImportError halfway through the HTTP handshake
    "kerberos": ("gssapi", 'pip install "pypsrp[kerberos]" (on Windows SSPI needs nothing)'),
    "credssp": ("requests_credssp", 'pip install "pypsrp[credssp]"'),
}


def _check_auth_support(auth: str) -> None:
    if auth not in _AUTH_PACKAGES or sys.platform == "win32" and auth == "kerberos":
        return
    module, remedy = _AUTH_PACKAGES[auth]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{auth} authentication needs the Python package {module}: {remedy}; or use --auth ntlm"
        ) from exc


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


# --------------------------------------------------------------------------- channels


class _WSMan(WSMan):
    """pypsrp's WSMan without its own Receive retries.

    pypsrp re-sends a timed-out Receive 5 times on the same connection, sleeping up to
    62 s in between (wsman.py, ``retries_on_read_timeout=5``), and after a read timeout
    an NTLM-encrypted connection is unusable anyway (pypsrp #21). Session retries on a
    new connection instead, with its own bounded backoff.
    """

    def receive(
        self,
        resource_uri: str,
        resource: ET.Element,
        option_set: OptionSet | None = None,
        selector_set: SelectorSet | None = None,
        timeout: int | None = None,
    ) -> ET.Element:
        response = self.invoke(
            WSManAction.RECEIVE, resource_uri, resource, option_set, selector_set, timeout,
            retries_on_read_timeout=0,
        )  # fmt: skip
        return cast(ET.Element, response.find("s:Body", namespaces=NAMESPACES))


def _connect(settings: ConnectionSettings, password: str | None, *, brief: bool = False) -> _WSMan:
    """A pypsrp WSMan transport for ``settings`` (no request sent yet); ``brief`` caps
    its timeouts for housekeeping requests that must not hold a retry up."""
    verify: bool | str = settings.ca_bundle if settings.ca_bundle else settings.verify
    extra: dict[str, Any] = {}
    if settings.auth in ("negotiate", "kerberos"):
        extra["negotiate_service"] = settings.spn_service
    if settings.auth == "certificate":
        extra = {
            "certificate_pem": settings.certificate_pem,
            "certificate_key_pem": settings.certificate_key_pem,
        }
    wsman = _WSMan(
        settings.server,
        port=settings.effective_port,
        username=settings.username,
        password=password,
        ssl=settings.https,
        path=settings.path.strip("/"),
        auth=settings.auth,
        # pypsrp annotates these as bool/int; requests takes a CA path and float seconds
        cert_validation=cast(Any, verify),
        connection_timeout=cast(
            Any, min(settings.connect_timeout, 5) if brief else settings.connect_timeout
        ),
        read_timeout=cast(Any, min(settings.read_timeout, 10) if brief else settings.read_timeout),
        # below the read timeout, brief or not (pypsrp #182)
        operation_timeout=min(settings.operation_timeout, 8 if brief else 2**31),
        max_envelope_size=MAX_ENVELOPE_SIZE,
        **extra,
    )
    # Build the requests session now and stop it re-reading the environment: pypsrp
    # merges the proxy/CA variables into it at build time, and with trust_env on,
    # requests scans every proxy variable again on each request (~1 ms each).
    transport = wsman.transport
    transport.session = transport._build_session()
    transport.session.trust_env = False
    return wsman


class _Channel:
    """One HTTP connection and the RunspacePool on it; used by one thread at a time."""

    def __init__(self, settings: ConnectionSettings, password: str | None) -> None:
        self.wsman = _connect(settings, password)
        # a request failed after the command's answer was complete: do not reuse it
        self.broken = False
        self.pool = RunspacePool(
            self.wsman, configuration_name=settings.configuration, min_runspaces=1,
            max_runspaces=1,
        )  # fmt: skip
        _install_fast_output(self.pool)

    def open(self) -> None:
        self.pool.open()

    def close(self, settings: ConnectionSettings, password: str | None) -> None:
        """Close the pool politely; when that fails, delete its shell over a fresh
        connection (this one may be broken by the failure, pypsrp #21)."""
        try:
            self.pool.close()
        except requests.exceptions.Timeout as exc:
            # a hung server: more tries would only keep the user waiting at the exit
            log.debug("closing a runspace pool timed out: %s", exc)
        except _LIBRARY_ERRORS as exc:
            log.debug("closing a runspace pool failed: %s", exc)
            self.abandon(settings, password)
            return
        self.wsman.close()

    def abandon(
        self, settings: ConnectionSettings, password: str | None, *, tries: int = 2
    ) -> None:
        """Forget a broken connection and delete its shell over a fresh one.

        After a drop or timeout pypsrp cannot reuse the connection (its NTLM encryption
        state is lost, pypsrp #21), but the server still counts the shell against the
        user's runspace limit (Exchange Online: 3) until it idles out.
        """
        self.wsman.close()
        shell = self.pool.shell
        # (pypsrp sets shell.id before the Create; ``opened`` says the server made it)
        if not shell.opened:
            return
        for _ in range(tries):  # another fresh connection when a try fails in transit
            fresh = _connect(settings, password, brief=True)
            try:
                fresh.delete(shell.resource_uri, selector_set=shell._selector_set)
                return
            except (WSManFaultError, requests.exceptions.Timeout) as exc:
                # the server answered (e.g. no such shell), or hangs: no second try
                log.debug("could not delete an abandoned shell: %s", exc)
                return
            except _LIBRARY_ERRORS as exc:
                log.debug("could not delete an abandoned shell: %s", exc)
            finally:
                fresh.close()


# --------------------------------------------------------------------------- session


class Session:
    """Connections to one endpoint; :meth:`run` is thread safe and retries transient failures.

    Use as a context manager: entering opens the first connection (so a wrong server or
    password fails at once), leaving closes every pool. The password lives only here and
    in pypsrp's transport; it is never in repr(), logs or messages.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        password: str | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.__password = password
        self.stats = SessionStats()
        self._rng = rng or random.Random()
        # None: sleep, cut short by ``_stopped`` (set by abort() and close())
        self._sleep = sleep
        self._stopped = threading.Event()
        self._lock = threading.Condition()
        self._idle: list[_Channel] = []
        self._open_count = 0
        self._limit = settings.concurrency
        self._ever_connected = False
        self._closed = False
        self._aborted = False
        self._pace = 0.0  # seconds to wait before each command (micro delays)
        self.opened_at: datetime | None = None

    def __repr__(self) -> str:
        return f"Session({self.settings.url!r}, user={self.settings.who!r})"

    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- connections

    def open(self) -> None:
        """Open the first connection now, so configuration errors surface before any work."""
        policy = self.settings.retry
        attempt = 1
        while True:
            try:
                channel = self._acquire()
            except _Transient as exc:
                if attempt >= policy.attempts:
                    raise ConnectionFailed(
                        f"cannot open a PowerShell session at {self.settings.url}: gave up "
                        f"after {_tries(attempt)}: {exc}"
                    ) from exc
                self._pause(policy.delay(attempt, self._rng, exc.server_wait))
                attempt += 1
                continue
            self._release(channel)
            return

    def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            return
        # short sleeps, not Event.wait: on Windows Ctrl+C does not interrupt a lock wait
        # (bpo-29971), but does interrupt time.sleep
        deadline = time.monotonic() + seconds
        while not self._stopped.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stopped.set()
            idle, self._idle = self._idle, []
            self._open_count -= len(idle)
            self._lock.notify_all()
        for channel in idle:
            channel.close(self.settings, self.__password)

    def abort(self) -> None:
        """Make commands running in other threads stop at their next round trip.

        For Ctrl+C or a fatal error in one worker: the others give up at once instead
        of finishing a long pipeline. The session cannot run commands afterwards.
        """
        with self._lock:
            self._aborted = self._closed = True
            self._stopped.set()
            self._lock.notify_all()

    @property
    def endpoint(self) -> str:
        return self.settings.url

    @property
    def configuration(self) -> str | None:
        return self.settings.configuration

    @property
    def user(self) -> str | None:
        return self.settings.username

    @property
    def pipelines(self) -> bool:
        return True

    def set_concurrency(self, connections: int) -> None:
        """Allow up to ``connections`` connections at once (one runspace each)."""
        with self._lock:
            self._limit = max(1, connections)
            self._lock.notify_all()

    @property
    def concurrency(self) -> int:
        return self._limit

    def _new_channel(self) -> _Channel:
        _check_auth_support(self.settings.auth)
        try:
            channel = _Channel(self.settings, self.__password)
        except ValueError as exc:
            raise ConfigError(f"invalid connection settings: {exc}") from exc
        try:
            channel.open()
        except _LIBRARY_ERRORS as exc:
            # the shell may exist already (Create answered, the Receive after it failed)
            channel.abandon(self.settings, self.__password)
            _classify(exc, self.settings, first_contact=not self._ever_connected)
            raise  # _classify always raises; this keeps mypy and readers sure of it
        except OSError as exc:
            # requests raises a bare OSError for an unreadable CA or client certificate
            channel.wsman.close()
            raise ConnectionFailed(
                f"cannot connect to {self.settings.url}: {exc.strerror or exc}"
            ) from exc
        self._ever_connected = True
        if self.opened_at is None:
            self.opened_at = datetime.now(UTC)
        return channel

    def _acquire(self) -> _Channel:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        raise RemoteCommandError("the session is closed")
                    if self._idle:
                        return self._idle.pop()
                    if self._open_count < self._limit:
                        self._open_count += 1
                        break
                    self._lock.wait()
            try:
                return self._new_channel()
            except _Transient as exc:
                with self._lock:
                    self._open_count -= 1
                    self._lock.notify_all()
                    if self._open_count > 0 and _THROTTLED.search(str(exc)):
                        # The server allows fewer runspaces than asked (Exchange Online: 3;
                        # or other sessions of this user): go on with those already open.
                        self._limit = max(1, self._open_count)
                        log.warning("the server refused another runspace; using %d", self._limit)
                        continue
                raise
            except BaseException:
                with self._lock:
                    self._open_count -= 1
                    self._lock.notify_all()
                raise

    def _release(self, channel: _Channel) -> None:
        if channel.broken:
            self._discard(channel)
            return
        with self._lock:
            if self._closed:
                self._open_count -= 1
                close = True
            else:
                self._idle.append(channel)
                close = False
            self._lock.notify()
        if close:
            channel.close(self.settings, self.__password)

    def _discard(self, channel: _Channel, *, tries: int = 2) -> None:
        channel.abandon(self.settings, self.__password, tries=tries)
        with self._lock:
            self._open_count -= 1
            self.stats.reconnects += 1
            self._lock.notify()

    # ---- commands

    def run(
        self,
        commands: Command | Sequence[Command],
        *,
        on_output: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """Run one pipeline; retry transient failures on a fresh connection.

        Once the command reached the server, only a pipeline of read-only verbs (see
        :func:`is_read_only`) is run again; any other then raises RemoteCommandError
        saying it may or may not have run. A pipeline the server ends Stopped is such a
        failure: its partial rows are never returned.

        ``on_output(n)`` is told how many objects this try has received so far, as they
        arrive (it starts again from 0 when a retry starts over), for progress display.
        Raises :class:`CommandNotFound` for a cmdlet the endpoint lacks (or RBAC hides),
        :class:`RemoteCommandError` for a terminating error, :class:`ConnectionFailed` /
        :class:`AuthenticationFailed` when the server cannot be used.
        """
        pipeline = [commands] if isinstance(commands, Command) else list(commands)
        if not pipeline:
            raise ValueError("no command to run")
        return self._with_retries(
            pipeline_text(pipeline),
            lambda ps: _add_commands(ps, pipeline),
            on_output,
            rerun_safe=is_read_only(pipeline),
        )

    def run_script(
        self, script: str, parameters: Mapping[str, object] | None = None
    ) -> CommandResult:
        """Run script text with parameters (full-language endpoints such as a jump host)."""

        def build(ps: PowerShell) -> None:
            ps.add_script(script)
            for name, value in (parameters or {}).items():
                ps.add_parameter(name, value)

        # psbridge's own ps_scripts only collect (Get-PsbridgeExoData.ps1): safe to rerun
        return self._with_retries("script", build, rerun_safe=True)

    def _with_retries(
        self,
        label: str,
        build: Callable[[PowerShell], None],
        on_output: Callable[[int], None] | None = None,
        *,
        rerun_safe: bool,
    ) -> CommandResult:
        """Run ``build``'s pipeline, retrying transient failures. A failure after the
        command reached the server is retried only when ``rerun_safe`` (it only reads):
        a Set-/Remove-/New- command run again would make its change twice."""
        policy = self.settings.retry
        attempt = 1
        while True:
            self._wait_for_pace()
            channel: _Channel | None = None
            try:
                channel = self._acquire()
                result = self._invoke(channel, label, build, on_output)
            except _Transient as exc:
                if channel is not None and exc.keep_connection:
                    self._release(channel)
                elif channel is not None:
                    self._discard(channel)
                if self._aborted:
                    raise RemoteCommandError(f"{label}: stopped (the run was interrupted)") from exc
                if exc.maybe_ran and not rerun_safe:
                    raise RemoteCommandError(
                        f"{label}: {exc}; the command had been sent, so it may or may not "
                        "have run: check its effect before running it again"
                    ) from exc
                if attempt >= policy.attempts:
                    if isinstance(exc, _Stopped):  # the server failed the command: exit 7
                        raise RemoteCommandError(
                            f"{label}: gave up after {_tries(attempt)}: {exc}"
                        ) from exc
                    raise ConnectionFailed(
                        f"{label}: gave up after {_tries(attempt)}: {exc}"
                    ) from exc
                delay = policy.delay(attempt, self._rng, exc.server_wait)
                log.warning(
                    "%s",
                    throttling.retry_note(
                        label, str(exc), delay, throttled=exc.server_wait is not None
                    ),
                )
                with self._lock:
                    self.stats.retries += 1
                attempt += 1
                # a Ctrl+C elsewhere (abort) ends this wait at once: a thread left
                # sleeping out "Please wait for 300 seconds" would hold the exit up
                self._pause(delay)
                continue
            except BridgeError:
                if channel is not None:  # the server answered: the connection is fine
                    self._release(channel)
                raise
            except BaseException:
                # Ctrl+C mid-request leaves the connection in an unknown state: drop it,
                # and delete its shell (a quick request on a fresh connection): left to
                # idle out, it would hold one of Exchange Online's 3 runspaces for 15
                # minutes, and a few Ctrl+C in a row would lock --resume out. One try
                # only: the user is waiting.
                if channel is not None:
                    self._discard(channel, tries=1)
                raise
            self._release(channel)
            return result

    def _invoke(
        self,
        channel: _Channel,
        label: str,
        build: Callable[[PowerShell], None],
        on_output: Callable[[int], None] | None = None,
    ) -> CommandResult:
        ps = PowerShell(channel.pool)
        build(ps)
        rows: list[Row] = []
        started = False
        try:
            ps.begin_invoke()
            started = True
            while ps.state == PSInvocationState.RUNNING:
                if self._aborted:
                    # stop the command on the server too, then leave the connection
                    ps.stop()
                    raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")
                ps.poll_invoke()
                if ps.output:
                    # read each batch as it arrives: only rows are kept, never the XML
                    # of a whole large answer
                    rows.extend(_read_output(item, label) for item in ps.output)
                    ps.output.clear()
                    if on_output is not None:
                        on_output(len(rows))
        except _LIBRARY_ERRORS as exc:
            try:
                _classify(exc, self.settings, first_contact=False)
            except _Transient as transient:
                # A fault answering the Command request means the server refused the
                # command; any other failure from sending it on leaves unknown whether
                # it ran (a drop or timeout may come after the server started it).
                transient.maybe_ran = started or not (
                    isinstance(exc, WSManFaultError) or transient.refused
                )
                raise
            raise
        except BridgeError:
            if ps.state == PSInvocationState.RUNNING:
                # output psbridge cannot read (ClixmlError): the pipeline runs on, and on
                # this connection's one runspace the next command would queue behind it
                # for ever. Dropping the connection deletes its shell, pipeline and all.
                channel.broken = True
            raise
        with self._lock:
            self.stats.commands += 1
        errors = [_error_record(record) for record in ps.streams.error]
        warning_texts = [_warning_text(record) for record in ps.streams.warning]
        # Exchange writes a micro delay under 10 s as a verbose record, longer as a warning
        self._note_warnings([*warning_texts, *(_warning_text(r) for r in ps.streams.verbose)])
        self._release_pipeline(channel, ps)
        if ps.state == PSInvocationState.FAILED:
            terminating = errors.pop() if errors else ErrorRecord("", "NotSpecified", "", "")
            _raise_terminating(label, terminating, self.settings)
        if ps.state == PSInvocationState.STOPPED:
            # Stopped on the server (an admin, IIS recycling, Exchange throttling): the
            # rows are partial. A transient failure: a read-only command starts over, its
            # partial rows dropped here (callers see rows only from a finished try).
            record = errors.pop() if errors else None
            why = record.message if record is not None and record.message else "no reason given"
            stopped = _Stopped(f"the server stopped the command ({why})", keep_connection=True)
            stopped.maybe_ran = True
            raise stopped
        return CommandResult(rows=rows, errors=errors, warnings=warning_texts)

    def _release_pipeline(self, channel: _Channel, ps: PowerShell) -> None:
        # Signal terminate: MS-WSMV says the client MUST send it before the next command
        # so the server can free the command; without it Windows refuses commands once
        # MaxConcurrentCommandsPerShell (1000) is reached (pypsrp #148), i.e. halfway
        # through a 2,000-mailbox per-mailbox run. It costs one round trip per command.
        try:
            ps.close()
        except _LIBRARY_ERRORS as exc:
            # The answer is complete: running the command again (a Set- or Remove- one
            # through psbridge run, too) would be wrong. Drop the connection instead;
            # deleting its shell frees the command on the server.
            log.debug("%s: freeing the finished command failed: %s", ps.id, exc)
            channel.broken = True

    def _note_warnings(self, texts: Iterable[str]) -> None:
        """Exchange Online's micro delays: slow the pace while they come, relax after."""
        delayed_ms = throttling.micro_delays_ms(texts)
        with self._lock:
            self.stats.micro_delays += len(delayed_ms)
            self._pace = throttling.next_pace(delayed_ms, self._pace, self.settings.retry.max_delay)

    def _wait_for_pace(self) -> None:
        pace = self._pace
        if pace > 0:
            self._pause(pace)


def _add_commands(ps: PowerShell, pipeline: Sequence[Command]) -> None:
    # Values always travel as parameters, never pasted into script text (NoLanguage).
    for command in pipeline:
        ps.add_cmdlet(command.name)
        for name, value in command.parameters.items():
            ps.add_parameter(name, list(value) if isinstance(value, tuple) else value)


def _read_output(item: object, label: str) -> Row:
    xml = item.xml if isinstance(item, _RawOutput) else None
    if xml is None:
        # pypsrp decoded it itself (not expected once the fast path is installed)
        return {"Value": str(item)}
    value = parse_element(xml)
    if isinstance(value, dict):
        return value
    # a bare value (Get-Date, a string): keep it as a one-column row
    return {"Value": value}


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
