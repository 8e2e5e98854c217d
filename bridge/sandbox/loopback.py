"""What the sandbox's two HTTP servers (on-premises WSMan, Exchange Online REST) share:
HTTP/1.1 keep-alive on 127.0.0.1, the TLS handshake in the connection's own thread, no
request log, and a client's reset or refused handshake not counted as a sandbox error."""

from __future__ import annotations

import ssl
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHandler(BaseHTTPRequestHandler):
    """One TCP connection of a sandbox server."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def setup(self) -> None:
        # the handshake here, not in accept(): a stalled client must not block the others
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """Quiet: tests and the CLI print what matters."""


class LoopbackServer(ThreadingHTTPServer):
    """A sandbox server: a thread per connection, errors told to :meth:`record_error`."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection the client reset or a TLS handshake it refused (it does not trust
        # the certificate) is not the sandbox's fault; anything else is.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | ssl.SSLError | TimeoutError):
            return
        self.record_error(traceback.format_exc())

    def record_error(self, detail: str) -> None:
        """Keep ``detail`` where the sandbox's tests look for internal errors."""
        raise NotImplementedError
