"""A report's Devices frame as history keeps it: one row per partnership, keyed by mailbox,
DeviceType and DeviceId (never the display name)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from bridge import eas
from bridge.errors import HistoryError

# Device-frame columns history reads, first present (per row: first non-empty) wins.
# The mailbox key prefers ExchangeGuid: it survives renames, unlike names and addresses.
_MAILBOX_KEY_COLUMNS = ("MailboxExchangeGuid", "ExchangeGuid", "MailboxGuid", "MailboxIdentity",
                        "QueriedMailbox")
_USER_COLUMNS = ("User", "DisplayName", "MailboxDisplayName", "UserDisplayName")
_MAILBOX_COLUMNS = ("UserPrincipalName", "PrimarySmtpAddress", "MailboxPrimarySmtpAddress",
                    "WindowsEmailAddress")
_DEVICE_PATH_MARK = r"[\\/]ExchangeActiveSyncDevices[\\/].*$"


def _text_column(devices: pd.DataFrame, candidates: Sequence[str]) -> pd.Series:
    """The first non-empty value per row among ``candidates`` (absent columns skipped)."""
    result = pd.Series(pd.NA, index=devices.index, dtype="string")
    for name in candidates:
        if name in devices.columns:
            column = devices[name].astype("string").str.strip()
            result = result.fillna(column.where(column != ""))
    return result


def _display_column(devices: pd.DataFrame, candidates: Sequence[str]) -> pd.Series:
    """A column only shown, never matched on: as _text_column, without the cleaning."""
    present = [name for name in candidates if name in devices.columns]
    if len(present) == 1:
        return devices[present[0]].astype("string")
    return _text_column(devices, candidates)


def _partnership_keys(devices: pd.DataFrame) -> pd.Series:
    """mailbox + DeviceType + DeviceId: the identity of a partnership across runs."""
    mailbox = _text_column(devices, _MAILBOX_KEY_COLUMNS)
    if "Identity" in devices.columns and mailbox.isna().any():
        parent = devices["Identity"].astype("string").str.replace(_DEVICE_PATH_MARK, "",
                                                                  regex=True)
        mailbox = mailbox.fillna(parent)
    if mailbox.isna().any():
        raise HistoryError(
            "cannot record history: some devices have neither their mailbox's ExchangeGuid "
            "nor an Identity to tell which mailbox they belong to."
        )
    device_type = _text_column(devices, ("DeviceType",)).fillna("")
    device_id = _text_column(devices, ("DeviceId", "DeviceID")).fillna("")
    return mailbox.str.casefold() + "\x1f" + device_type + "\x1f" + device_id


def _timestamps(devices: pd.DataFrame, name: str) -> pd.Series:
    """A datetime column in UTC to the microsecond (NaT when missing or absent)."""
    if name not in devices.columns:
        return pd.Series(pd.NaT, index=devices.index, dtype="datetime64[us, UTC]")
    return pd.to_datetime(devices[name], utc=True, errors="coerce").astype(
        "datetime64[us, UTC]")


def _stale_flags(devices: pd.DataFrame, last_sync: pd.Series, stale_days: int,
                 started: datetime) -> pd.Series:
    """True where the last successful sync is more than ``stale_days`` days old.

    Uses the report's DaysSinceLastSync when present, so history and report agree.
    """
    if "DaysSinceLastSync" in devices.columns:
        days = pd.to_numeric(devices["DaysSinceLastSync"], errors="coerce")
    else:
        days = (pd.Timestamp(started) - last_sync).dt.total_seconds() / 86_400
    return ((days > stale_days) & last_sync.notna()).fillna(False).astype(bool)


def _observations(devices: pd.DataFrame, stale_days: int, started: datetime) -> pd.DataFrame:
    """The report's Devices frame as history keeps it: DEVICE_SCHEMA's columns, one row per
    partnership (a partnership listed twice, e.g. the same file given twice, counts once)."""
    keys = _partnership_keys(devices)
    last_sync = _timestamps(devices, "LastSuccessSync")
    frame = pd.DataFrame({
        "partnership": keys,
        "user": _display_column(devices, _USER_COLUMNS),
        "mailbox": _display_column(devices, _MAILBOX_COLUMNS),
        "device_type": _display_column(devices, ("DeviceType",)),
        "device_id": _display_column(devices, ("DeviceId", "DeviceID")).fillna(""),
        "device_model": _display_column(devices, ("DeviceModel",)),
        "sync_protocol": _text_column(devices, ("SyncProtocol",)).fillna("Unknown"),
        "platform": _text_column(devices, ("Platform",)).fillna("Unknown"),
        "os_version": _text_column(devices, ("OSVersion",)),
        "last_success_sync": last_sync,
        "stale": _stale_flags(devices, last_sync, stale_days, started),
        "access_state": _display_column(devices, ("DeviceAccessState",)),
        "eas_version": eas.eas_versions(devices).astype("float64"),
    })
    return frame[~keys.duplicated().to_numpy()]
