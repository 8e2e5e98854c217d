"""The mobile device report as pandas frames: typed columns, the join, derived columns.

Rows come from bridge.clixml (files) or bridge.exchange (live) with Exchange's property
names; this module gives them a declared schema (a property an older Exchange lacks
becomes an empty column, never a crash), joins each device to its mailbox through the
device's identity (never through a display name), derives what leadership asks about
(platform, OS version, sync protocol, days since the last sync, staleness) and applies
the report's filters. :func:`build_report` is the one entry point; the workbook and the
CSV/Parquet/JSON writers only render its :class:`Report`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from bridge import sizes
from bridge.errors import InputError

#: DeviceModel of Outlook for iOS and Android: the classic report's device filter.
OUTLOOK_MOBILE_MODEL = "Outlook for iOS and Android"
#: StaleBucket edges in days since the last successful sync (configurable per report).
DEFAULT_STALE_THRESHOLDS = (30, 90, 365)
NEVER = "Never"
UNKNOWN = "Unknown"

Kind = Literal["text", "datetime", "int", "bool", "list", "size"]

#: Get-Mailbox properties the report reads, with their kind.
MAILBOX_SCHEMA: dict[str, Kind] = {
    "Identity": "text",
    "Name": "text",
    "DisplayName": "text",
    "Alias": "text",
    "PrimarySmtpAddress": "text",
    "UserPrincipalName": "text",
    "RecipientTypeDetails": "text",
    "Guid": "text",
    "ExchangeGuid": "text",
    "DistinguishedName": "text",
    "WhenCreated": "datetime",
}

#: Get-MobileDeviceStatistics properties the report reads, with their kind
#: (plus QueriedMailbox, which bridge.exchange adds when it queried per mailbox).
DEVICE_SCHEMA: dict[str, Kind] = {
    "Identity": "text",
    "DistinguishedName": "text",
    "QueriedMailbox": "text",
    "Guid": "text",
    "DeviceId": "text",
    "DeviceType": "text",
    "DeviceModel": "text",
    "DeviceFriendlyName": "text",
    "DeviceOS": "text",
    "DeviceOSLanguage": "text",
    "DeviceUserAgent": "text",
    "DeviceImei": "text",
    "DevicePhoneNumber": "text",
    "DeviceMobileOperator": "text",
    "ClientType": "text",
    "ClientVersion": "text",
    "FirstSyncTime": "datetime",
    "LastSuccessSync": "datetime",
    "LastSyncAttemptTime": "datetime",
    "LastPolicyUpdateTime": "datetime",
    "DeviceAccessState": "text",
    "DeviceAccessStateReason": "text",
    "DevicePolicyApplicationStatus": "text",
    "Status": "text",
    "IsRemoteWipeSupported": "bool",
    "NumberOfFoldersSynced": "int",
}

#: Columns that identify a person's phone: left out unless asked for.
IDENTIFIER_COLUMNS = ("DeviceImei", "DevicePhoneNumber")

#: ClientType -> the SyncProtocol leadership reads; other values are kept as they are.
SYNC_PROTOCOLS = {
    "REST": "REST (legacy)",
    "OUTLOOK": "Outlook (native sync)",
    "EAS": "Exchange ActiveSync",
}
REST_PROTOCOL = SYNC_PROTOCOLS["REST"]
NATIVE_PROTOCOL = SYNC_PROTOCOLS["OUTLOOK"]

#: Columns of the Devices sheet (and of --format csv/parquet/json), classic ones first.
DEVICE_SHEET_COLUMNS: dict[str, str] = {
    # sheet column: column of Report.devices
    "User": "User",
    "Device": "Device",
    "OS": "DeviceOS",
    "SyncType": "ClientType",
    "LastSync": "LastSuccessSync",
    "PrimarySmtpAddress": "PrimarySmtpAddress",
    "UserPrincipalName": "UserPrincipalName",
    "DeviceModel": "DeviceModel",
    "DeviceType": "DeviceType",
    "ClientVersion": "ClientVersion",
    "FirstSync": "FirstSyncTime",
    "DaysSinceLastSync": "DaysSinceLastSync",
    "StaleBucket": "StaleBucket",
    "DeviceAccessState": "DeviceAccessState",
    "SyncProtocol": "SyncProtocol",
    "Platform": "Platform",
    "OSVersion": "OSVersion",
    "DeviceAccessStateReason": "DeviceAccessStateReason",
    "LastSyncAttempt": "LastSyncAttemptTime",
    "DeviceUserAgent": "DeviceUserAgent",
    "DeviceId": "DeviceId",
    "DeviceImei": "DeviceImei",
    "DevicePhoneNumber": "DevicePhoneNumber",
    "RecipientTypeDetails": "RecipientTypeDetails",
}

USERS_WITHOUT_DEVICES_COLUMNS = ["User", "PrimarySmtpAddress", "UserPrincipalName",
                                 "RecipientTypeDetails"]
ERROR_COLUMNS = ["Mailbox", "Command", "Category", "Message", "When"]

# "<mailbox>/ExchangeActiveSyncDevices/<device>" on-premises, "\" in Exchange Online.
_DEVICE_PARENT_TAIL = r"(?i)[\\/]ExchangeActiveSyncDevices[\\/].*$"
# "CN=<device>,CN=ExchangeActiveSyncDevices,<mailbox DN>"
_DEVICE_CONTAINER_DN = r"(?i)^.*?,CN=ExchangeActiveSyncDevices,"
# "iOS 17.5.1 21F90", "Android 14.0", "Windows 10.0.19045": platform, then a version.
_OS_PATTERN = r"^\s*(?P<platform>.*?)\s*(?P<version>\d+(?:\.\d+)*)?(?:\s+\S+)*\s*$"
_PLATFORM_NAMES = {"ios": "iOS", "ipados": "iPadOS", "android": "Android",
                   "windows": "Windows", "macos": "macOS", "os x": "macOS"}


@dataclass(frozen=True)
class ReportOptions:
    """What the report includes and how it judges staleness.

    The default is the classic report: user mailboxes, Outlook for iOS and Android.
    ``stale_days`` keeps only devices not synced for at least that many days (or
    never); ``stale_thresholds`` are the StaleBucket edges, the first one also the
    line past which a device counts as stale.
    """

    all_devices: bool = False
    recipient_types: tuple[str, ...] = ("UserMailbox",)
    device_model: str = OUTLOOK_MOBILE_MODEL
    stale_days: int | None = None
    stale_thresholds: tuple[int, ...] = DEFAULT_STALE_THRESHOLDS
    include_identifiers: bool = False

    def __post_init__(self) -> None:
        thresholds = self.stale_thresholds
        if not thresholds or any(t < 1 for t in thresholds) or list(thresholds) != sorted(
            set(thresholds)
        ):
            raise ValueError("stale thresholds must be increasing whole days of at least 1")
        if self.stale_days is not None and self.stale_days < 0:
            raise ValueError("stale days must be 0 or more")
        if not self.recipient_types:
            raise ValueError("at least one recipient type is needed")

    @property
    def stale_after(self) -> int:
        """Days without a successful sync after which a device counts as stale."""
        return self.stale_thresholds[0]

    @property
    def bucket_labels(self) -> list[str]:
        """StaleBucket labels in order, freshest first, then Never."""
        edges = self.stale_thresholds
        labels = [f"0-{edges[0]} days"]
        labels += [f"{low + 1}-{high} days" for low, high in zip(edges, edges[1:], strict=False)]
        labels += [f"Over {edges[-1]} days", NEVER]
        return labels

    def describe(self) -> dict[str, str]:
        """The filters in words, for the Run sheet."""
        return {
            "Devices": "all devices" if self.all_devices else f"DeviceModel {self.device_model}",
            "Recipient types": ", ".join(self.recipient_types),
            "Stale filter": (f"only devices not synced for {self.stale_days}+ days or never"
                             if self.stale_days is not None else "none"),
            "Stale buckets (days)": ", ".join(str(t) for t in self.stale_thresholds),
            "Identifiers (IMEI, phone number)": (
                "included" if self.include_identifiers else "left out"),
        }


@dataclass(frozen=True)
class Figures:
    """The key figures on the Summary sheet."""

    mailboxes_checked: int
    users_with_devices: int
    users_without_devices: int
    devices: int
    native_sync: int
    rest: int
    stale: int
    never_synced: int
    errors: int
    unmatched_devices: int

    @property
    def native_share(self) -> float:
        """Share of the report's devices on Outlook native sync (0 when there are none)."""
        return self.native_sync / self.devices if self.devices else 0.0


@dataclass(frozen=True)
class Report:
    """Everything the workbook and the exports show, built by :func:`build_report`.

    ``devices`` keeps Exchange's property names plus the mailbox columns (User,
    PrimarySmtpAddress, UserPrincipalName, RecipientTypeDetails, MailboxIdentity,
    MailboxExchangeGuid) and the derived ones; :meth:`devices_sheet` is the table
    people read.
    """

    mailboxes: pd.DataFrame
    devices: pd.DataFrame
    users_without_devices: pd.DataFrame
    errors: pd.DataFrame
    figures: Figures
    options: ReportOptions
    run_started: datetime
    by_protocol: pd.DataFrame
    by_platform: pd.DataFrame
    by_stale: pd.DataFrame
    by_access_state: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def devices_sheet(self) -> pd.DataFrame:
        """The Devices table: classic columns first, identifiers only when asked for."""
        columns = {
            sheet: self.devices[source]
            for sheet, source in DEVICE_SHEET_COLUMNS.items()
            if source in self.devices.columns
        }
        return pd.DataFrame(columns, index=self.devices.index).reset_index(drop=True)


# -- typed frames ---------------------------------------------------------------------------


def _text(column: pd.Series) -> pd.Series:
    """Any column as pandas text: missing stays missing, other values become their str()."""
    if column.dtype == "str":
        return column
    inferred = pd.api.types.infer_dtype(column, skipna=True)
    if inferred not in ("string", "empty"):
        column = column.map(lambda v: v if v is None or isinstance(v, str) else _to_text(v))
    return column.astype("str")


def _to_text(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    return str(value)


def _datetimes(column: pd.Series) -> pd.Series:
    """UTC datetimes; values Excel or pandas cannot hold (year 1, 9999) become missing."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        converted: pd.Series = column.dt.tz_convert("UTC")
        return converted
    return pd.to_datetime(column, utc=True, errors="coerce")


def typed_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame,
                schema: Mapping[str, Kind]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``schema``'s columns typed; absent properties are NA."""
    # PowerShell property names ignore case: Exchange declares DeviceID, docs say DeviceId.
    wanted = {name.casefold(): name for name in schema}
    if isinstance(rows, pd.DataFrame):
        source = rows.rename(columns={
            column: wanted[str(column).casefold()] for column in rows.columns
            if str(column).casefold() in wanted and column not in schema})
    else:
        records = rows if isinstance(rows, list) else list(rows)
        keys: set[str] = set(itertools.chain.from_iterable(records))
        present = {wanted[key.casefold()]: key for key in sorted(keys)
                   if key.casefold() in wanted}
        source = pd.DataFrame.from_records(records, columns=list(present.values()))
        source.columns = pd.Index(list(present))
    columns: dict[str, pd.Series] = {}
    for name, kind in schema.items():
        if name in source.columns:
            column = source[name]
        else:
            column = pd.Series(None, index=source.index, dtype=object)
        if kind == "text":
            columns[name] = _text(column)
        elif kind == "datetime":
            columns[name] = _datetimes(column)
        elif kind == "int":
            columns[name] = pd.to_numeric(column, errors="coerce").astype("Int64")
        elif kind == "bool":
            columns[name] = column.astype("boolean")
        elif kind == "size":  # "30 GB (32,212,254,720 bytes)" / "Unlimited" -> bytes / NA
            columns[name] = sizes.size_column(column)
        else:
            columns[name] = column
    return pd.DataFrame(columns, index=pd.RangeIndex(len(source)))


def mailbox_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Get-Mailbox rows as a typed frame (:data:`MAILBOX_SCHEMA`)."""
    return typed_frame(rows, MAILBOX_SCHEMA)


def device_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame, *,
                 include_identifiers: bool = False) -> pd.DataFrame:
    """Get-MobileDeviceStatistics rows as a typed frame (:data:`DEVICE_SCHEMA`).

    IMEI and phone number are dropped here, at the first step, unless asked for, so
    they cannot reach any output by accident.
    """
    schema = dict(DEVICE_SCHEMA)
    if not include_identifiers:
        for name in IDENTIFIER_COLUMNS:
            schema.pop(name)
    return typed_frame(rows, schema)


def error_frame(rows: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Error rows ({"Mailbox"|"Command", "Category", "Message", "When"}) as a frame."""
    frame = typed_frame(rows, {"Mailbox": "text", "Command": "text", "Category": "text",
                               "Message": "text", "When": "datetime"})
    return frame[ERROR_COLUMNS]


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


# -- the report -----------------------------------------------------------------------------


def _share_table(values: pd.Series, name: str, order: Sequence[str] | None = None
                 ) -> pd.DataFrame:
    counts = values.value_counts(sort=order is None)
    if order is not None:
        counts = counts.reindex(list(order), fill_value=0)
    total = int(counts.sum())
    table = pd.DataFrame({name: [str(v) for v in counts.index],
                          "Devices": counts.to_numpy(dtype="int64")})
    table["Share"] = table["Devices"] / total if total else 0.0
    return table


def _platform_table(devices: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Devices by platform and major OS version ("iOS 17"), the largest first."""
    major = devices["OSVersion"].str.replace(r"\..*$", "", regex=True)
    label = devices["Platform"].where(major.isna(), devices["Platform"] + " " + major)
    table = _share_table(label.fillna(UNKNOWN), "OS")
    if len(table) > top:
        rest = table.iloc[top - 1:]
        table = pd.concat([table.iloc[: top - 1], pd.DataFrame(
            {"OS": ["Other"], "Devices": [int(rest["Devices"].sum())],
             "Share": [float(rest["Share"].sum())]})], ignore_index=True)
    return table


def build_report(
    mailboxes: Iterable[Mapping[str, object]] | pd.DataFrame,
    devices: Iterable[Mapping[str, object]] | pd.DataFrame,
    errors: Iterable[Mapping[str, object]] | pd.DataFrame = (),
    *,
    options: ReportOptions | None = None,
    run_started: datetime,
) -> Report:
    """Build the mobile device report from Get-Mailbox and Get-MobileDeviceStatistics rows.

    ``run_started`` is the moment DaysSinceLastSync counts from (pass the run's start,
    or a fixed time for a reproducible report).
    """
    options = options or ReportOptions()
    all_mailboxes = mailbox_frame(mailboxes)
    all_devices = device_frame(devices, include_identifiers=options.include_identifiers)
    error_rows = error_frame(errors)
    notes: list[str] = []

    # Mailboxes in scope: the recipient types asked for.
    if all_mailboxes["RecipientTypeDetails"].notna().any():
        wanted = {kind.lower() for kind in options.recipient_types}
        in_scope = all_mailboxes["RecipientTypeDetails"].str.lower().isin(wanted).to_numpy(
            dtype=bool, na_value=False)
    else:
        in_scope = np.ones(len(all_mailboxes), dtype=bool)
        if len(all_mailboxes):
            notes.append("The mailbox rows carry no RecipientTypeDetails: all were included.")
    scoped = all_mailboxes[in_scope].reset_index(drop=True)

    # Match against every mailbox once, then renumber to the mailboxes in scope.
    matched = match_devices(all_mailboxes, all_devices)
    scoped_number = np.where(in_scope, np.cumsum(in_scope) - 1, -1)
    found = matched.to_numpy(dtype="int64", na_value=-1)
    in_scope_position = np.where(found >= 0, scoped_number[np.maximum(found, 0)], -1)
    position = pd.Series(in_scope_position, dtype="Int64").where(in_scope_position >= 0)
    unmatched = int(matched.isna().sum())
    if unmatched:
        notes.append(f"{unmatched} device(s) belong to no mailbox in the export and were left "
                     "out.")
    keep = position.notna().to_numpy(dtype=bool).copy()
    if not options.all_devices:
        model = all_devices["DeviceModel"].str.strip().str.lower()
        wanted_model = (model == options.device_model.lower())
        keep = keep & wanted_model.to_numpy(dtype=bool, na_value=False)
    joined = all_devices[keep].reset_index(drop=True)
    owner = position[keep].to_numpy(dtype="int64")
    # One partnership listed twice (the same file given twice, a re-queried mailbox).
    pairs = pd.Series(owner.astype(str)).str.cat(joined["Identity"].fillna(""), sep="|")
    duplicate = pairs.duplicated() & joined["Identity"].notna()
    if duplicate.any():
        joined = joined[~duplicate.to_numpy()].reset_index(drop=True)
        owner = owner[~duplicate.to_numpy()]

    owners = scoped.iloc[owner].reset_index(drop=True)
    friendly = joined["DeviceFriendlyName"].where(joined["DeviceFriendlyName"].str.strip() != "")
    joined.insert(0, "User", owners["DisplayName"].fillna(owners["Name"]))
    joined.insert(1, "Device", friendly.fillna(joined["DeviceModel"]).fillna(joined["DeviceType"]))
    for target, source in (("PrimarySmtpAddress", "PrimarySmtpAddress"),
                           ("UserPrincipalName", "UserPrincipalName"),
                           ("RecipientTypeDetails", "RecipientTypeDetails"),
                           ("MailboxIdentity", "Identity"),
                           ("MailboxExchangeGuid", "ExchangeGuid")):
        joined[target] = owners[source]
    joined["Platform"], joined["OSVersion"] = split_os(joined["DeviceOS"])
    joined["SyncProtocol"] = sync_protocol(joined["ClientType"])
    joined["DaysSinceLastSync"] = days_since(joined["LastSuccessSync"], run_started)
    joined["StaleBucket"] = stale_buckets(joined["DaysSinceLastSync"], options.stale_thresholds)

    # Users without devices: before the stale filter, which only narrows the device list.
    with_devices = np.zeros(len(scoped), dtype=bool)
    with_devices[owner] = True
    # a mailbox whose devices could not be read (it is on the Errors sheet) is not known
    # to be without devices
    failed = set(error_rows["Mailbox"].dropna().str.lower())
    unread = scoped["Identity"].str.lower().isin(failed).to_numpy(dtype=bool, na_value=False)
    lonely = scoped[~with_devices & ~unread]
    users_without = pd.DataFrame({
        "User": lonely["DisplayName"].fillna(lonely["Name"]),
        "PrimarySmtpAddress": lonely["PrimarySmtpAddress"],
        "UserPrincipalName": lonely["UserPrincipalName"],
        "RecipientTypeDetails": lonely["RecipientTypeDetails"],
    }).sort_values("User", key=lambda s: s.str.lower(), na_position="last",
                   kind="stable").reset_index(drop=True)

    if options.stale_days is not None:
        days = joined["DaysSinceLastSync"]
        old = (days >= options.stale_days).fillna(True).to_numpy(dtype=bool)
        joined = joined[old].reset_index(drop=True)

    order = np.lexsort((
        joined["DeviceId"].fillna("").to_numpy(dtype=object),
        joined["User"].fillna("").str.lower().to_numpy(dtype=object),
    ))
    joined = joined.iloc[order].reset_index(drop=True)

    days = joined["DaysSinceLastSync"]
    figures = Figures(
        mailboxes_checked=len(scoped),
        users_with_devices=int(joined["MailboxIdentity"].fillna(joined["User"]).nunique()),
        users_without_devices=len(users_without),
        devices=len(joined),
        native_sync=int((joined["SyncProtocol"] == NATIVE_PROTOCOL).sum()),
        rest=int((joined["SyncProtocol"] == REST_PROTOCOL).sum()),
        stale=int((days > options.stale_after).fillna(False).sum()),
        never_synced=int(days.isna().sum()),
        errors=len(error_rows),
        unmatched_devices=unmatched,
    )
    access = joined["DeviceAccessState"].fillna(UNKNOWN)
    return Report(
        mailboxes=scoped,
        devices=joined,
        users_without_devices=users_without,
        errors=error_rows,
        figures=figures,
        options=options,
        run_started=run_started,
        by_protocol=_share_table(joined["SyncProtocol"], "SyncProtocol"),
        by_platform=_platform_table(joined),
        by_stale=_share_table(joined["StaleBucket"].astype("str"), "StaleBucket",
                              order=options.bucket_labels),
        by_access_state=_share_table(access, "DeviceAccessState"),
        notes=notes,
    )



# -- offline exports ------------------------------------------------------------------------

#: The manifest Export-PsbridgeData.ps1 and `psbridge sandbox export` write beside the files.
MANIFEST_NAME = "psbridge-manifest.json"
# Type names (most derived first) tell the exports apart, whatever the files are called:
# Get-Mailbox (and Get-EXOMailbox) vs Get-MobileDeviceStatistics (and its EXO twin).
_TYPE_NAME = re.compile(rb"<T>(?:Deserialized\.)?([A-Za-z0-9_.`+\[\], =-]+?)</T>")
_MAILBOX_TYPES = re.compile(r"^Microsoft\.Exchange\.[\w.]*\.(?:Exo)?Mailbox$")
_DEVICE_TYPES = re.compile(
    r"^Microsoft\.Exchange\.[\w.]*\.(?:MobileDeviceConfiguration|(?:Exo)?MobileDeviceStatistics)$")
_HEAD_BYTES = 1 << 16


@dataclass
class OfflineExport:
    """Rows read from Export-Clixml files, and what their manifest says (if any)."""

    mailboxes: list[dict[str, object]] | pd.DataFrame = field(default_factory=list)
    devices: list[dict[str, object]] | pd.DataFrame = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)
    mailbox_files: list[Path] = field(default_factory=list)
    device_files: list[Path] = field(default_factory=list)

    @property
    def created(self) -> datetime | None:
        """When the export was taken (the manifest's ``created``), for DaysSinceLastSync."""
        value = self.manifest.get("created")
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @property
    def organisation(self) -> str | None:
        value = self.manifest.get("organization") or self.manifest.get("organisation")
        return value if isinstance(value, str) and value.strip() else None


def export_kind(path: Path) -> str | None:
    """"mailboxes", "devices" or None, from the first object's type names in the file."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16-le" if head.startswith(b"\xff\xfe") else "utf-16-be"
        head = head[2:len(head) - len(head) % 2].decode(codec, "replace").encode("utf-8")
    for match in _TYPE_NAME.finditer(head):
        name = match.group(1).decode("ascii", "replace")
        if _DEVICE_TYPES.match(name):
            return "devices"
        if _MAILBOX_TYPES.match(name):
            return "mailboxes"
    return None


def _export_files(sources: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.iterdir()
                           if p.is_file() and p.suffix.lower() in (".xml", ".clixml"))
            if not found:
                raise InputError(f"no .xml files in {source}.")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise InputError(f"{source} does not exist.")
    return files


def _manifest(folders: Iterable[Path]) -> dict[str, object]:
    for folder in dict.fromkeys(folders):
        path = folder / MANIFEST_NAME
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {path}: {exc}") from exc
            return loaded if isinstance(loaded, dict) else {}
    return {}


def load_exports(sources: Sequence[Path]) -> OfflineExport:
    """Read Get-Mailbox and Get-MobileDeviceStatistics Export-Clixml files (or folders).

    Files are told apart by the type names inside, not by their names; other CLIXML
    files are an error, so a wrong file is never silently ignored (one without any object
    stands for an empty device export). Error rows and the
    organisation come from the folder's psbridge-manifest.json when there is one.
    """
    from bridge import clixml

    export = OfflineExport()
    files = _export_files(sources)
    empty_files: list[Path] = []
    for path in files:
        kind = export_kind(path)
        if kind == "mailboxes":
            export.mailbox_files.append(path)
        elif kind == "devices":
            export.device_files.append(path)
        elif next(clixml.iter_records(path), None) is None:
            # no object at all (a malformed file raises here, with line and column):
            # Export-Clixml of an organisation without a single mobile device
            empty_files.append(path)
        else:
            raise InputError(
                f"{path} is neither a Get-Mailbox nor a Get-MobileDeviceStatistics export "
                "(no Mailbox or MobileDeviceConfiguration objects in it).")
    if not export.mailbox_files:
        raise InputError("no Get-Mailbox export among the files given: export both "
                         "Get-Mailbox and Get-MobileDeviceStatistics (ps_scripts/"
                         "Export-PsbridgeData.ps1).")
    if not export.device_files and empty_files:
        export.device_files.append(empty_files[0])
    if not export.device_files:
        raise InputError("no Get-MobileDeviceStatistics export among the files given: export "
                         "both Get-Mailbox and Get-MobileDeviceStatistics (ps_scripts/"
                         "Export-PsbridgeData.ps1).")
    # only the properties the report uses, each file in its own process (bridge.clixml)
    read = clixml.read_export({"mailboxes": export.mailbox_files, "devices": export.device_files},
                              {"mailboxes": MAILBOX_SCHEMA, "devices": DEVICE_SCHEMA})
    export.mailboxes, export.devices = read["mailboxes"], read["devices"]
    export.manifest = _manifest(path.parent for path in files)
    errors = export.manifest.get("errors")
    if isinstance(errors, list):
        export.errors = [error for error in errors if isinstance(error, dict)]
    return export


def organisation_name(mailboxes: pd.DataFrame, fallback: str) -> str:
    """The organisation a report is about: the domain its mailbox identities start with."""
    identities = mailboxes["Identity"].dropna()
    if len(identities):
        domain = str(identities.iloc[0]).replace("\\", "/").split("/", 1)[0]
        if "." in domain and "/" in str(identities.iloc[0]):
            return domain
    return fallback
