"""Derived columns (platform, OS version, sync protocol, days since the last sync,
staleness) and the join of each device to its mailbox through the device's identity."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from bridge.frames.columns import (
    _DEVICE_CONTAINER_DN,
    _DEVICE_PARENT_TAIL,
    _OS_PATTERN,
    _PLATFORM_NAMES,
    NEVER,
    SYNC_PROTOCOLS,
    UNKNOWN,
)
from bridge.frames.options import ReportOptions
from bridge.frames.typed import _text

# -- derived columns ------------------------------------------------------------------------


def split_os(device_os: pd.Series) -> tuple[pd.Series, pd.Series]:
    """DeviceOS ("iOS 17.5.1 21F90", "Android 14.0") -> Platform ("iOS") and OSVersion."""
    # Few distinct values: parse each once and spread the result by code.
    codes, uniques = pd.factorize(_text(device_os).to_numpy(dtype=object))
    parts = pd.Series(np.asarray(uniques, dtype=object), dtype="str").str.extract(_OS_PATTERN)
    platform = parts["platform"].str.strip()
    platform = platform.where(platform != "")
    known = platform.str.casefold().map(_PLATFORM_NAMES)
    platform = known.where(known.notna(), platform)
    platforms = np.append(platform.to_numpy(dtype=object, na_value=UNKNOWN), UNKNOWN)
    versions = np.array([*parts["version"].astype(object).where(parts["version"].notna()),
                         None], dtype=object)
    return (pd.Series(platforms[codes], index=device_os.index, dtype="str"),
            pd.Series(versions[codes], index=device_os.index, dtype="str"))


def sync_protocol(client_type: pd.Series) -> pd.Series:
    """ClientType -> SyncProtocol: REST/Outlook/EAS spelled out, others kept, empty Unknown."""
    text = _text(client_type).str.strip()
    named = text.str.upper().map(SYNC_PROTOCOLS)
    protocol = named.where(named.notna(), text)
    return protocol.where(protocol.notna() & (protocol != ""), UNKNOWN).astype("str")


def days_since(moments: pd.Series, run_started: datetime) -> pd.Series:
    """Whole days from each moment to the run's start (never negative; NA when missing)."""
    start = pd.Timestamp(run_started)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    elapsed = (start - moments).dt.total_seconds() // 86_400
    days: pd.Series = elapsed.clip(lower=0).astype("Int64")
    return days


def stale_buckets(days: pd.Series, thresholds: Sequence[int]) -> pd.Series:
    """Days since the last sync -> an ordered StaleBucket; missing days -> Never."""
    labels = ReportOptions(stale_thresholds=tuple(thresholds)).bucket_labels
    values = days.to_numpy(dtype="float64", na_value=np.nan)
    conditions = [values <= thresholds[0]]
    conditions += [(values > low) & (values <= high)
                   for low, high in zip(thresholds, thresholds[1:], strict=False)]
    conditions += [values > thresholds[-1]]
    chosen = np.select(conditions, labels[:-1], default=NEVER)
    return pd.Series(pd.Categorical(chosen, categories=labels, ordered=True), index=days.index)


# -- the join -------------------------------------------------------------------------------


def _key(column: pd.Series) -> pd.Series:
    """Join keys compare the way Active Directory does: without regard to case."""
    return column.str.strip().str.lower()


def _mailbox_lookup(mailboxes: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """Key -> mailbox row position, from the first of ``names`` that holds the key."""
    parts = []
    for name in names:
        keys = _key(mailboxes[name])
        parts.append(pd.Series(np.arange(len(keys)), index=keys.to_numpy(dtype=object)))
    lookup = pd.concat(parts) if parts else pd.Series(dtype="int64")
    valid = lookup.index.notna() & (lookup.index != "")
    lookup = lookup[valid]
    return lookup[~lookup.index.duplicated(keep="first")]


def _positions(keys: pd.Series, lookup: pd.Series) -> np.ndarray:
    """Positions of ``keys`` in ``lookup`` (-1 where absent), vectorised."""
    found = lookup.index.get_indexer(pd.Index(keys.to_numpy(dtype=object)))
    result = np.full(len(keys), -1, dtype="int64")
    hit = found >= 0
    result[hit] = lookup.to_numpy()[found[hit]]
    return result


def match_devices(mailboxes: pd.DataFrame, devices: pd.DataFrame) -> pd.Series:
    """Each device's mailbox row position (Int64, NA when it matches no mailbox).

    First the parent of the device's Identity (the ExchangeActiveSyncDevices container
    sits under its mailbox), then the parent of its DistinguishedName, then the mailbox
    it was queried for. Never the display name.
    """
    position = np.full(len(devices), -1, dtype="int64")
    identity = devices["Identity"]
    parent = identity.str.replace(_DEVICE_PARENT_TAIL, "", regex=True)
    parent = parent.where(parent != identity)
    if parent.notna().any():
        position = _positions(_key(parent), _mailbox_lookup(mailboxes, ["Identity"]))
    missing = position < 0
    dn = devices["DistinguishedName"]
    if missing.any() and dn.notna().any():
        dn_parent = dn.str.replace(_DEVICE_CONTAINER_DN, "", n=1, regex=True)
        dn_parent = dn_parent.where(dn_parent != dn)
        by_dn = _positions(_key(dn_parent), _mailbox_lookup(mailboxes, ["DistinguishedName"]))
        position = np.where(missing, by_dn, position)
    missing = position < 0
    queried = devices["QueriedMailbox"]
    if missing.any() and queried.notna().any():
        by_any = _positions(_key(queried), _mailbox_lookup(mailboxes, [
            "Identity", "DistinguishedName", "ExchangeGuid", "Guid", "PrimarySmtpAddress",
            "UserPrincipalName", "Alias", "Name"]))
        position = np.where(missing, by_any, position)
    result = pd.Series(position, index=devices.index, dtype="Int64")
    return result.where(result >= 0)
