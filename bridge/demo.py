"""The demo's history: the weeks before today, recorded once, so the first demo has a trend.

``psbridge demo`` serves the last state of the sandbox story
(:mod:`bridge.sandbox.evolution`) and collects it live. Before that, the weeks leading up
to it are recorded in the demo's own history name, as reports built straight from the
organisation's records (the same rows the sandbox would serve), unless that history
already holds runs of the demo: a second demo compares with the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge import frames, history
from bridge.errors import BridgeError
from bridge.sandbox.evolution import STORY_WEEKS, demo_organisation, story
from bridge.sandbox.organisation import Organisation


def demo_history_name(organisation: str, mailboxes: int, seed: int) -> str:
    """The name the demo's runs are recorded under: never a real organisation's."""
    return f"{organisation} (psbridge sandbox, {mailboxes} mailboxes, seed {seed})"


@dataclass
class StoryRecording:
    """What :func:`record_story` did: today's organisation, and the runs it recorded."""

    today: Organisation
    recorded: list[int]


def record_story(
    settings: history.HistorySettings,
    *,
    mailboxes: int,
    seed: int,
    options: frames.ReportOptions,
    organisation: str = "Contoso",
    server: str = "",
    psbridge_version: str = "",
    weeks: int = STORY_WEEKS,
) -> StoryRecording:
    """Record the story's weeks before today (when history is on and has no run of the
    demo in this scope yet) and return today's organisation for the sandbox to serve.

    Raises HistoryError like any recording; the caller warns and goes on.
    """
    states = story(mailboxes, seed, weeks)
    name = demo_history_name(organisation, mailboxes, seed)
    recorded: list[int] = []
    if settings.path is None:
        *_earlier, today = states
        return StoryRecording(today, recorded)
    with history.History(settings.path, timeout=settings.timeout) as store:
        seeded = False
        for week, org in enumerate(states):
            if week == weeks:
                return StoryRecording(org, recorded)
            if seeded:
                continue
            report = frames.build_report(org.mailboxes, org.devices, options=options,
                                         run_started=org.reference_time)
            scope = history.report_scope(report)
            if week == 0 and any(run.scope == scope for run in store.runs(name)):
                seeded = True  # an earlier demo recorded the story: compare with it
                continue
            recorded.append(store.record(
                report.devices, organisation=name, started=report.run_started, server=server,
                source="demo", scope=scope, finished=report.run_started,
                mailboxes=report.figures.mailboxes_checked,
                stale_days=report.options.stale_after, psbridge_version=psbridge_version))
    raise AssertionError("the story ended before today")  # story() yields weeks + 1 states


Line = tuple[Literal["status", "warning"], str]


def today_for_demo(settings: history.HistorySettings | None, *, mailboxes: int, seed: int,
                   options: frames.ReportOptions, psbridge_version: str = ""
                   ) -> tuple[Organisation, list[Line]]:
    """The organisation the demo serves, after recording its story when history is on;
    with the (kind, text) lines to tell the user. A "warning" means history failed: the
    caller goes on without history (one warning, not one per recording)."""
    try:
        recording = record_story(settings or history.HistorySettings(path=None),
                                 mailboxes=mailboxes, seed=seed, options=options,
                                 psbridge_version=psbridge_version)
    except BridgeError as exc:
        return demo_organisation(mailboxes, seed), [(
            "warning", f"history not recorded: {exc} The report is written without the "
                       "Changes and Trend sheets.")]
    if not recording.recorded:
        return recording.today, []
    return recording.today, [("status", f"History: recorded the {len(recording.recorded)} "
                                        "weeks before today of the sandbox organisation (the "
                                        "demo's story).")]


__all__ = ["StoryRecording", "demo_history_name", "record_story", "today_for_demo"]
