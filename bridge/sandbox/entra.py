"""An emulated Microsoft Entra ID tenant: just what MSAL for Python uses to sign in to
Exchange Online, answered as Entra answers it.

Routes (``<tenant>``: the tenant's GUID or domain; ``organizations``/``common`` mean it too):

- ``GET /<tenant>/v2.0/.well-known/openid-configuration`` (what ``msal`` fetches with
  ``instance_discovery=False``); ``GET /<tenant>/discovery/v2.0/keys``;
- ``POST /<tenant>/oauth2/v2.0/devicecode`` (device code: user_code, device_code,
  verification_uri, interval; completed by :meth:`Entra.approve_device_code`, no browser);
- ``POST /<tenant>/oauth2/v2.0/token``: grant types device_code, refresh_token and
  client_credentials (a client secret, or a certificate assertion: a JWT signed by the
  app's key, RS256 with ``x5t`` or PS256 with ``x5t#S256``, checked against the app's
  registered certificate, with aud/iss/sub/exp/nbf).

Access tokens are opaque random strings with an expiry (Exchange Online's are JWTs that may
be encrypted, so a client must not read them anyway); :meth:`Entra.check_access_token`
is how the REST side validates them. Errors are Entra's JSON (``error``,
``error_description`` starting ``AADSTSnnnnn:``, ``error_codes``, trace and correlation
ids; texts and how far they are verified: bridge/sandbox/entra_wire.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bridge.sandbox.entra_wire import (
    Certificate,
    IdTokenSigner,
    aadsts_error,
    b64url,
    check_client_assertion,
    load_certificate,
    openid_configuration,
)
from bridge.sandbox.exo_reply import Reply, json_reply

EXO_RESOURCE = "https://outlook.office365.com"
EXO_RESOURCES = (EXO_RESOURCE, "https://outlook.office.com", "00000002-0000-0ff1-ce00-000000000000")
EXO_MODULE_CLIENT_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
"""The ExchangeOnlineManagement module's public client, registered in every sandbox tenant."""
READ_ROLES = (
    "Global Administrator", "Global Reader", "Exchange Administrator",
    "Organization Management", "View-Only Organization Management",
    "Exchange Recipient Administrator",
)
"""Roles that may run the read cmdlets; a principal with none gets 403 from the REST side."""
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
VERIFICATION_URI = "https://microsoft.com/devicelogin"




@dataclass
class RegisteredApp:
    """An app registration with its service principal in the tenant."""

    client_id: str
    display_name: str
    certificates: list[Certificate] = field(default_factory=list)
    secret: str | None = field(default=None, repr=False)
    roles: tuple[str, ...] = ()
    consented: bool = True  # Exchange.ManageAsApp (app-only) or the delegated permission
    public_client: bool = False
    blocked_by_conditional_access: bool = False


@dataclass
class User:
    """A user who can complete a device code sign-in."""

    upn: str
    object_id: str
    roles: tuple[str, ...] = ()
    blocked_by_conditional_access: bool = False


@dataclass
class Grant:
    """What a live access token stands for (the REST side checks ``roles``)."""

    client_id: str
    principal: str  # the user's UPN, or the app's client id for app-only
    app_only: bool
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    claims: str | None = None  # the claims parameter the token was requested with


@dataclass
class _DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    expires_at: float
    user: User | None = None
    declined: bool = False


class Directory:
    """One tenant's apps, users, device codes and tokens, and the Python calls tests make.
    Thread-safe; ``base_url`` is set by the server."""

    def __init__(
        self,
        tenant_domain: str,
        tenant_id: str,
        *,
        token_lifetime: float = 3599.0,
        device_code_lifetime: float = 900.0,
        device_code_interval: int = 5,
        refresh_token_lifetime: float = 90 * 86400.0,
    ) -> None:
        self.tenant_domain = tenant_domain
        self.tenant_id = tenant_id
        self.base_url = ""
        self.token_lifetime = token_lifetime
        self.device_code_lifetime = device_code_lifetime
        self.device_code_interval = device_code_interval
        self.refresh_token_lifetime = refresh_token_lifetime
        self.apps: dict[str, RegisteredApp] = {}
        self.users: dict[str, User] = {}
        self.requests: Counter[str] = Counter()
        self.claims_received: list[str] = []
        self._tokens: dict[str, Grant] = {}
        self._refresh: dict[str, tuple[Grant, float]] = {}
        self._device_codes: dict[str, _DeviceCode] = {}
        self._lock = threading.Lock()
        self._signer = IdTokenSigner()
        self.register_app(EXO_MODULE_CLIENT_ID, display_name="Microsoft Exchange REST API Based "
                          "Powershell", public_client=True)

    # ---- configuration (Python, for tests) -------------------------------------------

    def register_app(
        self,
        client_id: str,
        *,
        display_name: str = "psbridge",
        certificate_pem: str | bytes | list[str | bytes] | None = None,
        secret: str | None = None,
        roles: list[str] | tuple[str, ...] = (),
        consented: bool = True,
        public_client: bool = False,
        blocked_by_conditional_access: bool = False,
    ) -> RegisteredApp:
        """Register an app (and its service principal). ``roles``: the directory/Exchange
        roles its service principal holds (app-only); ``consented``: admin consent given."""
        pems = certificate_pem if isinstance(certificate_pem, list) else (
            [certificate_pem] if certificate_pem else [])
        certificates = [
            load_certificate(pem.encode() if isinstance(pem, str) else pem)
            for pem in pems
        ]
        app = RegisteredApp(client_id, display_name, certificates, secret, tuple(roles),
                            consented, public_client, blocked_by_conditional_access)
        self.apps[client_id.lower()] = app
        return app

    def register_user(
        self, upn: str, roles: list[str] | tuple[str, ...] = ("Exchange Administrator",), *,
        blocked_by_conditional_access: bool = False,
    ) -> User:
        """Register a user who may approve device codes; ``roles`` as for apps."""
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant_id}/{upn.lower()}"))
        user = User(upn, object_id, tuple(roles), blocked_by_conditional_access)
        self.users[upn.lower()] = user
        return user

    def approve_device_code(self, user_code: str, upn: str) -> None:
        """Complete a device code sign-in as user ``upn`` (what the user does in a browser).
        Raises KeyError for an unknown code or user."""
        with self._lock:
            flow = self._flow_by_user_code(user_code)
            flow.user = self.users[upn.lower()]

    def decline_device_code(self, user_code: str) -> None:
        """The user cancels the sign-in page: the next poll gets authorization_declined."""
        with self._lock:
            self._flow_by_user_code(user_code).declined = True

    def pending_user_codes(self) -> list[str]:
        """The user codes nobody approved yet (what a test reads to approve one)."""
        with self._lock:
            return [flow.user_code for flow in self._device_codes.values()
                    if flow.user is None and not flow.declined]

    def expire_tokens(self) -> None:
        """Expire every access token issued so far (refresh tokens stay valid)."""
        with self._lock:
            for grant in self._tokens.values():
                grant.expires_at = min(grant.expires_at, time.time() - 1)

    def revoke_tokens(self) -> None:
        """Revoke every access token issued so far (what a claims challenge stands for)."""
        with self._lock:
            self._tokens.clear()

    def check_access_token(self, token: str) -> Grant | str:
        """The grant a live token stands for, else why not ("expired", "invalid")."""
        with self._lock:
            grant = self._tokens.get(token)
        if grant is None:
            return "invalid"
        if grant.expires_at <= time.time():
            return "expired"
        return grant

    def _flow_by_user_code(self, user_code: str) -> _DeviceCode:
        for flow in self._device_codes.values():
            if flow.user_code == user_code.strip().upper():
                return flow
        raise KeyError(f"no device code sign-in with user code {user_code!r}")

    def _issue(self, app: RegisteredApp, user: User | None, form: dict[str, str]) -> dict[str, Any]:
        now = time.time()
        token = secrets.token_urlsafe(48)
        grant = Grant(
            client_id=app.client_id,
            principal=user.upn if user else app.client_id,
            app_only=user is None,
            roles=user.roles if user else app.roles,
            issued_at=now,
            expires_at=now + self.token_lifetime,
            claims=form.get("claims") or None,
        )
        lifetime = max(int(self.token_lifetime), 0)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": f"{EXO_RESOURCE}/.default" if user is None
            else f"{EXO_RESOURCE}/Exchange.Manage {EXO_RESOURCE}/.default",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        with self._lock:
            self._tokens[token] = grant
            if user is not None:
                refresh = secrets.token_urlsafe(64)
                self._refresh[refresh] = (grant, now + self.refresh_token_lifetime)
                answer["refresh_token"] = refresh
        if user is not None:
            answer["id_token"] = self._id_token(app, user, now)
            answer["client_info"] = b64url(json.dumps(
                {"uid": user.object_id, "utid": self.tenant_id}).encode())
        return answer

    def _id_token(self, app: RegisteredApp, user: User, now: float) -> str:
        return self._signer.sign({
            "aud": app.client_id, "iss": f"{self.base_url}/{self.tenant_id}/v2.0",
            "iat": int(now), "nbf": int(now), "exp": int(now + 3600),
            "name": user.upn.split("@")[0], "oid": user.object_id,
            "preferred_username": user.upn, "sub": b64url(hashlib.sha256(
                f"{user.object_id}{app.client_id}".encode()).digest()),
            "tid": self.tenant_id, "ver": "2.0",
        })


class Entra(Directory):
    """The tenant's sign-in endpoints over its :class:`Directory` (see the module docstring)."""


    def handle(self, method: str, path: str, form: dict[str, str]) -> Reply | None:
        """Answer one request under ``/<tenant>/``; None when the path is not Entra's."""
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 2:
            return None
        tenant, route = parts[0], "/".join(parts[1:])
        known = {"v2.0/.well-known/openid-configuration", "discovery/v2.0/keys",
                 "oauth2/v2.0/devicecode", "oauth2/v2.0/token"}
        if route not in known:
            return None
        with self._lock:
            self.requests[route] += 1
        if tenant.lower() not in (self.tenant_id, self.tenant_domain.lower(), "organizations",
                                  "common"):
            return self._error(400, "invalid_tenant", 90002, tenant)
        if route == "v2.0/.well-known/openid-configuration" and method == "GET":
            return json_reply(200, self.openid_configuration())
        if route == "discovery/v2.0/keys" and method == "GET":
            return json_reply(200, {"keys": [self._signer.jwk()]})
        if method != "POST":
            return json_reply(405, {"error": "invalid_request"})
        if route == "oauth2/v2.0/devicecode":
            return self._device_code(form)
        return self._token(form)

    def openid_configuration(self) -> dict[str, Any]:
        """The tenant's OpenID configuration."""
        return openid_configuration(self.base_url, self.tenant_id)

    def _error(self, status: int, error: str, code: int, *args: Any,
               suberror: str | None = None) -> Reply:
        return aadsts_error(self.base_url, status, error, code, *args, suberror=suberror)

    def _app(self, form: dict[str, str]) -> RegisteredApp | Reply:
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id.lower())
        if app is None:
            return self._error(400, "unauthorized_client", 700016, client_id, self.tenant_domain)
        return app

    def _device_code(self, form: dict[str, str]) -> Reply:
        app = self._app(form)
        if isinstance(app, Reply):
            return app
        if not app.public_client:
            return self._error(401, "invalid_client", 7000218)
        scope_error = self._scope_error(form.get("scope", ""), app_only=False)
        if scope_error is not None:
            return scope_error
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        user_code = "".join(secrets.choice(alphabet) for _ in range(9))
        device_code = secrets.token_urlsafe(48)
        with self._lock:
            self._device_codes[device_code] = _DeviceCode(
                device_code, user_code, app.client_id, time.time() + self.device_code_lifetime)
        return json_reply(200, {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": int(self.device_code_lifetime),
            "interval": self.device_code_interval,
            "message": f"To sign in, use a web browser to open the page {VERIFICATION_URI} and "
                       f"enter the code {user_code} to authenticate.",
        })

    def _scope_error(self, scope: str, app_only: bool) -> Reply | None:
        resources = [item for item in scope.split()
                     if item not in ("openid", "profile", "offline_access", "email")]
        for item in resources:
            resource, _, permission = item.rpartition("/")
            if resource.rstrip("/") not in EXO_RESOURCES:
                return self._error(400, "invalid_resource", 500011, resource or item,
                                   self.tenant_domain)
            if app_only and permission != ".default":
                return self._error(400, "invalid_scope", 1002012, item)
        if not resources:
            return self._error(400, "invalid_scope", 1002012, scope)
        return None

    def _token(self, form: dict[str, str]) -> Reply:
        grant_type = form.get("grant_type", "")
        if form.get("claims"):
            self.claims_received.append(form["claims"])
        app = self._app(form)
        if isinstance(app, Reply):
            return app
        if grant_type == "client_credentials":
            return self._client_credentials(app, form)
        if grant_type == DEVICE_GRANT:
            return self._device_token(app, form)
        if grant_type == "refresh_token":
            return self._refresh_token(app, form)
        return self._error(400, "unsupported_grant_type", 70003, grant_type)

    def _client_credentials(self, app: RegisteredApp, form: dict[str, str]) -> Reply:
        if "client_assertion" in form:
            refused = self._check_assertion(app, form)
        elif "client_secret" in form:
            refused = None if app.secret is not None and secrets.compare_digest(
                form["client_secret"].encode(), app.secret.encode()) else self._error(
                401, "invalid_client", 7000215, app.client_id)
        else:
            refused = self._error(401, "invalid_client", 7000218)
        if refused is not None:
            return refused
        scope_error = self._scope_error(form.get("scope", ""), app_only=True)
        if scope_error is not None:
            return scope_error
        if not app.consented:  # unverified for app-only: Entra may instead issue a role-less token
            return self._error(400, "invalid_grant", 65001, app.client_id, app.display_name,
                               suberror="consent_required")
        if app.blocked_by_conditional_access:
            return self._error(400, "invalid_grant", 53003)
        return json_reply(200, self._issue(app, None, form))

    def _check_assertion(self, app: RegisteredApp, form: dict[str, str]) -> Reply | None:
        audiences = {f"{self.base_url}/{tenant}/oauth2/v2.0/token"
                     for tenant in (self.tenant_id, self.tenant_domain)}
        refusal = check_client_assertion(app.certificates, app.client_id, form, audiences)
        return None if refusal is None else self._error(401, "invalid_client", *refusal)

    def _device_token(self, app: RegisteredApp, form: dict[str, str]) -> Reply:
        with self._lock:
            flow = self._device_codes.get(form.get("device_code", ""))
        if flow is None or flow.client_id != app.client_id:
            return self._error(400, "invalid_grant", 70000)
        if flow.expires_at <= time.time():
            return self._error(400, "expired_token", 70020)
        if flow.declined:
            return self._error(400, "authorization_declined", 70000)
        if flow.user is None:
            return self._error(400, "authorization_pending", 70016)
        with self._lock:
            self._device_codes.pop(flow.device_code, None)
        if not app.consented:
            return self._error(400, "invalid_grant", 65001, app.client_id, app.display_name,
                               suberror="consent_required")
        if flow.user.blocked_by_conditional_access:
            return self._error(400, "invalid_grant", 53003)
        return json_reply(200, self._issue(app, flow.user, form))

    def _refresh_token(self, app: RegisteredApp, form: dict[str, str]) -> Reply:
        with self._lock:
            held = self._refresh.get(form.get("refresh_token", ""))
        if held is None or held[0].client_id != app.client_id:
            return self._error(400, "invalid_grant", 9002313)
        grant, expires_at = held
        if expires_at <= time.time():
            return self._error(400, "invalid_grant", 700082)
        user = self.users.get(grant.principal.lower())
        if user is None:
            return self._error(400, "invalid_grant", 50126)
        if user.blocked_by_conditional_access:
            return self._error(400, "invalid_grant", 53003)
        return json_reply(200, self._issue(app, user, form))


__all__ = ["Directory", "EXO_MODULE_CLIENT_ID", "EXO_RESOURCE", "Entra", "Grant", "READ_ROLES",
           "RegisteredApp", "User"]
