"""The next step after the report: a PowerShell script, for the admin to review, that removes
stale device partnerships.

psbridge itself never changes Exchange. It writes a script with one
``Remove-MobileDevice -Identity '<identity>' -Confirm:$false`` per partnership that had no
successful sync for N days, or never synced although it was set up N days ago
(FirstSyncTime). The script runs every removal with ``-WhatIf`` unless the admin passes
``-Execute``, and ends with a summary.

Identities go into the script as PowerShell single-quoted literals (nothing inside is
expanded: ``$`` and backquotes stay literal). PowerShell treats four Unicode characters as
single quotes too (U+2018, U+2019, U+201A, U+201B), so each of those is doubled like ``'``.
The file is UTF-8 with a byte order mark: without it Windows PowerShell 5.1 reads a script
as the system's ANSI code page and mangles non-ASCII names (and Exchange's ``§``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bridge.errors import OutputError

if TYPE_CHECKING:
    from bridge.frames import Report

#: The characters PowerShell reads as a single quote (its tokenizer's IsSingleQuote).
SINGLE_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")
_QUOTE = re.compile("[" + "".join(SINGLE_QUOTES) + "]")
# Comment lines carry names: no line breaks or other control characters in them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")

REASON_STALE = "stale"
REASON_NEVER = "never synced"
#: The Devices column that marks what the script removes (its reason), empty for the rest.
COLUMN = "CleanupScript"


def quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted string literal that reads back as ``text``."""
    return "'" + _QUOTE.sub(lambda match: match.group(0) * 2, text) + "'"


def _comment(text: object) -> str:
    return _CONTROL.sub(" ", str(text)).strip()


def _days(moments: pd.Series, run_started: datetime) -> pd.Series:
    start = pd.Timestamp(run_started)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    values = pd.to_datetime(moments, utc=True, errors="coerce")
    return ((start - values).dt.total_seconds() // 86_400).clip(lower=0)


def removal_reasons(devices: pd.DataFrame, *, days: int, run_started: datetime) -> pd.Series:
    """Why each device would be removed ("stale", "never synced") or NA when it stays.

    Stale: no successful sync for ``days`` days or more (LastSuccessSync). Never synced:
    no LastSuccessSync and FirstSyncTime ``days`` or more days ago (a partnership set up
    yesterday that has not synced yet is left alone). A device without an Identity cannot
    be named to Remove-MobileDevice and always stays.
    """
    if days < 0:
        raise ValueError("cleanup days must be 0 or more")
    index = devices.index
    last = (devices["LastSuccessSync"] if "LastSuccessSync" in devices.columns
            else pd.Series(pd.NaT, index=index))
    first = (devices["FirstSyncTime"] if "FirstSyncTime" in devices.columns
             else pd.Series(pd.NaT, index=index))
    since_last = _days(last, run_started)
    since_first = _days(first, run_started)
    never = pd.to_datetime(last, utc=True, errors="coerce").isna()
    identity = (devices["Identity"].astype("string").str.strip() if "Identity" in devices.columns
                else pd.Series(pd.NA, index=index, dtype="string"))
    named = (identity.notna() & (identity != "")).to_numpy(dtype=bool, na_value=False)
    stale = (~never & (since_last >= days)).to_numpy(dtype=bool) & named
    old_never = (never & (since_first >= days)).to_numpy(dtype=bool) & named
    reasons = pd.Series(pd.NA, index=index, dtype="string")
    reasons[stale] = REASON_STALE
    reasons[old_never] = REASON_NEVER
    return reasons


@dataclass(frozen=True)
class CleanupPlan:
    """The partnerships a cleanup script removes, and why.

    ``devices``: one row per partnership (Identity, User, Device, LastSuccessSync,
    FirstSyncTime, Reason), in the report's order, each Identity once.
    """

    devices: pd.DataFrame
    days: int
    run_started: datetime

    @property
    def count(self) -> int:
        return len(self.devices)


def plan_cleanup(devices: pd.DataFrame, *, days: int, run_started: datetime) -> CleanupPlan:
    """The report's devices that :func:`removal_reasons` marks, ready for the script."""
    reasons = removal_reasons(devices, days=days, run_started=run_started)
    chosen = devices[reasons.notna().to_numpy(dtype=bool)]
    columns = {}
    for name in ("Identity", "User", "Device", "LastSuccessSync", "FirstSyncTime"):
        columns[name] = (chosen[name] if name in chosen.columns
                         else pd.Series(pd.NA, index=chosen.index, dtype="object"))
    columns["Reason"] = reasons[chosen.index]
    plan = pd.DataFrame(columns)
    plan = plan[~plan["Identity"].duplicated()].reset_index(drop=True)
    return CleanupPlan(plan, days, run_started)


def _when(moment: object) -> str:
    if moment is None or pd.isna(moment):  # type: ignore[call-overload]
        return "never"
    stamp = pd.Timestamp(moment)  # type: ignore[arg-type]
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def cleanup_script(
    plan: CleanupPlan,
    *,
    organisation: str,
    report: str,
    written: datetime,
    scope: str = "",
    psbridge_version: str = "",
    script_name: str = "remove-stale.ps1",
) -> str:
    """The text of the cleanup script (lines end in CRLF, the Windows convention)."""
    name = _comment(script_name)
    days = plan.days
    count = plan.count
    header = [
        "# Remove stale mobile device partnerships: a script written by psbridge"
        + (f" {_comment(psbridge_version)}" if psbridge_version else "") + " for review.",
        f"# Written:       {_when(written)}",
        f"# Organisation:  {_comment(organisation)}",
        f"# Report:        {_comment(report)} (data as of {_when(plan.run_started)})",
    ]
    if scope:
        header.append(f"# Scope:         {_comment(scope)}")
    header += [
        f"# Partnerships:  {count} (no successful sync for {days} days or more, or never "
        f"synced and set up {days} or more days ago)",
        "#",
        "# psbridge never changes Exchange; this script does, and only with -Execute.",
        "# Run it in the Exchange Management Shell, or in PowerShell after Connect-ExchangeOnline:",
        f"#   .\\{name}            shows what would be removed (-WhatIf); changes nothing",
        f"#   .\\{name} -Execute   removes the partnerships listed below",
        "# A removed partnership comes back when its device syncs again.",
        "[CmdletBinding()]",
        "param(",
        "    # Remove the partnerships. Without it every removal runs with -WhatIf.",
        "    [switch]$Execute",
        ")",
        "Set-StrictMode -Version 3.0",
        "# one removal failing (a device already gone) must not stop the others",
        "$ErrorActionPreference = 'Continue'",
        "if (-not (Get-Command -Name Remove-MobileDevice -ErrorAction SilentlyContinue)) {",
        "    throw 'Remove-MobileDevice is not available: run this script in the Exchange "
        "Management Shell or after Connect-ExchangeOnline.'",
        "}",
        f"$total = {count}",
        "$removalErrors = [System.Collections.ArrayList]::new()",
        "",
    ]
    body: list[str] = []
    for row in plan.devices.itertuples(index=False):
        if row.Reason == REASON_NEVER:
            why = f"never synced, set up {_when(row.FirstSyncTime)}"
        else:
            why = f"last successful sync {_when(row.LastSuccessSync)}"
        body.append(f"# {_comment(row.User)}, {_comment(row.Device)}: {why}")
        body.append(f"Remove-MobileDevice -Identity {quote(str(row.Identity))} -Confirm:$false "
                    "-WhatIf:(-not $Execute) -ErrorVariable +removalErrors")
    footer = [
        "",
        "$failed = $removalErrors.Count",
        "if ($Execute) {",
        "    Write-Output ('Removed {0} of {1} partnership(s); {2} failed (see the errors "
        "above).' -f ($total - $failed), $total, $failed)",
        "} else {",
        "    Write-Output ('What if: {0} partnership(s) would be removed ({1} failed). "
        "Nothing was changed; run again with -Execute to remove them.' -f "
        "($total - $failed), $failed)",
        "}",
    ]
    return "\r\n".join(header + body + footer) + "\r\n"


def write_for_report(path: Path, report: Report, *, organisation: str, report_name: str,
                     written: datetime, psbridge_version: str = "") -> int:
    """Write the cleanup script of a report built with ``cleanup_days``; returns how many
    partnerships it removes."""
    plan = report.cleanup_plan
    if plan is None:
        raise ValueError("the report was built without cleanup_days")
    described = report.options.describe()
    text = cleanup_script(plan, organisation=organisation, report=report_name, written=written,
                          scope=f"{described['Devices']}; {described['Recipient types']}",
                          psbridge_version=psbridge_version, script_name=path.name)
    write_cleanup_script(path, text)
    return plan.count


def write_cleanup_script(path: Path, text: str) -> None:
    """Write the script as UTF-8 with a byte order mark (Windows PowerShell 5.1 needs it),
    replacing ``path`` only with a complete file."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8-sig", newline="") as stream:
            stream.write(text)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write the cleanup script {path}: "
                          f"{exc.strerror or exc}.") from exc


__all__ = [
    "COLUMN",
    "CleanupPlan",
    "SINGLE_QUOTES",
    "cleanup_script",
    "plan_cleanup",
    "quote",
    "removal_reasons",
    "write_cleanup_script",
    "write_for_report",
]
