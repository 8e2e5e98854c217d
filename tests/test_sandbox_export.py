"""`psbridge sandbox export`: Export-Clixml-shaped files of the sandbox organisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from bridge.cli import cli
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation

NS = "{http://schemas.microsoft.com/powershell/2004/04}"


@pytest.fixture(scope="module")
def org() -> Organisation:
    return Organisation(mailboxes=30, seed=1)


@pytest.fixture(scope="module")
def exported(org: Organisation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    export_organisation(org, folder)
    return folder


def _objects(path: Path) -> list[etree._Element]:
    root = etree.fromstring(path.read_bytes())
    assert root.tag == f"{NS}Objs" and root.get("Version") == "1.1.0.1"
    return list(root)


def test_files_are_utf16_with_bom_as_windows_powershell_writes(exported: Path) -> None:
    for name in ("Mailboxes.xml", "MobileDeviceStatistics.xml"):
        raw = (exported / name).read_bytes()
        assert raw.startswith(b"\xff\xfe")
        text = raw[2:].decode("utf-16-le")
        assert text.startswith(
            '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">\r\n'
            '  <Obj RefId="0">\r\n    <TN RefId="0">\r\n      <T>Deserialized.Microsoft.')
        assert text.endswith("\r\n</Objs>")


def test_mailboxes_file_holds_every_mailbox_deserialized(
    exported: Path, org: Organisation
) -> None:
    objects = _objects(exported / "Mailboxes.xml")
    assert len(objects) == len(org.mailboxes)
    type_names = [t.text for t in objects[0].find(f"{NS}TN")]  # type: ignore[union-attr]
    assert type_names[0] == "Deserialized.Microsoft.Exchange.Data.Directory.Management.Mailbox"
    assert type_names[-1] == "Deserialized.System.Object"
    assert objects[1].find(f"{NS}TNRef").get("RefId") == "0"  # type: ignore[union-attr]
    ref_ids = [o.get("RefId") for o in objects[0].iter(f"{NS}Obj")]
    all_ref_ids = [o.get("RefId") for top in objects for o in top.iter(f"{NS}Obj")]
    assert ref_ids[0] == "0" and len(set(all_ref_ids)) == len(all_ref_ids)  # document-wide
    identities = [o.find(f"{NS}Props/{NS}S[@N='Identity']").text for o in objects]  # type: ignore[union-attr]
    assert identities == [m["Identity"] for m in org.mailboxes]
    quota = objects[0].find(f"{NS}Props/{NS}S[@N='ProhibitSendQuota']").text  # type: ignore[union-attr]
    assert quota == "Unlimited" or quota.endswith(" bytes)")  # type: ignore[union-attr]


def test_device_file_carries_queried_mailbox_and_nil_for_never(
    exported: Path, org: Organisation
) -> None:
    objects = _objects(exported / "MobileDeviceStatistics.xml")
    assert len(objects) == len(org.devices)
    for element, device in zip(objects, org.devices, strict=True):
        queried = element.find(f"{NS}MS/{NS}S[@N='QueriedMailbox']").text  # type: ignore[union-attr]
        assert queried == device["MailboxIdentity"]
        last = element.find(f"{NS}Props/*[@N='LastSuccessSync']")
        assert last is not None
        assert (last.tag == f"{NS}Nil") == (device["LastSuccessSync"] is None)
    manifest = json.loads((exported / "psbridge-manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"mailboxes": 30, "devices": len(org.devices), "errors": 0}
    assert manifest["recipient_types"] == ["UserMailbox", "SharedMailbox", "RoomMailbox"]
    assert manifest["all_devices"] is True and manifest["organization"] == "Contoso"
    assert manifest["created"].startswith(org.reference_time.strftime("%Y-%m-%dT%H:%M:%S"))


def test_same_seed_writes_identical_bytes(tmp_path: Path, exported: Path) -> None:
    export_organisation(Organisation(mailboxes=30, seed=1), tmp_path)
    for name in ("Mailboxes.xml", "MobileDeviceStatistics.xml", "psbridge-manifest.json"):
        assert (tmp_path / name).read_bytes() == (exported / name).read_bytes()


def test_empty_organisation_writes_empty_roots(tmp_path: Path) -> None:
    export_organisation(Organisation(mailboxes=0, seed=1), tmp_path)
    text = (tmp_path / "Mailboxes.xml").read_bytes()[2:].decode("utf-16-le")
    assert text == (
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04" />')


def test_cli_export_prints_what_it_wrote(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["sandbox", "export", str(tmp_path / "out"), "--mailboxes", "12", "--seed", "3"])
    devices = len(Organisation(mailboxes=12, seed=3).devices)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"Wrote 12 mailboxes and {devices} device partnerships (seed 3) to {tmp_path / 'out'}: "
        "Mailboxes.xml, MobileDeviceStatistics.xml, psbridge-manifest.json\n")
    assert (tmp_path / "out" / "MobileDeviceStatistics.xml").is_file()


def test_cli_export_into_an_impossible_folder_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["sandbox", "export", str(blocker / "sub")])
    assert result.exit_code == 4
    assert result.output == (
        f"Error: cannot create the export folder {blocker / 'sub'}: Not a directory\n")


def test_shipped_sample_is_the_seed_1_export(tmp_path: Path) -> None:
    """samples/exchange-export must be what the generator writes today (regenerate it with
    `psbridge sandbox export samples/exchange-export --mailboxes 25 --seed 1`)."""
    sample = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"
    export_organisation(Organisation(mailboxes=25, seed=1, online_client_types=True), tmp_path)
    for name in ("Mailboxes.xml", "MobileDeviceStatistics.xml", "psbridge-manifest.json"):
        assert (sample / name).read_bytes() == (tmp_path / name).read_bytes(), name


MAILBOX_KEYS = ("Identity", "Guid", "ExchangeGuid", "DisplayName", "Alias", "PrimarySmtpAddress",
                "UserPrincipalName", "RecipientTypeDetails", "DistinguishedName",
                "ProhibitSendQuota", "IssueWarningQuota", "MaxSendSize", "EmailAddresses",
                "WhenCreated", "WhenCreatedUTC", "WhenChangedUTC")
DEVICE_KEYS = ("Identity", "Guid", "DeviceID", "DeviceType", "DeviceModel", "DeviceOS",
               "DeviceUserAgent", "ClientType", "ClientVersion", "DeviceAccessState",
               "DeviceAccessStateReason", "FirstSyncTime", "LastSuccessSync",
               "LastSyncAttemptTime", "LastPingHeartbeat", "NumberOfFoldersSynced",
               "DeviceFriendlyName", "DeviceImei", "Status")


def test_read_clixml_of_the_export_is_the_ground_truth(exported: Path, org: Organisation) -> None:
    from bridge.clixml import iter_records, read_clixml
    from bridge.sizes import size_bytes, size_column

    mailboxes = list(iter_records(exported / "Mailboxes.xml"))
    # a record keeps a size's text ("50 GB (...)", "Unlimited": the reader cannot know it
    # is a size); bridge.sizes converts it where the schema says so
    def plain(v: object) -> object:
        if v == "Unlimited":
            return None
        return size_bytes(v) if isinstance(v, str) and v.endswith(" bytes)") else v

    assert [{k: plain(m[k]) for k in MAILBOX_KEYS}
            for m in mailboxes] == [{k: m[k] for k in MAILBOX_KEYS} for m in org.mailboxes]
    mailbox_frame = read_clixml(exported / "Mailboxes.xml")
    for column in ("ProhibitSendQuota", "MaxSendSize"):
        assert size_column(mailbox_frame[column]).equals(org.mailbox_frame()[column]), column
    for column in ("WhenCreated", "Guid"):
        assert mailbox_frame[column].equals(org.mailbox_frame()[column]), column
    devices = list(iter_records(exported / "MobileDeviceStatistics.xml"))
    assert [{k: d[k] for k in DEVICE_KEYS} for d in devices] == [
        {k: d[k] for k in DEVICE_KEYS} for d in org.devices]
    assert [d["QueriedMailbox"] for d in devices] == [d["MailboxIdentity"] for d in org.devices]
    frame = read_clixml(exported / "MobileDeviceStatistics.xml")
    truth = org.device_frame()
    assert list(frame["DeviceID"]) == list(truth["DeviceID"])
    assert frame["LastSuccessSync"].isna().sum() == truth["LastSuccessSync"].isna().sum() > 0
    assert (frame["LastSuccessSync"].dropna() == truth["LastSuccessSync"].dropna()).all()
