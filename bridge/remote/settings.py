"""Where and how to connect (ConnectionSettings) and how to retry (RetryPolicy)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bridge.errors import ConfigError

AUTH_METHODS = ("negotiate", "kerberos", "ntlm", "basic", "credssp", "certificate")


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
