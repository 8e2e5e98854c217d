"""One POST to Exchange Online's REST endpoint with the token, retried as the
ExchangeOnlineManagement module retries: 429 waits Retry-After; 503, 504, the transient
exception names and the plain-text concurrency refusal back off exponentially (with
jitter, bounded); a 401 gets a new token (with a claims challenge's claims) and the same
request again. The token goes only to the endpoint's own host, never into a log or error.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bridge.commands import SessionStats
from bridge.errors import AuthenticationFailed, ConnectionFailed, RemoteCommandError

log = logging.getLogger("bridge.exo")

#: exception names the module retries (ADTransientException and its kin)
TRANSIENT_NAMES = ("ADTransientException", "DCOverloaded", "SuitabilityDirectory",
                   "ServerInMM", "ADServerSettingsChanged", "StorageTransient")
CONCURRENCY_TEXT = "maximum number of concurrent requests"


class TokenSource(Protocol):
    """What the transport needs of a sign-in (:class:`bridge.exo.signin.Tokens`)."""

    @property
    def user(self) -> str | None: ...

    @property
    def anchor_mailbox(self) -> str: ...

    def token(self, *, claims: str | None = None, rejected: str | None = None) -> str: ...


def claims_of(challenge: str) -> str | None:
    """The claims of a ``WWW-Authenticate: Bearer ..., claims="..."`` challenge (base64 or JSON)."""
    at = challenge.find('claims="')
    if at < 0:
        return None
    value = challenge[at + len('claims="'):].split('"', 1)[0]
    if value.startswith("{"):
        return value
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except ValueError:
        return value


def parse_json(text: str) -> object:
    """A body as JSON, or None when it is empty or not JSON (a gateway's HTML page)."""
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def short(text: str) -> str:
    """A body for a message: one line, at most 150 characters; an HTML page says nothing."""
    if text.lstrip().startswith("<"):
        return ""
    return " ".join(text.split())[:150]


def tries(count: int) -> str:
    return f"{count} {'try' if count == 1 else 'tries'}"


class Transport:
    """POSTs JSON bodies to one endpoint's host with the token; thread-safe."""

    def __init__(self, tokens: TokenSource, base: str, *, verify: bool | str, retries: int,
                 backoff: float, page_size: int, timeout: float,
                 sleep: Callable[[float], None] | None) -> None:
        self.tokens = tokens
        self.origin = urlsplit(base)
        self.retries = retries
        self.backoff = backoff
        self.page_size = max(1, min(1000, page_size))
        self.timeout = timeout
        self.stats = SessionStats()
        self._sleep = sleep
        self._random = random.Random()
        self.stopped = threading.Event()
        self._connection_id = str(uuid.uuid4())
        self._stats_lock = threading.Lock()
        self._http = requests.Session()
        self._http.trust_env = False  # REQUESTS_CA_BUNDLE must not override ``verify``
        self._http.verify = verify
        self._http.headers["User-Agent"] = "psbridge"

    def pool(self, connections: int) -> None:
        """Keep up to ``connections`` HTTPS connections open for concurrent requests."""
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections + 2)
        self._http.mount(f"{self.origin.scheme}://", adapter)

    def close(self) -> None:
        self._http.close()

    def count(self, *, commands: int = 0, requests_sent: int = 0, retries: int = 0) -> None:
        with self._stats_lock:
            self.stats.commands += commands
            self.stats.http_requests += requests_sent
            self.stats.retries += retries

    def check_stopped(self, label: str) -> None:
        if self.stopped.is_set():
            raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")

    def wait(self, seconds: float, label: str) -> None:
        """Sleep before a retry; an abort() cuts it short."""
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self.stopped.wait(seconds)
        self.check_stopped(label)

    def backoff_delay(self, attempt: int) -> float:
        """Exponential from ``backoff`` seconds, +-25% jitter so workers do not sync up."""
        delay: float = min(60.0, self.backoff * 2**attempt)
        return delay * self._random.uniform(0.75, 1.25)

    def delay(self, status: int, headers: Mapping[str, str], attempt: int) -> float:
        """How long to wait before sending again: Retry-After on a 429, else the backoff."""
        value = headers.get("Retry-After", "").strip()
        if status == 429 and value.isdigit():
            return float(value)
        return self.backoff_delay(attempt)

    @staticmethod
    def why_retry(status: int, headers: Mapping[str, str], text: str) -> str | None:
        """Why this answer is worth sending again (throttled, busy, transient), else None."""
        if status == 429:
            return "throttled (429)"
        if CONCURRENCY_TEXT in text.lower():
            return "too many concurrent requests"
        if status in (503, 504):
            return f"HTTP {status}"
        if status >= 500:
            named = headers.get("X-ExceptionType", "") + text
            for name in TRANSIENT_NAMES:
                if name in named:
                    return f"transient {name}"
        return None

    def same_origin(self, url: str) -> bool:
        there = urlsplit(url)
        return (there.scheme, there.hostname, there.port) == (
            self.origin.scheme, self.origin.hostname, self.origin.port)

    def _headers(self, token: str, cmdlet: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-AnchorMailbox": self.tokens.anchor_mailbox,
            "Prefer": f"odata.maxpagesize={self.page_size}",
            "X-ResponseFormat": "json",
            "client-request-id": str(uuid.uuid4()),
            "connection-id": self._connection_id,
        }
        if cmdlet:
            headers["X-CmdletName"] = cmdlet
        return headers

    def post(self, url: str, body: Mapping[str, object], label: str, *, cmdlet: str | None,
             rerun_safe: bool) -> tuple[requests.Response, str]:
        """POST with the token, renewing it on 401 and retrying what the module retries;
        the last answer and its text (any status the caller must judge)."""
        if not self.same_origin(url):
            # never hand the token to another host, whatever link the server sent
            raise RemoteCommandError(
                f"{label}: the server sent a link to another host ({urlsplit(url).hostname}); "
                "not followed, so the access token stays with Exchange Online")
        data = json.dumps(body)
        token = self.tokens.token()
        attempt = renewals = 0
        while True:
            self.check_stopped(label)
            try:
                response = self._http.post(url, data=data, headers=self._headers(token, cmdlet),
                                           timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                self.count(requests_sent=1)
                self._may_retry(exc, label, attempt, rerun_safe)
                attempt += 1
                continue
            self.count(requests_sent=1)
            text = response.text
            log.debug("POST %s (%s) -> %s", urlsplit(url).path, label, response.status_code)
            if response.status_code == 401:
                if renewals >= 2:
                    raise AuthenticationFailed(
                        f"Exchange Online refused the access token for {label} (HTTP 401) "
                        "after renewing it: check the tenant and that the app or account "
                        "may use Exchange Online")
                claims = claims_of(response.headers.get("WWW-Authenticate", ""))
                token = self.tokens.token(claims=claims, rejected=token)
                renewals += 1
                continue
            why = self.why_retry(response.status_code, response.headers, text)
            if why is None:
                return response, text
            if attempt >= self.retries:
                detail = short(text)
                raise RemoteCommandError(f"{label}: gave up after {tries(attempt + 1)}: {why}"
                                         + (f": {detail}" if detail else ""))
            delay = self.delay(response.status_code, response.headers, attempt)
            log.info("%s: %s, trying again in %.1f s", label, why, delay)
            self.count(retries=1)
            self.wait(delay, label)
            attempt += 1

    def _may_retry(self, exc: requests.RequestException, label: str, attempt: int,
                   rerun_safe: bool) -> None:
        """Wait before sending again after a network failure, or raise why not."""
        reason = type(exc).__name__
        host = self.origin.hostname
        if isinstance(exc, requests.exceptions.SSLError):
            raise ConnectionFailed(f"cannot reach {host}: its TLS certificate is not "
                                   "trusted") from None
        if not rerun_safe:
            raise RemoteCommandError(f"{label}: {reason} after it was sent, so it may or may "
                                     "not have run; check before running it again") from None
        if attempt >= self.retries:
            raise ConnectionFailed(f"cannot reach {host}: {reason} (gave up after "
                                   f"{tries(attempt + 1)})") from None
        self.count(retries=1)
        self.wait(self.backoff_delay(attempt), label)
