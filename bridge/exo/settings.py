"""Where and how to reach Exchange Online, from a profile and command-line values.

A profile (bridge.config) may hold::

    [profiles.contoso-exo]
    tenant = "contoso.onmicrosoft.com"
    app_id = "00000000-0000-0000-0000-000000000000"     # app-only, or your own public app
    certificate = "~/.psbridge/contoso-app.pfx"          # password: $PSBRIDGE_CERTIFICATE_PASSWORD

``endpoint`` and ``authority`` name a non-default Exchange Online and sign-in service (a
sovereign cloud, the sandbox); ``ca_bundle`` the CA that issued their certificates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bridge.errors import ConfigError
from bridge.exo.client import EXO_ENDPOINT
from bridge.exo.signin import AUTHORITY_HOST, EXO_MODULE_APP_ID, SignIn

#: profile keys for Exchange Online, and their TOML types (bridge.config checks them)
EXO_PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "tenant": (str,),
    "app_id": (str,),
    "certificate": (str,),
    "client_secret_env": (str,),
    "endpoint": (str,),
    "authority": (str,),
}


@dataclass(frozen=True)
class ExoSettings:
    """A sign-in and the endpoint to send cmdlets to."""

    sign_in: SignIn
    endpoint: str = EXO_ENDPOINT
    verify: bool | str = True
    concurrency: int = 3
    retries: int = 5


def _https(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{name} must be an https:// URL, not {url!r}")
    return url.rstrip("/")


def exo_settings(values: Mapping[str, object | None],
                 profile: Mapping[str, object] | None = None) -> ExoSettings:
    """Exchange Online settings from command-line values over profile values over defaults.

    Keys as in :data:`EXO_PROFILE_KEYS`, plus ``ca_bundle``, ``verify``, ``concurrency``,
    ``retries``, ``interactive``, ``user`` and ``cache_dir``; None means "not given".
    """
    merged: dict[str, object] = dict(profile or {})
    merged.update({key: value for key, value in values.items() if value is not None})
    tenant = merged.get("tenant")
    if not isinstance(tenant, str) or not tenant.strip():
        raise ConfigError("no tenant given: use --tenant contoso.onmicrosoft.com (or its id)")
    certificate = merged.get("certificate")
    secret_env = merged.get("client_secret_env")
    if certificate and secret_env:
        raise ConfigError("use a certificate or a client secret for app-only sign-in, not both")
    app_id = str(merged.get("app_id") or EXO_MODULE_APP_ID)
    if (certificate or secret_env) and app_id == EXO_MODULE_APP_ID:
        raise ConfigError("app-only sign-in needs the app's id: use --app-id")
    certificate_path = Path(str(certificate)).expanduser() if certificate else None
    if certificate_path is not None and not certificate_path.is_file():
        raise ConfigError(f"certificate {certificate_path} is not a file")
    ca_bundle = merged.get("ca_bundle")
    verify: bool | str = str(Path(str(ca_bundle)).expanduser()) if ca_bundle else bool(
        merged.get("verify", True))
    if isinstance(verify, str) and not Path(verify).is_file():
        raise ConfigError(f"ca_bundle {verify} is not a file")
    cache_dir = merged.get("cache_dir")
    sign_in = SignIn(
        tenant=tenant.strip(), app_id=app_id, certificate=certificate_path,
        client_secret_env=str(secret_env) if secret_env else None,
        interactive=bool(merged.get("interactive", False)),
        username=str(merged["user"]) if merged.get("user") else None,
        authority_host=_https("authority", str(merged.get("authority") or AUTHORITY_HOST)),
        verify=verify, cache_dir=Path(str(cache_dir)) if cache_dir else None,
    )
    concurrency = merged.get("concurrency", 3)
    retries = merged.get("retries", 5)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("concurrency must be 1 or more")
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError("retries must be 0 or more")
    return ExoSettings(sign_in=sign_in,
                       endpoint=_https("endpoint", str(merged.get("endpoint") or EXO_ENDPOINT)),
                       verify=verify, concurrency=concurrency, retries=retries)
