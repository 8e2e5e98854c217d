"""The reader against every real CLIXML file in ../shared/corpus/clixml.

Row counts are the number of top-level output objects; the values below were read off
the XML by hand, one or more per file, covering every feature the corpus shows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bridge import read_clixml
from bridge.clixml import SECURE_STRING, iter_records, parse_element, read_streams
from tests.conftest import CORPUS

PACIFIC = timezone(timedelta(hours=-7))


def _corpus_files() -> list[str]:
    return sorted(p.name for p in CORPUS.glob("*.xml")) if CORPUS.is_dir() else []


def _file(corpus_dir: Path, suffix: str) -> Path:
    (match,) = [p for p in corpus_dir.glob("*.xml") if p.name.endswith(suffix)]
    return match


# file suffix -> (rows, {(row, column): expected value})
EXPECTED: dict[str, tuple[int, dict[tuple[int, str], Any]]] = {
    # PSRP message payloads under one root: RefIds redefined per message
    "test_client_execute_ps_failure.yml.xml": (5, {(4, "PipelineState"): 5}),
    "test_psrp_get_command_metadata.yml.xml": (
        11,
        {(10, "Name"): "Get-WSManInstance", (10, "CommandType"): "Cmdlet"},
    ),
    "test_psrp_pshost_ui_mocked_methods.yml.xml": (26, {(25, "PipelineState"): 4}),
    "test_psrp_stream_no_output_invocation.yml.xml": (
        11,
        {(0, "protocolversion"): "2.3", (2, "RunspaceState"): 2},
    ),
    "test_psrp_with_jea_configuration.yml.xml": (7, {(6, "PipelineState"): 5}),
    # '#< CLIXML' with progress records only: no rows (streams tested below)
    "test_sanitise_clixml_with_no_errors.xml": (0, {}),
    "MonitorExchangeAuthCertificate__DataCollection__Tests__Data__GetExchangeServer.xml": (
        2,
        {(1, "Name"): "E2k16-2", (1, "Domain"): "Contoso.lab", (1, "Edition"): "Enterprise"},
    ),
    "GetChildItemInvalidPattern.xml": (  # UTF-16 LE
        1,
        {
            (0, "Name"): ["1603190004", "2110060016", "2110070014", "2201010000"],
            (0, "Failed"): False,
        },
    ),
    "InvokeWebRequestEEMS.xml": (1, {(0, "StatusCode"): 200, (0, "StatusDescription"): "OK"}),
    "GetItemPipeline2Dll.xml": (
        1,
        {(0, "Name"): "Pipeline2.dll", (0, "Length"): 2648064, (0, "IsReadOnly"): False},
    ),
    "E15__Exchange__GetIISWebSite.xml": (2, {(1, "Name"): "Exchange Back End", (1, "Id"): 2}),
    "E15__Exchange__GetMailboxServer.xml": (
        1,
        {(0, "Name"): "SOLO-E15A", (0, "ServerRole"): "Mailbox, ClientAccess"},  # flags enum
    ),
    "GetADPrincipalGroupMembership.xml": (
        5,
        {(4, "name"): "Exchange Install Domain Servers", (4, "GroupScope"): "Global"},
    ),
    "GetIrmConfiguration.xml": (  # UTF-16 LE
        1,
        {(0, "Name"): "ControlPoint Config", (0, "TransportDecryptionSetting"): "Optional"},
    ),
    "GetLocalGroupMember.xml": (4, {(3, "Name"): "SOLO-E16A\\Administrator"}),
    "HyperV_Win32_ComputerSystem.xml": (
        1,
        {
            (0, "TotalPhysicalMemory"): 6441385984,  # U64
            (0, "CurrentTimeZone"): -300,  # I16
            (0, "PowerState"): 0,  # U16
            (0, "__CLASS"): "Win32_ComputerSystem",
        },
    ),
    "GetAcceptedDomain_Bad.xml": (
        4,
        # row 1's OrganizationId is a <Ref> to an object inside row 0
        {(0, "DomainName"): "Solo.com", (3, "DomainName"): "*", (1, "OrganizationId"): ""},
    ),
    "GetExchangeAdSchemaClass_ms-Exch-Schema-Version-Pt.xml": (
        1,
        {
            (
                0,
                "Path",
            ): "LDAP://CN=ms-Exch-Schema-Version-Pt,CN=Schema,CN=Configuration,DC=Solo,DC=com"
        },
    ),
    "GetExchangeAppPoolsInformation.xml": (1, {}),
    "GetExchangeCertificate.xml": (3, {(2, "PSComputerName"): "solo-e19a.solo.com"}),
    "GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling.xml": (
        1,
        {(0, "ObjectState"): "New", (0, "IsValid"): True},
    ),
    "GetExchangeDomainsAclPermissions.xml": (
        1,
        {(0, "DomainName"): "Solo.com", (0, "DomainDN"): "DC=Solo,DC=com"},
    ),
    "E19__Exchange__GetExchangeServer.xml": (
        1,
        {(0, "Name"): "SOLO-E19A", (0, "Edition"): "StandardEvaluation"},
    ),
    "GetExtendedProtectionConfiguration.xml": (
        1,
        {(0, "ComputerName"): "E2k16-1", (0, "SupportedVersionForExtendedProtection"): False},
    ),
    "GetGlobalMonitoringOverride.xml": (  # Deserialized.* type names
        3,
        {(2, "ItemType"): "Responder", (2, "HealthSetName"): "MailboxSpace"},
    ),
    "GetHybridConfiguration.xml": (
        1,
        {
            (0, "Domains"): ["contoso.com"],  # MultiValuedProperty -> list
            (0, "OnPremisesSmartHost"): "mail.contoso.com",
        },
    ),
    "E19__Exchange__GetMailboxServer.xml": (
        1,
        {
            (0, "CalendarRepairLogDirectorySizeLimit"): 524_288_000,  # Unlimited, limited
            (0, "LogDirectorySizeLimitForManagedFolders"): None,  # Unlimited
            (0, "MigrationLogMaxDirectorySize"): 5_368_709_120,  # ByteQuantifiedSize
            (0, "CalendarRepairMode"): "RepairAndValidate",  # enum
            (0, "CalendarRepairLogFileAgeLimit"): "10.00:00:00",  # Exchange object: ToString
            (0, "DataPath"): "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Mailbox",
            (0, "WhenChangedUTC"): datetime(2021, 9, 28, 17, 32, 1, tzinfo=UTC),
            (0, "WhenChanged"): datetime(2021, 9, 28, 10, 32, 1, tzinfo=PACIFIC),
        },
    ),
    "GetOrganizationConfig.xml": (
        1,
        {
            (0, "Name"): "SoloORG",
            (0, "ObjectVersion"): 16759,
            (0, "ForestConfigLastRunTime"): datetime(1, 1, 1, tzinfo=UTC),  # no zone: UTC
        },
    ),
    "GetOwaVirtualDirectory.xml": (
        1,
        {
            (0, "InternalAuthenticationMethods"): ["Basic", "Fba"],  # list of enums
            (0, "InternalUrl"): "https://solo-e19a.solo.com/owa",  # URI
            (0, "Identity"): "SOLO-E19A\\owa (Default Web Site)",  # ADObjectId: ToString
        },
    ),
    "GetPartnerApplication.xml": (
        5,
        {(4, "ApplicationIdentifier"): "00000004-0000-0ff1-ce00-000000000000"},
    ),
    "GetSettingOverride1.xml": (
        1,
        {(0, "ComponentName"): "Data", (0, "Reason"): "Enabling Signing Verification"},
    ),
    "IIS__GetWebSite2.xml": (2, {(1, "Name"): "Exchange Back End"}),  # UTF-8 without BOM
    "TestServiceHealth.xml": (3, {(2, "Role"): "Hub Transport Server Role"}),
    "GetCounterSamples.xml": (
        1,
        {
            (0, "CookedValue"): 0.0,  # Db
            (0, "MultipleCount"): 1,  # U32
            (0, "CounterType"): "NumberOfItems64",
            (0, "Timestamp"): datetime(2021, 9, 29, 13, 56, 25, 411000, tzinfo=PACIFIC),
        },
    ),
    "GetDotNetDllFileVersions.xml": (1, {}),
    "GetNetIPConfiguration.xml": (
        1,
        {(0, "InterfaceAlias"): "Ethernet", (0, "InterfaceIndex"): 7},
    ),
    "GetService.xml": (254, {(253, "DisplayName"): "Windows Update", (253, "CanStop"): False}),
    "GetWinEventOldestSystem.xml": (1, {(0, "Id"): 104, (0, "Level"): 4}),
    "GetWindowsFeature.xml": (
        268,
        {(267, "Name"): "XPS-Viewer", (267, "InstallState"): "Installed"},
    ),
    "RemoteRegistryValueProductName.xml": (1, {(0, "Value"): "Windows Server 2019 Datacenter"}),
    "Win32_PageFileSystemManaged.xml": (0, {}),  # empty <Objs/>
    "HealthCheck-vnext-e2k16aio1-20180111124902.xml": (1, {(0, "ServerName"): "vnext-e2k16aio1"}),
    "TlsCipherLocalPath.xml": (
        40,
        {
            (0, "Value"): "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384_P256",
            (39, "Value"): "SSL_CK_DES_192_EDE3_CBC_WITH_MD5",
        },
    ),
    "acs_Test-SignedBy3rdParty.xml": (  # UTF-16 LE
        1,
        {(0, "Status"): "Valid", (0, "StatusMessage"): "Signature verified."},
    ),
    "ExtendedProtection__Data__GetCommand.xml": (
        1,
        {(0, "Version"): "15.1.2507.9", (0, "Extension"): ".exe"},  # <Version>
    ),
}


def _expectation(name: str) -> tuple[int, dict[tuple[int, str], Any]]:
    matches = [key for key in EXPECTED if name.endswith(key)]
    assert len(matches) == 1, f"no (or more than one) hand-written expectation for {name}"
    return EXPECTED[matches[0]]


@pytest.mark.parametrize(
    "name",
    _corpus_files() or ["(corpus missing)"],
    ids=lambda name: name.replace("microsoft__CSS-Exchange__", "").replace("jborean93__", ""),
)
def test_corpus_file_reads_with_expected_rows_and_values(corpus_dir: Path, name: str) -> None:
    rows, values = _expectation(name)
    records = list(iter_records(corpus_dir / name))
    assert len(records) == rows
    for (row, column), expected in values.items():
        assert records[row][column] == expected, (row, column)
    frame = read_clixml(corpus_dir / name)
    assert len(frame) == rows
    assert list(frame.columns) == list(dict.fromkeys(k for record in records for k in record))


def test_every_corpus_file_has_an_expectation(corpus_dir: Path) -> None:
    assert len(_corpus_files()) == len(EXPECTED) == 45


def test_out_of_range_dates_are_nat_in_the_frame(corpus_dir: Path) -> None:
    frame = read_clixml(_file(corpus_dir, "GetOrganizationConfig.xml"))
    assert str(frame["ForestConfigLastRunTime"].dtype) == "datetime64[ns, UTC]"
    assert pd.isna(frame["ForestConfigLastRunTime"][0])  # 0001-01-01
    assert frame["WhenChanged"][0] == pd.Timestamp("2021-09-28 16:53:39", tz="UTC")


def test_timespan_max_is_kept_in_records(corpus_dir: Path) -> None:
    (record,) = iter_records(_file(corpus_dir, "GetNetIPConfiguration.xml"))
    address = record["IPv4Address"][0]  # type: ignore[index]
    # TimeSpan.MaxValue (...5.4775807 s), truncated to the microsecond like dates
    assert address["PreferredLifetime"] == timedelta(
        days=10675199, hours=2, minutes=48, seconds=5, microseconds=477580
    )


def test_u32_maximum_deep_inside_nested_objects(corpus_dir: Path) -> None:
    records = list(iter_records(_file(corpus_dir, "E15__Exchange__GetIISWebSite.xml")))
    limits = records[0]["Limits"]
    assert limits["Attributes"][0]["Schema"]["DefaultValue"] == 4294967295  # type: ignore[index]


def test_date_without_zone_is_utc(corpus_dir: Path) -> None:
    (record,) = iter_records(_file(corpus_dir, "HealthCheck-vnext-e2k16aio1-20180111124902.xml"))
    hotfix = record["OSVersion"]["HotFixes"][0]  # type: ignore[index]
    assert hotfix["InstalledOn"] == datetime(2015, 4, 23, tzinfo=UTC)


def test_escapes_decoded_in_strings(corpus_dir: Path) -> None:
    name = "GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling.xml"
    (record,) = iter_records(_file(corpus_dir, name))
    assert str(record["Result"]).startswith("<Diagnostics>\r\n  <ProcessInfo>\r\n    <id>2948</id>")


def test_xml_document_value(corpus_dir: Path) -> None:
    (record,) = iter_records(_file(corpus_dir, "GetExtendedProtectionConfiguration.xml"))
    assert str(record["ApplicationHostConfig"]).startswith(
        '<?xml version="1.0" encoding="UTF-8"?><!--\r\n\r\n    IIS configuration sections.'
    )


def test_byte_array_is_bytes(corpus_dir: Path) -> None:
    records = list(iter_records(_file(corpus_dir, "GetExchangeCertificate.xml")))
    raw = records[0]["RawData"]
    assert isinstance(raw, bytes) and raw[:2] == b"\x30\x82"  # DER SEQUENCE


def test_secure_string_is_never_decrypted(corpus_dir: Path) -> None:
    records = list(iter_records(_file(corpus_dir, "test_psrp_pshost_ui_mocked_methods.yml.xml")))
    secure = [r for r in records if r.get("Value") == SECURE_STRING]
    credential = [r for r in records if r.get("UserName") == "username"]
    assert len(secure) == 1
    assert credential[0]["Password"] == SECURE_STRING
    assert "K86C/Bl3T" not in repr(records)  # the encrypted text is not passed on either


def test_progress_records_are_a_stream_not_rows(corpus_dir: Path) -> None:
    path = _file(corpus_dir, "test_sanitise_clixml_with_no_errors.xml")
    assert read_clixml(path).empty
    progress = read_streams(path)["progress"]
    assert len(progress) == 2
    assert progress[0]["Record"] == {
        "Activity": "Preparing modules for first use.",
        "ActivityId": 0,
        "CurrentOperation": None,
        "ParentActivityId": -1,
        "PercentComplete": -1,
        "Type": "Completed",
        "SecondsRemaining": -1,
        "StatusDescription": "",
    }


@pytest.mark.parametrize(
    "suffix",
    [
        "test_client_execute_ps_failure.yml.xml",
        "test_psrp_get_command_metadata.yml.xml",
        "test_psrp_pshost_ui_mocked_methods.yml.xml",
        "test_psrp_stream_no_output_invocation.yml.xml",
        "test_psrp_with_jea_configuration.yml.xml",
    ],
)
def test_parse_element_on_real_psrp_payloads_gives_the_file_rows(
    corpus_dir: Path, suffix: str
) -> None:
    """Each message of these files is a real PSRP payload with its own RefId scope."""
    from lxml import etree

    path = _file(corpus_dir, suffix)
    namespace = ' xmlns="http://schemas.microsoft.com/powershell/2004/04"'
    payloads = [
        etree.tostring(element, encoding="unicode").replace(namespace, "")
        for element in etree.parse(str(path)).getroot()
        if isinstance(element.tag, str)  # not the harvester's comments
    ]
    assert [parse_element(payload) for payload in payloads] == list(iter_records(path))


def test_every_corpus_file_reads_as_the_tree_reader_reads_it(corpus_dir: Path) -> None:
    """read_clixml takes the columnar reader for a file of Exchange's objects, and lxml's
    tree for anything else: either way, what lxml's tree gives."""
    from bridge.clixml import records_to_frame
    from bridge.clixml._columnar import read_part
    from bridge.clixml._convert import Converter, Reread

    columnar = 0
    for path in sorted(corpus_dir.glob("*.xml")):
        expected = records_to_frame(iter_records(path))
        pd.testing.assert_frame_equal(read_clixml(path), expected, obj=path.name)
        try:
            read_part(path, Converter())
            columnar += 1
        except Reread:
            pass
    assert columnar >= 4  # Get-ExchangeCertificate, Test-ServiceHealth... (the others: Refs etc.)
