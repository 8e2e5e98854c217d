"""Profiles (TOML), settings precedence and where the password comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import (
    PASSWORD_VARIABLE,
    build_settings,
    config_path,
    load_profile,
    resolve_password,
)
from bridge.errors import ConfigError
from bridge.remote import ConnectionSettings

PROFILE = """
[profiles.onprem]
server = "mail.contoso.com"
user = "admin@contoso.com"
auth = "ntlm"
concurrency = 6
read_timeout = 90

[profiles.broken]
server = 42
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(PROFILE, encoding="utf-8")
    return path


def test_config_location_follows_platform_and_override() -> None:
    assert config_path({"PSBRIDGE_CONFIG": "/x/p.toml"}) == Path("/x/p.toml")
    windows = config_path({"APPDATA": r"C:\Users\a\AppData\Roaming"}, platform="win32")
    assert windows == Path(r"C:\Users\a\AppData\Roaming") / "psbridge" / "config.toml"
    assert config_path({"HOME": "/home/a"}, platform="linux") == Path(
        "/home/a/.config/psbridge/config.toml"
    )
    assert config_path({"XDG_CONFIG_HOME": "/cfg", "HOME": "/h"}, platform="linux") == Path(
        "/cfg/psbridge/config.toml"
    )


def test_profile_values_are_read_and_command_line_wins(config_file: Path) -> None:
    profile = load_profile("onprem", config_file)
    settings = build_settings({"concurrency": 2, "server": None, "https": None}, profile)
    assert settings.server == "mail.contoso.com"
    assert settings.username == "admin@contoso.com"
    assert settings.auth == "ntlm"
    assert settings.concurrency == 2  # the command line beats the profile
    assert settings.read_timeout == 90
    assert settings.url == "http://mail.contoso.com:80/PowerShell"
    assert settings.configuration == "Microsoft.Exchange"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("nope", PROFILE, "no profile 'nope' in {file} (profiles: broken, onprem)"),
        ("broken", PROFILE, "profile 'broken' in {file}: server must be str"),
        ("p", "[profiles.p]\nserver = 'x'\npassword = 'hunter2'\n", "holds a password"),
        ("p", "[profiles.p]\nservr = 'x'\n", "unknown key 'servr'"),
        ("p", "[profiles.p\n", "is not valid TOML"),
        ("p", "[profiles.p]\nhttps = 'yes'\n", "https must be bool"),
    ],
)
def test_bad_profiles_are_config_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_profile(name, file)
    assert message.format(file=file) in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="there is no config file at .*missing.toml"):
        load_profile("onprem", tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "no server given"),
        ({"server": "x", "auth": "basic"}, "basic authentication needs --https"),
        ({"server": "x", "read_timeout": 10, "operation_timeout": 20}, "must be below"),
        ({"server": "x", "auth": "magic"}, "unknown auth method 'magic'"),
        ({"server": "x", "auth": "certificate"}, "certificate authentication needs --https"),
        ({"server": "x", "auth": "certificate", "https": True}, "needs certificate_pem"),
        ({"server": "x", "port": 0}, "port 0 is not between 1 and 65535"),
        ({"server": "x", "operation_timeout": 0}, "operation timeout must be at least 1 s"),
        ({"server": "x", "connect_timeout": 0}, "connect timeout must be above 0"),
        ({"server": "x", "read_timeout": -1, "operation_timeout": -5}, "at least 1 s"),
        ({"server": "x", "https": True, "ca_bundle": "/no/such/ca.pem"}, "ca_bundle /no/such"),
    ],
)
def test_invalid_settings_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(options)


def test_retries_become_the_attempt_count() -> None:
    assert build_settings({"server": "x", "retries": 0}).retry.attempts == 1
    assert build_settings({"server": "x"}).retry.attempts == 5


def test_password_order_environment_then_keyring_then_prompt() -> None:
    settings = ConnectionSettings(server="x", username="admin@contoso.com")
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return "typed"

    assert (
        resolve_password(
            settings, environ={PASSWORD_VARIABLE: "from-env"}, prompt=prompt,
            keyring_lookup=lambda user: "from-keyring",
        )
        == "from-env"
    )  # fmt: skip
    assert (
        resolve_password(settings, environ={}, prompt=prompt, keyring_lookup=lambda u: "kr") == "kr"
    )
    assert resolve_password(settings, environ={}, prompt=prompt, keyring_lookup=lambda u: None) == (
        "typed"
    )
    assert prompts == ["Password for admin@contoso.com at x"]


def test_no_password_without_a_terminal_is_a_clear_error() -> None:
    settings = ConnectionSettings(server="x", username="admin@contoso.com")
    with pytest.raises(
        ConfigError, match="no password for admin@contoso.com: set PSBRIDGE_PASSWORD"
    ):
        resolve_password(settings, environ={}, prompt=None, keyring_lookup=lambda u: None)


def test_no_user_means_the_current_identity_and_no_password() -> None:
    settings = ConnectionSettings(server="x", auth="kerberos")
    assert resolve_password(settings, environ={PASSWORD_VARIABLE: "unused"}) is None


def test_settings_hold_no_password() -> None:
    settings = build_settings({"server": "x", "user": "u"})
    assert "password" not in repr(settings).lower()


def test_password_from_the_os_keyring() -> None:
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.store: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        keyring.set_password("psbridge", "admin@contoso.com", "from-the-keyring")
        settings = ConnectionSettings(server="x", username="admin@contoso.com")
        assert resolve_password(settings, environ={}) == "from-the-keyring"
        other = ConnectionSettings(server="x", username="someone@contoso.com")
        with pytest.raises(ConfigError, match="no password for someone@contoso.com"):
            resolve_password(other, environ={})
    finally:
        keyring.set_keyring(previous)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_profile_saved_by_notepad_as_utf8_bom_or_unicode_is_read(tmp_path: Path,
                                                                  encoding: str) -> None:
    path = tmp_path / "config.toml"
    text = PROFILE.replace("admin@contoso.com", "adm\u00efn@contoso.com")
    if encoding == "utf-16-le-bom":
        path.write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    elif encoding == "utf-16-be-bom":
        path.write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    else:
        path.write_text(text, encoding=encoding)
    assert load_profile("onprem", path)["user"] == "adm\u00efn@contoso.com"


def test_profile_in_another_encoding_says_save_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    data = PROFILE.replace("admin", "adm\u00efn").encode("cp1252")
    path.write_bytes(data)
    first_bad = data.index(b"\xef") + 1
    with pytest.raises(ConfigError) as caught:
        load_profile("onprem", path)
    assert str(caught.value) == (
        f"the config file {path} is not UTF-8 text (byte {first_bad}): "
        "save it as UTF-8 "
        "(in Notepad: Save As, Encoding UTF-8)")
