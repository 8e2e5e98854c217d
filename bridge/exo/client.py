"""Exchange Online's REST endpoint as a :class:`bridge.source.Source`: one cmdlet per request.

``POST {endpoint}/adminapi/beta/{tenant}/InvokeCommand`` with the cmdlet as JSON, pages
followed by ``@odata.nextLink`` (the same body each time), several cmdlets at once in
one ``$batch`` request. The ExchangeOnlineManagement module's retry rules are followed:
429 waits Retry-After; 503, 504, the transient exception names and the plain-text
concurrency refusal back off exponentially (with jitter, bounded); a 401 gets a new
token (with the claims of a claims challenge) and the same request is sent again, so no
page is lost. The token goes only to the endpoint's own host, and never into a log line,
an error or a row.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    SessionStats,
    is_read_only,
    pipeline_text,
)
from bridge.errors import (
    AuthenticationFailed,
    CommandNotFound,
    ConnectionFailed,
    RemoteCommandError,
)
from bridge.exo.values import messages, odata_error, plain_rows

log = logging.getLogger("bridge.exo")

EXO_ENDPOINT = "https://outlook.office365.com"
API_PATH = "adminapi/beta"
#: $batch holds at most this many requests
BATCH_LIMIT = 10
#: exception names the module retries (ADTransientException and its kin)
TRANSIENT_NAMES = ("ADTransientException", "DCOverloaded", "SuitabilityDirectory",
                   "ServerInMM", "ADServerSettingsChanged", "StorageTransient")
CONCURRENCY_TEXT = "maximum number of concurrent requests"
ROLE_HINT = ("the signed-in account (or the app's service principal) lacks an Exchange role "
             "that grants it: assign View-Only Organization Management or Global Reader")
Outcome = CommandResult | RemoteCommandError


class TokenSource(Protocol):
    """What the client needs of a sign-in (:class:`bridge.exo.signin.Tokens`)."""

    @property
    def user(self) -> str | None: ...

    @property
    def anchor_mailbox(self) -> str: ...

    def token(self, *, claims: str | None = None, rejected: str | None = None) -> str: ...


def command_body(command: Command) -> dict[str, object]:
    """The InvokeCommand body: a switch (None) is JSON true, other values as they are."""
    parameters = {name: True if value is None else value
                  for name, value in command.parameters.items()}
    return {"CmdletInput": {"CmdletName": command.name, "Parameters": parameters}}


def _result_size(command: Command) -> int | None:
    """The number a ``-ResultSize N`` asks for; None for Unlimited or none given."""
    for name, value in command.parameters.items():
        if name.lower() == "resultsize" and isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _claims(challenge: str) -> str | None:
    """The claims of a ``WWW-Authenticate: Bearer ..., claims="..."`` challenge (base64 or JSON)."""
    at = challenge.find('claims="')
    if at < 0:
        return None
    value = challenge[at + len('claims="'):].split('"', 1)[0]
    if value.startswith("{"):
        return value
    import base64  # only for this rare path

    try:
        return base64.b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except ValueError:
        return value


def _text(response: requests.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):
        return ""


def _json(text: str) -> object:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def _short(text: str) -> str:
    """A body for a message: one line, at most 150 characters; an HTML page says nothing."""
    if text.lstrip().startswith("<"):
        return ""
    return " ".join(text.split())[:150]


def _tries(count: int) -> str:
    return f"{count} {'try' if count == 1 else 'tries'}"


class ExoSource:
    """Runs read cmdlets (and others, never twice) on Exchange Online's REST endpoint."""

    def __init__(
        self,
        tokens: TokenSource,
        tenant: str,
        *,
        endpoint: str = EXO_ENDPOINT,
        verify: bool | str = True,
        concurrency: int = 3,
        retries: int = 5,
        backoff: float = 2.0,
        page_size: int = 1000,
        timeout: float = 960.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._tokens = tokens
        self.tenant = tenant
        self._base = endpoint.rstrip("/")
        self._origin = urlsplit(self._base)
        self.retries = retries
        self.backoff = backoff
        self.page_size = max(1, min(1000, page_size))
        self.timeout = timeout
        self._sleep = sleep
        self._random = random.Random()
        self._stopped = threading.Event()
        self._connection_id = str(uuid.uuid4())
        self.stats = SessionStats()
        self._stats_lock = threading.Lock()
        self._http = requests.Session()
        self._http.trust_env = False  # REQUESTS_CA_BUNDLE must not override ``verify``
        self._http.verify = verify
        self._http.headers["User-Agent"] = "psbridge"
        self._concurrency = 1
        self.set_concurrency(concurrency)

    def __repr__(self) -> str:
        return f"<ExoSource {self.endpoint} user={self.user!r}>"

    def __enter__(self) -> ExoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- Source

    @property
    def endpoint(self) -> str:
        return f"{self._base}/{API_PATH}/{self.tenant}"

    @property
    def configuration(self) -> str | None:
        return None

    @property
    def user(self) -> str | None:
        return self._tokens.user

    @property
    def pipelines(self) -> bool:
        return False

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def set_concurrency(self, connections: int) -> None:
        self._concurrency = max(1, connections)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._concurrency + 2)
        self._http.mount(f"{self._origin.scheme}://", adapter)

    def abort(self) -> None:
        self._stopped.set()

    def run(self, commands: Command | Sequence[Command], *,
            on_output: Callable[[int], None] | None = None) -> CommandResult:
        """Run one cmdlet, all its pages; terminating errors raise RemoteCommandError
        (with the ErrorRecord), an unknown or forbidden cmdlet CommandNotFound."""
        command = self._single(commands)
        self._count(commands=1)
        result = CommandResult([], [], [])
        self._pages(command, f"{self.endpoint}/InvokeCommand", result, on_output)
        return result

    def run_batch(self, commands: Sequence[Command]) -> list[Outcome]:
        """Run several cmdlets, up to 10 per ``$batch`` request, in order.

        Each gives its CommandResult, or the RemoteCommandError it failed with (its
        ``record`` holds the OData error's text). An unknown or forbidden cmdlet raises
        CommandNotFound: it fails for every identity alike.
        """
        outcomes: dict[int, Outcome] = {}
        self._count(commands=len(commands))
        for start in range(0, len(commands), BATCH_LIMIT):
            self._batch(commands, list(range(start, min(start + BATCH_LIMIT,
                                                        len(commands)))), outcomes)
        return [outcomes[index] for index in range(len(commands))]

    # -- requests

    def _single(self, commands: Command | Sequence[Command]) -> Command:
        if isinstance(commands, Command):
            return commands
        if len(commands) == 1:
            return commands[0]
        raise RemoteCommandError(
            f"{pipeline_text(commands)}: Exchange Online's REST endpoint runs one cmdlet per "
            "request, not pipelines")

    def _count(self, *, commands: int = 0, requests_sent: int = 0, retries: int = 0) -> None:
        with self._stats_lock:
            self.stats.commands += commands
            self.stats.http_requests += requests_sent
            self.stats.retries += retries

    def _headers(self, token: str, cmdlet: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-AnchorMailbox": self._tokens.anchor_mailbox,
            "Prefer": f"odata.maxpagesize={self.page_size}",
            "X-ResponseFormat": "json",
            "client-request-id": str(uuid.uuid4()),
            "connection-id": self._connection_id,
        }
        if cmdlet:
            headers["X-CmdletName"] = cmdlet
        return headers

    def _same_origin(self, url: str) -> bool:
        there = urlsplit(url)
        return (there.scheme, there.hostname, there.port) == (
            self._origin.scheme, self._origin.hostname, self._origin.port)

    def _wait(self, seconds: float, label: str) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stopped.wait(seconds):
            raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")
        if self._stopped.is_set():
            raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")

    def _backoff(self, attempt: int) -> float:
        """Exponential from ``backoff`` seconds, +-25% jitter so workers do not sync up."""
        delay: float = min(60.0, self.backoff * 2**attempt)
        return delay * self._random.uniform(0.75, 1.25)

    def _retry_after(self, response: requests.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After", "").strip()
        if value.isdigit():
            return float(value)
        return self._backoff(attempt)

    def _why_retry(self, response: requests.Response, text: str) -> str | None:
        """Why this answer is worth sending again (throttled, busy, transient), else None."""
        status = response.status_code
        if status == 429:
            return "throttled (429)"
        if CONCURRENCY_TEXT in text.lower():
            return "too many concurrent requests"
        if status in (503, 504):
            return f"HTTP {status}"
        if status >= 500:
            named = response.headers.get("X-ExceptionType", "") + text
            for name in TRANSIENT_NAMES:
                if name in named:
                    return f"transient {name}"
        return None

    def _post(self, url: str, body: Mapping[str, object], label: str, *, cmdlet: str | None,
              rerun_safe: bool) -> tuple[requests.Response, str]:
        """POST with the token, renewing it on 401 and retrying what the module retries."""
        if not self._same_origin(url):
            # never hand the token to another host, whatever link the server sent
            raise RemoteCommandError(
                f"{label}: the server sent a link to another host ({urlsplit(url).hostname}); "
                "not followed, so the access token stays with Exchange Online")
        data = json.dumps(body)
        token = self._tokens.token()
        attempt = renewals = 0
        while True:
            if self._stopped.is_set():
                raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")
            try:
                response = self._http.post(url, data=data, headers=self._headers(token, cmdlet),
                                           timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                self._count(requests_sent=1)
                reason = type(exc).__name__
                if isinstance(exc, requests.exceptions.SSLError):
                    raise ConnectionFailed(f"cannot reach {self._origin.hostname}: its TLS "
                                           "certificate is not trusted") from None
                if not rerun_safe:
                    raise RemoteCommandError(
                        f"{label}: {reason} after it was sent, so it may or may not have "
                        "run; check before running it again") from None
                if attempt >= self.retries:
                    raise ConnectionFailed(f"cannot reach {self._origin.hostname}: {reason} "
                                           f"(gave up after {_tries(attempt + 1)})") from None
                self._count(retries=1)
                self._wait(self._backoff(attempt), label)
                attempt += 1
                continue
            self._count(requests_sent=1)
            text = _text(response)
            log.debug("POST %s (%s) -> %s", urlsplit(url).path, label, response.status_code)
            if response.status_code == 401:
                if renewals >= 2:
                    raise AuthenticationFailed(
                        f"Exchange Online refused the access token for {label} (HTTP 401) "
                        "after renewing it: check the tenant and that the app or account "
                        "may use Exchange Online")
                claims = _claims(response.headers.get("WWW-Authenticate", ""))
                token = self._tokens.token(claims=claims, rejected=token)
                renewals += 1
                continue
            why = self._why_retry(response, text)
            if why is None:
                return response, text
            if attempt >= self.retries:
                detail = _short(text)
                raise RemoteCommandError(f"{label}: gave up after {_tries(attempt + 1)}: {why}"
                                         + (f": {detail}" if detail else ""))
            delay = (self._retry_after(response, attempt) if response.status_code == 429
                     else self._backoff(attempt))
            log.info("%s: %s, trying again in %.1f s", label, why, delay)
            self._count(retries=1)
            self._wait(delay, label)
            attempt += 1

    def _failure(self, status: int, text: str, label: str, headers: Mapping[str, str]
                 ) -> RemoteCommandError:
        """A non-200 answer to one cmdlet as the error to raise or record."""
        body = _json(text)
        if status == 403 and not text.strip():
            return CommandNotFound(f"{label}: Exchange Online refused it (HTTP 403): {ROLE_HINT}")
        record = odata_error(body, status=status,
                             exception_header=headers.get("X-ExceptionType", ""))
        if record is None:
            record = ErrorRecord(message=_short(text) or f"HTTP {status}",
                                 category=f"HTTP{status}", reason="", error_id=f"HTTP{status}")
        if status == 403:
            return CommandNotFound(f"{label}: {record.message} ({ROLE_HINT})", record=record)
        lowered = record.message.lower()
        if record.reason == "CommandNotFoundException" or "is not recognized as" in lowered:
            return CommandNotFound(f"{label}: {record.message}", record=record)
        return RemoteCommandError(f"{label}: {record.message}", record=record)

    def _absorb(self, page: object, result: CommandResult, label: str) -> str | None:
        """Add a page's rows, warnings and errors to ``result``; its next link, if any."""
        if not isinstance(page, dict):
            raise RemoteCommandError(f"{label}: the answer is not an OData JSON object")
        result.rows.extend(plain_rows(page.get("value")))
        result.warnings.extend(messages(page.get("@adminapi.warnings")))
        for text in messages(page.get("@adminapi.errors")):
            result.errors.append(ErrorRecord(message=text, category="NotSpecified",
                                             reason="", error_id="adminapi.errors"))
        link = page.get("@odata.nextLink")
        return link if isinstance(link, str) and link else None

    def _pages(self, command: Command, url: str | None, result: CommandResult,
               on_output: Callable[[int], None] | None, first: object = None) -> None:
        """Follow pages from ``url`` (or from ``first``, a page already received)."""
        label = pipeline_text(command)
        body = command_body(command)
        limit = _result_size(command)
        safe = is_read_only(command)
        page = first
        while page is not None or url is not None:
            if page is None:
                assert url is not None
                response, text = self._post(url, body, label, cmdlet=command.name,
                                            rerun_safe=safe)
                if response.status_code != 200:
                    raise self._failure(response.status_code, text, label, response.headers)
                page = _json(text)
            url = self._absorb(page, result, label)
            page = None
            if on_output is not None:
                on_output(len(result.rows))
            if limit is not None and len(result.rows) >= limit:
                del result.rows[limit:]
                break

    def _batch(self, commands: Sequence[Command], indices: list[int],
               outcomes: dict[int, Outcome]) -> None:
        url = f"{self.endpoint}/$batch"
        todo = indices
        attempt = 0
        while todo:
            requests_ = [{
                "id": str(index), "method": "POST", "url": f"{self.endpoint}/InvokeCommand",
                "body": command_body(commands[index]),
                "headers": {"Content-Type": "application/json",
                            "Prefer": f"odata.maxpagesize={self.page_size}"},
            } for index in todo]
            label = f"$batch of {len(todo)} ({commands[todo[0]].name})"
            safe = all(is_read_only(commands[index]) for index in todo)
            response, text = self._post(url, {"requests": requests_}, label, cmdlet=None,
                                        rerun_safe=safe)
            if response.status_code != 200:
                raise self._failure(response.status_code, text, label, response.headers)
            answers = _json(text)
            listed = answers.get("responses") if isinstance(answers, dict) else None
            if not isinstance(listed, list):
                raise RemoteCommandError(f"{label}: the answer has no responses")
            again: list[int] = []
            delay = 0.0
            seen: set[int] = set()
            for answer in listed:
                index = self._batch_answer(answer, commands, todo, outcomes, attempt)
                if isinstance(index, tuple):
                    again.append(index[0])
                    delay = max(delay, index[1])
                    seen.add(index[0])
                elif index is not None:
                    seen.add(index)
            again.extend(index for index in todo if index not in seen)  # not answered
            if again and attempt >= self.retries:
                for index in again:
                    outcomes[index] = RemoteCommandError(
                        f"{pipeline_text(commands[index])}: gave up after "
                        f"{_tries(attempt + 1)} (throttled or busy)")
                return
            if again:
                self._count(retries=len(again))
                self._wait(delay or self._backoff(attempt), label)
                attempt += 1
            todo = sorted(again)

    def _batch_answer(self, answer: object, commands: Sequence[Command], todo: list[int],
                      outcomes: dict[int, Outcome], attempt: int
                      ) -> int | tuple[int, float] | None:
        """Record one sub-response; (index, delay) when it is to be sent again."""
        if not isinstance(answer, dict):
            return None
        try:
            index = int(str(answer.get("id")))
        except ValueError:
            return None
        if index not in todo:
            return None
        command = commands[index]
        label = pipeline_text(command)
        status = int(answer.get("status") or 0)
        headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
        body = answer.get("body")
        text = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
        page = _json(text) if isinstance(body, str) else body
        if status == 200:
            result = CommandResult([], [], [])
            try:
                self._pages(command, None, result, None, first=page)
            except RemoteCommandError as exc:
                if isinstance(exc, CommandNotFound):
                    raise
                outcomes[index] = exc
                return index
            outcomes[index] = result
            return index
        fake = requests.Response()
        fake.status_code = status
        fake.headers.update(headers)
        why = self._why_retry(fake, text)
        if why is not None or status == 401:
            delay = (self._retry_after(fake, attempt) if status == 429 else self._backoff(attempt))
            return index, delay
        failure = self._failure(status, text, label, headers)
        if isinstance(failure, CommandNotFound):
            raise failure
        outcomes[index] = failure
        return index
