"""Objects as Exchange serializes them, read by stock pypsrp from the sandbox: the property
sets and order of real captures, masked phone numbers, Exchange's size text, the exact
unknown-filter-property message, and no Exchange Online ClientTypes on-premises."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from bridge.sandbox import Sandbox
from bridge.sandbox.exchange_types import format_size
from bridge.sandbox.organisation import masked_phone_number

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "clixml"
ORG_CONFIG_2019 = (
    "microsoft__CSS-Exchange__Diagnostics__HealthChecker__Tests__DataCollection__E19__"
    "Exchange__GetOrganizationConfig.xml"
)
#: the last properties of a real Exchange 2016 Get-Mailbox over pypsrp (3gstudent's capture)
MAILBOX_2016_TAIL = [
    "Identity", "IsValid", "ExchangeVersion", "Name", "DistinguishedName", "Guid",
    "ObjectCategory", "ObjectClass", "WhenChanged", "WhenCreated", "WhenChangedUTC",
    "WhenCreatedUTC", "OrganizationId", "Id", "OriginatingServer", "ObjectState",
]
#: the first properties of the same capture
MAILBOX_2016_HEAD = [
    "Database", "MailboxProvisioningConstraint", "MailboxRegion", "MailboxRegionLastUpdateTime",
    "MessageCopyForSentAsEnabled", "MessageCopyForSendOnBehalfEnabled",
    "MailboxProvisioningPreferences", "UseDatabaseRetentionDefaults",
]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=30, seed=1) as sandbox:  # on-premises, as by default
        yield sandbox
    assert sandbox.internal_errors == []


def _run(sandbox: Sandbox, name: str, **parameters: Any) -> PowerShell:
    wsman = WSMan("127.0.0.1", port=sandbox.port, path="PowerShell", ssl=False, auth="ntlm",
                  username=sandbox.username, password=sandbox.password)
    with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet(name)
        for key, value in parameters.items():
            shell.add_parameter(key, value)
        shell.invoke()
    return shell


def test_get_mailbox_has_the_real_property_set_and_order(endpoint: Sandbox) -> None:
    shell = _run(endpoint, "Get-Mailbox", ResultSize=1)
    names = list(shell.output[0].adapted_properties)
    assert len(names) > 180  # "about 190 properties"
    assert names[: len(MAILBOX_2016_HEAD)] == MAILBOX_2016_HEAD
    assert names[-len(MAILBOX_2016_TAIL):] == MAILBOX_2016_TAIL
    assert "AdminDisplayName" not in names


def test_get_organization_config_has_exchange_2019s_properties_in_order(
    endpoint: Sandbox,
) -> None:
    if not (CORPUS / ORG_CONFIG_2019).is_file():
        pytest.skip(f"real CLIXML corpus not found at {CORPUS}")
    corpus = etree.parse(str(CORPUS / ORG_CONFIG_2019)).getroot()
    ns = "{http://schemas.microsoft.com/powershell/2004/04}"
    expected = [prop.get("N") for prop in corpus[0].find(f"{ns}Props")]
    shell = _run(endpoint, "Get-OrganizationConfig")
    [config] = shell.output
    assert list(config.adapted_properties) == expected
    assert config.adapted_properties["ExchangeVersion"] == "2.0 (15.0.0.0)"
    assert config.adapted_properties["Name"] == "Contoso"


def test_device_phone_number_is_masked_but_the_last_4(endpoint: Sandbox) -> None:
    shell = _run(endpoint, "Get-MobileDevice", ResultSize="Unlimited")
    phones = [d for d in endpoint.organisation.iter_devices() if d.phone]
    assert phones
    statistics = _run(endpoint, "Get-MobileDeviceStatistics", Identity=phones[0].identity)
    [device] = statistics.output
    shown = device.adapted_properties["DevicePhoneNumber"]
    assert shown == "*" * (len(phones[0].phone) - 4) + phones[0].phone[-4:]
    assert shell.state == PSInvocationState.COMPLETED
    assert masked_phone_number("+44 7700900123") == "**********0123"
    assert masked_phone_number(None) is None


def test_sizes_have_4_significant_digits_never_an_exponent() -> None:
    assert format_size(115_131_392) == "109.8 MB (115,131,392 bytes)"
    assert format_size(1_032_536_064) == "984.7 MB (1,032,536,064 bytes)"
    assert format_size(2_752_512) == "2.625 MB (2,752,512 bytes)"
    assert format_size(1000 << 20) == "1000 MB (1,048,576,000 bytes)"  # not "1e+03 MB"
    assert format_size(50 << 30) == "50 GB (53,687,091,200 bytes)"


def test_unknown_filter_property_is_exchanges_message_exactly(endpoint: Sandbox) -> None:
    shell = _run(endpoint, "Get-Mailbox", Filter="Alias -eq 'a' -and Colour -eq 'red'")
    assert shell.state == PSInvocationState.FAILED
    assert str(shell.streams.error[0]) == (
        "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": "
        "\"\"Colour\" is not a recognized filterable property. For a complete list of "
        "filterable properties see the command help.\n\r\"Alias -eq 'a' -and Colour -eq "
        "'red'\" at position 20.\""  # 1-based, as the syntax errors' positions
    )


def test_on_premises_reports_no_exchange_online_client_types(endpoint: Sandbox) -> None:
    shell = _run(endpoint, "Get-MobileDevice", ResultSize="Unlimited")
    client_types = {device.adapted_properties["ClientType"] for device in shell.output}
    assert client_types == {"EAS"}
    models = {device.adapted_properties["DeviceModel"] for device in shell.output}
    assert "Outlook for iOS and Android" in models  # the app is there, over ActiveSync
