"""Helpers for the Exchange Online tests: a sandbox tenant, app certificates, signed-in sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.exo import ExoSource, SignIn, Tokens
from bridge.sandbox.exo_server import DEFAULT_ADMIN, ExoSandbox
from bridge.sandbox.tls import write_app_certificate

APP_ID = "6b2b7f3e-3b7a-4d2c-9a51-5f1f0a8f2c01"


@contextmanager
def exo_sandbox(**options: Any) -> Iterator[ExoSandbox]:
    """An emulated tenant (30 mailboxes, seed 1 unless told) that must see no internal error."""
    options.setdefault("mailboxes", 30)
    options.setdefault("seed", 1)
    with ExoSandbox(**options) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


#: an app certificate file for --certificate-file, and its PEM to register
make_certificate = write_app_certificate


class RecordingTokens(Tokens):
    """Real MSAL tokens, each one remembered so a test can look for it where it must not be."""

    def __init__(self, sign_in: SignIn, **options: Any) -> None:
        super().__init__(sign_in, **options)
        self.issued: list[str] = []

    def token(self, *, claims: str | None = None, rejected: str | None = None) -> str:
        value = super().token(claims=claims, rejected=rejected)
        if value not in self.issued:
            self.issued.append(value)
        return value


def approver(sandbox: ExoSandbox, upn: str = DEFAULT_ADMIN) -> Callable[[str], None]:
    """A device-code callback that does what the user does in the browser: approve the code."""
    shown: list[str] = []

    def on_device_code(message: str) -> None:
        shown.append(message)
        for code in sandbox.entra.pending_user_codes():
            sandbox.entra.approve_device_code(code, upn)

    on_device_code.shown = shown  # type: ignore[attr-defined]
    return on_device_code


def sign_in_for(sandbox: ExoSandbox, cache_dir: Path, **options: Any) -> SignIn:
    """A SignIn aimed at the sandbox's Entra, trusting its CA, caching under ``cache_dir``."""
    host = sandbox.authority.rsplit("/", 1)[0]
    return SignIn(tenant=sandbox.tenant, authority_host=host, verify=str(sandbox.ca_file),
                  cache_dir=cache_dir, **options)


def source_for(sandbox: ExoSandbox, tokens: Tokens, **options: Any) -> ExoSource:
    """An ExoSource on the sandbox's REST endpoint with a recording, instant sleep."""
    slept: list[float] = []
    options.setdefault("sleep", slept.append)
    source = ExoSource(tokens, sandbox.tenant, endpoint=sandbox.endpoint,
                       verify=str(sandbox.ca_file), **options)
    source.slept = slept  # type: ignore[attr-defined]
    return source


def delegated(sandbox: ExoSandbox, cache_dir: Path, **options: Any) -> RecordingTokens:
    """Device-code tokens for the sandbox's admin, the code approved automatically."""
    return RecordingTokens(sign_in_for(sandbox, cache_dir), on_device_code=approver(sandbox),
                           **options)
