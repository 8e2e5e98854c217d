"""Exchange Online's REST endpoint as a :class:`bridge.source.Source`: one cmdlet per request.

``POST {endpoint}/adminapi/beta/{tenant}/InvokeCommand`` with the cmdlet as JSON, pages
followed by ``@odata.nextLink`` (the same body each time), several cmdlets at once in
one ``$batch`` request. Retries, token renewal and the same-host rule live in
:mod:`bridge.exo.transport`; rows become plain values in :mod:`bridge.exo.values`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    SessionStats,
    is_read_only,
    pipeline_text,
)
from bridge.errors import CommandNotFound, RemoteCommandError
from bridge.exo.transport import TokenSource, Transport, parse_json, short, tries
from bridge.exo.values import error_records, messages, odata_error, plain_rows

EXO_ENDPOINT = "https://outlook.office365.com"
API_PATH = "adminapi/beta"
#: $batch holds at most this many requests
BATCH_LIMIT = 10
ROLE_HINT = ("the signed-in account (or the app's service principal) lacks an Exchange role "
             "that grants it: assign View-Only Organization Management or Global Reader")
Outcome = CommandResult | RemoteCommandError


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


def failure(status: int, text: str, label: str, headers: Mapping[str, str]
            ) -> RemoteCommandError:
    """A non-200 answer to one cmdlet as the error to raise or record."""
    if status == 403 and not text.strip():
        return CommandNotFound(f"{label}: Exchange Online refused it (HTTP 403): {ROLE_HINT}")
    record = odata_error(parse_json(text), status=status,
                         exception_header=headers.get("X-ExceptionType", ""))
    if record is None:
        record = ErrorRecord(message=short(text) or f"HTTP {status}",
                             category=f"HTTP{status}", reason="", error_id=f"HTTP{status}")
    if status == 403:
        return CommandNotFound(f"{label}: {record.message} ({ROLE_HINT})", record=record)
    if record.reason == "CommandNotFoundException" or "is not recognized as" in record.message:
        return CommandNotFound(f"{label}: {record.message}", record=record)
    return RemoteCommandError(f"{label}: {record.message}", record=record)


def absorb(page: object, result: CommandResult, label: str) -> str | None:
    """Add a page's rows, warnings and errors to ``result``; its next link, if any."""
    if not isinstance(page, dict):
        raise RemoteCommandError(f"{label}: the answer is not an OData JSON object")
    result.rows.extend(plain_rows(page.get("value")))
    result.warnings.extend(messages(page.get("@adminapi.warnings")))
    result.errors.extend(error_records(page.get("@adminapi.errors")))
    link = page.get("@odata.nextLink")
    return link if isinstance(link, str) and link else None


class ExoSource:
    """Runs cmdlets on Exchange Online's REST endpoint (a non-read one is never sent twice)."""

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
        self._http = Transport(tokens, self._base, verify=verify, retries=retries,
                               backoff=backoff, page_size=page_size, timeout=timeout,
                               sleep=sleep)
        self.stats: SessionStats = self._http.stats
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
        self._http.pool(self._concurrency)

    def abort(self) -> None:
        self._http.stopped.set()

    def run(self, commands: Command | Sequence[Command], *,
            on_output: Callable[[int], None] | None = None) -> CommandResult:
        """Run one cmdlet, all its pages; terminating errors raise RemoteCommandError
        (with the ErrorRecord), an unknown or forbidden cmdlet CommandNotFound."""
        if isinstance(commands, Command):
            command = commands
        elif len(commands) == 1:
            command = commands[0]
        else:
            raise RemoteCommandError(f"{pipeline_text(commands)}: Exchange Online's REST "
                                     "endpoint runs one cmdlet per request, not pipelines")
        self._http.count(commands=1)
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
        self._http.count(commands=len(commands))
        for start in range(0, len(commands), BATCH_LIMIT):
            self._batch(commands, list(range(start, min(start + BATCH_LIMIT, len(commands)))),
                        outcomes)
        return [outcomes[index] for index in range(len(commands))]

    # -- pages and batches

    def _pages(self, command: Command, url: str | None, result: CommandResult,
               on_output: Callable[[int], None] | None, first: object = None) -> None:
        """Follow pages from ``url`` (or from ``first``, a page already received)."""
        label = pipeline_text(command)
        body = command_body(command)
        limit = _result_size(command)
        page = first
        while page is not None or url is not None:
            if page is None:
                assert url is not None
                response, text = self._http.post(url, body, label, cmdlet=command.name,
                                                 rerun_safe=is_read_only(command))
                if response.status_code != 200:
                    raise failure(response.status_code, text, label, response.headers)
                page = parse_json(text)
            url = absorb(page, result, label)
            page = None
            if on_output is not None:
                on_output(len(result.rows))
            if limit is not None and len(result.rows) >= limit:
                del result.rows[limit:]
                break

    def _batch(self, commands: Sequence[Command], todo: list[int],
               outcomes: dict[int, Outcome]) -> None:
        """One $batch (at most 10), sending again what was throttled, until all answered."""
        attempt = 0
        while todo:
            requests = [{
                "id": str(index), "method": "POST", "url": f"{self.endpoint}/InvokeCommand",
                "body": command_body(commands[index]),
                "headers": {"Content-Type": "application/json",
                            "Prefer": f"odata.maxpagesize={self._http.page_size}"},
            } for index in todo]
            label = f"$batch of {len(todo)} ({commands[todo[0]].name})"
            response, text = self._http.post(
                f"{self.endpoint}/$batch", {"requests": requests}, label, cmdlet=None,
                rerun_safe=all(is_read_only(commands[index]) for index in todo))
            if response.status_code != 200:
                raise failure(response.status_code, text, label, response.headers)
            answers = parse_json(text)
            listed = answers.get("responses") if isinstance(answers, dict) else None
            if not isinstance(listed, list):
                raise RemoteCommandError(f"{label}: the answer has no responses")
            delays = {}
            for answer in listed:
                index, delay = self._answer(answer, commands, todo, outcomes, attempt)
                if index is not None and delay is not None:
                    delays[index] = delay
            again = sorted(index for index in todo if index not in outcomes)
            if again and attempt >= self._http.retries:
                for index in again:
                    outcomes[index] = RemoteCommandError(
                        f"{pipeline_text(commands[index])}: gave up after "
                        f"{tries(attempt + 1)} (throttled or busy)")
                return
            if again:
                self._http.count(retries=len(again))
                self._http.wait(max(delays.values(), default=0.0)
                                or self._http.backoff_delay(attempt), label)
                attempt += 1
            todo = again

    def _answer(self, answer: object, commands: Sequence[Command], todo: list[int],
                outcomes: dict[int, Outcome], attempt: int) -> tuple[int | None, float | None]:
        """Record one sub-response in ``outcomes``; (index, delay) when it is to be sent
        again (throttled, busy, or a 401 of its own)."""
        if not isinstance(answer, dict):
            return None, None
        try:
            index = int(str(answer.get("id")))
        except ValueError:
            return None, None
        if index not in todo:
            return None, None
        command = commands[index]
        status = int(answer.get("status") or 0)
        headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
        body = answer.get("body")
        text = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
        if status == 200:
            result = CommandResult([], [], [])
            try:
                self._pages(command, None, result, None,
                            first=parse_json(text) if isinstance(body, str) else body)
            except CommandNotFound:
                raise
            except RemoteCommandError as exc:
                outcomes[index] = exc
                return index, None
            outcomes[index] = result
            return index, None
        if status == 401 or self._http.why_retry(status, headers, text) is not None:
            return index, self._http.delay(status, headers, attempt)
        outcome = failure(status, text, pipeline_text(command), headers)
        if isinstance(outcome, CommandNotFound):
            raise outcome
        outcomes[index] = outcome
        return index, None
