"""frames: typed frames, the identity join, derived columns, filters, against ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from bridge import frames
from bridge.frames import ReportOptions, build_report
from bridge.sandbox.organisation import DeviceEntry, Organisation

OUTLOOK = frames.OUTLOOK_MOBILE_MODEL
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def org() -> Organisation:
    return Organisation(mailboxes=60, seed=7)


def _devices(org: Organisation, kinds: set[str], model: str | None = OUTLOOK
             ) -> list[DeviceEntry]:
    return [device for device in org.iter_devices()
            if device.mailbox.recipient_type_details in kinds
            and (model is None or device.model == model)]


def _days(org: Organisation, device: DeviceEntry) -> int | None:
    if device.last_success is None:
        return None
    return max(0, int((org.reference_time - device.last_success).total_seconds() // 86_400))


def test_classic_report_equals_the_organisation(org: Organisation) -> None:
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time)
    expected = _devices(org, {"UserMailbox"})
    got = set(zip(report.devices["MailboxIdentity"], report.devices["DeviceId"], strict=True))
    assert got == {(d.mailbox.identity, d.device_id) for d in expected}
    users = [m for m in org.mailbox_entries if m.kind == "user"]
    with_devices = {d.mailbox.identity for d in expected}
    figures = report.figures
    assert figures.mailboxes_checked == len(users)
    assert figures.devices == len(expected)
    assert figures.users_with_devices == len(with_devices)
    assert figures.users_without_devices == len(users) - len(with_devices)
    assert figures.rest == sum(d.client_type == "REST" for d in expected)
    assert figures.native_sync == sum(d.client_type == "Outlook" for d in expected)
    assert figures.never_synced == sum(d.last_success is None for d in expected)
    days = [_days(org, d) for d in expected]
    assert figures.stale == sum(day is not None and day > 30 for day in days)
    assert set(report.users_without_devices["PrimarySmtpAddress"]) == {
        m.smtp for m in users if m.identity not in with_devices}
    assert report.by_protocol["Devices"].sum() == len(expected)
    assert report.by_stale["StaleBucket"].tolist() == [
        "0-30 days", "31-90 days", "91-365 days", "Over 365 days", "Never"]


def test_all_devices_and_recipient_types(org: Organisation) -> None:
    kinds = {"UserMailbox", "SharedMailbox"}
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                          options=ReportOptions(all_devices=True,
                                                recipient_types=tuple(sorted(kinds))))
    expected = _devices(org, kinds, model=None)
    assert len(expected) > len(_devices(org, kinds))
    assert sorted(report.devices["DeviceId"]) == sorted(d.device_id for d in expected)
    assert set(report.devices["RecipientTypeDetails"]) <= kinds
    assert report.figures.mailboxes_checked == sum(
        m.recipient_type_details in kinds for m in org.mailbox_entries)


def test_derived_columns_match_each_device(org: Organisation) -> None:
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                          options=ReportOptions(all_devices=True))
    truth = {(d.mailbox.identity, d.device_id): d for d in _devices(org, {"UserMailbox"}, None)}
    for row in report.devices.itertuples():
        device = truth[(row.MailboxIdentity, row.DeviceId)]
        assert row.User == device.mailbox.display_name
        assert row.DeviceOS == device.os
        assert row.Platform == device.os.split()[0]
        assert row.OSVersion == device.os.split()[1]
        days = _days(org, device)
        assert (None if pd.isna(row.DaysSinceLastSync) else row.DaysSinceLastSync) == days
        if days is None:
            assert row.StaleBucket == "Never"
        protocol = {"REST": "REST (legacy)", "Outlook": "Outlook (native sync)",
                    "EAS": "Exchange ActiveSync"}.get(device.client_type, device.client_type)
        assert row.SyncProtocol == protocol


def test_join_uses_identity_never_display_name() -> None:
    # Two mailboxes with the same display name; devices must land under the right one.
    mailboxes = [
        {"Identity": "contoso.com/Users/Ann Lee", "DisplayName": "Ann Lee",
         "PrimarySmtpAddress": "ann.lee@contoso.com", "RecipientTypeDetails": "UserMailbox",
         "DistinguishedName": "CN=Ann Lee,OU=Users,DC=contoso,DC=com"},
        {"Identity": "contoso.com/Sales/Ann Lee", "DisplayName": "Ann Lee",
         "PrimarySmtpAddress": "ann.lee2@contoso.com", "RecipientTypeDetails": "UserMailbox",
         "DistinguishedName": "CN=Ann Lee,OU=Sales,DC=contoso,DC=com"},
        {"Identity": "TonySmith", "DisplayName": "Tony Smith",
         "PrimarySmtpAddress": "tony@contoso.com", "RecipientTypeDetails": "UserMailbox"},
    ]
    base = {"DeviceModel": OUTLOOK, "ClientType": "Outlook", "LastSuccessSync": NOW}
    devices = [
        {**base, "DeviceId": "on-prem", "Identity":
         "contoso.com/Sales/Ann Lee/ExchangeActiveSyncDevices/Outlook§on-prem"},
        {**base, "DeviceId": "exo", "Identity":
         "TonySmith\\ExchangeActiveSyncDevices\\REST§Outlook§exo"},
        {**base, "DeviceId": "by-dn", "Identity": "Ann Lee", "DistinguishedName":
         "CN=Outlook§by-dn,CN=ExchangeActiveSyncDevices,CN=Ann Lee,OU=Users,DC=contoso,DC=com"},
        {**base, "DeviceId": "queried", "QueriedMailbox": "ANN.LEE2@contoso.com"},
        {**base, "DeviceId": "orphan", "Identity":
         "contoso.com/Gone/Someone/ExchangeActiveSyncDevices/Outlook§orphan"},
    ]
    report = build_report(mailboxes, devices, run_started=NOW)
    owner = dict(zip(report.devices["DeviceId"], report.devices["PrimarySmtpAddress"],
                     strict=True))
    assert owner == {"on-prem": "ann.lee2@contoso.com", "exo": "tony@contoso.com",
                     "by-dn": "ann.lee@contoso.com", "queried": "ann.lee2@contoso.com"}
    assert report.figures.unmatched_devices == 1
    assert report.notes == ["1 device(s) belong to no mailbox in the export and were left out."]


def test_one_device_under_two_mailboxes_appears_under_both(org: Organisation) -> None:
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                          options=ReportOptions(all_devices=True,
                                                recipient_types=("UserMailbox", "SharedMailbox",
                                                                 "RoomMailbox")))
    counts = report.devices.groupby("DeviceId")["MailboxIdentity"].nunique()
    truth = pd.Series([d.device_id for d in org.iter_devices()]).value_counts()
    shared = truth[truth > 1]
    assert len(shared) >= 1
    assert counts[shared.index].tolist() == shared.tolist()


def test_a_mailbox_that_failed_is_not_without_devices(org: Organisation) -> None:
    # per-mailbox collection or the export script could not read its devices: it is on the
    # Errors sheet, and nothing is known about its devices
    users = [m for m in org.mailbox_entries if m.kind == "user"]
    lonely = [m for m in users if not any(d.model == OUTLOOK for d in m.devices)]
    failed = [{"Mailbox": lonely[0].identity.upper(), "Category": "NotSpecified",
               "Message": "couldn't be found", "When": NOW}]
    report = build_report(org.mailboxes, org.devices, failed, run_started=org.reference_time)
    assert report.figures.errors == 1
    assert report.figures.users_without_devices == len(lonely) - 1
    assert lonely[0].smtp not in set(report.users_without_devices["PrimarySmtpAddress"])


def test_missing_properties_become_empty_columns() -> None:
    # An older Exchange: no ClientType, no DeviceOS, DeviceID spelled as Exchange declares it.
    mailboxes = [{"Identity": "c.com/U/A", "DisplayName": "A"}]
    devices = [{"Identity": "c.com/U/A/ExchangeActiveSyncDevices/iPhone§1", "DeviceID": "1",
                "DeviceModel": OUTLOOK}]
    report = build_report(mailboxes, devices, run_started=NOW)
    row = report.devices.iloc[0]
    assert row["DeviceId"] == "1"
    assert row["SyncProtocol"] == "Unknown" and row["Platform"] == "Unknown"
    assert pd.isna(row["OSVersion"]) and pd.isna(row["LastSuccessSync"])
    assert row["StaleBucket"] == "Never"
    assert report.notes == ["The mailbox rows carry no RecipientTypeDetails: all were included."]
    sheet = report.devices_sheet()
    assert list(sheet.columns[:5]) == ["User", "Device", "OS", "SyncType", "LastSync"]
    assert isinstance(sheet["LastSync"].dtype, pd.DatetimeTZDtype)


def test_empty_input_gives_an_empty_report() -> None:
    report = build_report([], [], run_started=NOW)
    assert report.figures.devices == 0 and report.figures.native_share == 0.0
    assert len(report.devices_sheet()) == 0
    assert report.by_stale["Devices"].tolist() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize(("device_os", "platform", "version"), [
    ("iOS 17.5.1 21F90", "iOS", "17.5.1"),
    ("Android 14.0", "Android", "14.0"),
    ("ios 16", "iOS", "16"),
    ("Windows 10.0.19045", "Windows", "10.0.19045"),
    ("BlackBerry", "BlackBerry", None),
    ("", "Unknown", None),
    (None, "Unknown", None),
])
def test_split_os(device_os: str | None, platform: str, version: str | None) -> None:
    got_platform, got_version = frames.split_os(pd.Series([device_os], dtype=object))
    assert got_platform.iloc[0] == platform
    assert (None if pd.isna(got_version.iloc[0]) else got_version.iloc[0]) == version


def test_sync_protocol_names() -> None:
    values = pd.Series(["REST", "Outlook", "EAS", "MOWA", "", None, "rest"], dtype=object)
    assert frames.sync_protocol(values).tolist() == [
        "REST (legacy)", "Outlook (native sync)", "Exchange ActiveSync", "MOWA", "Unknown",
        "Unknown", "REST (legacy)"]


def test_stale_buckets_follow_configured_thresholds() -> None:
    synced = [NOW - timedelta(days=d, hours=1) for d in (0, 7, 8, 20, 21, 400)] + [None]
    devices = [{"Identity": f"c.com/U/A/ExchangeActiveSyncDevices/x§{i}", "DeviceId": str(i),
                "DeviceModel": OUTLOOK, "LastSuccessSync": moment}
               for i, moment in enumerate(synced)]
    mailboxes = [{"Identity": "c.com/U/A", "DisplayName": "A",
                  "RecipientTypeDetails": "UserMailbox"}]
    options = ReportOptions(stale_thresholds=(7, 20))
    report = build_report(mailboxes, devices, run_started=NOW, options=options)
    by_id = dict(zip(report.devices["DeviceId"], report.devices["StaleBucket"].astype(str),
                     strict=True))
    assert [by_id[str(i)] for i in range(7)] == [
        "0-7 days", "0-7 days", "8-20 days", "8-20 days", "Over 20 days", "Over 20 days",
        "Never"]
    assert report.figures.stale == 4 and report.figures.never_synced == 1
    # --stale-days keeps devices not synced for N days or more, and never-synced ones.
    old = build_report(mailboxes, devices, run_started=NOW,
                       options=ReportOptions(stale_days=20))
    assert sorted(old.devices["DeviceId"]) == ["3", "4", "5", "6"]
    assert old.figures.users_without_devices == 0


def test_identifiers_are_left_out_unless_asked(org: Organisation) -> None:
    assert any(d.get("DeviceImei") for d in org.devices)
    plain = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                         options=ReportOptions(all_devices=True))
    assert not {"DeviceImei", "DevicePhoneNumber"} & set(plain.devices.columns)
    assert not {"DeviceImei", "DevicePhoneNumber"} & set(plain.devices_sheet().columns)
    full = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                        options=ReportOptions(all_devices=True, include_identifiers=True))
    assert full.devices_sheet()["DeviceImei"].notna().any()


def test_duplicate_rows_count_once(org: Organisation) -> None:
    once = build_report(org.mailboxes, org.devices, run_started=org.reference_time)
    twice = build_report(org.mailboxes, org.devices + org.devices,
                         run_started=org.reference_time)
    assert twice.figures == once.figures


@pytest.mark.parametrize("kwargs", [
    {"stale_thresholds": (90, 30)}, {"stale_thresholds": ()}, {"stale_thresholds": (0, 5)},
    {"stale_days": -1}, {"recipient_types": ()},
])
def test_report_options_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ReportOptions(**kwargs)  # type: ignore[arg-type]


def test_organisation_name_from_identities() -> None:
    frame = frames.mailbox_frame([{"Identity": "contoso.com/Users/Ann"}])
    assert frames.organisation_name(frame, "srv") == "contoso.com"
    assert frames.organisation_name(frames.mailbox_frame([{"Identity": "Ann"}]), "srv") == "srv"


def test_mailboxes_given_twice_count_once_and_the_report_says_so(org: Organisation) -> None:
    once = build_report(org.mailboxes, org.devices, run_started=org.reference_time)
    twice = build_report(org.mailboxes + org.mailboxes, org.devices + org.devices,
                         run_started=org.reference_time)
    assert twice.figures == once.figures
    assert len(twice.users_without_devices) == len(once.users_without_devices)
    assert twice.devices_sheet().equals(once.devices_sheet())
    assert f"{len(org.mailboxes)} mailbox row(s) appeared more than once (the same export " \
           "given twice?) and were counted once." in twice.notes
    assert not any("more than once" in note for note in once.notes)


def test_mailboxes_are_told_apart_by_exchange_guid_not_by_name(org: Organisation) -> None:
    first = dict(org.mailboxes[0])
    namesake = {**first, "ExchangeGuid": "00000000-0000-0000-0000-000000000001",
                "Guid": "00000000-0000-0000-0000-000000000002",
                "Identity": str(first["Identity"]) + "2"}
    report = build_report([first, namesake], [], run_started=org.reference_time)
    assert len(report.users_without_devices) == 2


def test_devices_are_listed_by_user_ignoring_case_then_device_id(org: Organisation) -> None:
    report = build_report(org.mailboxes, org.devices, run_started=org.reference_time,
                          options=ReportOptions(all_devices=True))
    users = report.devices["User"].fillna("").tolist()
    ids = report.devices["DeviceId"].fillna("").tolist()
    keys = list(zip([user.lower() for user in users], ids, strict=True))
    assert len(set(users)) > 20 and keys == sorted(keys)
    # beyond ASCII in code point order (as Python compares), a missing DeviceId first
    names = ["zoë", "Zoe", "Émile", "ådne", "Ada", "ada"]
    mailboxes = [{"Identity": f"c.com/U/{n}", "DisplayName": name,
                  "RecipientTypeDetails": "UserMailbox"} for n, name in enumerate(names)]
    devices = [{"Identity": f"c.com/U/{n}/ExchangeActiveSyncDevices/x§{device}",
                "DeviceId": device, "DeviceModel": OUTLOOK}
               for n in range(len(names)) for device in ("B2", None, "a1")]
    small = build_report(mailboxes, devices, run_started=NOW,
                         options=ReportOptions(all_devices=True))
    got = list(zip(small.devices["User"], small.devices["DeviceId"].fillna(""), strict=True))
    # Ada and ada are one user to the order; rows that tie keep their input order
    ada = [(user, device) for device in ("", "B2", "a1") for user in ("Ada", "ada")]
    assert got == ada + [(user, device) for user in ["Zoe", "zoë", "ådne", "Émile"]
                         for device in ("", "B2", "a1")]
