"""A certificate trusted but issued for other names: say so, and which names it holds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bridge.errors import ConnectionFailed
from bridge.remote import ConnectionSettings, RetryPolicy, Session
from bridge.sandbox.server import Sandbox


def _loopback_alias() -> str:
    """A name of this machine that reaches 127.0.0.1 but is not on the sandbox's
    certificate (which holds localhost and 127.0.0.1)."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if address != "127.0.0.1" or name == "localhost":
        pytest.skip(f"this machine's name {name!r} does not reach 127.0.0.1")
    return name


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=3, seed=5, https=True) as sandbox:
        yield sandbox


def test_a_host_name_the_certificate_does_not_hold_is_named(tls_sandbox: Sandbox) -> None:
    alias = _loopback_alias()
    settings = ConnectionSettings(
        server=alias, port=tls_sandbox.port, https=True, auth="basic",
        username=tls_sandbox.username, ca_bundle=str(tls_sandbox.ca_file),
        retry=RetryPolicy(attempts=1))
    with pytest.raises(ConnectionFailed) as caught:
        Session(settings, tls_sandbox.password).open()
    assert str(caught.value) == (
        f"the TLS certificate of {settings.url} is not for the name {alias}: it holds "
        "localhost, 127.0.0.1. Connect with a name the certificate holds (--server), or have "
        "the certificate reissued with this name.")
