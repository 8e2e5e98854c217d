"""Signing in to the emulated Entra with the real msal: every kind, the cache, the refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bridge.commands import Command
from bridge.errors import CommandNotFound, ConfigError, ExitCode, SignInRefused
from bridge.exo import CERTIFICATE_PASSWORD_ENV, CLIENT_SECRET_ENV, Tokens
from bridge.exo.client import ROLE_HINT
from bridge.exo.signin import certificate_credential
from bridge.sandbox.exo_server import DEFAULT_ADMIN
from tests.exo_support import (
    APP_ID,
    approver,
    delegated,
    exo_sandbox,
    make_certificate,
    sign_in_for,
    source_for,
)

MAILBOXES = Command("Get-Mailbox", {"ResultSize": "Unlimited"})


def test_device_code_shows_the_message_then_a_rerun_uses_the_cache(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        tokens = delegated(exo, tmp_path)
        source = source_for(exo, tokens)
        assert len(source.run(MAILBOXES).rows) == 30
        shown = tokens._on_device_code.shown  # type: ignore[attr-defined]
        assert len(shown) == 1 and "microsoft.com/devicelogin" in shown[0]
        assert source.user == DEFAULT_ADMIN
        cache_files = [p for p in tmp_path.iterdir() if not p.name.endswith(".lockfile")]
        assert cache_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600
                                   for p in cache_files)

        def no_prompt(message: str) -> None:
            raise AssertionError(f"prompted again: {message}")

        again = Tokens(sign_in_for(exo, tmp_path), on_device_code=no_prompt)
        assert again.token()  # from the cache, as a rerun the same day
        assert again.user == DEFAULT_ADMIN
        assert exo.entra.requests["oauth2/v2.0/devicecode"] == 1


def test_sign_out_clears_the_cache(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        tokens = delegated(exo, tmp_path)
        tokens.token()
        assert tokens.sign_out() == 1
        fresh = delegated(exo, tmp_path)
        fresh.token()
        assert len(fresh._on_device_code.shown) == 1  # type: ignore[attr-defined]
        assert exo.entra.requests["oauth2/v2.0/devicecode"] == 2


def test_interactive_without_a_browser_falls_back_to_the_device_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.exo.signin._has_browser", lambda: False)
    with exo_sandbox() as exo:
        on_code = approver(exo)
        tokens = Tokens(sign_in_for(exo, tmp_path, interactive=True), on_device_code=on_code)
        assert tokens.token()
        assert on_code.shown[0] == ("No browser is available here: sign in with a device "  # type: ignore[attr-defined]
                                    "code.")


@pytest.mark.parametrize("kind", ["pem", "pfx"])
def test_app_only_with_a_certificate(kind: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    password = "pfx-Passw0rd" if kind == "pfx" else None
    path, public = make_certificate(tmp_path, pfx_password=password)
    if password:
        monkeypatch.setenv(CERTIFICATE_PASSWORD_ENV, password)
    with exo_sandbox() as exo:
        exo.entra.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        tokens = Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID, certificate=path))
        source = source_for(exo, tokens)
        assert len(source.run(MAILBOXES).rows) == 30
        assert source.user == f"app {APP_ID}"
        assert not list(tmp_path.glob("exo-token-cache*"))  # app tokens stay in memory


def test_a_pfx_with_a_wrong_password_is_one_clear_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_certificate(tmp_path, pfx_password="right")
    monkeypatch.setenv(CERTIFICATE_PASSWORD_ENV, "wrong")
    with pytest.raises(ConfigError) as caught:
        certificate_credential(path)
    assert str(caught.value) == (f"cannot read the certificate {path}: wrong or missing "
                                 f"password in ${CERTIFICATE_PASSWORD_ENV}?")


def test_app_only_with_a_client_secret_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLIENT_SECRET_ENV, "s3cret-value")
    with exo_sandbox() as exo:
        exo.entra.register_app(APP_ID, secret="s3cret-value", roles=["Global Reader"])
        tokens = Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID,
                                    client_secret_env=CLIENT_SECRET_ENV))
        assert len(source_for(exo, tokens).run(MAILBOXES).rows) == 30
        assert "s3cret" not in repr(tokens)
        monkeypatch.setenv(CLIENT_SECRET_ENV, "wrong")
        with pytest.raises(SignInRefused) as caught:
            Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID,
                               client_secret_env=CLIENT_SECRET_ENV)).token()
        assert caught.value.code == "AADSTS7000215"


def test_consent_missing_is_one_line_with_its_own_exit_code(tmp_path: Path) -> None:
    path, public = make_certificate(tmp_path)
    with exo_sandbox() as exo:
        exo.entra.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"],
                               consented=False)
        with pytest.raises(SignInRefused) as caught:
            Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID, certificate=path)).token()
    assert caught.value.exit_code == ExitCode.SIGN_IN_REFUSED == 10
    assert str(caught.value) == (
        f"sign-in to {exo.tenant} refused (AADSTS65001): consent missing: the app may not "
        "call Exchange Online in this tenant; fix: an administrator grants admin consent to "
        "the app for Office 365 Exchange Online (Entra admin center > Enterprise applications "
        "> the app > Permissions)")


def test_conditional_access_is_named(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        exo.entra.register_user("blocked@contoso.onmicrosoft.com",
                                blocked_by_conditional_access=True)
        tokens = Tokens(sign_in_for(exo, tmp_path),
                        on_device_code=approver(exo, "blocked@contoso.onmicrosoft.com"))
        with pytest.raises(SignInRefused, match=r"\(AADSTS53003\): blocked by Conditional "
                           r"Access; fix: sign in from a device or place the policy allows"):
            tokens.token()


def test_an_app_without_an_exchange_role_is_told_which_role_to_assign(tmp_path: Path) -> None:
    path, public = make_certificate(tmp_path)
    with exo_sandbox() as exo:
        exo.entra.register_app(APP_ID, certificate_pem=public, roles=[])
        source = source_for(exo, Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID,
                                                    certificate=path)))
        with pytest.raises(CommandNotFound) as caught:
            source.run(MAILBOXES)
    assert str(caught.value).endswith(ROLE_HINT)
    assert "View-Only Organization Management" in ROLE_HINT


def test_the_environment_ca_bundle_does_not_override_the_sandbox_ca(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    with exo_sandbox() as exo:
        assert len(source_for(exo, delegated(exo, tmp_path)).run(MAILBOXES).rows) == 30
    assert os.environ["REQUESTS_CA_BUNDLE"] == str(bogus)
