"""The sandbox's protocol side (HTTP, auth, WSMan, PSRP) driven by pypsrp's real client.

A tiny CmdletHost stands in for the Exchange side here so these tests pin the protocol
behaviour on their own; tests/test_sandbox_exchange.py covers the cmdlets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WSManFaultError
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
    assert tiny.users == [sb.username]


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
    assert threading.active_count() < 50
    assert "password" not in repr(sandbox).lower() or sandbox.password not in repr(sandbox)
