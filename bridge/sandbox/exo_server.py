"""The Exchange Online sandbox: an emulated Entra tenant and Exchange Online REST endpoint over
HTTPS on 127.0.0.1, serving the same seeded organisation as the on-premises sandbox.

Use::

    with ExoSandbox(mailboxes=50, seed=1) as exo:
        exo.register_app(client_id, certificate_pem=cert_pem, roles=["Global Reader"])
        app = msal.ConfidentialClientApplication(
            client_id, authority=exo.authority, instance_discovery=False,
            client_credential={"private_key": key_pem, "thumbprint": sha1_hex},
            http_client=session)  # a requests.Session: verify=exo.ca_file, trust_env=False
        token = app.acquire_token_for_client([EXO_SCOPE])["access_token"]
        requests.post(f"{exo.endpoint}/adminapi/beta/{exo.tenant}/InvokeCommand", ...)

Attributes once started: ``authority`` (``https://127.0.0.1:<port>/<tenant domain>``),
``tenant`` (the domain), ``tenant_id`` (a GUID), ``endpoint`` (the base URL to use instead of
``https://outlook.office365.com``), ``ca_file``/``ca_path`` (PEM of the CA to trust),
``requests`` (Counter per route: ``InvokeCommand``, ``$batch``, ``oauth2/v2.0/token``,
``oauth2/v2.0/devicecode``, ``v2.0/.well-known/openid-configuration``...), ``cmdlets``
(Counter per cmdlet run, one per page and per batch entry), ``invocations`` (each cmdlet run:
name, parameters, page offset, batched), ``foreign_requests``/``foreign_tokens`` (requests
sent to the "other host" of ``foreign_next_link`` and how many carried a token),
``internal_errors`` (what the sandbox itself failed on; tests assert it empty).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import traceback
import uuid
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from bridge.sandbox.entra import Entra, RegisteredApp, User
from bridge.sandbox.exo_reply import Headers, Reply
from bridge.sandbox.exo_rest import ExoKnobs, ExoService, Invocation
from bridge.sandbox.loopback import LoopbackHandler, LoopbackServer
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.tls import write_certificates

DEFAULT_ADMIN = "admin@contoso.onmicrosoft.com"
EXO_SCOPE = "https://outlook.office365.com/.default"


class _Handler(LoopbackHandler):
    server: _Server

    def version_string(self) -> str:
        return "Microsoft-HTTPAPI/2.0"

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._answer("POST")

    def _answer(self, method: str) -> None:
        sandbox = self.server.sandbox
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = sandbox.dispatch(method, self.headers.get("Host", ""), self.path,
                                     self.headers, body)
        except Exception:  # noqa: BLE001 - recorded in internal_errors and answered 500
            sandbox.internal_errors.append(f"{method} {self.path}: {traceback.format_exc()}")
            reply = Reply(500, {"Content-Type": "text/plain"}, b"sandbox internal error")
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)


class _Server(LoopbackServer):
    def __init__(self, sandbox: ExoSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", 0), _Handler)

    def record_error(self, detail: str) -> None:
        self.sandbox.internal_errors.append(f"connection: {detail}")


class ExoSandbox:
    """Emulated Entra + Exchange Online REST endpoint on loopback; see the module docstring.

    ``organisation``: share one with an on-premises :class:`~bridge.sandbox.Sandbox` (same
    ground truth through both transports); else one is generated from ``mailboxes``/``seed``.
    ``token_lifetime``: seconds an access token lives (short: tokens expire mid-run).
    ``device_code_interval``: the polling interval announced to device code clients.
    Other keyword arguments are :class:`~bridge.sandbox.exo_rest.ExoKnobs`.
    A default admin ``admin@contoso.onmicrosoft.com`` (Exchange Administrator) is registered.
    """

    def __init__(
        self,
        mailboxes: int = 200,
        seed: int = 1,
        *,
        organisation: Organisation | None = None,
        tenant: str = "contoso.onmicrosoft.com",
        token_lifetime: float = 3599.0,
        device_code_interval: int = 5,
        device_code_lifetime: float = 900.0,
        **knobs: Any,
    ) -> None:
        # Exchange Online reports Outlook for iOS and Android as REST or Outlook (the
        # native sync), not as an on-premises server's EAS
        self.organisation = organisation or Organisation(mailboxes=mailboxes, seed=seed,
                                                         online_client_types=True)
        self.tenant = tenant
        self.tenant_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant))
        self.knobs = ExoKnobs(**knobs)
        self.entra = Entra(tenant, self.tenant_id, token_lifetime=token_lifetime,
                           device_code_interval=device_code_interval,
                           device_code_lifetime=device_code_lifetime)
        self.entra.register_user(DEFAULT_ADMIN)
        self.service = ExoService(self.organisation, self.entra, self.knobs)
        self.internal_errors: list[str] = []
        self.ca_file: Path | None = None
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tempdir: Path | None = None

    # ---- life cycle --------------------------------------------------------------------

    def start(self) -> ExoSandbox:
        """Generate the CA and server certificate, listen on 127.0.0.1:<free port>."""
        self._tempdir = Path(tempfile.mkdtemp(prefix="psbridge-exo-"))
        ca_file, cert_file, key_file = write_certificates(self._tempdir, "127.0.0.1")
        self.ca_file = ca_file
        server = _Server(self)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self._server = server
        self.port = server.server_address[1]
        self.entra.base_url = self.service.base_url = f"https://127.0.0.1:{self.port}"
        self.service.foreign_base_url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, name="exo-sandbox",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and remove the certificates."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> ExoSandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"ExoSandbox(tenant={self.tenant!r}, endpoint={self.endpoint!r}, "
                f"organisation={self.organisation!r})")

    # ---- where to connect ----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The base URL standing in for ``https://outlook.office365.com``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        """The MSAL authority (use with ``instance_discovery=False``)."""
        return f"{self.endpoint}/{self.tenant}"

    @property
    def ca_path(self) -> Path | None:
        """Alias of ``ca_file``: the CA certificate a client must trust."""
        return self.ca_file

    def warm(self) -> None:
        """Write every object's JSON once now (a benchmark calls it so that no strategy pays
        the first serialization: 10,000 mailboxes take seconds)."""
        invoker = self.service.invoker
        for mailbox in self.organisation.mailbox_entries:
            invoker.object_json("Mailbox", mailbox)
            invoker.object_json("CASMailbox", mailbox)
            for device in mailbox.devices:
                invoker.object_json("MobileDevice", device)
                invoker.object_json("MobileDeviceConfiguration", device)

    # ---- principals (delegates to Entra) ---------------------------------------------------

    def register_app(self, client_id: str, **options: Any) -> RegisteredApp:
        """See :meth:`bridge.sandbox.entra.Entra.register_app` (certificate_pem, secret,
        roles, consented, public_client, blocked_by_conditional_access, display_name)."""
        return self.entra.register_app(client_id, **options)

    def register_user(self, upn: str, roles: list[str] | tuple[str, ...] = (
            "Exchange Administrator",), **options: Any) -> User:
        """See :meth:`bridge.sandbox.entra.Entra.register_user`."""
        return self.entra.register_user(upn, roles, **options)

    def approve_device_code(self, user_code: str, upn: str = DEFAULT_ADMIN) -> None:
        """Complete a pending device code sign-in as ``upn`` (no browser)."""
        self.entra.approve_device_code(user_code, upn)

    def decline_device_code(self, user_code: str) -> None:
        self.entra.decline_device_code(user_code)

    def expire_tokens(self) -> None:
        """Expire every access token issued so far (the next request with one gets 401)."""
        self.entra.expire_tokens()

    # ---- what the endpoint saw --------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """Requests per route, Entra's and the REST endpoint's."""
        return self.entra.requests + self.service.requests

    @property
    def cmdlets(self) -> Counter[str]:
        return self.service.cmdlets

    @property
    def invocations(self) -> list[Invocation]:
        return self.service.invocations

    @property
    def foreign_requests(self) -> int:
        return self.service.foreign_requests

    @property
    def foreign_tokens(self) -> int:
        return self.service.foreign_tokens

    @property
    def claims_received(self) -> list[str]:
        """The ``claims`` parameters token requests carried (a claims challenge answered)."""
        return self.entra.claims_received

    def dispatch(self, method: str, host: str, path: str, headers: Headers,
                 body: bytes) -> Reply:
        """Route one request to the REST endpoint or Entra; 404 otherwise."""
        if method == "POST":
            reply = self.service.handle(host, path, headers, body)
            if reply is not None:
                return reply
        form = dict(parse_qsl(body.decode("utf-8", "replace"))) if method == "POST" else {}
        reply = self.entra.handle(method, path, form)
        if reply is not None:
            return reply
        return Reply(404, {"Content-Type": "text/plain"}, b"Not Found")


__all__ = ["DEFAULT_ADMIN", "EXO_SCOPE", "ExoSandbox"]
