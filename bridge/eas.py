"""Exchange ActiveSync clients below protocol 16.1: which devices Exchange Online blocks.

Since 1 March 2026 Exchange Online refuses Exchange ActiveSync (EAS) clients that speak a
protocol older than 16.1 (message center MC1197103). Microsoft's own detection reads two
properties of a device: ClientType ``EAS`` (or a type naming ActiveSync) and ClientVersion,
the EAS protocol version the client negotiated (``14.1``, ``16.0``, ``16.1``), compared as
a [version]. This module applies the same rule to the report's Devices frame, pure pandas.

Outlook for iOS and Android (ClientType REST or Outlook, DeviceModel "Outlook for iOS and
Android") does not use EAS and is never flagged, whatever its ClientVersion says ("1.0").
An on-premises Exchange server does not block these clients: there the figures say which
devices *would be* blocked once the mailboxes move to Exchange Online.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd

#: The lowest EAS protocol version Exchange Online accepts, as a version and as text.
MINIMUM_VERSION = (16, 1)
MINIMUM_TEXT = "16.1"
#: When Exchange Online began refusing older clients.
BLOCKED_SINCE = datetime(2026, 3, 1, tzinfo=UTC)
#: DeviceModel of Outlook for iOS and Android (REST or native sync, never EAS).
OUTLOOK_APP_MODEL = "Outlook for iOS and Android"

#: Columns this module adds to the Devices frame: the protocol as a number, and the flag.
VERSION_COLUMN = "EASVersion"
FLAG_COLUMN = "EASBelow16.1"

Environment = Literal["online", "on-premises"]

ONLINE_WORDING = "blocked by Exchange Online since 1 March 2026"
ONLINE_WORDING_BEFORE = "to be blocked by Exchange Online from 1 March 2026"
ON_PREMISES_WORDING = "would be blocked in Exchange Online"


def parse_version(text: object) -> tuple[int, ...] | None:
    """ClientVersion text -> a version tuple, as PowerShell's [version] reads it.

    Two to four dot-separated whole numbers ("16.1", "14.1.0"); anything else (empty,
    "16", "1.0 beta") is None: an unknown version is never flagged.
    """
    if not isinstance(text, str):
        return None
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 4 or not all(part.isdigit() and part.isascii() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _column(devices: pd.DataFrame, name: str) -> pd.Series:
    if name in devices.columns:
        return devices[name].astype("string")
    return pd.Series(pd.NA, index=devices.index, dtype="string")


def eas_rows(devices: pd.DataFrame) -> pd.Series:
    """True for the devices that sync with Exchange ActiveSync (ClientType EAS/ActiveSync).

    Outlook for iOS and Android is excluded by its DeviceModel too, so a stray ClientType
    can never flag it. (Few distinct values: each is judged once.)
    """
    type_codes, types = pd.factorize(_column(devices, "ClientType"))
    eas_type = np.array([_is_eas_type(value) for value in types] + [False], dtype=bool)
    model_codes, models = pd.factorize(_column(devices, "DeviceModel"))
    outlook = np.array([str(value).strip().casefold() == OUTLOOK_APP_MODEL.casefold()
                        for value in models] + [False], dtype=bool)
    return pd.Series(eas_type[type_codes] & ~outlook[model_codes], index=devices.index,
                     dtype=bool)


def _is_eas_type(client_type: object) -> bool:
    text = str(client_type).strip().casefold()
    return text == "eas" or "activesync" in text


def eas_versions(devices: pd.DataFrame) -> pd.Series:
    """The EAS protocol version of each EAS device as a number (16.1), NA for the others.

    The number is for reading and sorting; the flag compares versions exactly
    (:func:`below_minimum`).
    """
    text = _column(devices, "ClientVersion").str.strip()
    codes, uniques = pd.factorize(text)
    numbers = np.array([_as_number(parse_version(value)) for value in uniques] + [np.nan],
                       dtype="float64")
    values = pd.Series(numbers[codes], index=devices.index, dtype="Float64")
    return values.where(eas_rows(devices))


def _as_number(version: tuple[int, ...] | None) -> float:
    if version is None:
        return np.nan
    return float(f"{version[0]}.{version[1]}")


def below_minimum(devices: pd.DataFrame) -> pd.Series:
    """True for EAS devices whose ClientVersion is a version below 16.1 (Microsoft's test)."""
    text = _column(devices, "ClientVersion").str.strip()
    codes, uniques = pd.factorize(text)
    old = np.array([_is_old(parse_version(value)) for value in uniques] + [False], dtype=bool)
    return pd.Series(old[codes], index=devices.index, dtype=bool) & eas_rows(devices)


def _is_old(version: tuple[int, ...] | None) -> bool:
    return version is not None and version < MINIMUM_VERSION


def with_eas_columns(devices: pd.DataFrame) -> pd.DataFrame:
    """The Devices frame with :data:`VERSION_COLUMN` and :data:`FLAG_COLUMN` added.

    The flag is empty (NA) for devices that are not EAS clients, so the sheet reads TRUE
    (below 16.1), FALSE (16.1 or newer) or nothing (not EAS: nothing to judge).
    """
    flag = below_minimum(devices).astype("boolean").where(eas_rows(devices))
    return devices.assign(**{VERSION_COLUMN: eas_versions(devices), FLAG_COLUMN: flag})


def wording(environment: Environment, when: datetime | None = None) -> str:
    """What the figure means where the report ran: blocked online, would be on-premises."""
    if environment == "on-premises":
        return ON_PREMISES_WORDING
    if when is not None and when < BLOCKED_SINCE:
        return ONLINE_WORDING_BEFORE
    return ONLINE_WORDING


def environment_for(source: str, cmdlets: Iterable[str] = (),
                    identities: Iterable[object] = ()) -> Environment:
    """Exchange Online or on-premises, from how the data was collected.

    ``source``: "online" for the Exchange Online scripts (--via pwsh/jumphost), "live" for
    WSMan (on-premises: Exchange Online's remote PowerShell is retired), anything else for
    files, told apart by their cmdlets (Get-EXO...) or device identities (Exchange Online
    writes ``user\\ExchangeActiveSyncDevices\\...``; on-premises ``domain/OU/.../user/...``).
    """
    if source == "online":
        return "online"
    if source == "live":
        return "on-premises"
    if any(str(name).casefold().startswith("get-exo") for name in cmdlets):
        return "online"
    for identity in identities:
        if isinstance(identity, str) and "ExchangeActiveSyncDevices" in identity:
            return "online" if "\\ExchangeActiveSyncDevices\\" in identity else "on-premises"
    return "on-premises"


@dataclass(frozen=True)
class EasFigures:
    """The Summary's EAS figures for one report.

    ``by_version_model``: EAS devices below 16.1 counted by ClientVersion and DeviceModel
    (columns ClientVersion, DeviceModel, Devices; the largest first).
    """

    eas_devices: int
    below_minimum: int
    unknown_version: int
    environment: Environment
    wording: str
    by_version_model: pd.DataFrame

    @property
    def headline(self) -> str:
        """One line for the Summary: how many EAS clients are below 16.1 and what it means."""
        return (f"{self.below_minimum:,} of {self.eas_devices:,} Exchange ActiveSync "
                f"device(s) below EAS {MINIMUM_TEXT}: {self.wording}")


def eas_figures(devices: pd.DataFrame, environment: Environment,
                when: datetime | None = None) -> EasFigures:
    """Count the EAS devices of a Devices frame and those below 16.1, by version and model."""
    eas = eas_rows(devices)
    old = below_minimum(devices)
    known = eas_versions(devices).notna()
    flagged = devices[old.to_numpy()]
    table = pd.DataFrame({
        "ClientVersion": _column(flagged, "ClientVersion").str.strip().fillna("(none)"),
        "DeviceModel": _column(flagged, "DeviceModel").str.strip().fillna("(none)"),
    })
    counts = (table.groupby(["ClientVersion", "DeviceModel"], sort=False).size()
              .rename("Devices").reset_index())
    counts["_version"] = [parse_version(value) or () for value in counts["ClientVersion"]]
    counts = counts.sort_values(["Devices", "_version", "DeviceModel"],
                                ascending=[False, True, True], kind="stable")
    counts = counts.drop(columns="_version").reset_index(drop=True)
    counts["Devices"] = counts["Devices"].astype("int64")
    return EasFigures(
        eas_devices=int(eas.sum()),
        below_minimum=int(old.sum()),
        unknown_version=int((eas & ~known).sum()),
        environment=environment,
        wording=wording(environment, when),
        by_version_model=counts[["ClientVersion", "DeviceModel", "Devices"]],
    )


def scope_hides_eas(all_devices: bool, device_model: str) -> bool:
    """True when the report's device filter leaves every EAS client out (the classic scope)."""
    return not all_devices and device_model.strip().casefold() == OUTLOOK_APP_MODEL.casefold()


#: The Summary's one line when the scope hides EAS devices.
SCOPE_NOTE = (f"This report lists Outlook for iOS and Android only; Exchange ActiveSync clients "
              f"below {MINIMUM_TEXT} are counted with --all-devices.")


def moved_to_minimum(before: pd.Series, after: pd.Series) -> pd.Series:
    """Per partnership seen in two runs: True where its EAS version went from below 16.1 to
    16.1 or newer (``before``/``after``: :data:`VERSION_COLUMN` numbers, aligned)."""
    threshold = float(MINIMUM_TEXT)
    old = pd.to_numeric(before, errors="coerce")
    new = pd.to_numeric(after, errors="coerce")
    return ((old < threshold) & (new >= threshold)).fillna(False).astype(bool)


__all__ = [
    "BLOCKED_SINCE",
    "EasFigures",
    "Environment",
    "FLAG_COLUMN",
    "MINIMUM_TEXT",
    "MINIMUM_VERSION",
    "ONLINE_WORDING",
    "ON_PREMISES_WORDING",
    "OUTLOOK_APP_MODEL",
    "SCOPE_NOTE",
    "VERSION_COLUMN",
    "below_minimum",
    "eas_figures",
    "eas_rows",
    "eas_versions",
    "environment_for",
    "moved_to_minimum",
    "parse_version",
    "scope_hides_eas",
    "wording",
    "with_eas_columns",
]
