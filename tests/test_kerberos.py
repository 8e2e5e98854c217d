"""Kerberos sign-in, for real: psbridge against the sandbox, tickets from an MIT KDC on
127.0.0.1 (tests/kdc.py), every failure an admin meets as one line and an exit code.

The live tests are skipped, with the reason, where the KDC programs or the kerberos
extra (gssapi, krb5) are missing; the message mapping is tested everywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner, Result

from bridge import kerberos
from bridge.cli import cli
from bridge.errors import AuthenticationFailed, ConfigError, ConnectionFailed
from bridge.remote import Command, ConnectionSettings, Session
from bridge.sandbox import Sandbox
from tests import kdc

AS_OF = "2025-06-16T08:20:00"


# --------------------------------------------------------------------------- the realm


@dataclass
class Lab:
    """The realm, and the credential caches and configurations the tests sign in with."""

    realm: kdc.Realm
    ticket: Path  # kinit's ticket for the user
    tgt_only: Path  # a copy of it never used: no service ticket cached in it
    expiring: Path  # a one-second ticket: expired by the time a test uses it
    expires_at: float
    empty: Path  # a cache with no ticket at all
    no_kdc: Path  # a krb5.conf whose KDC is a port nothing listens on


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One KDC for the session (about a second to start); its environment is set only by
    :func:`kerberos_env`, per test, so no other test or child process inherits it."""
    reason = kdc.missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("realm")
    realm = kdc.Realm(folder, services=("HTTP/localhost", "WSMAN/localhost")).start()
    try:
        lab = Lab(realm, folder / "ticket", folder / "tgt-only", folder / "expiring", 0.0,
                  folder / "empty", folder / "no-kdc.conf")
        for cache, lifetime in ((lab.ticket, None), (lab.expiring, "1s")):
            done = realm.kinit(cache, lifetime=lifetime)
            assert done.returncode == 0, done.stderr
        shutil.copyfile(lab.ticket, lab.tgt_only)
        lab.expires_at = time.time() + 1.0
        with socket.socket() as unused:  # a port nothing listens on once closed
            unused.bind(("127.0.0.1", 0))
            dead = unused.getsockname()[1]
        lab.no_kdc.write_text(
            (folder / "krb5.conf").read_text(encoding="utf-8").replace(
                f"127.0.0.1:{realm.port}", f"127.0.0.1:{dead}"),
            encoding="utf-8")
        yield lab
    finally:
        realm.stop()


@pytest.fixture
def kerberos_env(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """This test's process environment points at the realm, with kinit's ticket."""
    for name, value in lab.realm.environment(lab.ticket).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PSBRIDGE_PASSWORD", raising=False)
    monkeypatch.delenv("PSBRIDGE_CONFIG", raising=False)
    return lab


@pytest.fixture(scope="module")
def endpoint(lab: Lab) -> Iterator[Sandbox]:
    """The sample export's organisation; its account is the realm's user (one password
    for Kerberos and NTLM), so both sign-ins see the same mailboxes."""
    with Sandbox(mailboxes=25, seed=1, username=lab.realm.upn,
                 password=lab.realm.password) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


def _mobile(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["mobile", *args])


def _live(sandbox: Sandbox, *extra: str, server: str = "localhost") -> list[str]:
    return ["--server", server, "--port", str(sandbox.port), "--http", "-q",
            "--as-of", AS_OF, "--no-history", "--retries", "0", *extra]


def _devices(path: Path) -> list[tuple[object, ...]]:
    return list(openpyxl.load_workbook(path)["Devices"].iter_rows(values_only=True))


# --------------------------------------------------------------------------- signed in


def test_the_realm_is_only_in_the_environment_of_tests_that_ask(lab: Lab) -> None:
    """The session's KDC leaves the process environment alone: other tests, and the child
    processes they start (pwsh, a sandbox process), see none of its KRB5_* variables."""
    pointing_at_realm = {name for name, value in os.environ.items()
                         if str(lab.realm.folder) in value}
    assert pointing_at_realm == set()


def test_mobile_by_kerberos_gives_the_rows_ntlm_gives(kerberos_env: Lab, endpoint: Sandbox,
                                                       tmp_path: Path) -> None:
    """kinit's ticket and no --user, as on a domain-joined machine: --auth kerberos and
    the default negotiate both sign in by Kerberos (no NTLM token on the wire) and give
    the report an NTLM sign-in gives."""
    reports: dict[str, Path] = {}
    for auth in ("kerberos", "negotiate", "ntlm"):
        reports[auth] = tmp_path / f"{auth}.xlsx"
        endpoint.sign_ins.clear()
        extra = (["--user", endpoint.username] if auth == "ntlm" else [])
        result = _mobile(*_live(endpoint, "--auth", auth, *extra), "-o", str(reports[auth]),
                         env={"PSBRIDGE_PASSWORD": endpoint.password} if extra else None)
        assert result.exit_code == 0, result.output
        mechanisms = {(s.mechanism, s.principal, s.ntlm_tokens > 0) for s in endpoint.sign_ins}
        if auth == "ntlm":
            assert mechanisms == {("ntlm", endpoint.username, True)}
        else:
            assert mechanisms == {("kerberos", kerberos_env.realm.user_principal, False)}
    rows = _devices(reports["ntlm"])
    assert len(rows) > 1
    assert _devices(reports["kerberos"]) == _devices(reports["negotiate"]) == rows


def test_a_library_session_signs_in_with_the_ticket(kerberos_env: Lab,
                                                    endpoint: Sandbox) -> None:
    """remote.Session, as library users call it: no user, no password, auth kerberos."""
    settings = ConnectionSettings(server="localhost", port=endpoint.port, auth="kerberos")
    endpoint.sign_ins.clear()
    with Session(settings, None) as session:
        mailboxes = session.run(Command("Get-Mailbox", {"ResultSize": "Unlimited"})).rows
    assert len(mailboxes) == 25
    assert [(s.mechanism, s.ntlm_tokens) for s in endpoint.sign_ins] == [("kerberos", 0)]


def test_user_and_password_get_their_own_ticket(kerberos_env: Lab, endpoint: Sandbox,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--user (the UPN in lower case, as Exchange shows it) with a password and no ticket:
    psbridge asks the KDC itself, and leaves the user's credential cache alone."""
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{kerberos_env.empty}")
    endpoint.sign_ins.clear()
    result = _mobile(*_live(endpoint, "--auth", "kerberos", "--user", endpoint.username),
                     "-o", str(tmp_path / "r.xlsx"), env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    assert {s.mechanism for s in endpoint.sign_ins} == {"kerberos"}
    assert not kerberos_env.empty.exists()


def test_negotiate_falls_back_to_ntlm_where_kerberos_cannot(
        kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path) -> None:
    """An IP address has no SPN: negotiate signs in by NTLM with the password, where
    --auth kerberos fails (below)."""
    endpoint.sign_ins.clear()
    result = _mobile(*_live(endpoint, "--user", endpoint.username, server="127.0.0.1"),
                     "-o", str(tmp_path / "r.xlsx"), env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    assert {s.mechanism for s in endpoint.sign_ins} == {"ntlm"}


def _profile(tmp_path: Path, service: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.lab]\nkerberos_service = "{service}"\n', encoding="utf-8")
    return {"PSBRIDGE_CONFIG": str(config)}


def test_the_spn_service_comes_from_the_profile(kerberos_env: Lab, endpoint: Sandbox,
                                                tmp_path: Path) -> None:
    """kerberos_service picks the SPN's service: WSMAN/localhost is in the keytab too."""
    endpoint.sign_ins.clear()
    result = _mobile(*_live(endpoint, "--auth", "kerberos", "--profile", "lab"),
                     "-o", str(tmp_path / "r.xlsx"), env=_profile(tmp_path, "WSMAN"))
    assert result.exit_code == 0, result.output
    assert {s.mechanism for s in endpoint.sign_ins} == {"kerberos"}


# --------------------------------------------------------------------------- failures


def _alias() -> str | None:
    """A name of this machine other than localhost that resolves to 127.0.0.1 (Debian's
    /etc/hosts gives the host name), standing in for a DNS alias of the server."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return None
    return name if address == "127.0.0.1" and name.lower() != "localhost" else None


def _fails(endpoint: Sandbox, tmp_path: Path, *args: str, server: str = "localhost",
           env: dict[str, str] | None = None) -> Result:
    result = _mobile(*_live(endpoint, *args, server=server), "-o", str(tmp_path / "r.xlsx"),
                     env=env)
    assert not (tmp_path / "r.xlsx").exists()
    assert result.stdout == ""
    return result


@pytest.fixture
def no_ntlm_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox publishes its NTLM users in NTLM_USER_FILE, which pyspnego's NTLM client
    would also sign in with when negotiate falls back: a machine's client has no such file."""
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)


@pytest.mark.usefixtures("no_ntlm_fallback")
@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_no_ticket(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path, auth: str,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{kerberos_env.empty}")
    result = _fails(endpoint, tmp_path, "--auth", auth)
    assert (result.exit_code, result.stderr) == (6, (
        f"Error: no Kerberos ticket for the current identity in FILE:{kerberos_env.empty}: "
        "get one with kinit user@REALM, or give --user (the password from "
        "PSBRIDGE_PASSWORD or the prompt).\n"))


@pytest.mark.usefixtures("no_ntlm_fallback")
@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_expired_ticket(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path, auth: str,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    time.sleep(max(0.0, kerberos_env.expires_at - time.time() + 0.2))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{kerberos_env.expiring}")
    result = _fails(endpoint, tmp_path, "--auth", auth)
    assert (result.exit_code, result.stderr) == (6, (
        "Error: the Kerberos ticket of the current identity has expired: renew it with "
        "kinit, or give --user (the password from PSBRIDGE_PASSWORD or the prompt).\n"))


def test_wrong_password(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path) -> None:
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", "--user", endpoint.username,
                    env={"PSBRIDGE_PASSWORD": "not-the-password"})
    assert (result.exit_code, result.stderr) == (6, (
        f"Error: the Kerberos KDC refused the password of {endpoint.username}: check the "
        "password (PSBRIDGE_PASSWORD, the keyring or the prompt).\n"))


@pytest.mark.parametrize("user", ["nobody@contoso.com", "CONTOSO\\admin"])
def test_unknown_principal(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path,
                           user: str) -> None:
    """A user the KDC lacks, or the NetBIOS form, which Kerberos cannot use."""
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", "--user", user,
                    env={"PSBRIDGE_PASSWORD": "whatever"})
    assert (result.exit_code, result.stderr) == (6, (
        f"Error: the Kerberos KDC does not know the user {user}: check --user "
        "(for Kerberos, user@REALM, e.g. admin@CONTOSO.COM).\n"))


@pytest.mark.parametrize("with_password", [False, True], ids=["ticket", "password"])
def test_kdc_unreachable(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path,
                         with_password: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a ticket (the service ticket is asked for) or a password (the first ticket
    is): a KDC that does not answer is a connection failure, exit 5."""
    monkeypatch.setenv("KRB5_CONFIG", str(kerberos_env.no_kdc))
    cache = tmp_path / "ccache"  # a cache holding a service ticket needs no KDC
    if not with_password:
        shutil.copyfile(kerberos_env.tgt_only, cache)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{cache}")
    extra = ["--user", endpoint.username] if with_password else []
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", *extra,
                    env={"PSBRIDGE_PASSWORD": endpoint.password} if with_password else None)
    assert (result.exit_code, result.stderr) == (5, (
        "Error: cannot reach a Kerberos KDC for realm CONTOSO.COM: check that a domain "
        "controller answers on port 88 from here (the realm's kdc entries in krb5.conf, "
        "or DNS).\n"))


def test_a_realm_krb5_conf_does_not_know(kerberos_env: Lab, endpoint: Sandbox,
                                         tmp_path: Path) -> None:
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", "--user", "admin@fabrikam.com",
                    env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert (result.exit_code, result.stderr) == (8, (
        "Error: Kerberos knows no KDC for the realm FABRIKAM.COM: name the realm's KDC in "
        "krb5.conf (or turn on dns_lookup_kdc), and give --user as user@REALM.\n"))


def test_an_ip_address_has_no_spn(kerberos_env: Lab, endpoint: Sandbox,
                                  tmp_path: Path) -> None:
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", server="127.0.0.1")
    assert (result.exit_code, result.stderr) == (6, (
        "Error: Kerberos cannot sign in to 127.0.0.1: it is an IP address, and the KDC has "
        "no service principal HTTP/127.0.0.1 (server not found in Kerberos database). Use "
        "the server's real name with --server (the host name of its HTTP SPN).\n"))


@pytest.mark.parametrize("service", ["HTTP", "CIFS"])
def test_a_name_without_spn(kerberos_env: Lab, endpoint: Sandbox, tmp_path: Path,
                            service: str) -> None:
    """An alias (here the host name, which resolves to 127.0.0.1 like localhost), or
    kerberos_service naming a service the server has no SPN for."""
    server = _alias() if service == "HTTP" else "localhost"
    if server is None:
        pytest.skip("no name of this machine but localhost resolves to 127.0.0.1")
    result = _fails(endpoint, tmp_path, "--auth", "kerberos", "--profile", "lab",
                    server=server, env=_profile(tmp_path, service))
    assert (result.exit_code, result.stderr) == (6, (
        f"Error: Kerberos cannot sign in to {server}: the KDC has no service principal "
        f"{service}/{server} (server not found in Kerberos database); the name may be a DNS "
        "alias (CNAME) or a load-balanced name with no SPN. Use the server's real name with "
        "--server, or set kerberos_service if its SPN names another service.\n"))


# --------------------------------------------------------------------------- the mapping


def _chained(*texts: str) -> Exception:
    """An exception whose cause chain carries ``texts``, outermost first."""
    error: Exception | None = None
    for text in reversed(texts):
        outer = RuntimeError(text)
        outer.__cause__ = error
        error = outer
    assert error is not None
    return error


@pytest.mark.parametrize(("texts", "kind", "line"), [
    (("SpnegoError (1): SpnegoError (4294967295): Major (851968): Unspecified GSS failure.  "
      "Minor code may provide more information, Minor (2529638919): Server "
      "HTTP/mail@CONTOSO.COM not found in Kerberos database, Context: Processing security "
      "token, Context: Unable to negotiate common mechanism",),
     AuthenticationFailed, "the KDC has no service principal HTTP/mail"),
    (("Cannot find KDC for realm \"contoso.com\" -1765328230",), ConfigError,
     "Kerberos knows no KDC for the realm contoso.com:"),
    (("SpnegoError (4294967295): Minor (2529638949): Clock skew too great",),
     AuthenticationFailed, "differ by more than 5 minutes"),
    (("outer", "Preauthentication failed -1765328360"), AuthenticationFailed,
     "refused the password of admin@CONTOSO.COM"),
    (("Cannot contact any KDC for requested realm -1765328228",), ConnectionFailed,
     "cannot reach a Kerberos KDC: check"),
])
def test_kerberos_texts_name_the_failure(texts: tuple[str, ...], kind: type[Exception],
                                         line: str) -> None:
    failure = kerberos.sign_in_failure(_chained(*texts), server="mail", service="HTTP",
                                       username="admin@CONTOSO.COM")
    assert isinstance(failure, kind)
    assert line in str(failure)


def test_other_failures_are_left_to_the_caller() -> None:
    text = ("SpnegoError (7): No username or password was specified and the credential "
            "cache did not exist or contained no credentials")
    assert kerberos.sign_in_failure(RuntimeError(text), server="mail", service="HTTP",
                                    username=None) is None


@pytest.mark.parametrize(("given", "principal"), [
    ("admin@contoso.com", "admin@CONTOSO.COM"),
    ("admin@CONTOSO.COM", "admin@CONTOSO.COM"),
    ("CONTOSO\\admin", "CONTOSO\\admin"),
    ("admin", "admin"),
    (None, None),
])
def test_the_realm_of_a_upn_is_upper_case(given: str | None, principal: str | None) -> None:
    assert kerberos.client_principal(given) == principal
