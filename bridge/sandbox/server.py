"""The sandbox endpoint: HTTP(S) + auth + WSMan + PSRP on 127.0.0.1, one thread per connection.

``Sandbox`` starts it on port 0 in a background thread. Everything a handler raises is
recorded in ``internal_errors`` and answered with a WSManFault (never a dropped
connection), so tests can assert the sandbox saw nothing unexpected.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.errors import ConfigError
from bridge.sandbox import wsman
from bridge.sandbox.auth import (
    Account,
    register_ntlm_user,
)
from bridge.sandbox.contract import CmdletHost
from bridge.sandbox.frontend import SERVER_NAME, HttpFrontEnd, _Handler, _Server
from bridge.sandbox.knobs import Knobs
from bridge.sandbox.psrp import (
    SessionConfiguration,
    ShellSession,
)
from bridge.sandbox.receiver import PipelineRunner
from bridge.sandbox.throttling import Budgets
from bridge.sandbox.tls import write_certificates


class Sandbox(HttpFrontEnd, PipelineRunner):
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
        self._over_budget_done = 0
        self.budgets = Budgets(
            seed, SERVER_NAME, self.knobs.cmdlet_budget, self.knobs.budget_window
        )

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
            self.organisation = Organisation(
                mailboxes=self.mailbox_count, seed=self.seed,
                online_client_types=self.knobs.online_client_types,
            )
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
                        wsman.SESSION_OPEN_FAILED, self.budgets.concurrency_message(user, limit)
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

    def _command(self, shell: ShellSession, request: wsman.Request) -> str:
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.INTERNAL_ERROR, "The Command request has no body.")
        command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
        arguments = body.find("rsp:Arguments", wsman.NS)
        data = base64.b64decode(arguments.text) if arguments is not None and arguments.text else b""
        shell.create_pipeline(command_id, data)
        self._charge_budget(shell, command_id)
        return wsman.command_response(command_id)

    def _charge_budget(self, shell: ShellSession, command_id: str) -> None:
        """Count a new command's cmdlets against the user's budget: over it, the command
        will run after a micro delay; over twice it, it is refused with HTTP 400."""
        budget = self.knobs.cmdlet_budget
        if budget is None:
            return
        pipeline_id = uuid.UUID(command_id)
        with shell.lock:
            run = shell.pipelines.get(pipeline_id)
        if run is None:
            return
        count = max(1, sum(len(statement) for statement in run.statements))
        used, wait = self.budgets.charge(shell.user, count)
        if used > 2 * budget:
            shell.stop(pipeline_id)  # never started: forgotten, as if never created
            raise self.budgets.http_refusal(shell.user, used, wait)
        if used > budget:
            run.micro_delay = self.knobs.micro_delay
            run.budget_used = used

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
