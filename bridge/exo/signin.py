"""Signing in to Exchange Online with MSAL: the only module importing msal.

Delegated (an administrator signs in): device code by default, the interactive browser
when asked and one is available; tokens are cached per OS user (encrypted where the OS
offers it, else a 0600 file under the user's data directory) so a rerun the same day
does not prompt. App-only (unattended): a certificate (PEM, or .pfx whose password is
in the environment) or a client secret from the environment; its tokens stay in memory.
Entra's refusals (AADSTS codes) become one :class:`SignInRefused` line naming the cause
and the fix.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msal
import msal_extensions
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from bridge.errors import AuthenticationFailed, ConfigError, ConnectionFailed, SignInRefused
from bridge.paths import user_data_dir

#: the ExchangeOnlineManagement module's own public client: delegated sign-in works with
#: it in any tenant (a tenant may register its own app instead)
EXO_MODULE_APP_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
AUTHORITY_HOST = "https://login.microsoftonline.com"
EXO_RESOURCE = "https://outlook.office365.com"
#: environment variables holding secrets (never a command-line option: argv is visible)
CLIENT_SECRET_ENV = "PSBRIDGE_CLIENT_SECRET"
CERTIFICATE_PASSWORD_ENV = "PSBRIDGE_CERTIFICATE_PASSWORD"
CACHE_FILE = "exo-token-cache.bin"
#: renew this long before a token expires, so a request never leaves with a dying one
_MARGIN = 120.0


def data_dir() -> Path:
    """psbridge's per-user data folder (as bridge.history's): where the token cache lives."""
    return user_data_dir()


@dataclass(frozen=True)
class SignIn:
    """How to sign in to one tenant. Holds no secret: those are read from the environment."""

    tenant: str
    app_id: str = EXO_MODULE_APP_ID
    #: app-only with this certificate: a PEM (key and certificate) or a .pfx
    certificate: Path | None = None
    #: app-only with the client secret held in this environment variable
    client_secret_env: str | None = None
    #: delegated: the browser instead of a device code, when one is available
    interactive: bool = False
    #: delegated: which cached account to use, and the sign-in page's hint
    username: str | None = None
    authority_host: str = AUTHORITY_HOST
    resource: str = EXO_RESOURCE
    #: a CA bundle for the authority's certificate (a test or corporate CA), or True
    verify: bool | str = True
    #: where the token cache lives (default: :func:`data_dir`)
    cache_dir: Path | None = None

    @property
    def app_only(self) -> bool:
        return self.certificate is not None or self.client_secret_env is not None

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant}"

    @property
    def scope(self) -> str:
        return f"{self.resource.rstrip('/')}/.default"

    @property
    def cache_path(self) -> Path:
        return (self.cache_dir or data_dir()) / CACHE_FILE


# -- AADSTS refusals -----------------------------------------------------------------------

_GRANT_CONSENT = ("an administrator grants admin consent to the app for Office 365 Exchange "
                  "Online (Entra admin center > Enterprise applications > the app > "
                  "Permissions)")
#: AADSTS code -> (cause, fix)
_REFUSALS: dict[str, tuple[str, str]] = {
    "65001": ("consent missing: the app may not call Exchange Online in this tenant",
              _GRANT_CONSENT),
    "650051": ("consent missing for the app's Exchange permission", _GRANT_CONSENT),
    "90094": ("consent missing: only an administrator may consent to this app", _GRANT_CONSENT),
    "50105": ("role missing: the account is not assigned to this app",
              "an administrator assigns the account to the app (Enterprise applications > "
              "Users and groups) or turns off 'Assignment required'"),
    "53003": ("blocked by Conditional Access",
              "sign in from a device or place the policy allows, or use app-only sign-in "
              "(--certificate); an administrator can check the sign-in log"),
    "53000": ("blocked by Conditional Access: the device is not compliant",
              "sign in from a managed device, or use app-only sign-in (--certificate)"),
    "53001": ("blocked by Conditional Access: the device is not domain-joined",
              "sign in from a joined device, or use app-only sign-in (--certificate)"),
    "53002": ("blocked by Conditional Access: the app is not approved",
              "use app-only sign-in (--certificate) or ask for the app to be approved"),
    "50158": ("blocked by Conditional Access: an external security challenge is required",
              "sign in interactively (--interactive) or use app-only sign-in"),
    "50076": ("multi-factor authentication is required",
              "sign in with the device code or --interactive, which handle MFA"),
    "700016": ("the app id is not known in this tenant",
               "check --app-id and --tenant, or register the app in this tenant"),
    "7000215": ("the client secret is wrong or expired",
                f"put a valid secret in ${CLIENT_SECRET_ENV}"),
    "7000222": ("the client secret has expired", f"create a new one and put it in "
                f"${CLIENT_SECRET_ENV}"),
    "700027": ("the certificate is not registered for this app (or its assertion is invalid)",
               "upload the certificate's public part to the app registration"),
    "700024": ("the certificate assertion is not valid now", "check the computer's clock"),
    "90002": ("the tenant does not exist", "check --tenant (contoso.onmicrosoft.com or its id)"),
    "50034": ("the account does not exist in this tenant", "check the user name and --tenant"),
    "50126": ("wrong user name or password", "sign in again"),
    "70016": ("the device code was not entered in time", "run again and enter the code"),
    "70019": ("the device code expired before it was entered", "run again and enter the code"),
    "50173": ("the cached sign-in is no longer valid", "run again to sign in afresh"),
    "700082": ("the cached sign-in has expired", "run again to sign in afresh"),
    "700003": ("the device was removed from the tenant", "run again to sign in afresh"),
}
_AADSTS = re.compile(r"AADSTS(\d+)")


def refusal(result: Mapping[str, Any], tenant: str) -> AuthenticationFailed:
    """An MSAL error answer as one line naming the cause and the fix.

    Entra's own description (which can quote the app and user) is not repeated: the
    code is enough to look it up, and the line stays short.
    """
    description = str(result.get("error_description") or "")
    error = str(result.get("error") or "error")
    match = _AADSTS.search(description)
    if match is None:
        first = description.splitlines()[0] if description else error
        return AuthenticationFailed(f"sign-in to {tenant} failed: {first[:200]}")
    code = match.group(1)
    cause, fix = _REFUSALS.get(code, (f"Entra refused the sign-in ({error})",
                                      "look the code up at https://login.microsoftonline.com"
                                      f"/error?code={code}"))
    return SignInRefused(
        f"sign-in to {tenant} refused (AADSTS{code}): {cause}; fix: {fix}", code=f"AADSTS{code}"
    )


# -- certificates ---------------------------------------------------------------------------


def certificate_credential(path: Path, password_env: str = CERTIFICATE_PASSWORD_ENV
                           ) -> dict[str, str]:
    """MSAL's certificate credential (private key PEM, SHA-1 thumbprint, certificate).

    A .pfx/.p12 is converted to PEM here, with its password from ``password_env``; a PEM
    must hold both the private key and the certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc.strerror}") from exc
    secret = os.environ.get(password_env)
    password = secret.encode() if secret else None
    try:
        if path.suffix.lower() in (".pfx", ".p12"):
            key, certificate, _ = pkcs12.load_key_and_certificates(data, password)
        else:
            certificate = x509.load_pem_x509_certificate(data)
            key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError):
        hint = (f"wrong or missing password in ${password_env}?"
                if path.suffix.lower() in (".pfx", ".p12") or b"ENCRYPTED" in data
                else "a PEM holding the private key and the certificate is needed")
        raise ConfigError(f"cannot read the certificate {path}: {hint}") from None
    if key is None or certificate is None:
        raise ConfigError(f"{path} must hold both the private key and the certificate")
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    return {
        "private_key": pem_key,
        "thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


# -- the token cache ------------------------------------------------------------------------


def persisted_cache(path: Path) -> msal.SerializableTokenCache:
    """The per-user cache: OS-encrypted when possible, else a 0600 file (said in is_encrypted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    persistence: Any
    try:
        persistence = msal_extensions.build_encrypted_persistence(str(path))
        persistence.save(persistence.load() if path.exists() else "{}")  # a trial round trip
    except (ImportError, RuntimeError, OSError, ValueError):
        # no libsecret/gi, no D-Bus session, no keychain access: a 0600 file instead
        persistence = msal_extensions.FilePersistence(str(path.with_suffix(".json")))
    cache: msal.SerializableTokenCache = msal_extensions.PersistedTokenCache(persistence)
    return cache


def http_session(verify: bool | str) -> requests.Session:
    """A requests Session whose ``verify`` the environment cannot override.

    requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE beat a Session's verify unless
    trust_env is off; corporate machines set them, so psbridge turns it off.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    return session


# -- tokens ---------------------------------------------------------------------------------


class Tokens:
    """Access tokens for one :class:`SignIn`, renewed as needed; thread-safe.

    ``on_device_code(message)`` shows the device-code instructions (the CLI prints them).
    """

    def __init__(self, sign_in: SignIn, *,
                 on_device_code: Callable[[str], None] | None = None) -> None:
        self.sign_in = sign_in
        self._on_device_code = on_device_code or (lambda message: print(message,
                                                                        file=sys.stderr))
        self._lock = threading.Lock()
        self._http = http_session(sign_in.verify)
        self._current: str | None = None
        self._expires = 0.0
        self._username: str | None = sign_in.username
        self._app: Any = None

    def __repr__(self) -> str:
        kind = "app-only" if self.sign_in.app_only else "delegated"
        return f"<Tokens {kind} tenant={self.sign_in.tenant!r} app={self.sign_in.app_id!r}>"

    @property
    def user(self) -> str | None:
        """The signed-in UPN (delegated) or the app id (app-only); never a secret."""
        if self.sign_in.app_only:
            return f"app {self.sign_in.app_id}"
        return self._username

    @property
    def anchor_mailbox(self) -> str:
        """X-AnchorMailbox: the signed-in user, or the tenant's system mailbox for an app."""
        if self._username and not self.sign_in.app_only:
            return f"UPN:{self._username}"
        return f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{self.sign_in.tenant}"

    def token(self, *, claims: str | None = None, rejected: str | None = None) -> str:
        """A valid access token. ``rejected``: the server refused this one (expired early,
        revoked): get another unless another thread already has; ``claims``: the claims
        challenge of a 401, to be satisfied by the new token."""
        with self._lock:
            fresh = self._current is not None and time.monotonic() < self._expires - _MARGIN
            if claims is None and fresh and (rejected is None or rejected != self._current):
                assert self._current is not None
                return self._current
            if rejected is not None:
                self._forget(rejected)
            result = self._acquire(claims)
            token = result.get("access_token")
            if not isinstance(token, str):
                raise refusal(result, self.sign_in.tenant)
            self._current = token
            self._expires = time.monotonic() + float(result.get("expires_in") or 300)
            return token

    def sign_out(self) -> int:
        """Remove this tenant's cached accounts and tokens; how many accounts were removed.

        App-only tokens are never written to disk: nothing to remove there."""
        if self.sign_in.app_only:
            self._current = None
            return 0
        with self._lock:
            app = self._application()
            accounts = app.get_accounts()
            for account in accounts:
                app.remove_account(account)
            self._current = None
            return len(accounts)

    # -- inside the lock

    def _application(self) -> Any:
        if self._app is not None:
            return self._app
        sign_in = self.sign_in
        options: dict[str, Any] = {
            "authority": sign_in.authority,
            "http_client": self._http,
            # the public cloud's discovery would reject a private or test authority
            "instance_discovery": sign_in.authority_host.rstrip("/") == AUTHORITY_HOST,
            "app_name": "psbridge",
        }
        try:
            if sign_in.app_only:
                self._app = msal.ConfidentialClientApplication(
                    sign_in.app_id, client_credential=self._credential(), **options)
            else:
                self._app = msal.PublicClientApplication(
                    sign_in.app_id, token_cache=persisted_cache(sign_in.cache_path), **options)
        except ValueError as exc:
            raise ConfigError(f"cannot use the authority {sign_in.authority}: {exc}") from exc
        except requests.RequestException as exc:
            raise _unreachable(sign_in.authority, exc) from None
        return self._app

    def _credential(self) -> str | dict[str, str]:
        if self.sign_in.certificate is not None:
            return certificate_credential(self.sign_in.certificate)
        name = self.sign_in.client_secret_env or CLIENT_SECRET_ENV
        secret = os.environ.get(name)
        if not secret:
            raise ConfigError(f"app-only sign-in with a client secret: set ${name} to the "
                              "app's secret (it is never taken from the command line)")
        return secret

    def _forget(self, rejected: str) -> None:
        """Drop a refused access token from the cache, so MSAL gets a new one."""
        if self._app is None:
            return
        cache = self._app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            if item.get("secret") == rejected:
                cache.remove_at(item)
        if self._current == rejected:
            self._current = None

    def _acquire(self, claims: str | None) -> Mapping[str, Any]:
        app = self._application()
        scopes = [self.sign_in.scope]
        try:
            if self.sign_in.app_only:
                result: Mapping[str, Any] = app.acquire_token_for_client(
                    scopes, claims_challenge=claims)
                return result
            accounts = app.get_accounts(username=self._username)
            if accounts:
                silent = app.acquire_token_silent_with_error(
                    scopes, accounts[0], claims_challenge=claims)
                if silent and "access_token" in silent:
                    self._username = accounts[0].get("username") or self._username
                    return dict(silent)
            result = self._prompt(app, scopes, claims)
        except requests.RequestException as exc:
            raise _unreachable(self.sign_in.authority, exc) from None
        user = (result.get("id_token_claims") or {}).get("preferred_username")
        if isinstance(user, str):
            self._username = user
        return result

    def _prompt(self, app: Any, scopes: list[str], claims: str | None) -> Mapping[str, Any]:
        if self.sign_in.interactive and _has_browser():
            result: Mapping[str, Any] = app.acquire_token_interactive(
                scopes, login_hint=self._username, claims_challenge=claims, timeout=300)
            return result
        if self.sign_in.interactive:
            self._on_device_code("No browser is available here: sign in with a device code.")
        flow = app.initiate_device_flow(scopes=scopes, claims_challenge=claims)
        if "user_code" not in flow:
            return dict(flow)
        self._on_device_code(str(flow["message"]))
        result = app.acquire_token_by_device_flow(flow, claims_challenge=claims)
        return result


def _has_browser() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def _unreachable(authority: str, exc: requests.RequestException) -> ConnectionFailed:
    reason = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "its TLS certificate is not trusted (use the right CA bundle)"
    return ConnectionFailed(f"cannot reach the sign-in service {authority}: {reason}")
