"""bridge.remote against the sandbox over real HTTP: auth, TLS, errors, faults, retries."""

from __future__ import annotations

import importlib.util
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.errors import (
    AuthenticationFailed,
    ClixmlError,
    CommandNotFound,
    ConfigError,
    ConnectionFailed,
    RemoteCommandError,
)
from bridge.remote import (
    Command,
    ConnectionSettings,
    RetryPolicy,
    Session,
    is_read_only,
    parameter_value,
    parse_parameter,
    pipeline_text,
)
from bridge.remote.budget import CmdletBudget
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall, PipelineOutcome, SerializedObject
from bridge.sandbox.exchange_types import format_size
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_server_wait=2.0)


def settings_for(sb: Sandbox, **changes: object) -> ConnectionSettings:
    base = ConnectionSettings(
        server=sb.host, port=sb.port, https=sb.https, auth="ntlm", username=sb.username,
        ca_bundle=str(sb.ca_file) if sb.ca_file else None, retry=FAST_RETRY,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=20, seed=4) as sb:
        yield sb
        assert sb.internal_errors == []


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=5, seed=5, https=True) as sb:
        yield sb
        assert sb.internal_errors == []


def user_mailboxes(sb: Sandbox) -> list[dict[str, object]]:
    return [m for m in sb.organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]


def as_on_the_wire(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Ground truth as the wire carries it: Exchange sends sizes as text ("50 GB (...
    bytes)", "Unlimited" for the ground truth's None; bridge.sizes converts them), and
    other unlimited values as "Unlimited"."""
    unlimited = ("LitigationHoldDuration", "RecipientLimits")
    return [
        {k: (format_size(v) if k.endswith(("Quota", "Size")) and (v is None or isinstance(v, int))
             else "Unlimited" if k in unlimited and v is None else v)
         for k, v in r.items()}
        for r in records
    ]


# ---- connecting and authenticating


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_rows_over_encrypted_http_equal_the_ground_truth(sandbox: Sandbox, auth: str) -> None:
    with Session(settings_for(sandbox, auth=auth), sandbox.password) as session:
        result = session.run(
            Command(
                "Get-Mailbox", {"RecipientTypeDetails": ["UserMailbox"], "ResultSize": "Unlimited"}
            )
        )
    assert result.errors == [] and result.warnings == []
    assert result.rows == as_on_the_wire(user_mailboxes(sandbox))


def test_basic_over_https_with_the_ca_bundle(tls_sandbox: Sandbox) -> None:
    with Session(settings_for(tls_sandbox, auth="basic"), tls_sandbox.password) as session:
        rows = session.run(Command("Get-Mailbox", {"ResultSize": "Unlimited"})).rows
    assert len(rows) == len(tls_sandbox.organisation.mailboxes)


def test_basic_auth_password_stays_out_of_debug_logs(
    tls_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        with Session(settings_for(tls_sandbox, auth="basic"), tls_sandbox.password) as session:
            session.run(Command("Get-Mailbox", {"ResultSize": 1}))
    assert caplog.text and tls_sandbox.password not in caplog.text


def test_tls_verification_failure_is_one_clear_error(tls_sandbox: Sandbox) -> None:
    settings = settings_for(tls_sandbox, auth="basic", ca_bundle=None)
    with pytest.raises(ConnectionFailed) as caught:
        Session(settings, tls_sandbox.password).open()
    assert str(caught.value) == (
        f"TLS certificate verification failed for {settings.url}. Give the issuing CA with "
        "--ca-bundle FILE (or, for a test lab only, --no-verify)."
    )


@pytest.mark.parametrize("verify", [True, False])
def test_plain_http_on_the_https_port_is_told_apart_from_verification(
    sandbox: Sandbox, verify: bool
) -> None:
    settings = settings_for(sandbox, https=True, verify=verify, retry=RetryPolicy(attempts=1))
    with pytest.raises(ConnectionFailed) as caught:
        Session(settings, sandbox.password).open()
    assert str(caught.value) == (
        f"the server at {settings.url} does not speak HTTPS (TLS handshake failed: wrong "
        "version number); check --https/--http and --port."
    ) or str(caught.value) == (
        f"the server at {settings.url} does not speak HTTPS (TLS handshake failed: record "
        "layer failure); check --https/--http and --port."
    )  # (OpenSSL 3.2+ calls it a record layer failure)
    assert caught.value.exit_code == 5


@pytest.mark.parametrize("verify", [True, False])
def test_another_tls_failure_says_what_it_is(verify: bool) -> None:
    """A server answering the ClientHello with a handshake_failure alert."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    settings = ConnectionSettings(
        server="127.0.0.1", port=listener.getsockname()[1], https=True, auth="ntlm",
        username="u", verify=verify, retry=RetryPolicy(attempts=1),
    )  # fmt: skip
    try:
        with pytest.raises(ConnectionFailed) as caught:
            Session(settings, "p").open()
    finally:
        thread.join(5)
        listener.close()
    assert str(caught.value) == (
        f"the TLS handshake with {settings.url} failed: sslv3 alert handshake failure."
    )


def test_no_verify_connects_without_checking(tls_sandbox: Sandbox) -> None:
    settings = settings_for(tls_sandbox, auth="ntlm", ca_bundle=None, verify=False)
    with Session(settings, tls_sandbox.password) as session:
        assert len(session.run(Command("Get-Mailbox")).rows) == 5


def test_wrong_password_names_user_and_method_never_the_password(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(sandbox)
    secret = "Wr0ng-but-secret!"
    session = Session(settings, secret)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as caught:
        session.open()
    assert str(caught.value) == (
        f"the server refused the credentials of {sandbox.username} (auth: ntlm) at "
        f"{settings.url}. Check the user name (UPN or DOMAIN\\user) and password."
    )
    assert secret not in caplog.text and secret not in repr(session)
    assert caught.value.exit_code == 6


def test_the_real_password_never_reaches_logs_or_repr(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        with Session(settings_for(sandbox), sandbox.password) as session:
            session.run(Command("Get-Mailbox", {"Identity": "nobody-here"}))
            text = repr(session) + repr(session.settings)
    assert sandbox.password not in caplog.text
    assert sandbox.password not in text


@pytest.mark.parametrize(
    ("server", "port", "message"),
    [
        ("no-such-host.invalid", 80, "the name does not resolve (check --server)"),
        ("127.0.0.1", 1, "connection refused (is the port right, and is the server up?)"),
    ],
)
def test_unreachable_servers(server: str, port: int, message: str) -> None:
    settings = ConnectionSettings(server=server, port=port, auth="ntlm", username="u")
    with pytest.raises(ConnectionFailed) as caught:
        Session(settings, "p").open()
    assert str(caught.value) == f"cannot connect to {settings.url}: {message}."


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("basic", "basic authentication needs --https: over HTTP only Kerberos/NTLM can "
                  "encrypt the traffic (and Exchange refuses Basic over HTTP)"),
        ("certificate", "certificate authentication needs --https: the client certificate "
                        "is presented in the TLS handshake, which plain HTTP does not have"),
    ],
)  # fmt: skip
def test_basic_and_certificate_auth_over_http_say_why_not(auth: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConnectionSettings(server="x", auth=auth, username="u", certificate_pem="c.pem",
                           certificate_key_pem="k.pem")  # fmt: skip
    assert str(caught.value) == message


def test_a_server_name_that_is_no_host_name() -> None:
    settings = ConnectionSettings(server="bad host name", port=80, auth="ntlm", username="u")
    with pytest.raises(ConfigError) as caught:
        Session(settings, "p").open()
    assert str(caught.value) == (
        "http://bad host name:80/PowerShell is not a valid endpoint: check --server and --path"
    )


def test_wrong_configuration_name(sandbox: Sandbox) -> None:
    settings = settings_for(sandbox, configuration="Microsoft.Nope")
    with pytest.raises(ConnectionFailed) as caught:
        Session(settings, sandbox.password).open()
    assert str(caught.value) == (
        f"the server has no PowerShell configuration 'Microsoft.Nope' at {settings.url} "
        "(Exchange uses Microsoft.Exchange): check --configuration."
    )


def test_no_user_and_no_ticket_is_an_authentication_error(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from benchmarks._sandbox_process import sandbox_process

    with sandbox_process(mailboxes=2, seed=1) as other:
        # the in-process sandboxes hand pyspnego their user file; a real client has none
        monkeypatch.delenv("NTLM_USER_FILE", raising=False)
        monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'no-ticket'}")
        settings = ConnectionSettings(server=other.host, port=other.port)
        with pytest.raises(AuthenticationFailed) as caught:
            Session(settings, None).open()
    if importlib.util.find_spec("gssapi"):  # the kerberos extra: Kerberos was tried too
        assert str(caught.value) == (
            f"no Kerberos ticket for the current identity in FILE:{tmp_path / 'no-ticket'}: get "
            "one with kinit user@REALM, or give --user (the password from PSBRIDGE_PASSWORD or "
            "the prompt).")
        return
    assert str(caught.value) == (
        "cannot sign in as the current Windows/Kerberos identity (auth: negotiate) at "
        f"{settings.url}: no Kerberos ticket or password is available here. Give --user (the "
        "password from PSBRIDGE_PASSWORD or the prompt), or get a Kerberos ticket first (kinit)."
    )


@pytest.mark.parametrize("auth", ["kerberos", "credssp"])
def test_auth_needing_a_missing_library_fails_before_connecting(
    auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "gssapi" if auth == "kerberos" else "requests_credssp"
    monkeypatch.setitem(sys.modules, module, None)  # imports as if not installed
    settings = ConnectionSettings(server="127.0.0.1", port=1, auth=auth, username="u")
    with pytest.raises(ConfigError, match=f"{auth} authentication needs the Python package"):
        Session(settings, "p").open()


# ---- commands and the server's errors


def test_nolanguage_endpoint_refuses_script_text(sandbox: Sandbox) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        with pytest.raises(RemoteCommandError) as caught:
            session.run_script("Get-Mailbox | Select-Object Name")
    assert str(caught.value) == (
        "script: the endpoint Microsoft.Exchange runs in NoLanguage mode and accepts only "
        "cmdlets with parameters."
    )


def test_unknown_or_rbac_hidden_cmdlet(sandbox: Sandbox) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        with pytest.raises(CommandNotFound) as caught:
            session.run(Command("Set-Mailbox", {"Identity": "x"}))
        # the session stays usable after a command error
        assert session.run(Command("Get-Mailbox", {"ResultSize": 1})).rows
    assert str(caught.value).startswith(
        "Set-Mailbox -Identity x: the endpoint has no such cmdlet (or your RBAC roles do not "
        "grant it): The term 'Set-Mailbox' is not recognized"
    )


def test_non_terminating_and_terminating_errors(sandbox: Sandbox) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        result = session.run(Command("Get-Mailbox", {"Identity": "nobody-here"}))
        with pytest.raises(RemoteCommandError, match="parameter name 'Bogus'") as caught:
            session.run(Command("Get-Mailbox", {"Bogus": 1}))
    assert result.rows == []
    [error] = result.errors
    assert error.kind == "ManagementObjectNotFoundException"
    assert error.message.startswith(
        "The operation couldn't be performed because object 'nobody-here'"
    )
    assert caught.value.record is not None


def test_warnings_are_returned(sandbox: Sandbox) -> None:
    with Session(settings_for(sandbox), sandbox.password) as session:
        result = session.run(Command("Get-Mailbox", {"ResultSize": 2}))
    assert len(result.rows) == 2
    assert result.warnings == [
        "There are more results available than are currently displayed. To view them, "
        "increase the value for the ResultSize parameter."
    ]


def test_a_pipeline_of_two_cmdlets(sandbox: Sandbox) -> None:
    pipeline = [
        Command("Get-MobileDevice", {"ResultSize": "Unlimited"}),
        Command("Get-MobileDeviceStatistics"),
    ]
    with Session(settings_for(sandbox), sandbox.password) as session:
        rows = session.run(pipeline).rows
    truth = sandbox.organisation.devices
    assert [r["Identity"] for r in rows] == [d["Identity"] for d in truth]


def test_a_switch_parameter_reaches_the_server() -> None:
    with Sandbox(mailboxes=20, seed=4, online_client_types=True) as sandbox:
        command = Command("Get-MobileDevice", {"ResultSize": "Unlimited", "RestApi": None})
        with Session(settings_for(sandbox), sandbox.password) as session:
            rows = session.run(command).rows
        assert sandbox.internal_errors == []
    devices = sandbox.organisation.devices
    expected = [d["Identity"] for d in devices if d["ClientType"] == "REST"]
    assert expected and [r["Identity"] for r in rows] == expected


# ---- faults: retried on a fresh connection, nothing lost or doubled


def test_dropped_connection_reconnects_and_loses_nothing() -> None:
    # the sandbox drops the connection once 15 objects have gone out on it: the second
    # command breaks after 5 of its 10 mailboxes and must be re-run whole, not doubled
    with Sandbox(mailboxes=10, seed=2, drop_after_objects=15) as sb:
        with Session(settings_for(sb), sb.password) as session:
            first = session.run(Command("Get-Mailbox", {"ResultSize": "Unlimited"})).rows
            second = session.run(Command("Get-Mailbox", {"ResultSize": "Unlimited"})).rows
            assert session.stats.reconnects == 1
            assert sb.open_shells() == 1  # the broken connection's shell was deleted
        assert first == second == as_on_the_wire(sb.organisation.mailboxes)
        assert sb.internal_errors == []


@pytest.mark.parametrize(("attempts", "tries"), [(1, "1 try"), (2, "2 tries")])
def test_a_server_busy_at_first_contact_is_retried_then_reported(attempts: int, tries: str
                                                                 ) -> None:
    with Sandbox(mailboxes=2, seed=2, http_error_every=1, http_error_status=503) as sb:
        settings = settings_for(sb, retry=RetryPolicy(attempts=attempts, base_delay=0.01))
        with pytest.raises(ConnectionFailed) as caught:
            Session(settings, sb.password).open()
        assert sb.internal_errors == []
    assert str(caught.value) == (
        f"cannot open a PowerShell session at {settings.url}: gave up after {tries}: HTTP 503 "
        f"Service Unavailable from {settings.url}: HTTP Error 503. The service is unavailable."
    )


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (500, "Internal Server Error from {url}: 500 - Internal server error. There is a "
              "problem with the resource you are looking for, and it cannot be displayed."),
        (503, "Service Unavailable from {url}: HTTP Error 503. The service is unavailable."),
    ],
)  # fmt: skip
def test_http_server_errors_are_retried_with_one_short_warning(
    status: int, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Sandbox(mailboxes=5, seed=2, http_error_every=9, http_error_status=status) as sb:
        settings = settings_for(sb)
        with caplog.at_level(logging.WARNING), Session(settings, sb.password) as session:
            for _ in range(4):
                assert len(session.run(Command("Get-Mailbox")).rows) == 5
            assert session.stats.retries >= 1
        assert sb.internal_errors == []
    warnings = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert warnings
    for warning in warnings:
        head, _, _ = warning.rpartition("; retrying in ")
        assert head.endswith(f"HTTP {status} " + text.format(url=settings.url))
        assert "<" not in warning and len(warning) < 400


@pytest.mark.parametrize("every", [7, 8, 9, 10])
def test_a_failed_close_or_drop_leaves_no_shell_on_the_server(every: int) -> None:
    # every Nth request fails with 503: somewhere among these, the closing Delete (9)
    # and a command on a connection then abandoned (7). A shell left behind counts
    # against the user's runspace limit (Exchange Online: 3) until it idles out (15 min).
    with Sandbox(mailboxes=3, seed=2, http_error_every=every) as sb:
        settings = settings_for(sb, retry=RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.02))
        with Session(settings, sb.password) as session:
            for _ in range(2):
                assert len(session.run(Command("Get-Mailbox")).rows) == 3
        assert sb.open_shells() == 0
        assert sb.internal_errors == []


def test_a_failed_signal_after_a_finished_command_does_not_run_it_again() -> None:
    # the 5th request, the Signal that frees a finished command, fails with 503: the
    # command's answer is complete, so it is returned, not run a second time (which for
    # a Set-/Remove- cmdlet given to psbridge run would do the change twice)
    with Sandbox(mailboxes=3, seed=2, http_error_every=5) as sb:
        with Session(settings_for(sb), sb.password) as session:
            assert len(session.run(Command("Get-Mailbox")).rows) == 3
            assert (session.stats.commands, session.stats.retries) == (1, 0)
            assert session.stats.reconnects == 1  # the connection is suspect after it
        assert sb.open_shells() == 0
        assert sb.internal_errors == []


class _ChangingHost:
    """Set-Thing / Get-Thing: two objects each; counts how often each cmdlet ran."""

    def __init__(self, organisation: Organisation) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.runs: dict[str, int] = {"Set-Thing": 0, "Get-Thing": 0}

    def has_command(self, name: str) -> bool:
        return name in self.runs or self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        name = commands[0].name
        if name not in self.runs:
            return self.real.invoke(commands, user)
        self.runs[name] += 1
        thing = '<Obj RefId="0"><MS><I32 N="N">{}</I32></MS></Obj>'
        return PipelineOutcome(events=iter([SerializedObject(thing.format(n)) for n in (1, 2)]))


def test_a_change_that_broke_after_it_was_sent_is_not_run_again() -> None:
    # the connection drops after every 3rd object, i.e. after the first object of the
    # 2nd and 4th commands: a read-only Get- is run again whole, but a Set- is not (it
    # would make its change twice): one error saying to check first
    organisation = Organisation(mailboxes=2, seed=2)
    host = _ChangingHost(organisation)
    with Sandbox(organisation=organisation, host=host, drop_after_objects=3) as sb:
        settings = settings_for(sb)
        with Session(settings, sb.password) as session:
            for _ in range(2):
                assert session.run(Command("Get-Thing")).rows == [{"N": 1}, {"N": 2}]
            assert host.runs["Get-Thing"] == 3
            with pytest.raises(RemoteCommandError) as caught:
                session.run(Command("Set-Thing", {"Identity": "a b"}))
            assert host.runs["Set-Thing"] == 1
        assert sb.internal_errors == []
    assert caught.value.exit_code == 7
    assert str(caught.value) == (
        f"Set-Thing -Identity 'a b': the connection to {settings.url} dropped; the command "
        "had been sent, so it may or may not have run: check its effect before running it again"
    )


def test_a_change_the_server_refused_unrun_is_retried() -> None:
    # over twice the cmdlet budget the server refuses the command before running it:
    # safe to send again, even for a Set-
    organisation = Organisation(mailboxes=2, seed=2)
    host = _ChangingHost(organisation)
    with Sandbox(organisation=organisation, host=host, cmdlet_budget=1, budget_window=0.3) as sb:
        with Session(settings_for(sb), sb.password) as session:
            # no pacing (a period too short to hold a command): else the micro delay of
            # the second would pace the third under the budget, and none is refused
            session._pacing._budget = CmdletBudget(window=1e-9)
            for _ in range(3):
                assert len(session.run(Command("Set-Thing")).rows) == 2
            assert session.stats.retries >= 1
        assert sb.internal_errors == []
    assert host.runs["Set-Thing"] == 3


def test_a_pipeline_the_server_stopped_is_run_again_whole_not_returned_partial() -> None:
    # the server stops the first pipeline after 4 of its 10 objects (an admin, an IIS
    # recycle, throttling): its 4 rows are dropped and the command runs again whole
    seen: list[int] = []
    with Sandbox(mailboxes=10, seed=2, stop_after_objects=4, pipeline_stops=1) as sb:
        with Session(settings_for(sb), sb.password) as session:
            result = session.run(Command("Get-Mailbox"), on_output=seen.append)
            assert session.stats.retries == 1
            assert session.stats.reconnects == 0  # the server answered: the connection is fine
        assert sb.open_shells() == 0
        assert sb.internal_errors == []
    assert result.rows == as_on_the_wire(sb.organisation.mailboxes)
    assert result.errors == []
    assert 4 in seen and seen[-1] == 10  # the count starts over with the new try


def test_a_pipeline_stopped_on_every_try_is_one_error() -> None:
    organisation = Organisation(mailboxes=2, seed=2)
    host = _ChangingHost(organisation)
    with Sandbox(organisation=organisation, host=host, stop_after_objects=1) as sb:
        with Session(settings_for(sb), sb.password) as session:
            with pytest.raises(RemoteCommandError) as read:
                session.run(Command("Get-Thing"))
            with pytest.raises(RemoteCommandError) as change:
                session.run(Command("Set-Thing"))
        assert sb.internal_errors == []
    assert (host.runs["Get-Thing"], host.runs["Set-Thing"]) == (4, 1)
    assert str(read.value) == (
        "Get-Thing: gave up after 4 tries: the server stopped the command (The pipeline has "
        "been stopped.)"
    )
    assert str(change.value) == (
        "Set-Thing: the server stopped the command (The pipeline has been stopped.); the "
        "command had been sent, so it may or may not have run: check its effect before "
        "running it again"
    )


@pytest.mark.parametrize(
    ("names", "read_only"),
    [
        (["Get-Mailbox"], True),
        (["get-mailbox", "Select-Object"], True),
        (["Test-MAPIConnectivity"], True),
        (["Get-Mailbox", "Set-Mailbox"], False),
        (["Remove-MobileDevice"], False),
        (["Search-Mailbox"], False),  # -DeleteContent deletes
        (["Export-AutoDiscoverConfig"], False),  # writes to Active Directory
        (["Getter"], False),
    ],
)
def test_only_pipelines_of_read_only_verbs_may_be_run_again(
    names: list[str], read_only: bool
) -> None:
    assert is_read_only([Command(name) for name in names]) is read_only


class _UnreadableOutputHost:
    """Get-Unreadable: an object psbridge cannot read, then more output still coming."""

    def __init__(self, organisation: Organisation) -> None:
        self.real = ExchangeCmdlets(organisation)

    def has_command(self, name: str) -> bool:
        return name == "Get-Unreadable" or self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name != "Get-Unreadable":
            return self.real.invoke(commands, user)

        def events() -> Iterator[object]:
            yield SerializedObject('<Obj RefId="0"><MS><I32 N="N">many</I32></MS></Obj>')
            for _ in range(20):
                yield SerializedObject('<Obj RefId="0"><MS><I32 N="N">1</I32></MS></Obj>')

        return PipelineOutcome(events=events())


def test_unreadable_output_does_not_leave_its_pipeline_holding_the_runspace() -> None:
    # the pipeline runs on after the unreadable object; on the one runspace of that
    # connection a real server would queue the next command behind it for ever
    organisation = Organisation(mailboxes=3, seed=2)
    host = _UnreadableOutputHost(organisation)
    with Sandbox(organisation=organisation, host=host, latency_per_object=0.02) as sb:
        with Session(settings_for(sb, concurrency=1), sb.password) as session:
            with pytest.raises(ClixmlError, match="bad I32 value 'many'"):
                session.run(Command("Get-Unreadable"))
            assert session.stats.reconnects == 1  # dropped, its shell deleted
            assert len(session.run(Command("Get-Mailbox")).rows) == 3
        assert sb.open_shells() == 0
        assert sb.internal_errors == []


def test_ctrl_c_mid_command_leaves_no_shell_behind() -> None:
    # Exchange Online allows 3 shells: a few Ctrl+C in a row, each leaving its shell
    # for the 15-minute idle timeout, and --resume would be refused
    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with Sandbox(mailboxes=20, seed=2, latency_per_object=0.01) as sb:
        with Session(settings_for(sb), sb.password) as session:
            for _ in range(2):
                with pytest.raises(KeyboardInterrupt):
                    session.run(Command("Get-Mailbox"), on_output=interrupt)
        assert sb.open_shells() == 0
        assert sb.internal_errors == []


def test_housekeeping_connections_keep_the_operation_timeout_below_the_read_timeout() -> None:
    # the quick connection that deletes an abandoned shell caps its read timeout at 10 s;
    # its WSMan OperationTimeout must stay below that (pypsrp #182), or a server busy
    # stopping the shell's pipeline answers after the client gave up
    from bridge.remote import _connect

    wsman = _connect(ConnectionSettings(server="mail.contoso.com"), None, brief=True)
    try:
        assert wsman.operation_timeout < wsman.transport.read_timeout
    finally:
        wsman.close()


def test_stalled_receive_trips_the_read_timeout_gives_up_then_recovers() -> None:
    # two Receives hang past the read timeout: two tries fail and the run gives up;
    # the next command is served on a fresh connection (pypsrp #21)
    with Sandbox(mailboxes=3, seed=2, receive_stall=3.0, receive_stalls=2) as sb:
        settings = settings_for(
            sb, read_timeout=1.2, operation_timeout=1,
            retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01),
        )  # fmt: skip
        with Session(settings, sb.password) as session:
            with pytest.raises(ConnectionFailed, match="gave up after 2 tries: no answer from"):
                session.run(Command("Get-Mailbox"))
            assert len(session.run(Command("Get-Mailbox")).rows) == 3
            assert session.stats.reconnects == 2


def test_runspace_limit_caps_concurrency_instead_of_failing() -> None:
    with Sandbox(mailboxes=10, seed=2, max_shells_per_user=2) as sb:
        with Session(settings_for(sb, concurrency=4), sb.password) as session:
            import concurrent.futures as cf

            with cf.ThreadPoolExecutor(4) as pool:
                counts = list(
                    pool.map(lambda _: len(session.run(Command("Get-Mailbox")).rows), range(8))
                )
            assert counts == [10] * 8
            assert session.concurrency == 2
            assert sb.open_shells() <= 2
        assert sb.internal_errors == []


def test_budget_micro_delays_pace_commands_to_the_budget() -> None:
    # 2 cmdlets per second; the first micro delay shows where the budget is, and from then
    # on commands wait for it instead of going over twice it (refused, waited, retried)
    with Sandbox(mailboxes=3, seed=2, cmdlet_budget=2, budget_window=1.0, micro_delay=0.02) as sb:
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        with Session(settings_for(sb), sb.password, rng=random.Random(1), sleep=sleep) as session:
            session._pacing._budget = CmdletBudget(window=1.0)  # the sandbox's period
            for _ in range(6):
                assert len(session.run(Command("Get-Mailbox")).rows) == 3
            assert session.stats.micro_delays >= 1
            assert session.stats.retries == 0  # never over twice the budget
            assert session.stats.reconnects == 0
        assert sum(sleeps) >= 1.0  # paced: six commands at two a second
        assert sb.internal_errors == []


def test_sessions_are_closed_on_the_server(sandbox: Sandbox) -> None:
    before = sandbox.open_shells()
    with Session(settings_for(sandbox, concurrency=2), sandbox.password) as session:
        session.run(Command("Get-Mailbox", {"ResultSize": 1}))
        assert sandbox.open_shells() == before + 1
    assert sandbox.open_shells() == before


# ---- values and messages


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Unlimited", "Unlimited"),
        ("42", 42),
        ("-7", -7),
        ("007", "007"),
        ("99999999999", "99999999999"),
        ("true", True),
        ("$False", False),
        ("UserMailbox,SharedMailbox", ["UserMailbox", "SharedMailbox"]),
        ("'O''Brien, Pat'", "O'Brien, Pat"),
        ("Smith, Pat", ["Smith", "Pat"]),
        ('"a,b"', "a,b"),
        # a comma inside quotes does not split (an OPATH filter stays one string)
        ("DisplayName -like 'Smith, *'", "DisplayName -like 'Smith, *'"),
        ("'O''Brien, Pat',Sales", ["O'Brien, Pat", "Sales"]),
        (
            "DeviceModel -eq 'Outlook for iOS and Android'",
            "DeviceModel -eq 'Outlook for iOS and Android'",
        ),
    ],
)
def test_parameter_values_are_typed(text: str, value: object) -> None:
    assert parameter_value(text) == value


def test_parameters_and_switches() -> None:
    assert parse_parameter("ResultSize=Unlimited") == ("ResultSize", "Unlimited")
    assert parse_parameter("-ActiveSync") == ("ActiveSync", None)
    with pytest.raises(ValueError, match="is not Name=Value"):
        parse_parameter("=x")
    command = Command("Get-MobileDeviceStatistics", {"Mailbox": "O'Brien, Pat", "ActiveSync": None})
    assert (
        pipeline_text([command])
        == "Get-MobileDeviceStatistics -Mailbox 'O''Brien, Pat' -ActiveSync"
    )


def test_remote_is_the_only_module_importing_pypsrp() -> None:
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "bridge"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            if any(name.split(".")[0] == "pypsrp" for name in names):
                importers.add(path.relative_to(package).as_posix())
    # remote.py, or modules of the remote/ package
    assert {importer.split("/")[0].removesuffix(".py") for importer in importers} == {"remote"}


def test_kerberos_asks_for_the_http_service_of_exchange_and_wsman_of_a_jump_host() -> None:
    from bridge.remote import _connect

    exchange = _connect(ConnectionSettings(server="mail.contoso.com"), None)
    jump_host = _connect(ConnectionSettings(server="jump", path="wsman", port=5985), None)
    assert exchange.transport.negotiate_service == "HTTP"
    assert jump_host.transport.negotiate_service == "WSMAN"


def test_backoff_grows_with_jitter_within_bounds_and_honours_the_server() -> None:
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=8.0, max_server_wait=60.0)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = {policy.delay(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter: retries of many workers do not line up
    assert policy.delay(1, rng, server_wait=30) == 30  # "Please wait for 30 seconds"
    assert policy.delay(1, rng, server_wait=600) == 60  # but never longer than allowed


def test_access_denied_after_sign_in_is_an_authentication_error() -> None:
    # no sandbox knob refuses a signed-in user, so the classifier gets the fault Exchange
    # sends ("[Server=CAS1,...] Access is denied.") as pypsrp raises it
    from pypsrp.exceptions import WSManFaultError

    from bridge.remote import _classify

    fault = WSManFaultError(
        5, "CAS1", "[Server=CAS1,RequestId=1,TimeStamp=1/1/2026] Access is denied.", "", "", ""
    )
    settings = ConnectionSettings(server="mail", username="pat@contoso.com")
    with pytest.raises(AuthenticationFailed, match="access is denied for pat@contoso.com at"):
        _classify(fault, settings, first_contact=True)
