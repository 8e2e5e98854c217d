"""The sandbox's synthetic organisation: determinism, variety the report depends on, ageing."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bridge.sandbox.organisation import REFERENCE_BASE, Organisation


@pytest.fixture(scope="module")
def org() -> Organisation:
    return Organisation(mailboxes=200, seed=1, online_client_types=True)


def test_same_seed_same_organisation_different_seed_different() -> None:
    first, again, other = Organisation(60, seed=7), Organisation(60, seed=7), Organisation(60, 8)
    assert first.mailboxes == again.mailboxes
    assert first.devices == again.devices
    assert first.reference_time == again.reference_time
    assert [m["Guid"] for m in first.mailboxes] != [m["Guid"] for m in other.mailboxes]


def test_reference_time_comes_from_the_seed_not_the_clock(org: Organisation) -> None:
    assert REFERENCE_BASE <= org.reference_time < REFERENCE_BASE + timedelta(hours=10)
    assert org.reference_time.tzinfo is not None
    latest = max(
        value
        for record in org.devices
        for value in (record["FirstSyncTime"], record["LastSuccessSync"],
                      record["LastSyncAttemptTime"])
        if value is not None
    )
    assert latest <= org.reference_time
    anchored = Organisation(20, seed=1, reference_time=datetime(2030, 1, 1, tzinfo=UTC))
    assert anchored.reference_time == datetime(2030, 1, 1, tzinfo=UTC)
    assert max(d["FirstSyncTime"] for d in anchored.devices).year >= 2029


def test_recipient_mix_and_devices_per_mailbox(org: Organisation) -> None:
    types = Counter(m["RecipientTypeDetails"] for m in org.mailboxes)
    assert len(org.mailboxes) == 200
    assert types["UserMailbox"] > 150 and types["SharedMailbox"] > 0 and types["RoomMailbox"] > 0
    per_mailbox = Counter(d["MailboxIdentity"] for d in org.devices)
    users = [m for m in org.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    counts = Counter(per_mailbox.get(m["Identity"], 0) for m in users)
    assert set(counts) == {0, 1, 2, 3, 4}
    rooms = {m["Identity"] for m in org.mailboxes if m["RecipientTypeDetails"] == "RoomMailbox"}
    assert not rooms & set(per_mailbox)


def test_device_variety_the_report_needs(org: Organisation) -> None:
    devices = org.devices
    assert {"EAS", "REST", "Outlook", "UniversalOutlook"} <= {d["ClientType"] for d in devices}
    outlook = [d for d in devices if d["ClientType"] in ("REST", "Outlook")]
    assert {d["DeviceModel"] for d in outlook} == {"Outlook for iOS and Android"}
    assert {d["DeviceType"] for d in outlook} == {"Outlook"}
    assert {d["DeviceUserAgent"] for d in outlook} == {"Outlook-iOS-Android/1.0"}
    assert {"Allowed", "Blocked", "Quarantined"} <= {d["DeviceAccessState"] for d in devices}
    assert any(d["LastSuccessSync"] is None for d in devices)
    now = org.reference_time
    ages = [now - d["LastSuccessSync"] for d in devices if d["LastSuccessSync"]]
    assert any(age < timedelta(days=1) for age in ages)
    assert any(age > timedelta(days=90) for age in ages)
    assert any(age > timedelta(days=365) for age in ages)
    oses = {d["DeviceOS"] for d in devices}
    assert any(re.fullmatch(r"iOS 1[5-8](\.\d+)+ \d\d[A-Z]\d+", os) for os in oses)
    assert any(re.fullmatch(r"Android 1[1-5]", os) for os in oses)
    assert any(re.fullmatch(r"Windows 10\.0\.\d{5}", os) for os in oses)
    ios_mail = [d for d in devices if d["DeviceType"] == "iPhone"]
    assert all(d["DeviceID"].startswith("Appl") for d in ios_mail)
    assert all(d["DeviceUserAgent"].endswith("dataaccessd/1.0") for d in ios_mail)
    assert any(d["DeviceType"].startswith("SAMSUNGSM") for d in devices)


def test_one_device_id_under_two_mailboxes(org: Organisation) -> None:
    owners: dict[str, set[str]] = {}
    for device in org.devices:
        owners.setdefault(device["DeviceID"], set()).add(device["MailboxIdentity"])
    assert any(len(mailboxes) == 2 for mailboxes in owners.values())


def test_device_identity_sits_under_its_mailbox(org: Organisation) -> None:
    mailbox_identities = {m["Identity"] for m in org.mailboxes}
    for device in org.devices:
        parent, _, name = device["Identity"].rpartition("/ExchangeActiveSyncDevices/")
        assert parent == device["MailboxIdentity"] and parent in mailbox_identities
        assert name.endswith(device["DeviceID"])
    assert len({d["Identity"] for d in org.devices}) == len(org.devices)
    assert len({d["Guid"] for d in org.devices}) == len(org.devices)


def test_display_names_exercise_escaping(org: Organisation) -> None:
    names = [m["DisplayName"] for m in org.mailboxes]
    assert any("'" in name for name in names)
    assert any("," in name for name in names)
    assert any(re.search(r"[À-ÿĀ-ž]", name) for name in names)
    assert any(re.search(r"[\u0400-\u04FF\u0370-\u03FF\u4E00-\u9FFF\u0600-\u06FF]", n)
               for n in names)
    assert all(m["Alias"].isascii() and m["PrimarySmtpAddress"].isascii() for m in org.mailboxes)
    assert len({m["Name"] for m in org.mailboxes}) == 200
    assert len({m["PrimarySmtpAddress"] for m in org.mailboxes}) == 200


def test_records_use_plain_values(org: Organisation) -> None:
    mailbox = org.mailboxes[0]
    assert isinstance(mailbox["WhenCreated"], datetime) and mailbox["WhenCreated"].tzinfo
    assert mailbox["WhenCreated"] == mailbox["WhenCreatedUTC"]
    assert isinstance(mailbox["EmailAddresses"], list)
    sizes = {m["ProhibitSendQuota"] for m in org.mailboxes}
    assert None in sizes and 50 * 1024**3 in sizes  # Unlimited and "50 GB (...)"
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", mailbox["Guid"])


def test_frames_match_records(org: Organisation) -> None:
    mailboxes, devices = org.mailbox_frame(), org.device_frame()
    assert len(mailboxes) == 200 and len(devices) == len(org.devices)
    assert list(devices["DeviceID"]) == [d["DeviceID"] for d in org.devices]
    assert "MailboxIdentity" in devices.columns


def test_large_organisation_keeps_names_unique() -> None:
    big = Organisation(mailboxes=5000, seed=3)
    entries = big.mailbox_entries
    assert len({m.name for m in entries}) == 5000
    assert len({m.alias for m in entries}) == 5000


def _by_guid(org: Organisation) -> dict[str, dict[str, object]]:
    return {str(d["Guid"]): d for d in org.devices}


def test_advance_is_deterministic_and_moves_time() -> None:
    first, second = Organisation(120, seed=2), Organisation(120, seed=2)
    start = first.reference_time
    for org in (first, second):
        org.advance(30, seed=1)
        org.advance(14, seed=2)
    assert first.reference_time == start + timedelta(days=44)
    assert first.devices == second.devices and first.mailboxes == second.mailboxes
    other = Organisation(120, seed=2)
    other.advance(30, seed=9)
    other.advance(14, seed=2)
    assert other.devices != first.devices
    with pytest.raises(ValueError):
        first.advance(-1, seed=1)


def test_on_premises_reports_no_exchange_online_client_types() -> None:
    # the same draws either way: only ClientType and those partnerships' names differ
    online = Organisation(mailboxes=200, seed=1, online_client_types=True)
    on_premises = Organisation(mailboxes=200, seed=1)
    assert {d["ClientType"] for d in on_premises.devices} == {"EAS"}
    assert len(on_premises.devices) == len(online.devices)
    for here, there in zip(on_premises.devices, online.devices, strict=True):
        assert here["DeviceID"] == there["DeviceID"] and here["Guid"] == there["Guid"]
        assert here["LastSuccessSync"] == there["LastSuccessSync"]
        if there["ClientType"] != "EAS":  # on-premises: DeviceType§DeviceId
            assert here["Identity"].endswith(f"/{here['DeviceType']}§{here['DeviceID']}")
    outlook = [d for d in on_premises.devices if d["DeviceModel"] == "Outlook for iOS and Android"]
    assert outlook and {d["DeviceType"] for d in outlook} == {"Outlook"}


def test_advance_produces_every_kind_of_change() -> None:
    org = Organisation(300, seed=4, online_client_types=True)
    before_devices = _by_guid(org)
    before_names = {m["Guid"]: m["DisplayName"] for m in org.mailboxes}
    before_time = org.reference_time
    org.advance(90, seed=1)
    after_devices = _by_guid(org)
    removed = before_devices.keys() - after_devices.keys()
    added = after_devices.keys() - before_devices.keys()
    assert removed and added
    for guid in added:
        assert after_devices[guid]["FirstSyncTime"] >= before_time  # type: ignore[operator]
    kept = before_devices.keys() & after_devices.keys()
    switched = {(before_devices[g]["ClientType"], after_devices[g]["ClientType"]) for g in kept}
    assert ("REST", "Outlook") in switched
    assert any(before_devices[g]["DeviceOS"] != after_devices[g]["DeviceOS"] for g in kept)
    now = org.reference_time
    went_stale = [
        g for g in kept
        if before_devices[g]["LastSuccessSync"] is not None
        and before_time - before_devices[g]["LastSuccessSync"] < timedelta(days=2)  # type: ignore[operator]
        and now - after_devices[g]["LastSuccessSync"] > timedelta(days=30)  # type: ignore[operator]
    ]
    assert went_stale
    renamed = [m for m in org.mailboxes if before_names[m["Guid"]] != m["DisplayName"]]
    assert renamed
    assert all(m["Identity"].endswith(m["Name"]) for m in renamed)


def test_no_partnership_predates_its_mailbox() -> None:
    org = Organisation(mailboxes=500, seed=6)
    for mailbox in org.mailbox_entries:
        for device in mailbox.devices:
            assert device.first_sync >= mailbox.when_created
        assert mailbox.when_changed >= mailbox.when_created
