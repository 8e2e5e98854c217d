"""Connection profiles (TOML) and the password, so an admin's rerun is one short command.

The config file is ``%APPDATA%\\psbridge\\config.toml`` on Windows and
``~/.config/psbridge/config.toml`` elsewhere (``$XDG_CONFIG_HOME`` respected); the
``PSBRIDGE_CONFIG`` environment variable names another file. A profile::

    [profiles.onprem]
    server = "mail.contoso.com"
    user = "admin@contoso.com"
    auth = "negotiate"        # kerberos, ntlm, basic (https only), credssp, certificate
    https = false
    concurrency = 3

Passwords never live in the file: they come from ``PSBRIDGE_PASSWORD``, the OS keyring
(optional ``keyring`` extra; service ``psbridge``, user name as the key) or a prompt.
"""

from __future__ import annotations

import codecs
import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from bridge.errors import ConfigError
from bridge.remote import ConnectionSettings, RetryPolicy

PASSWORD_VARIABLE = "PSBRIDGE_PASSWORD"
CONFIG_VARIABLE = "PSBRIDGE_CONFIG"
KEYRING_SERVICE = "psbridge"

#: Profile keys and their TOML types; the same names as the command-line options.
PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "server": (str,),
    "port": (int,),
    "https": (bool,),
    "path": (str,),
    "configuration": (str,),
    "auth": (str,),
    "user": (str,),
    "ca_bundle": (str,),
    "verify": (bool,),
    "concurrency": (int,),
    "connect_timeout": (int, float),
    "read_timeout": (int, float),
    "operation_timeout": (int,),
    "retries": (int,),
    "kerberos_service": (str,),
    "certificate_pem": (str,),
    "certificate_key_pem": (str,),
}


def config_path(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where psbridge reads profiles from (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_VARIABLE):
        return Path(env[CONFIG_VARIABLE]).expanduser()
    if (platform or sys.platform) == "win32" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "psbridge" / "config.toml"
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "psbridge" / "config.toml"


def _config_text(file: Path, data: bytes) -> str:
    """The config file's text. TOML is UTF-8, but Notepad saves "UTF-8 with BOM" or
    "Unicode" (UTF-16 with a BOM) too: both are read; anything else is named plainly."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the config file {file} is damaged UTF-16 text: save it "
                              "as UTF-8 (in Notepad: Save As, Encoding UTF-8)") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the config file {file} is not UTF-8 text (byte {exc.start + 1}): save it as "
            "UTF-8 (in Notepad: Save As, Encoding UTF-8)"
        ) from exc


def load_profile(name: str, path: Path | None = None) -> dict[str, object]:
    """The profile ``name`` from the config file, checked key by key."""
    file = path or config_path()
    try:
        document = tomllib.loads(_config_text(file, file.read_bytes()))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"profile {name!r} asked for, but there is no config file at {file} "
            f"(set {CONFIG_VARIABLE} to use another file)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {file} is not valid TOML: {exc}") from exc
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict) or name not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else ""
        raise ConfigError(
            f"no profile {name!r} in {file}" + (f" (profiles: {known})" if known else "")
        )
    profile = profiles[name]
    if not isinstance(profile, dict):
        raise ConfigError(f"profile {name!r} in {file} is not a table")
    for key, value in profile.items():
        if key == "password":
            raise ConfigError(
                f"profile {name!r} in {file} holds a password: remove it and use "
                f"{PASSWORD_VARIABLE}, the keyring or the prompt"
            )
        if key not in PROFILE_KEYS:
            raise ConfigError(
                f"profile {name!r} in {file}: unknown key {key!r} "
                f"(known: {', '.join(PROFILE_KEYS)})"
            )
        types = PROFILE_KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"profile {name!r} in {file}: {key} must be {wanted}")
    return dict(profile)


def build_settings(
    options: Mapping[str, object | None], profile: Mapping[str, object] | None = None
) -> ConnectionSettings:
    """Connection settings from command-line values over profile values over defaults.

    ``options`` uses the profile key names; a None value means "not given".
    """
    merged: dict[str, object] = dict(profile or {})
    merged.update({key: value for key, value in options.items() if value is not None})
    unknown = set(merged) - set(PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"unknown connection setting(s): {', '.join(sorted(unknown))}")
    server = merged.pop("server", None)
    if not isinstance(server, str) or not server:
        raise ConfigError("no server given: use --server NAME or --profile NAME")
    kwargs: dict[str, object] = {"server": server}
    if "user" in merged:
        kwargs["username"] = merged.pop("user")
    retries = merged.pop("retries", None)
    for key in ("ca_bundle", "certificate_pem", "certificate_key_pem"):
        # checked here: requests would fail later with a bare OSError mid-handshake
        if key in merged and not Path(str(merged[key])).expanduser().is_file():
            raise ConfigError(f"{key} {merged[key]} is not a file")
    kwargs.update(merged)
    settings = ConnectionSettings(**kwargs)  # type: ignore[arg-type]  # keys checked above
    if isinstance(retries, int):
        if retries < 0:
            raise ConfigError("retries must be 0 or more")
        settings = replace(settings, retry=replace(RetryPolicy(), attempts=retries + 1))
    return settings


def _keyring() -> ModuleType | None:
    try:
        return importlib.import_module("keyring")
    except ImportError:
        return None


def keyring_password(username: str) -> str | None:
    """The password stored with ``keyring set psbridge USER``, if the extra is installed."""
    module = _keyring()
    if module is None:
        return None
    errors_module = importlib.import_module("keyring.errors")
    try:
        value = module.get_password(KEYRING_SERVICE, username)
    except errors_module.KeyringError:
        return None
    return value if isinstance(value, str) else None


def resolve_password(
    settings: ConnectionSettings,
    *,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
    keyring_lookup: Callable[[str], str | None] = keyring_password,
) -> str | None:
    """The password for ``settings.username``: environment, keyring, then prompt.

    None when no user is given (the current Windows/Kerberos identity is used) or for
    certificate authentication. Never taken from the command line.
    """
    if settings.username is None or settings.auth == "certificate":
        if settings.auth in ("basic", "credssp") and settings.username is None:
            raise ConfigError(f"{settings.auth} authentication needs --user")
        return None
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_VARIABLE):
        return env[PASSWORD_VARIABLE]
    stored = keyring_lookup(settings.username)
    if stored:
        return stored
    if prompt is None:
        raise ConfigError(
            f"no password for {settings.username}: set {PASSWORD_VARIABLE}, store it with "
            f"'keyring set {KEYRING_SERVICE} {settings.username}', or run interactively"
        )
    return prompt(f"Password for {settings.username} at {settings.server}")
