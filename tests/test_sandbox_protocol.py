"""The sandbox's protocol side (HTTP, auth, WSMan, PSRP) driven by pypsrp's real client.

A tiny CmdletHost stands in for the Exchange side here so these tests pin the protocol
behaviour on their own; tests/test_sandbox_exchange.py covers the cmdlets.
"""

from __future__ import annotations

import ast
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from bridge.sandbox import Sandbox
from bridge.sandbox.contract import (
    CommandCall,
    ErrorSpec,
    PipelineOutcome,
    SerializedObject,
    WarningMessage,
)

NOT_FOUND = (
    "The operation couldn't be performed because object '{0}' couldn't be found on "
    "'DC01.contoso.com'."
)


def thing(index: int, padding: int = 0) -> SerializedObject:
    """One output object as the Exchange side caches it (type names end in System.Object)."""
    return SerializedObject(
        f'<Obj RefId="0"><TN RefId="0"><T>Sandbox.Thing</T><T>System.Object</T></TN>'
        f"<ToString>thing{index}</ToString><Props><S N=\"Name\">thing{index}</S>"
        f'<I32 N="Index">{index}</I32><S N="Padding">{"x" * padding}</S></Props></Obj>'
    )


class TinyHost:
    """Get-Thing [-Count n] [-Padding n] [-Missing name] [-Fail]: n objects, a warning,
    optionally a non-terminating not-found error or a terminating error."""

    def __init__(self) -> None:
        self.calls: list[list[CommandCall]] = []
        self.users: list[str] = []

    def has_command(self, name: str) -> bool:
        return name.lower() in {"get-thing", "set-thing"}

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        self.calls.append(commands)
        self.users.append(user)
        parameters = commands[0].parameters
        count = int(parameters.get("Count", 3))
        padding = int(parameters.get("Padding", 0))
        if "Fail" in parameters:
            return PipelineOutcome(
                iter(()),
                terminating=ErrorSpec(
                    "Couldn't find 'nobody' as a recipient.",
                    "Microsoft.Exchange.Management.AirSync.RecipientNotFoundException",
                    "InvalidArgument",
                    "1E8A2C3D,Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics",
                    command_name="Get-Thing",
                ),
            )

        def events() -> Iterator[Any]:
            for index in range(count):
                yield thing(index, padding)
            yield WarningMessage("By default, only the first 1000 items are returned.")
            if "Missing" in parameters:
                missing = str(parameters["Missing"])
                yield ErrorSpec(
                    NOT_FOUND.format(missing),
                    "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                    "NotSpecified",
                    "5D4E1A2B,Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
                    command_name="Get-Thing",
                )

        return PipelineOutcome(events())


@pytest.fixture
def tiny() -> TinyHost:
    return TinyHost()


@pytest.fixture
def sb(tiny: TinyHost) -> Iterator[Sandbox]:
    with Sandbox(host=tiny) as sandbox:
        yield sandbox
        assert sandbox.internal_errors == []


def wsman(sandbox: Sandbox, auth: str = "negotiate", **kwargs: Any) -> WSMan:
    options: dict[str, Any] = {
        "port": sandbox.port,
        "ssl": sandbox.https,
        "auth": auth,
        "username": sandbox.username,
        "password": sandbox.password,
        "path": "PowerShell",
    }
    if sandbox.https:
        options["cert_validation"] = str(sandbox.ca_file)
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


def pool(sandbox: Sandbox, auth: str = "negotiate", **kwargs: Any) -> RunspacePool:
    configuration = kwargs.pop("configuration_name", "Microsoft.Exchange")
    return RunspacePool(wsman(sandbox, auth, **kwargs), configuration_name=configuration)


def get_thing(runspace: RunspacePool, **parameters: Any) -> PowerShell:
    shell = PowerShell(runspace)
    shell.add_cmdlet("Get-Thing")
    for name, value in parameters.items():
        shell.add_parameter(name, value)
    shell.invoke()
    return shell


# -- auth and the default pypsrp path --------------------------------------------------


@pytest.mark.parametrize("auth", ["negotiate", "ntlm"])
def test_objects_warnings_and_errors_reach_pypsrp_over_encrypted_http(
    sb: Sandbox, tiny: TinyHost, auth: str
) -> None:
    with pool(sb, auth) as runspace:
        shell = get_thing(runspace, Count=4, Missing="nobody@contoso.com")
    assert [item.adapted_properties["Name"] for item in shell.output] == [
        "thing0", "thing1", "thing2", "thing3",
    ]
    assert shell.output[2].adapted_properties["Index"] == 2
    assert [w.message for w in shell.streams.warning] == [
        "By default, only the first 1000 items are returned."
    ]
    # non-terminating: the pipeline completes, the record is in the error stream
    assert shell.state == PSInvocationState.COMPLETED and not shell.had_errors
    [error] = shell.streams.error
    assert str(error) == NOT_FOUND.format("nobody@contoso.com")
    assert error.message == "NotSpecified: (:) [Get-Thing], ManagementObjectNotFoundException"
    assert error.fq_error.endswith("Microsoft.Exchange.Management.RecipientTasks.GetMailbox")
    # which command wrote it, as PowerShell adds for pypsrp's default stream options
    assert error.command_name == "Get-Thing"
    assert error.invocation_bound_parameters == {"Count": 4, "Missing": "nobody@contoso.com"}
    assert tiny.users == [sb.username]


def test_records_carry_tostring_and_exchanges_exception_chain(sb: Sandbox) -> None:
    # stock pypsrp prints a record by its <ToString>: without it a warning reads "None"
    with pool(sb) as runspace:
        shell = get_thing(runspace, Count=1, Missing="nobody@contoso.com")
    [warning] = shell.streams.warning
    assert str(warning) == "By default, only the first 1000 items are returned."
    [error] = shell.streams.error
    assert error.exception.types == [
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        "Microsoft.Exchange.Data.Common.LocalizedException",
        "System.Exception",
        "System.Object",
    ]
    with pool(sb) as runspace:
        shell = PowerShell(runspace)
        shell.add_cmdlet("Get-Nothing")
        shell.invoke()
    # PowerShell's own exceptions derive from RuntimeException
    assert shell.streams.error[0].exception.types == [
        "System.Management.Automation.CommandNotFoundException",
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]


def test_parameters_and_pipelines_reach_the_host_as_plain_values(
    sb: Sandbox, tiny: TinyHost
) -> None:
    with pool(sb) as runspace:
        shell = PowerShell(runspace)
        shell.add_cmdlet("Get-Thing").add_parameter("Count", 1).add_parameter(
            "RecipientTypeDetails", ["UserMailbox", "SharedMailbox"]
        ).add_parameter("ActiveSync").add_argument("positional")
        shell.add_cmdlet("Set-Thing").add_parameter("Confirm", False)
        shell.invoke()
    [commands] = tiny.calls
    assert commands == [
        CommandCall(
            "Get-Thing",
            {"Count": 1, "RecipientTypeDetails": ["UserMailbox", "SharedMailbox"],
             "ActiveSync": None},
            ("positional",),
        ),
        CommandCall("Set-Thing", {"Confirm": False}),
    ]
    assert type(commands[0].parameters["RecipientTypeDetails"][0]) is str


def test_statements_run_one_after_the_other(sb: Sandbox, tiny: TinyHost) -> None:
    with pool(sb) as runspace:
        shell = PowerShell(runspace)
        shell.add_cmdlet("Get-Thing").add_parameter("Count", 1).add_statement()
        shell.add_cmdlet("Get-Thing").add_parameter("Count", 2)
        output = shell.invoke()
    assert [item.adapted_properties["Index"] for item in output] == [0, 0, 1]
    assert [[call.parameters["Count"] for call in calls] for calls in tiny.calls] == [[1], [2]]


def test_wrong_password_is_refused_with_401(sb: Sandbox) -> None:
    connection = WSMan(
        "127.0.0.1", port=sb.port, ssl=False, auth="ntlm", username=sb.username,
        password=sb.password + "x", path="PowerShell",
    )
    with pytest.raises(AuthenticationError, match="Failed to authenticate the user"):
        RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


def test_401_looks_like_iis(sb: Sandbox) -> None:
    response = requests.post(sb.url, data=b"<x/>", timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Negotiate, NTLM"
    assert response.headers["Server"] == "Microsoft-IIS/10.0"
    assert "401 - Unauthorized: Access is denied due to invalid credentials." in response.text


def test_basic_over_http_is_refused(sb: Sandbox) -> None:
    connection = wsman(sb, "basic", encryption="never")
    with pytest.raises(AuthenticationError):
        RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


def test_two_sandboxes_in_one_process_each_accept_only_their_own_user(tiny: TinyHost) -> None:
    with Sandbox(host=tiny) as first, Sandbox(host=tiny) as second:
        for sandbox in (first, second):
            with pool(sandbox) as runspace:
                assert len(get_thing(runspace, Count=2).output) == 2
        # the NTLM user file is shared, but each endpoint checks the principal
        crossed = WSMan(
            "127.0.0.1", port=second.port, ssl=False, auth="ntlm",
            username=first.username, password=first.password, path="PowerShell",
        )
        with pytest.raises(AuthenticationError):
            RunspacePool(crossed, configuration_name="Microsoft.Exchange").open()
        assert first.internal_errors == [] and second.internal_errors == []


# -- NoLanguage, unknown commands, configurations --------------------------------------


def test_script_text_is_refused_with_exchanges_no_language_message(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        shell = PowerShell(runspace)
        shell.add_script("Get-Mailbox | Where-Object { $_.Name -like 'a*' }")
        shell.invoke()
    assert shell.state == PSInvocationState.FAILED and shell.had_errors
    [error] = shell.streams.error
    assert str(error) == (
        "The syntax is not supported by this runspace. This can occur if the runspace is in "
        "no-language mode."
    )
    assert error.fq_error == "ScriptsNotAllowed"
    assert error.message.startswith("ParserError: (Get-Mailbox | Where-Object")
    assert error.message.endswith(":String) [], ParseException")


def test_unknown_cmdlet_is_a_terminating_command_not_found(sb: Sandbox, tiny: TinyHost) -> None:
    with pool(sb) as runspace:
        shell = PowerShell(runspace)
        shell.add_cmdlet("Get-Process")
        shell.invoke()
        # the pool is still usable afterwards
        assert len(get_thing(runspace, Count=1).output) == 1
    assert shell.state == PSInvocationState.FAILED
    [error] = shell.streams.error
    assert str(error).startswith("The term 'Get-Process' is not recognized as the name of a cmdlet")
    assert error.message == "ObjectNotFound: (Get-Process:String) [], CommandNotFoundException"
    assert error.fq_error == "CommandNotFoundException"
    assert len(tiny.calls) == 1


def test_terminating_error_from_the_host_fails_the_pipeline(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        shell = get_thing(runspace, Fail=True)
    assert shell.state == PSInvocationState.FAILED
    [error] = shell.streams.error
    assert str(error) == "Couldn't find 'nobody' as a recipient."
    assert error.message == "InvalidArgument: (:) [Get-Thing], RecipientNotFoundException"
    assert error.command_name == "Get-Thing"


def test_wrong_configuration_name_gets_the_wsman_fault(sb: Sandbox) -> None:
    with pytest.raises(WSManFaultError) as caught:
        pool(sb, configuration_name="Microsoft.Exchange2").open()
    assert caught.value.reason == (
        "The WS-Management service cannot process the request. Cannot find the "
        "Microsoft.Exchange2 session configuration in the WSMan: drive on the EXCH01 computer."
    )


def test_registered_configuration_is_served_beside_exchange(sb: Sandbox) -> None:
    full = TinyHost()
    sb.register_configuration("Microsoft.PowerShell", full, no_language=False)
    with pool(sb, configuration_name="Microsoft.PowerShell") as runspace:
        shell = PowerShell(runspace)
        shell.add_script("Get-Thing")
        shell.invoke()
    assert full.calls[0][0].is_script and full.calls[0][0].name == "Get-Thing"
    assert len(shell.output) == 3


# -- WSMan mechanics ---------------------------------------------------------------------


def test_large_outputs_stream_in_envelope_sized_receives(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        before = sb.requests_served
        # 1000 objects of ~1.3 KB of PSRP data: 1.3 MB. pypsrp raises MaxEnvelopeSize to
        # 512000 once the pool is open; base64 leaves ~383 KB per envelope: 4 Receives
        # (each filled to the limit) plus the Command
        shell = get_thing(runspace, Count=1000, Padding=1000)
        round_trips = sb.requests_served - before
    assert [item.adapted_properties["Index"] for item in shell.output] == list(range(1000))
    assert round_trips == 5


def test_a_message_larger_than_an_envelope_is_split_into_fragments(sb: Sandbox) -> None:
    with pool(sb, max_envelope_size=20000) as runspace:
        shell = get_thing(runspace, Count=2, Padding=50000)
    assert [len(item.adapted_properties["Padding"]) for item in shell.output] == [50000, 50000]


def test_concurrent_pipelines_on_one_pool_keep_their_own_output(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        first = PowerShell(runspace)
        first.add_cmdlet("Get-Thing").add_parameter("Count", 50)
        second = PowerShell(runspace)
        second.add_cmdlet("Get-Thing").add_parameter("Count", 7)
        first.begin_invoke()
        second.begin_invoke()
        second.end_invoke()
        first.end_invoke()
        assert runspace.is_alive()
    assert len(first.output) == 50 and len(second.output) == 7


def test_runspace_pool_settings_are_answered(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        runspace.max_runspaces = 3
        runspace.min_runspaces = 2
        assert runspace.get_available_runspaces() == 3
        assert len(get_thing(runspace, Count=1).output) == 1


def test_recycled_server_forgets_shells_and_pypsrp_sees_a_dead_pool(sb: Sandbox) -> None:
    runspace = pool(sb)
    runspace.open()
    assert runspace.is_alive()
    assert sb.recycle() == 1
    with pytest.raises(WSManFaultError) as caught:
        get_thing(runspace)
    assert caught.value.code == 2150858843
    assert "because the shell was not found on the server" in (caught.value.reason or "")
    assert not runspace.is_alive()
    with pool(sb) as fresh:
        assert len(get_thing(fresh).output) == 3


def test_pools_close_and_release_their_shell(sb: Sandbox) -> None:
    with pool(sb) as runspace:
        get_thing(runspace)
        assert sb.open_shells(sb.username) == 1
    assert sb.open_shells() == 0


def test_handler_exceptions_become_faults_and_are_recorded(tiny: TinyHost) -> None:
    class Broken(TinyHost):
        def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
            raise RuntimeError("bug in the Exchange side")

    with Sandbox(host=Broken()) as sandbox:
        with pool(sandbox) as runspace:
            shell = get_thing(runspace)
            # the connection survives: the same pool runs the next command
            again = get_thing(runspace)
        assert shell.state == PSInvocationState.FAILED
        assert again.state == PSInvocationState.FAILED
        assert len(sandbox.internal_errors) == 2
        assert "bug in the Exchange side" in sandbox.internal_errors[0]


def test_start_is_fast_and_stop_frees_the_port(tiny: TinyHost) -> None:
    started = time.perf_counter()
    sandbox = Sandbox(host=tiny).start()
    elapsed = time.perf_counter() - started
    port = sandbox.port
    sandbox.stop()
    assert elapsed < 0.5
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://127.0.0.1:{port}/PowerShell", timeout=2)


def test_stop_closes_connections_clients_keep_alive(tiny: TinyHost) -> None:
    sandbox = Sandbox(host=tiny).start()
    runspace = pool(sandbox)
    runspace.open()
    sandbox.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        get_thing(runspace)
    assert threading.active_count() < 50
    assert "password" not in repr(sandbox).lower() or sandbox.password not in repr(sandbox)


# -- HTTPS --------------------------------------------------------------------------------


@pytest.fixture
def tls_sb(tiny: TinyHost) -> Iterator[Sandbox]:
    with Sandbox(host=tiny, https=True) as sandbox:
        yield sandbox
        assert sandbox.internal_errors == []


@pytest.mark.parametrize("auth", ["negotiate", "basic"])
def test_https_with_the_generated_ca_for_negotiate_and_basic(tls_sb: Sandbox, auth: str) -> None:
    assert tls_sb.url.startswith("https://127.0.0.1:") and tls_sb.ca_file is not None
    assert tls_sb.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with pool(tls_sb, auth) as runspace:
        assert len(get_thing(runspace, Count=2).output) == 2


def test_https_wrong_basic_password_is_refused(tls_sb: Sandbox) -> None:
    with pytest.raises(AuthenticationError):
        pool(tls_sb, "basic", password="wrong").open()


def test_https_certificate_is_not_trusted_without_the_ca_file(tls_sb: Sandbox) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        pool(tls_sb, cert_validation=True).open()


# -- realism knobs ----------------------------------------------------------------------------


def test_slow_command_answers_operation_timeout_and_pypsrp_polls_again(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, latency_per_command=1.5) as sandbox:
        with pool(sandbox, operation_timeout=1, read_timeout=4) as runspace:
            started = time.perf_counter()
            before = sandbox.requests_served
            shell = get_thing(runspace, Count=2)
            elapsed = time.perf_counter() - started
            receives = sandbox.requests_served - before - 1
        assert sandbox.internal_errors == []
    assert len(shell.output) == 2
    assert elapsed >= 1.5
    assert receives >= 2  # at least one Receive answered with fault 2150858793


def test_stop_and_close_signal_the_pipeline(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, latency_per_object=0.05) as sandbox:
        with pool(sandbox) as runspace:
            slow = PowerShell(runspace)
            slow.add_cmdlet("Get-Thing").add_parameter("Count", 200)
            slow.begin_invoke()
            slow.poll_invoke()
            slow.stop()  # Ctrl+C: WSMan Signal powershell/signal/ctrl_c
            assert slow.state == PSInvocationState.STOPPED
            done = get_thing(runspace, Count=1)
            done.close()  # WSMan Signal Terminate
            shell = next(iter(sandbox.shells.values()))
            assert shell.pipelines == {} and shell.pool.pipeline_table == {}
        assert sandbox.internal_errors == []
    assert 0 < len(slow.output) < 200


def test_latency_per_object_paces_the_stream(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, latency_per_object=0.02) as sandbox:
        with pool(sandbox) as runspace:
            started = time.perf_counter()
            shell = get_thing(runspace, Count=15)
            elapsed = time.perf_counter() - started
    assert len(shell.output) == 15
    assert elapsed >= 14 * 0.02


def test_concurrent_shell_limit_refuses_the_next_pool_with_exchanges_text(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, max_shells_per_user=2) as sandbox:
        first, second = pool(sandbox), pool(sandbox)
        first.open()
        second.open()
        with pytest.raises(WSManFaultError) as caught:
            pool(sandbox).open()
        assert caught.value.code == 2150858819
        reason = caught.value.reason or ""
        assert reason.startswith("[AuthZRequestId=")
        assert (
            "[FailureCategory=AuthZ-AuthorizationException] Fail to create a runspace because "
            "you have exceeded the maximum number of connections allowed : 2 for the policy "
            "party : MaxConcurrency. Please close existing runspace and try again." in reason
        )
        first.close()
        with pool(sandbox) as third:  # a closed pool frees its slot
            assert len(get_thing(third).output) == 3
        second.close()
        assert sandbox.internal_errors == []


def test_abandoned_shells_expire_after_the_idle_timeout(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, max_shells_per_user=1, shell_idle_timeout=0.3) as sandbox:
        abandoned = pool(sandbox)
        abandoned.open()  # never closed, as by a client that crashed
        with pytest.raises(WSManFaultError):
            pool(sandbox).open()
        time.sleep(0.4)
        with pool(sandbox) as runspace:
            assert len(get_thing(runspace).output) == 3
        assert sandbox.internal_errors == []


def test_cmdlet_budget_gives_verbose_micro_delays_then_http_400(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, cmdlet_budget=2, budget_window=30, micro_delay=0.01) as sandbox:
        with pool(sandbox) as runspace:
            shells = [get_thing(runspace, Count=1) for _ in range(4)]
            # over twice the budget Exchange's HTTP module refuses the new command
            with pytest.raises(WinRMTransportError) as refused:
                get_thing(runspace, Count=1)
            # the shell is fine: the refusal left nothing behind on it
            assert sandbox.open_shells() == 1
        assert sandbox.internal_errors == []
    assert [len(shell.output) for shell in shells] == [1, 1, 1, 1]
    # a micro delay under 10 s is a verbose record, not a warning
    assert not [w for shell in shells for w in shell.streams.warning if "Micro" in str(w)]
    delayed = [[str(v) for v in shell.streams.verbose] for shell in shells]
    assert [len(messages) for messages in delayed] == [0, 0, 1, 1]
    assert delayed[2][0].startswith("Micro delay applied. Actual delayed: 10 msecs, Enforced: True")
    assert "[Budget=PowerShellMaxCmdlets].; PolicyDN: CN=GlobalThrottlingPolicy_" in delayed[2][0]
    assert "; Snapshot: Owner: Sid~" in delayed[2][0]
    assert refused.value.code == 400
    body = refused.value.response_text
    assert body.startswith(
        "[FailureCategory=AuthZ-OverBudgetException] Operation aborted because the operation "
        "has exceeded your throttling policy budget. Please wait for "
    )
    assert re.search(r"Please wait for \d+ seconds\.\r\nPolicy: CN=GlobalThrottlingPolicy_", body)
    assert "; \r\nSnapshot: Owner: Sid~" in body


def test_a_micro_delay_of_10_s_or_more_is_a_warning() -> None:
    sandbox = Sandbox(host=TinyHost(), cmdlet_budget=1)
    note = sandbox.budgets.micro_delay_note("admin@contoso.com", 2, 10.0)
    assert isinstance(note, WarningMessage)
    assert note.text.startswith("Micro delay applied. Actual delayed: 10000 msecs")
    shorter = sandbox.budgets.micro_delay_note("admin@contoso.com", 2, 9.9)
    assert not isinstance(shorter, WarningMessage)


def test_over_budget_mid_cmdlet_is_exchanges_overbudgetexception(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, over_budget_after_objects=2, over_budget_wait=3) as sandbox:
        with pool(sandbox) as runspace:
            shell = get_thing(runspace, Count=5)
        assert sandbox.internal_errors == []
    assert len(shell.output) == 2 and shell.state == PSInvocationState.FAILED
    [error] = shell.streams.error
    assert str(error).startswith(
        "Operation aborted because the operation has exceeded your throttling policy budget. "
        "Please wait for 3 seconds. (PolicyDN: CN=GlobalThrottlingPolicy_"
    )
    assert str(error).endswith("; Computer: EXCH01)")
    # ExchangeErrorCategory.Context, cast to ErrorCategory: 1003, shown as NotSpecified
    assert error.category == 1003
    assert error.message == "NotSpecified: (:) [Get-Thing], OverBudgetException"
    assert "[FailureCategory=Cmdlet-OverBudgetException]" in error.fq_error


def test_dropped_connection_then_old_ntlm_context_fails_until_a_new_pool(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, drop_after_objects=5) as sandbox:
        runspace = pool(sandbox)
        runspace.open()
        with pytest.raises(requests.exceptions.ConnectionError):
            get_thing(runspace, Count=20)
        # pypsrp re-authenticates on a new connection but still encrypts with its old
        # context: the server cannot decrypt and every later message is refused
        with pytest.raises(WinRMTransportError) as caught:
            get_thing(runspace, Count=1)
        assert caught.value.code == 400
        with pool(sandbox) as fresh:  # a new connection and pool recovers
            assert len(get_thing(fresh, Count=3).output) == 3
        assert sandbox.internal_errors == []


def test_dropped_connection_with_basic_over_https_can_be_polled_again(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, https=True, drop_after_objects=5) as sandbox:
        with pool(sandbox, "basic") as runspace:
            shell = PowerShell(runspace)
            shell.add_cmdlet("Get-Thing").add_parameter("Count", 8)
            with pytest.raises(requests.exceptions.ConnectionError):
                shell.invoke()
            # no message encryption to lose: the next Receive goes on where it stopped
            shell.end_invoke()
        assert sandbox.internal_errors == []
    assert [item.adapted_properties["Index"] for item in shell.output] == list(range(8))


@pytest.mark.parametrize("status", [503, 500])
def test_http_errors_reach_the_client_and_polling_again_loses_nothing(
    tiny: TinyHost, status: int
) -> None:
    # requests after authentication: Create, Receive, Command, then this Receive fails
    with Sandbox(host=tiny, http_error_every=4, http_error_status=status) as sandbox:
        with pool(sandbox) as runspace:
            shell = PowerShell(runspace)
            shell.add_cmdlet("Get-Thing").add_parameter("Count", 4)
            # an IIS 503 page is not XML: WinRMTransportError with the status; the 500 page
            # parses as XML, so pypsrp reports an empty WSManFault, as against real IIS
            expected = WinRMTransportError if status == 503 else WSManFaultError
            with pytest.raises(expected) as caught:
                shell.invoke()
            assert caught.value.code == (503 if status == 503 else None)
            shell.end_invoke()
            assert len(shell.output) == 4
        assert sandbox.internal_errors == []


def test_a_stalled_receive_is_resent_by_pypsrp_and_nothing_is_lost(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, receive_stall=0.6, receive_stalls=1) as sandbox:
        with pool(sandbox, read_timeout=0.3, reconnection_backoff=0.01) as runspace:
            shell = get_thing(runspace, Count=5)
        assert sandbox.internal_errors == []
    assert [item.adapted_properties["Index"] for item in shell.output] == [0, 1, 2, 3, 4]


def test_an_answer_the_client_timed_out_on_is_replayed_to_its_resend(tiny: TinyHost) -> None:
    # the server answers after 0.5 s, the client gave up at 0.3 s and resends the same
    # message: it must get that same answer, not the next one
    with Sandbox(host=tiny, latency_per_command=0.5) as sandbox:
        with pool(sandbox, read_timeout=0.3, reconnection_backoff=0.01) as runspace:
            shell = get_thing(runspace, Count=5)
        assert sandbox.internal_errors == []
    assert [item.adapted_properties["Index"] for item in shell.output] == [0, 1, 2, 3, 4]


def test_a_receive_that_keeps_stalling_trips_the_client_read_timeout(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, receive_stall=0.4) as sandbox:  # every Receive stalls
        runspace = pool(sandbox, read_timeout=0.2, reconnection_backoff=0.01)
        runspace.open()
        with pytest.raises(requests.exceptions.ReadTimeout):
            get_thing(runspace)
        assert sandbox.internal_errors == []


def test_a_pipeline_stopped_by_the_server_ends_stopped_after_n_objects(tiny: TinyHost) -> None:
    with Sandbox(host=tiny, stop_after_objects=2, pipeline_stops=1) as sandbox:
        with pool(sandbox) as runspace:
            stopped = get_thing(runspace, Count=5)
            again = get_thing(runspace, Count=5)  # only one pipeline is stopped
        assert sandbox.internal_errors == []
    assert stopped.state == PSInvocationState.STOPPED
    assert [item.adapted_properties["Index"] for item in stopped.output] == [0, 1]
    assert [str(error) for error in stopped.streams.error] == ["The pipeline has been stopped."]
    assert again.state == PSInvocationState.COMPLETED and len(again.output) == 5


def test_unknown_knob_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown sandbox knob"):
        Sandbox(host=TinyHost(), latency=1)


# -- psbridge sandbox serve ---------------------------------------------------------------


def test_serve_prints_how_to_connect_serves_exchange_and_stops_on_ctrl_c() -> None:
    command = [
        sys.executable, "-m", "bridge.cli", "sandbox", "serve", "--mailboxes", "12",
        "--seed", "3",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parent,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().rstrip("\n") for _ in range(5)]
        assert re.fullmatch(
            r"Sandbox: 12 mailboxes \(seed 3\) at http://127\.0\.0\.1:\d+/PowerShell", lines[0]
        )
        assert lines[1] == "Configuration: Microsoft.Exchange"
        assert lines[4] == "Press Ctrl+C to stop."
        port = int(lines[0].rsplit(":", 1)[1].split("/")[0])
        username = lines[2].removeprefix("User: ")
        password = lines[3].removeprefix("Password: ")
        connection = WSMan(
            "127.0.0.1", port=port, ssl=False, username=username, password=password,
            path="PowerShell",
        )
        with RunspacePool(connection, configuration_name="Microsoft.Exchange") as runspace:
            shell = PowerShell(runspace)
            shell.add_cmdlet("Get-Mailbox").add_parameter("ResultSize", "Unlimited")
            assert len(shell.invoke()) == 12
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert re.fullmatch(r"Stopped after \d+ requests\.\n", out)


def test_serve_on_a_port_in_use_is_one_clear_error() -> None:
    from click.testing import CliRunner

    from bridge.cli import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["sandbox", "serve", "--mailboxes", "1", "--port", str(port)]
        )
    assert result.exit_code == 8
    assert result.output == (
        f"Error: The sandbox cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another port, or 0 for any free one.\n"
    )


def test_the_sandbox_keeps_each_library_in_one_module() -> None:
    bridge_dir = Path(__file__).resolve().parents[1] / "bridge"
    owners = {
        "psrpcore": {"sandbox/psrp.py"},
        # the Exchange Online emulation (issue 13) has its own server and Entra crypto
        # ... and the Exchange Online client turns an app's .pfx into PEM for MSAL
        "cryptography": {"sandbox/tls.py", "sandbox/entra_wire.py", "exo/signin.py"},
        "http": {"sandbox/loopback.py"},
    }
    sandbox_owners = {"spnego": "sandbox/auth.py"}  # remote.py reads spnego's errors
    for path in bridge_dir.rglob("*.py"):
        relative = path.relative_to(bridge_dir).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            name.split(".")[0]
            for node in ast.walk(tree)
            for name in (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
        }
        for library, owner in owners.items():
            assert library not in imported or relative in owner, (relative, library)
        if relative.startswith("sandbox/"):
            for library, owner in sandbox_owners.items():
                assert library not in imported or relative == owner, (relative, library)


def test_serve_https_prints_the_ca_file_to_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from bridge.cli import cli

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)  # Ctrl+C as soon as it is serving
    result = CliRunner().invoke(cli, ["sandbox", "serve", "--mailboxes", "3", "--https"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"Sandbox: 3 mailboxes \(seed 1\) at https://127\.0\.0\.1:\d+/PowerShell",
                        lines[0])
    assert re.fullmatch(r"CA file: .*/ca\.pem", lines[4])
    assert lines[5:] == ["Press Ctrl+C to stop.", "Stopped after 0 requests."]
