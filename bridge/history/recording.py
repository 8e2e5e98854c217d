"""History for one report run: where it lives, what --history asked, record and view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.history.changes import History, HistoryView
from bridge.history.database import DEFAULT_TIMEOUT
from bridge.paths import user_data_dir

if TYPE_CHECKING:
    from bridge.frames import Report

def default_history_path() -> Path:
    """Where history lives unless ``--history`` says otherwise (per user, not per folder).

    Windows: ``%LOCALAPPDATA%\\psbridge\\history.sqlite``; elsewhere
    ``$XDG_DATA_HOME/psbridge/history.sqlite`` (``~/.local/share`` when unset).
    """
    return user_data_dir() / "history.sqlite"


@dataclass(frozen=True)
class HistorySettings:
    """What ``--history PATH`` / ``--no-history`` / ``--history-keep N`` asked for.

    ``path`` None means history is off for this run.
    """

    path: Path | None
    keep: int | None = None
    timeout: float = DEFAULT_TIMEOUT


def report_scope(report: Report) -> str:
    """Which devices a report lists, in words: runs are compared only within one scope."""
    described = report.options.describe()
    return "; ".join(described[key] for key in ("Devices", "Recipient types", "Stale filter"))


def record_and_view(
    settings: HistorySettings,
    report: Report,
    *,
    organisation: str,
    server: str = "",
    source: str = "",
    finished: datetime | None = None,
    psbridge_version: str = "",
) -> HistoryView | None:
    """Record a report run and return what its Changes and Trend sheets show.

    None when history is off. Raises HistoryError (damaged, locked, ...): the caller
    warns and writes the report without the history sheets.
    """
    if settings.path is None:
        return None
    with History(settings.path, timeout=settings.timeout) as history:
        run_id = history.record(
            report.devices, organisation=organisation, started=report.run_started,
            server=server, source=source, scope=report_scope(report), finished=finished,
            mailboxes=report.figures.mailboxes_checked, stale_days=report.options.stale_after,
            keep=settings.keep, psbridge_version=psbridge_version,
        )
        return history.view(run_id)
