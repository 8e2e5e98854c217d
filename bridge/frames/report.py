"""The report: Figures, Report, and build_report, the one entry point that makes a Report
from mailbox and device rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bridge import cleanup, eas
from bridge.frames.columns import (
    DEVICE_SHEET_COLUMNS,
    NATIVE_PROTOCOL,
    REST_PROTOCOL,
    UNKNOWN,
)
from bridge.frames.derived import days_since, match_devices, split_os, stale_buckets, sync_protocol
from bridge.frames.options import ReportOptions
from bridge.frames.typed import device_frame, error_frame, mailbox_frame


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
    #: EAS clients below 16.1 (None: the scope leaves every EAS device out)
    eas_figures: eas.EasFigures | None = None
    #: what a cleanup script removes (None: no script asked for)
    cleanup_plan: cleanup.CleanupPlan | None = None

    @property
    def eas_scope_note(self) -> str | None:
        """The Summary's line when the scope leaves every EAS device out, else None."""
        return eas.SCOPE_NOTE if self.eas_figures is None else None

    def devices_sheet(self) -> pd.DataFrame:
        """The Devices table: classic columns first, identifiers only when asked for."""
        columns = {
            sheet: self.devices[source]
            for sheet, source in DEVICE_SHEET_COLUMNS.items()
            if source in self.devices.columns
        }
        return pd.DataFrame(columns, index=self.devices.index).reset_index(drop=True)


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


def _repeated_mailboxes(mailboxes: pd.DataFrame) -> np.ndarray:
    """True for each row whose mailbox came earlier: the same ExchangeGuid, else the same
    Guid, else the same Identity (case does not matter in Exchange identities)."""
    key = pd.Series("", index=mailboxes.index, dtype=object)
    for column in ("Identity", "Guid", "ExchangeGuid"):  # the last one present wins
        if column in mailboxes.columns:
            values = mailboxes[column].astype("string").str.lower()
            key = (column + ":" + values).where(values.notna(), key)
    known = key != ""
    return (key.duplicated() & known).to_numpy(dtype=bool)


def build_report(
    mailboxes: Iterable[Mapping[str, object]] | pd.DataFrame,
    devices: Iterable[Mapping[str, object]] | pd.DataFrame,
    errors: Iterable[Mapping[str, object]] | pd.DataFrame = (),
    *,
    options: ReportOptions | None = None,
    run_started: datetime,
    environment: eas.Environment = "on-premises",
) -> Report:
    """Build the mobile device report from Get-Mailbox and Get-MobileDeviceStatistics rows.

    ``run_started`` is the moment DaysSinceLastSync counts from (pass the run's start,
    or a fixed time for a reproducible report). ``environment`` says what an EAS client
    below 16.1 means: blocked (Exchange Online) or would be (on-premises).
    """
    options = options or ReportOptions()
    all_mailboxes = mailbox_frame(mailboxes)
    all_devices = device_frame(devices, include_identifiers=options.include_identifiers)
    error_rows = error_frame(errors)
    notes: list[str] = []

    # One mailbox listed twice (the same export given twice, a copy of Mailboxes.xml
    # beside the original) is one mailbox: counted and listed once.
    repeated = _repeated_mailboxes(all_mailboxes)
    if repeated.any():
        all_mailboxes = all_mailboxes[~repeated].reset_index(drop=True)
        notes.append(f"{int(repeated.sum())} mailbox row(s) appeared more than once (the same "
                     "export given twice?) and were counted once.")

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
        notes.append(f"{int(duplicate.sum())} device row(s) appeared more than once and were "
                     "counted once.")

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

    joined = joined.iloc[_by_user(joined)].reset_index(drop=True)
    joined, eas_figures, plan = _next_steps(joined, options, run_started, environment)

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
        eas_figures=eas_figures,
        cleanup_plan=plan,
    )


def _by_user(devices: pd.DataFrame) -> np.ndarray:
    """The order of the device rows: by user (ignoring case), then DeviceId. Arrow sorts
    strings by their UTF-8 bytes, which is code point order, as Python compares them, in
    C++: numpy's lexsort of Python strings took 1.8 s for 370,000 devices."""
    keys = pa.table({
        "user": pa.array(devices["User"].fillna("").astype(str).str.lower(), pa.string()),
        "device": pa.array(devices["DeviceId"].fillna("").astype(str), pa.string()),
    })
    order: np.ndarray = pc.sort_indices(
        keys, sort_keys=[("user", "ascending"), ("device", "ascending")]).to_numpy()
    return order


def _next_steps(devices: pd.DataFrame, options: ReportOptions, run_started: datetime,
                environment: eas.Environment
                ) -> tuple[pd.DataFrame, eas.EasFigures | None, cleanup.CleanupPlan | None]:
    """What admins must act on: EAS clients below 16.1 (when the scope shows EAS devices)
    and the partnerships a cleanup script removes."""
    figures = None
    if not eas.scope_hides_eas(options.all_devices, options.device_model):
        devices = eas.with_eas_columns(devices)
        figures = eas.eas_figures(devices, environment, run_started)
    plan = None
    if options.cleanup_days is not None:
        plan = cleanup.plan_cleanup(devices, days=options.cleanup_days, run_started=run_started)
        devices = devices.assign(**{cleanup.COLUMN: cleanup.removal_reasons(
            devices, days=options.cleanup_days, run_started=run_started)})
    return devices, figures, plan
