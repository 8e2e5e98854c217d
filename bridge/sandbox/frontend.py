"""The sandbox's HTTP side as IIS answers: connections, authentication, status pages.

:class:`HttpFrontEnd` is a part of :class:`bridge.sandbox.server.Sandbox`: it takes each
POST, authenticates it (Negotiate/NTLM per connection, Basic over HTTPS only), applies the
HTTP-level knobs, and hands the WSMan envelope to the Sandbox's ``_dispatch``.
"""

from __future__ import annotations

import base64
import threading
import traceback
from typing import TYPE_CHECKING, Any

from bridge.sandbox import wsman
from bridge.sandbox.auth import (
    Account,
    AuthFailed,
    DecryptFailed,
    NegotiateAcceptor,
    SignIn,
    check_basic,
    parse_authorization,
)
from bridge.sandbox.knobs import Knobs
from bridge.sandbox.loopback import LoopbackHandler, LoopbackServer
from bridge.sandbox.throttling import HttpRefusal

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


class _Handler(LoopbackHandler):
    """One TCP connection; IIS authenticates Negotiate per connection, so state lives here."""

    server: _Server

    def version_string(self) -> str:
        return "Microsoft-IIS/10.0"

    def setup(self) -> None:
        super().setup()
        self.acceptor: NegotiateAcceptor | None = None
        self.authenticated_user: str | None = None
        self.server.sandbox.track_connection(self.connection, open_=True)

    def finish(self) -> None:
        self.server.sandbox.track_connection(self.connection, open_=False)
        super().finish()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.sandbox.handle_post(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.sandbox.send_plain(self, 405, b"", close=False)


class _Server(LoopbackServer):
    allow_reuse_address = False
    sandbox: HttpFrontEnd

    def record_error(self, detail: str) -> None:
        self.sandbox.record_internal_error("connection", detail)



class HttpFrontEnd:
    """HTTP requests in, WSMan envelopes out (the Sandbox supplies state and ``_dispatch``)."""

    knobs: Knobs
    https: bool
    host: str
    username: str
    requests_served: int
    sign_ins: list[SignIn]
    _lock: threading.Lock
    _account: Account | None
    _authenticated_requests: int
    _drop_pending: bool

    if TYPE_CHECKING:  # the Sandbox's (a stub here would shadow it in the MRO)

        def record_internal_error(self, where: str, detail: str) -> None: ...

        def track_connection(self, connection: Any, *, open_: bool) -> None: ...

        def _dispatch(self, request: wsman.Request, user: str) -> bytes: ...

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
        except HttpRefusal as refusal:
            # Exchange's HTTP module answers before WinRM: plain text, never encrypted
            self.send_plain(
                handler, refusal.status, refusal.body.encode(), headers=extra_headers,
                content_type="text/plain; charset=utf-8",
            )
            return
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
