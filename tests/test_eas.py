"""EAS clients below 16.1: the version, the flag and the figures, on known devices."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from bridge import eas, frames
from tests.eas_org import SPECS, known_organisation


def _report() -> frames.Report:
    org, _devices = known_organisation()
    return frames.build_report(org.mailboxes, org.devices,
                               options=frames.ReportOptions(all_devices=True),
                               run_started=org.reference_time)


@pytest.mark.parametrize(("text", "version"), [
    ("16.1", (16, 1)), ("14.1", (14, 1)), (" 16.0 ", (16, 0)), ("12.1.0", (12, 1, 0)),
    ("16", None), ("", None), (None, None), ("16.1 beta", None), ("1.2.3.4.5", None),
    ("١٦.١", None),  # Arabic-Indic digits: str.isdigit says yes, [version] says no
])
def test_client_version_reads_as_powershell_version_does(text: object,
                                                         version: tuple[int, ...] | None) -> None:
    assert eas.parse_version(text) == version


def test_version_number_and_flag_per_known_device() -> None:
    org, entries = known_organisation()
    report = frames.build_report(org.mailboxes, org.devices,
                                 options=frames.ReportOptions(all_devices=True),
                                 run_started=org.reference_time)
    devices = eas.with_eas_columns(report.devices).set_index("Identity")
    assert len(devices) == len(SPECS)
    for spec, entry in zip(SPECS, entries, strict=True):
        row = devices.loc[entry.identity]
        version = eas.parse_version(spec.client_version)
        is_eas = spec.client_type == "EAS" and spec.model != eas.OUTLOOK_APP_MODEL
        if is_eas:
            assert row[eas.FLAG_COLUMN] == spec.flagged, spec
        else:  # not an EAS client: nothing to judge, the cell stays empty
            assert row[eas.FLAG_COLUMN] is pd.NA and not spec.flagged, spec
        if is_eas and version:
            assert row[eas.VERSION_COLUMN] == float(spec.client_version), spec
        else:
            assert pd.isna(row[eas.VERSION_COLUMN]), spec
    assert devices[eas.VERSION_COLUMN].dtype == "Float64"
    assert devices[eas.FLAG_COLUMN].dtype == "boolean"
    # Outlook for iOS and Android is never flagged, even under a stray ClientType EAS
    outlook = devices[devices["DeviceModel"] == eas.OUTLOOK_APP_MODEL]
    assert len(outlook) == 4 and outlook[eas.FLAG_COLUMN].isna().all()


def test_figures_by_client_version_and_model() -> None:
    figures = eas.eas_figures(_report().devices, "on-premises")
    assert (figures.eas_devices, figures.below_minimum, figures.unknown_version) == (7, 4, 1)
    assert figures.by_version_model.to_dict("records") == [
        {"ClientVersion": "14.1", "DeviceModel": "SM-G991B", "Devices": 2},
        {"ClientVersion": "12.1", "DeviceModel": "SM-A536B", "Devices": 1},
        {"ClientVersion": "16.0", "DeviceModel": "Pixel 8", "Devices": 1},
    ]
    assert figures.headline == ("4 of 7 Exchange ActiveSync device(s) below EAS 16.1: would be "
                                "blocked in Exchange Online")
    online = eas.eas_figures(_report().devices, "online", datetime(2026, 12, 3, tzinfo=UTC))
    assert online.wording == "blocked by Exchange Online since 1 March 2026"


def test_wording_depends_on_where_and_when() -> None:
    assert eas.wording("on-premises") == "would be blocked in Exchange Online"
    assert eas.wording("online") == "blocked by Exchange Online since 1 March 2026"
    assert eas.wording("online", datetime(2026, 3, 1, tzinfo=UTC)) == eas.ONLINE_WORDING
    assert eas.wording("online", datetime(2026, 2, 28, tzinfo=UTC)) == (
        "to be blocked by Exchange Online from 1 March 2026")


def test_no_devices_no_eas_columns_needed() -> None:
    empty = pd.DataFrame({"ClientType": pd.Series([], dtype="str")})
    figures = eas.eas_figures(empty, "online")
    assert (figures.eas_devices, figures.below_minimum) == (0, 0)
    assert list(figures.by_version_model.columns) == ["ClientVersion", "DeviceModel", "Devices"]
    assert eas.below_minimum(empty).dtype == bool


@pytest.mark.parametrize(("source", "cmdlets", "identities", "expected"), [
    ("online", (), (), "online"),
    ("live", (), (), "on-premises"),
    ("clixml", ("Get-EXOMailbox", "Get-EXOMobileDeviceStatistics"), (), "online"),
    ("clixml", ("Get-Mailbox", "Get-MobileDeviceStatistics"),
     ("TonySmith\\ExchangeActiveSyncDevices\\REST§Outlook§5eec",), "online"),
    ("clixml", ("Get-Mailbox", "Get-MobileDeviceStatistics"),
     ("contoso.com/Users/Tony/ExchangeActiveSyncDevices/iPhone§Appl1",), "on-premises"),
    ("clixml", (), (None,), "on-premises"),
])
def test_environment_from_how_the_data_came(source: str, cmdlets: tuple[str, ...],
                                            identities: tuple[object, ...],
                                            expected: str) -> None:
    assert eas.environment_for(source, cmdlets, identities) == expected


def test_scope_note_only_when_the_scope_hides_eas() -> None:
    assert eas.scope_hides_eas(False, frames.OUTLOOK_MOBILE_MODEL)
    assert not eas.scope_hides_eas(True, frames.OUTLOOK_MOBILE_MODEL)
    assert not eas.scope_hides_eas(False, "SM-G991B")
    assert eas.SCOPE_NOTE == ("This report lists Outlook for iOS and Android only; Exchange "
                              "ActiveSync clients below 16.1 are counted with --all-devices.")


def test_moved_to_minimum_compares_two_runs() -> None:
    before = pd.Series([14.1, 16.0, 16.1, None, 14.1], dtype="Float64")
    after = pd.Series([16.1, 14.1, 16.1, 16.1, None], dtype="Float64")
    assert eas.moved_to_minimum(before, after).tolist() == [True, False, False, False, False]
