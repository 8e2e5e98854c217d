"""Exchange Online's REST endpoint as the ExchangeOnlineManagement module meets it:
``POST /adminapi/beta/<tenant>/InvokeCommand`` and ``/$batch``, with its knobs.

A request is checked in the service's order: host (a nextLink may point elsewhere: the
"other host" only records whether it was sent a token), the knob's scheduled fault, the
bearer token (live, issued by the sandbox's :class:`~bridge.sandbox.entra.Entra`),
concurrency, the principal's role, then the cmdlet runs (:mod:`bridge.sandbox.exo_invoke`).

Faults (:class:`ExoKnobs` ``fault_at`` / ``fault_every``), by REST request number:

- ``"429"``: 429 with ``Retry-After: <retry_after>``;
- ``"503"`` / ``"504"``: an HTML gateway page;
- ``"concurrency"``: the plain-text "You have reached the maximum number of concurrent
  requests per tenant. Please wait and try again", status ``concurrency_status`` (429;
  the real one is unverified);
- ``"transient"``: 500 whose innererror type is ADTransientException;
- ``"claims"``: every access token issued so far is revoked and the answer is 401 with a
  ``WWW-Authenticate`` claims challenge (``error="insufficient_claims"``, ``claims`` base64);
- ``"expired"``: every access token issued so far expires, answer 401 ``invalid_token``;
- ``"403"``: 403 with an empty body (as for a principal lacking the role).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from bridge.sandbox.entra import READ_ROLES, Entra, Grant
from bridge.sandbox.exo_invoke import CmdletInvoker, Outcome, Page, odata_error, plain, render
from bridge.sandbox.exo_reply import Headers, Reply, json_reply, text_reply
from bridge.sandbox.organisation import Organisation

FAULTS = ("429", "503", "504", "concurrency", "transient", "claims", "expired", "403")
CONCURRENCY_TEXT = (
    "You have reached the maximum number of concurrent requests per tenant. Please wait and "
    "try again"
)
RESPONSE_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
                 "IEEE754Compatible=false;charset=utf-8")
RATE_LIMIT = 30000
MAX_BATCH = 10
_GATEWAY_PAGE = ("<!DOCTYPE html><html><head><title>{0}</title></head><body><h1>{0}</h1>"
                 "</body></html>")
_EXPIRED_CHALLENGE = (
    'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
    'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
    'token_types="app_asserted_user_v1 service_asserted_app_v1", '
    'authorization_uri="https://login.windows.net/common/oauth2/authorize", error="invalid_token"'
)


@dataclass(frozen=True)
class ExoKnobs:
    """Ways the emulated endpoint is slow or refuses, as the real one is and does."""

    latency_ms: float = 0.0  # added to every REST request
    fault_at: Mapping[int, str] = field(default_factory=dict)  # REST request number -> fault
    fault_every: Mapping[str, int] = field(default_factory=dict)  # fault -> every Nth request
    retry_after: int = 1  # seconds, on a "429" fault
    # the status of the plain-text concurrency refusal: unverified (GreyCorbel ExoHelper
    # tests the text whatever the status, as if it came with a status it would not retry)
    concurrency_status: int = 429
    max_concurrent: int | None = None  # in-flight REST requests per tenant
    forbidden_cmdlets: frozenset[str] = frozenset()  # 403 empty body for these (any case)
    foreign_next_link: bool = False  # nextLinks on https://localhost:<port> (another host)
    # DeviceIDs whose Get-MobileDeviceStatistics writes a non-terminating error instead of
    # an object: in "@adminapi.errors" beside the others, or a 404 when it is the only one
    statistics_errors: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted({*self.fault_at.values(), *self.fault_every} - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")


@dataclass(frozen=True)
class Invocation:
    """One cmdlet run the endpoint answered (for tests: what a client sent)."""

    cmdlet: str
    parameters: dict[str, Any]
    offset: int
    page_size: int
    batched: bool
    status: int
    anchor_mailbox: str  # the X-AnchorMailbox header ("" when absent)


class ExoService:
    """The REST side of one sandbox tenant. Thread-safe; ``base_url`` set by the server."""

    def __init__(self, organisation: Organisation, entra: Entra, knobs: ExoKnobs) -> None:
        self.entra = entra
        self.knobs = knobs
        self.base_url = ""
        self.foreign_base_url = ""
        self.invoker = CmdletInvoker(organisation, entra.tenant_domain,
                                     frozenset(knobs.statistics_errors))
        self.requests: Counter[str] = Counter()
        self.cmdlets: Counter[str] = Counter()
        self.invocations: list[Invocation] = []
        self.foreign_requests = 0
        self.foreign_tokens = 0  # requests to the other host that carried a token: a leak
        self._numbers = itertools.count(1)
        self._in_flight = 0
        self._remaining = RATE_LIMIT
        self._lock = threading.Lock()

    # ---- HTTP ------------------------------------------------------------------------

    def handle(self, host: str, path: str, headers: Headers, body: bytes) -> Reply | None:
        """Answer ``POST path``; None when the path is not the REST endpoint's."""
        split = urlsplit(path)
        parts = split.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["adminapi", "beta"]:
            return None
        tenant, route = parts[2], parts[3]
        if route not in ("InvokeCommand", "$batch"):
            return None
        if self.knobs.foreign_next_link and host.split(":")[0].lower() == "localhost":
            with self._lock:
                self.foreign_requests += 1
                self.foreign_tokens += bool(headers.get("Authorization"))
            return Reply(401, {"WWW-Authenticate": 'Bearer realm=""'})
        with self._lock:
            self.requests[route] += 1
            number = next(self._numbers)
            if self.knobs.max_concurrent is not None and (
                    self._in_flight >= self.knobs.max_concurrent):
                return text_reply(self.knobs.concurrency_status, CONCURRENCY_TEXT)
            self._in_flight += 1
            concurrency = self._in_flight
        try:
            if self.knobs.latency_ms:  # the request holds its place while it is slow
                time.sleep(self.knobs.latency_ms / 1000)
            return self._checked(number, tenant, split.query, route, headers, body, concurrency)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _checked(self, number: int, tenant: str, query: str, route: str, headers: Headers,
                 body: bytes, concurrency: int) -> Reply:
        fault = self._scheduled_fault(number)
        if fault is not None:
            return self._fault(fault)
        grant = self._authorize(headers.get("Authorization") or "")
        if isinstance(grant, Reply):
            return grant
        if tenant.lower() not in (self.entra.tenant_domain.lower(), self.entra.tenant_id):
            return json_reply(404, {"error": {"code": "NotFound", "message": f"Tenant "
                                              f"'{tenant}' not found."}})  # unverified
        if not set(grant.roles) & set(READ_ROLES):
            return Reply(403)
        if route == "$batch":
            return self._batch(tenant, headers, body, concurrency)
        return self._invoke_reply(tenant, parse_qs(query), headers, body, concurrency)

    def _scheduled_fault(self, number: int) -> str | None:
        fault = self.knobs.fault_at.get(number)
        if fault is None:
            fault = next((name for name, every in self.knobs.fault_every.items()
                          if every and number % every == 0), None)
        return fault

    def _fault(self, fault: str) -> Reply:
        if fault == "429":
            return json_reply(429, {"error": {"code": "TooManyRequests", "message":
                                              "Too many requests. Please retry later."}},
                              {"Retry-After": str(self.knobs.retry_after)})
        if fault in ("503", "504"):
            title = "Service Unavailable" if fault == "503" else "Gateway Timeout"
            return Reply(int(fault), {"Content-Type": "text/html"},
                         _GATEWAY_PAGE.format(title).encode())
        if fault == "concurrency":
            return text_reply(self.knobs.concurrency_status, CONCURRENCY_TEXT)
        if fault == "transient":
            document = odata_error(
                "InternalServerError", "Microsoft.Exchange.Data.Directory.ADTransientException",
                "Active Directory operation failed on AM0PR07A13DC001. The server is not "
                "operational.")
            document["error"]["innererror"]["type"] = (
                "Microsoft.Exchange.Data.Directory.ADTransientException")
            return json_reply(500, document, {"X-ExceptionType": "ADTransientException"})
        if fault == "claims":
            self.entra.revoke_tokens()
            claims = json.dumps({"access_token": {"nbf": {"essential": True,
                                                          "value": str(int(time.time()))}}})
            encoded = base64.b64encode(claims.encode()).decode()
            return Reply(401, {"WWW-Authenticate": (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                'oauth2/authorize", client_id="00000002-0000-0ff1-ce00-000000000000", '
                f'error="insufficient_claims", claims="{encoded}"')})
        if fault == "expired":
            self.entra.expire_tokens()
            return self._unauthorized("The token has expired.")
        return Reply(403)

    def _unauthorized(self, reason: str) -> Reply:
        # unverified: x-ms-diagnostics as other Microsoft 365 resources send it
        return Reply(401, {"WWW-Authenticate": _EXPIRED_CHALLENGE,
                           "x-ms-diagnostics": f'2000003;reason="{reason}";'
                                               'error_category="invalid_token"'})

    def _authorize(self, authorization: str) -> Grant | Reply:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("The token is missing.")
        grant = self.entra.check_access_token(token.strip())
        if grant == "expired":
            return self._unauthorized("The token has expired.")
        if isinstance(grant, str):
            return self._unauthorized("The token is not valid.")
        return grant

    def _headers(self, concurrency: int) -> dict[str, str]:
        with self._lock:
            self._remaining = max(self._remaining - 1, 0)
            remaining = self._remaining
        return {
            "request-id": str(uuid.uuid4()),
            "X-CalculatedBETarget": "AM0PR07MB8842.eurprd07.PROD.OUTLOOK.COM",
            "Rate-Limit-Limit": str(RATE_LIMIT),
            "Rate-Limit-Remaining": str(remaining),
            "X-ConcurrencyCount": str(concurrency - 1),
            "OData-Version": "4.0",
            "Preference-Applied": 'odata.include-annotations="*"',
        }

    # ---- InvokeCommand and $batch ----------------------------------------------------

    def _invoke_reply(self, tenant: str, query: dict[str, list[str]], headers: Headers,
                      body: bytes, concurrency: int) -> Reply:
        try:
            document = json.loads(body or b"null")
        except ValueError:
            document = None
        outcome = self.run(tenant, query, headers, document, batched=False)
        reply_headers = {**self._headers(concurrency), **outcome.headers}
        if outcome.document is None:
            return Reply(outcome.status, reply_headers)
        return Reply(outcome.status, {"Content-Type": RESPONSE_TYPE, **reply_headers},
                     render(outcome.document))

    def run(self, tenant: str, query: dict[str, list[str]], headers: Headers,
            body: Any, batched: bool) -> Outcome:
        """One InvokeCommand (direct or inside a batch), counted."""
        parsed = self.invoker.parse(body)
        if isinstance(parsed, Outcome):
            return parsed
        name, parameters = parsed
        page_size = _page_size(headers)
        body_hash = self.invoker.body_hash(body)
        offset = 0
        if "$skiptoken" in query:
            token = self.invoker.parse_skiptoken(query["$skiptoken"][0])
            if token is None or token[1] != body_hash:
                return Outcome(400, {"error": {"code": "BadRequest", "message": "The skip token "
                                               "does not match the request body."}}, cmdlet=name)
            offset = token[0]
        select = tuple(part.strip() for part in ",".join(query.get("$select", [])).split(",")
                       if part.strip())
        base = self.foreign_base_url if self.knobs.foreign_next_link else self.base_url
        link_query = f"&$select={quote(','.join(select))}" if select else ""

        def next_link(next_offset: int) -> str:
            token = quote(self.invoker.skiptoken(next_offset, body_hash))
            return (f"{base}/adminapi/beta/{tenant}/InvokeCommand?$skiptoken={token}"
                    f"{link_query}")

        if name.lower() in {cmdlet.lower() for cmdlet in self.knobs.forbidden_cmdlets}:
            outcome = Outcome(403, None, cmdlet=name)
        else:
            outcome = self.invoker.invoke(name, parameters, Page(page_size, offset, select),
                                          next_link)
        if outcome.document is not None and "error" not in outcome.document:
            outcome.document["@odata.context"] = (
                f"{self.base_url}/adminapi/beta/{tenant}/$metadata"
                "#Collection(Exchange.GenericHashTable)")
        with self._lock:
            self.cmdlets[outcome.cmdlet or name] += 1
            self.invocations.append(Invocation(
                outcome.cmdlet or name, parameters, offset, page_size, batched, outcome.status,
                headers.get("X-AnchorMailbox") or ""))
        return outcome

    def _batch(self, tenant: str, headers: Headers, body: bytes,
               concurrency: int) -> Reply:
        try:
            document = json.loads(body or b"null")
            requests = document["requests"]
            if not isinstance(requests, list):
                raise TypeError("requests is not a list")
        except (ValueError, KeyError, TypeError):
            return json_reply(400, {"error": {"code": "BadRequest", "message":
                                              "The batch request body is not valid."}})
        if len(requests) > MAX_BATCH:  # unverified text
            return json_reply(400, {"error": {"code": "BadRequest", "message":
                                              f"The batch request cannot contain more than "
                                              f"{MAX_BATCH} requests."}})
        responses = []
        for request in requests:
            request = request if isinstance(request, dict) else {}
            url = urlsplit(str(request.get("url", "")))
            # the batch's own Prefer and X-AnchorMailbox apply unless an entry sets its own
            inherited = {name: headers.get(name) for name in ("Prefer", "X-AnchorMailbox")}
            sub_headers = {**{name: value for name, value in inherited.items() if value},
                           **(request.get("headers") or {})}
            outcome = self.run(tenant, parse_qs(url.query), _Insensitive(sub_headers),
                               request.get("body"), batched=True)
            responses.append({
                "id": request.get("id"),
                "status": outcome.status,
                "headers": {"Content-Type": RESPONSE_TYPE, **outcome.headers},
                "body": plain(outcome.document),
            })
        return json_reply(200, {"responses": responses}, self._headers(concurrency),
                          content_type=RESPONSE_TYPE)


class _Insensitive(dict[str, str]):
    """Batch sub-request headers, looked up case-insensitively like HTTP headers."""

    def get(self, key: str, default: Any = None) -> Any:
        for name, value in self.items():
            if name.lower() == key.lower():
                return value
        return default


def _page_size(headers: Headers) -> int:
    """``Prefer: odata.maxpagesize=N`` (also ``X-Prefer``), clamped to 1..1000."""
    for name in ("Prefer", "X-Prefer"):
        value = headers.get(name) or ""
        for part in value.split(","):
            key, _, number = part.strip().partition("=")
            if key.lower() == "odata.maxpagesize" and number.strip().isdigit():
                return min(max(int(number), 1), 1000)
    return 1000


__all__ = ["CONCURRENCY_TEXT", "ExoKnobs", "ExoService", "FAULTS", "Invocation"]
