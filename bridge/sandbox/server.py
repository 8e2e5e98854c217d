"""The sandbox endpoint: HTTP(S) + auth + WSMan + PSRP on 127.0.0.1, one thread per connection.

``Sandbox`` starts it on port 0 in a background thread. Everything a handler raises is
recorded in ``internal_errors`` and answered with a WSManFault (never a dropped
connection), so tests can assert the sandbox saw nothing unexpected.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.errors import ConfigError
from bridge.sandbox.auth import (
    Account,
    SignIn,
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
from bridge.sandbox.shells import WsmanShells
from bridge.sandbox.throttling import Budgets
from bridge.sandbox.tls import write_certificates


class Sandbox(HttpFrontEnd, WsmanShells, PipelineRunner):
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
