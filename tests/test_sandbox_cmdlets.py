"""The sandbox's Exchange cmdlets through the CmdletHost contract (no HTTP), plus a few runs
through pypsrp against the real endpoint."""

from __future__ import annotations

import re
from typing import Any

import pytest
from lxml import etree

from bridge.sandbox.cmdlets import (
    WARNING_DEFAULT_RESULT_SIZE,
    WARNING_MORE_RESULTS,
    ExchangeCmdlets,
)
from bridge.sandbox.contract import (
    CommandCall,
    ErrorSpec,
    PipelineOutcome,
    SerializedObject,
    WarningMessage,
)
from bridge.sandbox.organisation import Organisation


@pytest.fixture(scope="module")
def org() -> Organisation:
    # Exchange Online's ClientTypes: the -RestApi/-UniversalOutlook switches need them
    return Organisation(mailboxes=40, seed=1, online_client_types=True)


@pytest.fixture(scope="module")
def host(org: Organisation) -> ExchangeCmdlets:
    return ExchangeCmdlets(org)


def run(host: ExchangeCmdlets, *commands: CommandCall) -> tuple[list[Any], PipelineOutcome]:
    outcome = host.invoke(list(commands), "admin@contoso.com")
    events = list(outcome.events)
    return events, outcome


def props(event: SerializedObject) -> dict[str, str | None]:
    """Property name -> text (None for Nil) of one serialized object's Props."""
    root = etree.fromstring(event.clixml.encode())
    result: dict[str, str | None] = {}
    for element in root.find("Props"):  # type: ignore[union-attr]
        result[element.get("N", "")] = None if element.tag == "Nil" else element.text
    return result


def type_names(event: SerializedObject) -> list[str]:
    root = etree.fromstring(event.clixml.encode())
    return [t.text or "" for t in root.find("TN")]  # type: ignore[union-attr]


def objects(events: list[Any]) -> list[SerializedObject]:
    return [e for e in events if isinstance(e, SerializedObject)]


def call(name: str, **parameters: Any) -> CommandCall:
    return CommandCall(name, parameters)


def test_get_mailbox_all_with_unlimited(host: ExchangeCmdlets, org: Organisation) -> None:
    events, outcome = run(host, call("Get-Mailbox", ResultSize="Unlimited"))
    assert outcome.terminating is None
    assert [props(e)["Identity"] for e in events] == [m["Identity"] for m in org.mailboxes]
    first = events[0]
    assert type_names(first) == [
        "Microsoft.Exchange.Data.Directory.Management.Mailbox",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ]
    assert list(props(first)) == list(org.mailboxes[0])  # Exchange's property order
    assert re.search(r'<G N="Guid">[0-9a-f-]{36}</G>', first.clixml)
    assert re.search(r'<DT N="WhenCreatedUTC">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</DT>', first.clixml)
    assert re.search(r'<DT N="WhenCreated">[0-9T:-]+\+01:00</DT>', first.clixml)


def test_default_result_size_is_1000_with_exchanges_warning() -> None:
    host = ExchangeCmdlets(Organisation(mailboxes=1003, seed=2))
    events, _ = run(host, call("Get-Mailbox"))
    assert len(objects(events)) == 1000
    assert events[-1] == WarningMessage(WARNING_DEFAULT_RESULT_SIZE.format(1000))
    assert events[-1].text.startswith("By default, only the first 1000 items are returned.")
    events, _ = run(host, call("Get-Mailbox", ResultSize=3))
    assert len(objects(events)) == 3 and events[-1] == WarningMessage(WARNING_MORE_RESULTS)
    events, _ = run(host, call("Get-Mailbox", ResultSize="unlimited"))
    assert len(events) == 1003 and not any(isinstance(e, WarningMessage) for e in events)


def test_recipient_type_details_as_list_or_comma_string(
    host: ExchangeCmdlets, org: Organisation
) -> None:
    wanted = {"SharedMailbox", "RoomMailbox"}
    expected = [m["Identity"] for m in org.mailboxes if m["RecipientTypeDetails"] in wanted]
    for value in (["SharedMailbox", "RoomMailbox"], "SharedMailbox,RoomMailbox"):
        events, _ = run(host, call("Get-Mailbox", RecipientTypeDetails=value))
        assert [props(e)["Identity"] for e in events] == expected
    _, outcome = run(host, call("Get-Mailbox", RecipientTypeDetails="Bogus"))
    assert outcome.terminating is not None
    assert outcome.terminating.message.startswith(
        "Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value \"Bogus\"")


def test_identity_resolves_like_exchange(host: ExchangeCmdlets, org: Organisation) -> None:
    target = next(m for m in org.mailboxes if "'" in m["DisplayName"])
    for identity in (target["Alias"], target["PrimarySmtpAddress"], target["Guid"],
                     target["DistinguishedName"], target["Identity"], target["Name"].upper()):
        events, _ = run(host, call("Get-Mailbox", Identity=identity))
        assert [props(e)["Guid"] for e in events] == [target["Guid"]]


def test_unknown_identity_is_a_non_terminating_not_found(host: ExchangeCmdlets) -> None:
    events, outcome = run(host, call("Get-Mailbox", Identity="nobody@contoso.com"))
    assert outcome.terminating is None
    [error] = events
    assert isinstance(error, ErrorSpec)
    assert error.message == (
        "The operation couldn't be performed because object 'nobody@contoso.com' couldn't be "
        "found on 'DC01.contoso.com'.")
    assert error.exception_type.endswith(".ManagementObjectNotFoundException")
    assert (error.category, error.reason, error.command_name) == (
        "NotSpecified", "ManagementObjectNotFoundException", "Get-Mailbox")
    assert re.fullmatch(
        r"\[Server=EXCH01,RequestId=[0-9a-f-]{36},TimeStamp=\d+/\d+/\d{4} \d+:\d\d:\d\d [AP]M\] "
        r"\[FailureCategory=Cmdlet-ManagementObjectNotFoundException\] [0-9A-F]{8},"
        r"Microsoft\.Exchange\.Management\.RecipientTasks\.GetMailbox",
        error.fully_qualified_error_id)


def test_bad_parameters_terminate_with_parameter_binding(host: ExchangeCmdlets) -> None:
    events, outcome = run(host, call("Get-Mailbox", Foo="x"))
    assert events == [] and outcome.terminating is not None
    assert outcome.terminating.message == (
        "A parameter cannot be found that matches parameter name 'Foo'.")
    assert outcome.terminating.exception_type.endswith("ParameterBindingException")
    assert outcome.terminating.fully_qualified_error_id == (
        "NamedParameterNotFound,Microsoft.Exchange.Management.RecipientTasks.GetMailbox")
    _, outcome = run(host, call("Get-Mailbox", ResultSize="lots"))
    assert outcome.terminating is not None and "ResultSize" in outcome.terminating.message
    # unambiguous prefixes bind, as in PowerShell
    events, outcome = run(host, call("Get-Mailbox", Res=2))
    assert outcome.terminating is None and len(objects(events)) == 2


def test_filter_eq_like_and(host: ExchangeCmdlets, org: Organisation) -> None:
    target = next(m for m in org.mailboxes if m["RecipientTypeDetails"] == "UserMailbox")
    prefix = target["Alias"][:3]
    text = f"RecipientTypeDetails -eq 'UserMailbox' -and Alias -like '{prefix}*'"
    events, _ = run(host, call("Get-Mailbox", Filter=text))
    expected = [m["Guid"] for m in org.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"
                and m["Alias"].lower().startswith(prefix.lower())]
    assert [props(e)["Guid"] for e in events] == expected and target["Guid"] in expected
    _, outcome = run(host, call("Get-Mailbox", Filter="Colour -eq 'red'"))
    assert outcome.terminating is not None
    assert '"Colour" is not a recognized filterable property' in outcome.terminating.message
    _, outcome = run(host, call("Get-Mailbox", Filter="Alias -eq"))
    assert outcome.terminating is not None
    assert "Invalid filter syntax" in outcome.terminating.message


def test_cas_mailbox_reports_device_partnerships(host: ExchangeCmdlets, org: Organisation) -> None:
    events, _ = run(host, call("Get-CASMailbox", ResultSize="Unlimited"))
    with_devices = {d["MailboxIdentity"] for d in org.devices}
    flags = {props(e)["Identity"]: props(e)["HasActiveSyncDevicePartnership"] for e in events}
    assert flags == {m["Identity"]: ("true" if m["Identity"] in with_devices else "false")
                     for m in org.mailboxes}
    assert type_names(events[0])[0] == "Microsoft.Exchange.Data.Directory.Management.CASMailbox"


def test_mobile_device_statistics_per_mailbox(host: ExchangeCmdlets, org: Organisation) -> None:
    owner = next(d["MailboxIdentity"] for d in org.devices)
    expected = [d for d in org.devices if d["MailboxIdentity"] == owner]
    events, outcome = run(host, call("Get-MobileDeviceStatistics", Mailbox=owner))
    assert outcome.terminating is None
    assert [props(e)["Identity"] for e in events] == [d["Identity"] for d in expected]
    assert type_names(events[0]) == [
        "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration", "System.Object"]
    assert list(props(events[0])) == [k for k in expected[0] if k != "MailboxIdentity"]
    one = expected[0]["Identity"]
    events, _ = run(host, call("Get-MobileDeviceStatistics", Identity=one))
    assert [props(e)["Identity"] for e in events] == [one]


def test_never_synced_device_sends_nil(host: ExchangeCmdlets, org: Organisation) -> None:
    never = next(d for d in org.devices if d["LastSuccessSync"] is None)
    [event], _ = run(host, call("Get-MobileDeviceStatistics", Identity=never["Identity"]))
    assert '<Nil N="LastSuccessSync" />' in event.clixml
    assert props(event)["LastSuccessSync"] is None


def test_statistics_for_unknown_mailbox_is_recipient_not_found(host: ExchangeCmdlets) -> None:
    [error], outcome = run(host, call("Get-MobileDeviceStatistics", Mailbox="ghost"))
    assert outcome.terminating is None
    assert isinstance(error, ErrorSpec)
    assert error.message == "Couldn't find 'ghost' as a recipient."
    assert error.category == "InvalidArgument"
    assert error.exception_type == (
        "Microsoft.Exchange.Management.AirSync.RecipientNotFoundException")


def test_pipeline_get_mobile_device_into_statistics(
    host: ExchangeCmdlets, org: Organisation
) -> None:
    events, outcome = run(
        host,
        call("Get-MobileDevice", ResultSize="Unlimited"),
        call("Get-MobileDeviceStatistics"),
    )
    assert outcome.terminating is None
    assert [props(e)["Identity"] for e in events] == [d["Identity"] for d in org.devices]
    assert all(type_names(e)[0].endswith("MobileDeviceConfiguration") for e in events)
    events, _ = run(
        host,
        call("Get-MobileDevice", ResultSize="Unlimited", Filter="ClientType -eq 'REST'"),
        call("Get-MobileDeviceStatistics"),
    )
    rest = [d["Identity"] for d in org.devices if d["ClientType"] == "REST"]
    assert rest and [props(e)["Identity"] for e in events] == rest


def test_get_mobile_device_shapes_and_switches(host: ExchangeCmdlets, org: Organisation) -> None:
    events, _ = run(host, call("Get-MobileDevice", ResultSize="Unlimited", RestApi=None))
    assert {props(e)["ClientType"] for e in events} == {"REST"}
    first = events[0]
    assert type_names(first)[0] == (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice")
    assert type_names(first)[-1] == "System.Object"
    assert "DeviceId" in props(first) and "DeviceID" not in props(first)
    owner = org.devices[0]["MailboxIdentity"]
    events, _ = run(host, call("Get-MobileDevice", Mailbox=owner))
    assert {str(props(e)["Identity"]).rpartition("/ExchangeActiveSyncDevices/")[0]
            for e in events} == {owner}
    missing = "contoso.com/x/ExchangeActiveSyncDevices/y"
    [error], _ = run(host, call("Get-MobileDevice", Identity=missing))
    assert isinstance(error, ErrorSpec) and "couldn't be found" in error.message


def test_commands_and_scripts_the_session_lacks(host: ExchangeCmdlets) -> None:
    assert host.has_command("get-mailbox") and host.has_command("Get-MobileDeviceStatistics")
    assert not host.has_command("Remove-Mailbox")
    _, outcome = run(host, CommandCall("Get-Mailbox | Select Name", is_script=True))
    assert outcome.terminating is not None
    assert outcome.terminating.fully_qualified_error_id == "ScriptsNotAllowed"
    assert outcome.terminating.message.startswith("The syntax is not supported by this runspace.")


def test_serialized_objects_are_cached_and_escaped(org: Organisation) -> None:
    host = ExchangeCmdlets(org)
    first, _ = run(host, call("Get-Mailbox", ResultSize="Unlimited"))
    second, _ = run(host, call("Get-Mailbox", ResultSize="Unlimited"))
    assert all(a.clixml is b.clixml for a, b in zip(first, second, strict=True))
    names = [props(e)["DisplayName"] for e in first]
    assert names == [m["DisplayName"] for m in org.mailboxes]


def test_advance_is_visible_through_the_cmdlets() -> None:
    org = Organisation(mailboxes=60, seed=5)
    host = ExchangeCmdlets(org)
    before, _ = run(host, call("Get-MobileDevice", ResultSize="Unlimited"),
                    call("Get-MobileDeviceStatistics"))
    org.advance(60, seed=3)
    after, _ = run(host, call("Get-MobileDevice", ResultSize="Unlimited"),
                   call("Get-MobileDeviceStatistics"))
    assert [props(e)["Identity"] for e in after] == [d["Identity"] for d in org.devices]
    assert [props(e)["LastSuccessSync"] for e in after] != [
        props(e)["LastSuccessSync"] for e in before]


# -- end to end: pypsrp against the sandbox endpoint (conftest's 30-mailbox `sandbox`) -----


def _pypsrp_pool(sandbox: Any) -> Any:
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    wsman = WSMan("127.0.0.1", port=sandbox.port, path="PowerShell", ssl=False, auth="ntlm",
                  username=sandbox.username, password=sandbox.password)
    return RunspacePool(wsman, configuration_name="Microsoft.Exchange")


def _pypsrp_run(pool: Any, *commands: tuple[str, dict[str, Any]]) -> Any:
    from pypsrp.powershell import PowerShell

    shell = PowerShell(pool)
    for name, parameters in commands:
        shell.add_cmdlet(name)
        for parameter, value in parameters.items():
            shell.add_parameter(parameter, value)
    shell.output = shell.invoke()
    return shell


def test_pypsrp_reads_mailboxes_and_device_statistics(sandbox: Any) -> None:
    from pypsrp.powershell import PSInvocationState

    org = sandbox.organisation
    with _pypsrp_pool(sandbox) as pool:
        mailboxes = _pypsrp_run(pool, ("Get-Mailbox", {
            "RecipientTypeDetails": ["UserMailbox", "SharedMailbox"], "ResultSize": "Unlimited"}))
        expected = [m for m in org.mailboxes
                    if m["RecipientTypeDetails"] in ("UserMailbox", "SharedMailbox")]
        assert mailboxes.state == PSInvocationState.COMPLETED
        assert [o.adapted_properties["DisplayName"] for o in mailboxes.output] == [
            m["DisplayName"] for m in expected]
        assert mailboxes.output[0].types[-1] == "System.Object"
        devices = _pypsrp_run(pool, ("Get-MobileDevice", {"ResultSize": "Unlimited"}),
                              ("Get-MobileDeviceStatistics", {}))
        by_identity = {o.adapted_properties["Identity"]: o.adapted_properties
                       for o in devices.output}
        assert list(by_identity) == [d["Identity"] for d in org.devices]
        never = next(d for d in org.devices if d["LastSuccessSync"] is None)
        assert by_identity[never["Identity"]]["LastSuccessSync"] is None
        limited = _pypsrp_run(pool, ("Get-Mailbox", {"ResultSize": 2}))
        assert len(limited.output) == 2
        assert [w.message for w in limited.streams.warning] == [WARNING_MORE_RESULTS]
    assert sandbox.internal_errors == []


def test_pypsrp_sees_exchanges_errors(sandbox: Any) -> None:
    from pypsrp.powershell import PSInvocationState

    with _pypsrp_pool(sandbox) as pool:
        missing = _pypsrp_run(pool, ("Get-Mailbox", {"Identity": "ghost@contoso.com"}))
        assert missing.state == PSInvocationState.COMPLETED and missing.output == []
        [error] = missing.streams.error
        assert str(error) == ("The operation couldn't be performed because object "
                              "'ghost@contoso.com' couldn't be found on 'DC01.contoso.com'.")
        assert error.fq_error.endswith(
            "C2BA0E4D,Microsoft.Exchange.Management.RecipientTasks.GetMailbox")
        bad = _pypsrp_run(pool, ("Get-MobileDevice", {"Colour": "red"}))
        assert bad.state == PSInvocationState.FAILED
        assert str(bad.streams.error[0]) == (
            "A parameter cannot be found that matches parameter name 'Colour'.")
    assert sandbox.internal_errors == []


def test_filter_compares_dates(host: ExchangeCmdlets, org: Organisation) -> None:
    cut = org.reference_time.replace(year=org.reference_time.year - 1)
    for text in (cut.strftime("%Y-%m-%dT%H:%M:%SZ"), cut.strftime("%m/%d/%Y %I:%M:%S %p")):
        events, outcome = run(host, call(
            "Get-MobileDevice", ResultSize="Unlimited", Filter=f"FirstSyncTime -gt '{text}'"))
        assert outcome.terminating is None
        expected = [d["Identity"] for d in org.devices if d["FirstSyncTime"] > cut]
        assert expected and [props(e)["Identity"] for e in events] == expected


def test_wire_objects_parse_to_the_ground_truth(host: ExchangeCmdlets, org: Organisation) -> None:
    from bridge.clixml import parse_element

    events, _ = run(host, call("Get-Mailbox", ResultSize="Unlimited"))
    from bridge.sizes import size_bytes

    parsed = [parse_element(e.clixml) for e in events]
    # records keep a size's text ("50 GB (...)", "Unlimited"); frames convert it (sizes)
    def plain(v: object) -> object:
        if v == "Unlimited":
            return None
        return size_bytes(v) if isinstance(v, str) and v.endswith(" bytes)") else v

    assert [{k: plain(v) for k, v in p.items()} for p in parsed] == org.mailboxes
    events, _ = run(host, call("Get-MobileDevice", ResultSize="Unlimited"),
                    call("Get-MobileDeviceStatistics"))
    devices = [parse_element(e.clixml) for e in events]
    truth = [{k: v for k, v in d.items() if k != "MailboxIdentity"} for d in org.devices]
    assert devices == truth


def test_wildcard_identity_and_boolean_filters(host: ExchangeCmdlets, org: Organisation) -> None:
    rooms = [m["Guid"] for m in org.mailboxes if m["Alias"].startswith("room.")]
    events, _ = run(host, call("Get-Mailbox", Identity="ROOM.*"))
    assert rooms and [props(e)["Guid"] for e in events] == rooms
    events, outcome = run(host, call(
        "Get-CASMailbox", ResultSize="Unlimited",
        Filter="HasActiveSyncDevicePartnership -eq $true -and -not (DisplayName -like 'A*')"))
    owners = {d["MailboxIdentity"] for d in org.devices}
    expected = [m["Identity"] for m in org.mailboxes
                if m["Identity"] in owners and not m["DisplayName"].lower().startswith("a")]
    assert outcome.terminating is None and [props(e)["Identity"] for e in events] == expected
    events, _ = run(host, call(
        "Get-Mailbox", Filter="RecipientTypeDetails -ne 'UserMailbox' -or Alias -eq 'nobody'"))
    assert [props(e)["Guid"] for e in events] == [
        m["Guid"] for m in org.mailboxes if m["RecipientTypeDetails"] != "UserMailbox"]


def test_statistics_without_identity_or_input_is_a_missing_mandatory_parameter(
    host: ExchangeCmdlets,
) -> None:
    events, outcome = run(host, call("Get-MobileDeviceStatistics"))
    assert events == [] and outcome.terminating is not None
    assert outcome.terminating.message == (
        "Cannot process command because of one or more missing mandatory parameters: Identity.")
    assert outcome.terminating.fully_qualified_error_id == (
        "MissingMandatoryParameter,Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics")


def test_get_organization_config(host: ExchangeCmdlets, org: Organisation) -> None:
    from bridge.clixml import parse_element

    events, outcome = run(host, call("Get-OrganizationConfig"))
    assert outcome.terminating is None
    [config] = objects(events)
    assert type_names(config) == [
        "Microsoft.Exchange.Data.Directory.Management.OrganizationConfig",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ]
    record = parse_element(config.clixml)
    assert isinstance(record, dict)
    assert record["Name"] == record["Identity"] == org.organization == "Contoso"
    assert record["DisplayName"] == "" and record["IsDehydrated"] is False
    assert record["DistinguishedName"] == (
        "CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=com")
    assert re.fullmatch(r"[0-9a-f-]{36}", str(record["Guid"]))
    # the same object on every call; the name follows the organisation's
    again, _ = run(host, call("Get-OrganizationConfig"))
    assert objects(again)[0].clixml == config.clixml
    other = Organisation(mailboxes=2, seed=5)
    other.organization = "Fabrikam"
    [renamed] = objects(run(ExchangeCmdlets(other), call("Get-OrganizationConfig"))[0])
    assert props(renamed)["Name"] == "Fabrikam"
    _, outcome = run(host, call("Get-OrganizationConfig", Foo="x"))
    assert outcome.terminating is not None and outcome.terminating.fully_qualified_error_id == (
        "NamedParameterNotFound,"
        "Microsoft.Exchange.Management.SystemConfigurationTasks.GetOrganizationConfig")
