"""The sandbox endpoint: HTTP(S) + auth + WSMan + PSRP on 127.0.0.1, one thread per connection.

``Sandbox`` starts it on port 0 in a background thread. Everything a handler raises is
recorded in ``internal_errors`` and answered with a WSManFault (never a dropped
connection), so tests can assert the sandbox saw nothing unexpected.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.errors import ConfigError
from bridge.sandbox import wsman
from bridge.sandbox.auth import (
    Account,
    AuthFailed,
    DecryptFailed,
    NegotiateAcceptor,
    SignIn,
    check_basic,
    parse_authorization,
    register_ntlm_user,
)
from bridge.sandbox.contract import CmdletHost, CommandCall, ErrorSpec, WarningMessage
from bridge.sandbox.knobs import Knobs
from bridge.sandbox.psrp import (
    PipelineRun,
    SessionConfiguration,
    ShellSession,
    command_not_found_error,
    no_language_error,
)
from bridge.sandbox.tls import write_certificates

SERVER_NAME = "EXCH01"
IIS_401_BODY = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n'
    b"<title>401 - Unauthorized: Access is denied due to invalid credentials.</title>\r\n"
    b"</head>\r\n<body>\r\n<h2>401 - Unauthorized: Access is denied due to invalid "
    b"credentials.</h2>\r\n<h3>You do not have permission to view this directory or page "
    b"using the credentials that you supplied.</h3>\r\n</body>\r\n</html>\r\n"
)
IIS_503_BODY = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">'
    b"\r\n<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable"
    b"</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n</BODY></HTML>\r\n"
)
IIS_500_BODY = (
    b"<html><head><title>500 - Internal server error.</title></head><body>"
    b"<h2>500 - Internal server error.</h2><h3>There is a problem with the resource you are "
    b"looking for, and it cannot be displayed.</h3></body></html>\r\n"
)
CONCURRENCY_MESSAGE = (
    "[AuthZRequestId={request_id}][FailureCategory=AuthZ-AuthorizationException] Fail to "
    "create a runspace because you have exceeded the maximum number of connections allowed "
    ": {limit} for the policy party : MaxConcurrency. Please close existing runspace and try "
    "again.\r\nPolicy: CN=GlobalThrottlingPolicy_{policy_id},CN=Global Settings,CN=First "
    "Organization,CN=Microsoft Exchange,CN=Services,CN=Configuration,{dc}; \r\nSnapshot: "
    "Owner: Sid~{user}~PowerShell~false\r\nBudgetType: PowerShell\r\nActiveRunspaces: "
    "{limit}/{limit}\r\n"
)
MICRO_DELAY_MESSAGE = (
    "Micro delay applied. Actual delayed: {0} msecs, Enforced: True, Capped delay: {0} "
    "msecs, Required: False, Additional info: [Server={1}][Budget=PowerShellMaxCmdlets]."
)
OVER_BUDGET_MESSAGE = (
    "Operation aborted because the operation has exceeded your throttling policy budget. "
    "Please wait for {0} seconds."
)


class _Terminated(Exception):
    """A statement's outcome carried a terminating error."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


def _run_statements(
    statements: list[list[CommandCall]], host: CmdletHost, user: str, prefix: list[Any]
) -> Iterator[Any]:
    """Run each statement through the host in turn, as one event stream."""
    yield from prefix
    for statement in statements:
        outcome = host.invoke(statement, user)
        if outcome.terminating is not None:
            raise _Terminated(outcome.terminating)
        yield from outcome.events
        if outcome.terminating is not None:
            raise _Terminated(outcome.terminating)


class _Handler(BaseHTTPRequestHandler):
    """One TCP connection; IIS authenticates Negotiate per connection, so state lives here."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "Microsoft-IIS/10.0"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.acceptor: NegotiateAcceptor | None = None
        self.authenticated_user: str | None = None
        self.server.sandbox.track_connection(self.connection, open_=True)

    def finish(self) -> None:
        self.server.sandbox.track_connection(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """Quiet: tests and the CLI print what matters."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.sandbox.handle_post(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.sandbox.send_plain(self, 405, b"", close=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    sandbox: Sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection the client reset or a TLS handshake it refused (it does not trust
        # the certificate) is not the sandbox's fault; anything else is.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | ssl.SSLError | TimeoutError):
            return
        self.sandbox.record_internal_error("connection", traceback.format_exc())


class Sandbox:
    """An emulated Exchange PowerShell endpoint on 127.0.0.1 (WSMan + PSRP over HTTP(S)).

    ``with Sandbox(mailboxes=200, seed=1) as sb:`` then connect pypsrp to ``sb.url`` with
    ``sb.username`` / ``sb.password`` and ``configuration_name="Microsoft.Exchange"``.
    ``host`` replaces the Exchange cmdlets (tests of the protocol alone); ``organisation``
    serves an existing Organisation; other keyword arguments are :class:`Knobs`.
    Counters: ``requests_served`` (HTTP requests), ``objects_sent`` (output objects);
    ``internal_errors`` lists what the endpoint itself failed on (tests assert it empty).
    """

    def __init__(
        self,
        mailboxes: int = 200,
        seed: int = 1,
        https: bool = False,
        *,
        host: CmdletHost | None = None,
        organisation: Any = None,
        username: str | None = None,
        password: str | None = None,
        bind: str = "127.0.0.1",
        port: int = 0,
        **knobs: Any,
    ) -> None:
        self.knobs = Knobs.from_kwargs(knobs)
        self.https = https
        self.host = bind
        self.port = port
        self.mailbox_count = mailboxes
        self.seed = seed
        self._host_override = host
        self.organisation: Any = organisation
        self._requested_username = username
        self._requested_password = password
        self.username = ""
        self.password = ""
        self.ca_file: Path | None = None
        self.internal_errors: list[str] = []
        #: each completed Negotiate sign-in (Kerberos or NTLM), in order (auth.SignIn)
        self.sign_ins: list[SignIn] = []
        self.requests_served = 0
        self.objects_sent = 0
        self.configurations: dict[str, SessionConfiguration] = {}
        self.shells: dict[str, ShellSession] = {}
        self._lock = threading.Lock()
        self._account: Account | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tempdir: Path | None = None
        self._authenticated_requests = 0
        self._objects_since_drop = 0
        self._drop_pending = False
        self._stalls_done = 0
        self._stops_done = 0
        self._connections: set[socket.socket] = set()
        self._cmdlet_times: dict[str, deque[float]] = {}

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.host}:{self.port}/PowerShell"

    def register_configuration(
        self, name: str, host: CmdletHost, *, no_language: bool = True
    ) -> None:
        """Serve ``host`` under configuration ``name`` (e.g. Microsoft.PowerShell)."""
        self.configurations[name.lower()] = SessionConfiguration(name, host, no_language)

    def _default_host(self) -> CmdletHost:
        if self._host_override is not None:
            return self._host_override
        from bridge.sandbox.cmdlets import ExchangeCmdlets  # the Exchange side
        from bridge.sandbox.organisation import Organisation

        if self.organisation is None:
            self.organisation = Organisation(mailboxes=self.mailbox_count, seed=self.seed)
        exchange: CmdletHost = ExchangeCmdlets(self.organisation)
        return exchange

    def start(self) -> Sandbox:
        """Build the organisation, bind 127.0.0.1:port (0 = any free port), serve."""
        if self._server is not None:
            return self
        exchange_host = self._default_host()
        self.register_configuration("Microsoft.Exchange", exchange_host, no_language=True)

        domain = str(getattr(self.organisation, "domain", "") or "contoso.com")
        netbios = domain.split(".", 1)[0].upper()
        self.username = self._requested_username or f"admin{secrets.token_hex(3)}@{domain}"
        self.password = self._requested_password or secrets.token_urlsafe(18).replace(":", "")
        self._account = Account(self.username, self.password, netbios)
        register_ntlm_user(self.username, self.password, netbios)

        server = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        server.sandbox = self
        try:
            server.server_bind()
            server.server_activate()
        except OSError as exc:
            server.server_close()
            raise ConfigError(
                f"The sandbox cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "choose another port, or 0 for any free one."
            ) from exc
        if self.https:
            self._tempdir = Path(tempfile.mkdtemp(prefix="psbridge-sandbox-tls-"))
            ca_file, cert_file, key_file = write_certificates(self._tempdir, self.host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            # the handshake runs in the connection's thread (_Handler.setup), so a slow or
            # refusing client never holds up accepting the next connection
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.ca_file = ca_file
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"psbridge-sandbox-{self.port}",
        )
        self._thread.start()
        return self

    def track_connection(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def stop(self) -> None:
        """Stop serving, close the clients' open connections, remove the certificates."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with self._lock:
                connections = list(self._connections)
                self._connections.clear()
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Sandbox(url={self.url!r}, username={self.username!r}, knobs={self.knobs!r})"

    def record_internal_error(self, where: str, detail: str) -> None:
        with self._lock:
            self.internal_errors.append(f"{where}: {detail}")

    def recycle(self) -> int:
        """Forget every open shell, as an IIS application pool recycle does; clients then
        get "the shell was not found" (pypsrp's is_alive() answers False). Returns how many
        shells were dropped."""
        with self._lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            with shell.lock:
                shell.closed = True
                shell.pipelines.clear()
        return len(shells)

    def open_shells(self, user: str | None = None) -> int:
        """How many shells (runspace pools) are open, for ``user`` or in total."""
        with self._lock:
            return sum(
                1 for shell in self.shells.values() if user is None or shell.user == user
            )

    # -- HTTP -------------------------------------------------------------------------

    def send_plain(
        self,
        handler: _Handler,
        status: int,
        body: bytes,
        *,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "text/html",
        close: bool = False,
    ) -> None:
        handler.send_response(status)
        for name, value in headers or []:
            handler.send_header(name, value)
        if body:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Powered-By", "ASP.NET")
        if close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    def _challenge(self, handler: _Handler) -> None:
        """401 the IIS way: offer Negotiate and NTLM (and Basic over HTTPS only)."""
        headers = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
        if self.https:
            headers.append(("WWW-Authenticate", f'Basic realm="{self.host}"'))
        self.send_plain(handler, 401, IIS_401_BODY, headers=headers)

    def handle_post(self, handler: _Handler) -> None:
        with self._lock:
            self.requests_served += 1
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0].rstrip("/").lower()
        if path != "/powershell":
            self.send_plain(
                handler, 404, b"<html><body>404 - File or directory not found.</body></html>"
            )
            return

        mutual_token: bytes | None = None
        authorization = handler.headers.get("Authorization")
        if authorization:
            parsed = parse_authorization(authorization)
            if parsed is None:
                self._challenge(handler)
                return
            scheme, token = parsed
            if scheme == "basic":
                # Exchange's /PowerShell does not take Basic over plain HTTP
                if not self.https or self._account is None or not check_basic(token, self._account):
                    self._challenge(handler)
                    return
                handler.authenticated_user = self.username
                handler.acceptor = None
            else:
                if handler.acceptor is None or handler.acceptor.complete:
                    handler.acceptor = NegotiateAcceptor()
                    handler.authenticated_user = None
                try:
                    mutual_token = handler.acceptor.step(token)
                except AuthFailed:
                    handler.acceptor = None
                    self._challenge(handler)
                    return
                if not handler.acceptor.complete:
                    challenge = "Negotiate " + base64.b64encode(mutual_token or b"").decode()
                    self.send_plain(handler, 401, b"", headers=[("WWW-Authenticate", challenge)])
                    return
                if self._account is None or not self._account.matches_principal(
                    handler.acceptor.principal
                ):
                    handler.acceptor = None
                    self._challenge(handler)
                    return
                handler.authenticated_user = self.username
                self.sign_ins.append(handler.acceptor.sign_in())
        elif handler.authenticated_user is None:
            self._challenge(handler)
            return

        extra_headers: list[tuple[str, str]] = []
        if mutual_token:
            extra_headers.append(
                ("WWW-Authenticate", "Negotiate " + base64.b64encode(mutual_token).decode())
            )
        if not body:
            self.send_plain(handler, 200, b"", headers=extra_headers)
            return

        content_type = handler.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            if handler.acceptor is None:
                self.send_plain(handler, 400, b"", headers=extra_headers)
                return
            try:
                body = handler.acceptor.unwrap(body, content_type)
            except DecryptFailed:
                # What pypsrp meets after re-authenticating on a new connection while
                # still encrypting with its old context: every message is refused.
                self.send_plain(handler, 400, b"", headers=extra_headers)
                return

        with self._lock:
            self._authenticated_requests += 1
            nth = self._authenticated_requests
            drop = self._drop_pending
            self._drop_pending = False
        if drop:
            handler.close_connection = True
            return
        every = self.knobs.http_error_every
        if every and nth % every == 0:
            status = self.knobs.http_error_status
            self.send_plain(
                handler, status, IIS_503_BODY if status == 503 else IIS_500_BODY,
                headers=extra_headers,
            )
            return

        relates_to = ""
        try:
            request = wsman.parse_request(body)
            relates_to = request.message_id
            status, answer = 200, self._dispatch(request, handler.authenticated_user or "")
        except wsman.WSManFault as fault:
            status, answer = 500, wsman.fault_envelope(relates_to, fault, SERVER_NAME)
        except Exception:  # noqa: BLE001 - recorded in internal_errors and answered as a fault
            self.record_internal_error("handler", traceback.format_exc())
            internal = wsman.WSManFault(
                wsman.INTERNAL_ERROR, "The sandbox failed to process the request (internal error)."
            )
            status, answer = 500, wsman.fault_envelope(relates_to, internal, SERVER_NAME)

        if encrypted and handler.acceptor is not None:
            content_type, answer = handler.acceptor.wrap(answer)
        else:
            content_type = "application/soap+xml;charset=UTF-8"
        try:
            self.send_plain(
                handler, status, answer, headers=extra_headers, content_type=content_type
            )
        except OSError:
            handler.close_connection = True  # the client gave up (read timeout): not ours

    # -- WSMan ------------------------------------------------------------------------

    def _dispatch(self, request: wsman.Request, user: str) -> bytes:
        action = request.action
        if action == wsman.ACTION_CREATE:
            body = self._create(request, user)
        else:
            shell = self._shell(request, user)
            if action == wsman.ACTION_RECEIVE:
                body = self._receive(shell, request)
            elif action == wsman.ACTION_COMMAND:
                body = self._command(shell, request)
            elif action == wsman.ACTION_SEND:
                body = self._send(shell, request)
            elif action == wsman.ACTION_SIGNAL:
                body = self._signal(shell, request)
            elif action == wsman.ACTION_DELETE:
                body = self._delete(shell)
            elif action == wsman.ACTION_GET:
                body = wsman.shell_fields(
                    shell.shell_id, shell.resource_uri, user, state="Connected"
                )
            else:
                raise wsman.WSManFault(
                    2150858768,  # 0x80338010 ERROR_WSMAN_ACTION_NOT_SUPPORTED
                    f"The WS-Management service cannot process the request. The action "
                    f"{action} is not supported.",
                    "w:ActionNotSupported",
                )
        return wsman.envelope(wsman.RESPONSE_ACTIONS[action], request.message_id, body)

    def _configuration(self, resource_uri: str) -> SessionConfiguration:
        name = resource_uri
        if resource_uri.lower().startswith(wsman.POWERSHELL_URI_PREFIX.lower()):
            name = resource_uri[len(wsman.POWERSHELL_URI_PREFIX) :]
        configuration = self.configurations.get(name.lower())
        if configuration is None:
            raise wsman.WSManFault(
                wsman.PLUGIN_CONFIGURATION_NOT_FOUND,
                "The WS-Management service cannot process the request. Cannot find the "
                f"{name} session configuration in the WSMan: drive on the {SERVER_NAME} "
                "computer.",
            )
        return configuration

    def _shell(self, request: wsman.Request, user: str) -> ShellSession:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self.shells.get(shell_id)
        if shell is not None:
            shell.last_used = time.monotonic()
        if shell is None or shell.user != user:
            raise wsman.WSManFault(
                wsman.INVALID_SELECTORS,
                wsman.SHELL_NOT_FOUND_MESSAGE.format(shell_id),
                "w:InvalidSelectors",
            )
        return shell

    def _create(self, request: wsman.Request, user: str) -> str:
        configuration = self._configuration(request.resource_uri)
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.INTERNAL_ERROR, "The Create request has no shell.")
        shell_id = (body.get("ShellId") or str(uuid.uuid4())).upper()
        creation = body.find("pwsh:creationXml", wsman.NS)
        with self._lock:
            self._expire_idle_shells()
            limit = self.knobs.max_shells_per_user
            if limit is not None:
                open_for_user = sum(1 for s in self.shells.values() if s.user == user)
                if open_for_user >= limit:
                    raise wsman.WSManFault(
                        wsman.SESSION_OPEN_FAILED, self._concurrency_message(user, limit)
                    )
            shell = ShellSession(shell_id, user, configuration, request.resource_uri)
            self.shells[shell_id] = shell
        if creation is not None and creation.text:
            shell.feed(base64.b64decode(creation.text), None)
        return wsman.create_response(self.url, request.resource_uri, shell_id, user)

    def _expire_idle_shells(self) -> None:
        """Shells a client abandoned (no Delete) end after the idle timeout, as Exchange's
        do; until then they count against the user's shell limit. Call under _lock."""
        cutoff = time.monotonic() - self.knobs.shell_idle_timeout
        for shell_id, shell in list(self.shells.items()):
            if shell.last_used < cutoff:
                del self.shells[shell_id]
                shell.closed = True

    def _concurrency_message(self, user: str, limit: int) -> str:
        domain = user.split("@", 1)[-1]
        dc = ",".join(f"DC={part}" for part in domain.split("."))
        return CONCURRENCY_MESSAGE.format(
            request_id=uuid.uuid4(),
            limit=limit,
            policy_id=uuid.UUID(int=self.seed),
            dc=dc,
            user=user,
        )

    def _command(self, shell: ShellSession, request: wsman.Request) -> str:
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.INTERNAL_ERROR, "The Command request has no body.")
        command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
        arguments = body.find("rsp:Arguments", wsman.NS)
        data = base64.b64decode(arguments.text) if arguments is not None and arguments.text else b""
        shell.create_pipeline(command_id, data)
        return wsman.command_response(command_id)

    def _send(self, shell: ShellSession, request: wsman.Request) -> str:
        body = request.body
        if body is not None:
            for stream in body.findall("rsp:Stream", wsman.NS):
                if not stream.text:
                    continue
                command_id = stream.get("CommandId")
                pipeline_id = uuid.UUID(command_id) if command_id else None
                shell.feed(base64.b64decode(stream.text), pipeline_id, stream.get("Name", "stdin"))
        return "<rsp:SendResponse/>"

    def _signal(self, shell: ShellSession, request: wsman.Request) -> str:
        """Ctrl+C (PowerShell.stop) or Terminate (PowerShell.close): the pipeline ends."""
        body = request.body
        command_id = body.get("CommandId", "") if body is not None else ""
        if not command_id:
            return "<rsp:SignalResponse/>"
        pipeline_id = uuid.UUID(command_id)
        shell.stop(pipeline_id)
        return "<rsp:SignalResponse/>"

    def _delete(self, shell: ShellSession) -> str:
        with self._lock:
            self.shells.pop(shell.shell_id, None)
        with shell.lock:
            shell.closed = True
            shell.pipelines.clear()
        return ""

    # -- Receive: run pipelines lazily, a response at a time -----------------------------

    def _receive(self, shell: ShellSession, request: wsman.Request) -> str:
        started = time.monotonic()
        deadline = started + max(0.2, request.operation_timeout - 0.2)
        body = request.body
        desired = body.find("rsp:DesiredStream", wsman.NS) if body is not None else None
        command_id = desired.get("CommandId") if desired is not None else None
        overhead = wsman.receive_overhead(request.message_id, command_id)
        amount = max(64, (request.max_envelope_size - overhead) * 3 // 4)

        if command_id is None:
            while True:
                with shell.lock:
                    payload = shell.take(shell.pool_queue, amount)
                if payload or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            if not payload:
                raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
            return wsman.receive_response(base64.b64encode(payload).decode(), None, False)

        key = command_id.upper()
        receiving = shell.receive_lock(key)
        # one Receive per command at a time: pypsrp resends a Receive that timed out on
        # its side while the first may still be running here
        if not receiving.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        try:
            return self._receive_output(shell, request, key, amount, deadline)
        finally:
            receiving.release()

    def _receive_output(
        self, shell: ShellSession, request: wsman.Request, key: str, amount: int, deadline: float
    ) -> str:
        replay = shell.last_receive.get(key)
        if replay is not None and replay[0] == request.message_id:
            # the resent Receive gets the answer the first one got (and the client never
            # read), as from WinRM: nothing is lost or repeated
            return replay[1]
        if self._take_stall():
            # a hung server: no answer within the client's read timeout, and no data taken
            # from the pipeline (the client has given up on this request by now)
            time.sleep(self.knobs.receive_stall)
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        with shell.lock:
            run = shell.pipelines.get(uuid.UUID(key))
        if run is None:
            raise wsman.WSManFault(
                wsman.INVALID_SELECTORS,
                f"The command with CommandId {key} was not found.",
                "w:InvalidSelectors",
            )
        self._pump(shell, run, amount, deadline)
        with shell.lock:
            payload = shell.take(run.queue, amount)
            done = run.finished and not run.queue
            if done:
                shell.pipelines.pop(run.pipeline.pipeline_id, None)
                if run.pipeline.pipeline_id in shell.pool.pipeline_table:
                    run.pipeline.close()
        if not payload and not done:
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        answer = wsman.receive_response(base64.b64encode(payload).decode(), key, done)
        shell.remember_receive(key, request.message_id, answer)
        return answer

    def _take_stall(self) -> bool:
        with self._lock:
            limit = self.knobs.receive_stalls
            if not self.knobs.receive_stall or (limit is not None and self._stalls_done >= limit):
                return False
            self._stalls_done += 1
            return True

    def _start(self, shell: ShellSession, run: PipelineRun) -> None:
        """Check the pipeline against the configuration, then hand it to the host."""
        configuration = shell.configuration
        for statement in run.statements:
            for call in statement:
                if call.is_script and configuration.no_language:
                    shell.fail(run, no_language_error(call.name), target_object=call.name)
                    return
                if not call.is_script and not configuration.host.has_command(call.name):
                    shell.fail(run, command_not_found_error(call.name), target_object=call.name)
                    return
        prefix: list[Any] = []
        delay = self.knobs.latency_per_command
        budget = self.knobs.cmdlet_budget
        if budget is not None:
            count = sum(len(statement) for statement in run.statements)
            used, wait = self._charge_budget(shell.user, count)
            if used > 2 * budget:
                shell.fail(run, self._over_budget_error(run, wait))
                return
            if used > budget:
                delay += self.knobs.micro_delay
                millis = int(self.knobs.micro_delay * 1000)
                prefix.append(WarningMessage(MICRO_DELAY_MESSAGE.format(millis, SERVER_NAME)))
        run.events = _run_statements(run.statements, configuration.host, shell.user, prefix)
        run.ready_at = time.monotonic() + delay
        shell.mark_running(run)

    def _charge_budget(self, user: str, count: int) -> tuple[int, float]:
        """Record ``count`` cmdlets for ``user``; return the number used in the window
        (including these) and the seconds until the oldest leaves the window."""
        now = time.monotonic()
        window = self.knobs.budget_window
        with self._lock:
            times = self._cmdlet_times.setdefault(user, deque())
            while times and now - times[0] > window:
                times.popleft()
            times.extend(itertools.repeat(now, count))
            wait = window - (now - times[0]) if times else 0.0
            return len(times), max(0.0, wait)

    def _over_budget_error(self, run: PipelineRun, wait: float) -> ErrorSpec:
        name = run.statements[0][0].name if run.statements and run.statements[0] else ""
        stamp = datetime.now(UTC).strftime("%m/%d/%Y %I:%M:%S %p")
        return ErrorSpec(
            message=OVER_BUDGET_MESSAGE.format(max(1, round(wait))),
            # exception type and category not seen in a public paste: best guess
            exception_type="Microsoft.Exchange.Data.Directory.OverBudgetException",
            category="ResourceUnavailable",
            fully_qualified_error_id=(
                f"[Server={SERVER_NAME},RequestId={uuid.uuid4()},TimeStamp={stamp}] "
                f"[FailureCategory=Cmdlet-OverBudgetException] 5A9F2B71,{name}"
            ),
            command_name=name,
            reason="OverBudgetException",
        )

    def _pump(self, shell: ShellSession, run: PipelineRun, amount: int, deadline: float) -> None:
        """Pull the host's events into the pipeline's queue until a response is full, the
        pipeline ends, or waiting longer (latency knobs) would pass the deadline. Data
        already queued is answered at once rather than held for a latency wait."""
        while True:
            with shell.lock:
                if run.finished or shell.queued_bytes(run.queue) >= amount:
                    return
                if run.started and run.events is None:
                    try:
                        self._start(shell, run)
                    except Exception:  # noqa: BLE001 - a host bug: recorded, pipeline failed
                        self._host_failed(shell, run)
                    continue
                wait_until = run.ready_at if run.started else None
            now = time.monotonic()
            if wait_until is None:  # waiting for the client's input to end
                if run.queue or now >= deadline:
                    return
                time.sleep(min(0.05, deadline - now))
                continue
            if wait_until > now:
                if run.queue:
                    return
                if wait_until > deadline:
                    time.sleep(max(0.0, deadline - now))
                    return
                time.sleep(wait_until - now)
            with shell.lock:
                if run.finished or run.events is None:
                    continue
                try:
                    event = next(run.events)
                except StopIteration:
                    shell.complete(run)
                    return
                except _Terminated as terminated:
                    shell.fail(run, terminated.spec)
                    return
                except Exception:  # noqa: BLE001 - a host bug: recorded, pipeline failed
                    self._host_failed(shell, run)
                    return
                if not shell.write_event(run, event):
                    continue
                if self._stop_now(run):
                    shell.stop_from_server(run)
                    return
                if self.knobs.latency_per_object:
                    run.ready_at = time.monotonic() + self.knobs.latency_per_object
            with self._lock:
                self.objects_sent += 1
                limit = self.knobs.drop_after_objects
                if limit:
                    self._objects_since_drop += 1
                    if self._objects_since_drop >= limit:
                        self._objects_since_drop = 0
                        self._drop_pending = True
                        return

    def _stop_now(self, run: PipelineRun) -> bool:
        """Whether the stop_after_objects knob stops ``run`` now (it just sent an object)."""
        limit = self.knobs.stop_after_objects
        if not limit or run.objects_written < limit:
            return False
        with self._lock:
            stops = self.knobs.pipeline_stops
            if stops is not None and self._stops_done >= stops:
                return False
            self._stops_done += 1
            self.objects_sent += 1  # the object just written, which _pump counts otherwise
            return True

    def _host_failed(self, shell: ShellSession, run: PipelineRun) -> None:
        self.record_internal_error("cmdlet host", traceback.format_exc())
        shell.fail(
            run,
            ErrorSpec(
                message="The sandbox's cmdlet host failed (internal error).",
                exception_type="System.InvalidOperationException",
                category="NotSpecified",
                fully_qualified_error_id="SandboxInternalError",
            ),
        )

