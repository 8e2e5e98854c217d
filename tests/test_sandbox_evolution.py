"""The demo's story: weeks of a sandbox organisation, deterministic, with every change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bridge import eas, frames, history
from bridge.sandbox.evolution import STORY_WEEKS, demo_organisation, story
from bridge.sandbox.organisation import Organisation

ALL = frames.ReportOptions(all_devices=True)


def _report(org: Organisation) -> frames.Report:
    return frames.build_report(org.mailboxes, org.devices, options=ALL,
                               run_started=org.reference_time)


def test_the_story_is_the_same_every_time() -> None:
    first, second = demo_organisation(60, 2), demo_organisation(60, 2)
    assert first.device_frame().equals(second.device_frame())
    assert first.mailbox_frame().equals(second.mailbox_frame())
    assert first.reference_time == Organisation(60, 2).reference_time + timedelta(
        weeks=STORY_WEEKS)


def test_weeks_move_the_figures_and_the_last_week_has_every_change(tmp_path: Path) -> None:
    figures = []
    with history.History(tmp_path / "history.sqlite") as recorded:
        start = None
        for org in story(200, 1):
            start = start or org.reference_time
            report = _report(org)
            flagged = eas.with_eas_columns(report.devices)
            versions = flagged[flagged[eas.FLAG_COLUMN]]["ClientVersion"]
            figures.append((report.figures.rest, report.figures.native_sync,
                            int(flagged[eas.FLAG_COLUMN].sum()), set(versions)))
            run_id = recorded.record(report.devices, organisation="story",
                                     started=report.run_started)
        view = recorded.view(run_id)
    assert len(figures) == STORY_WEEKS + 1
    (rest0, native0, old0, versions0), (rest, native, old, _versions) = figures[0], figures[-1]
    assert versions0 == {"16.0", "14.1", "12.1"}  # Gmail 16.0, Samsung Email 14.1 and 12.1
    assert rest < rest0 and native > native0 and old < old0
    assert set(view.change_counts) == set(history.CHANGE_KINDS)


@pytest.mark.parametrize("mailboxes", [1, 5])
def test_a_tiny_organisation_gets_weekly_runs_without_every_candidate(mailboxes: int) -> None:
    # too small for one change of every kind: the last week does what it can
    times = [org.reference_time for org in story(mailboxes, 1, weeks=2)]
    assert [later - earlier for earlier, later in zip(times, times[1:], strict=False)] == [
        timedelta(days=7), timedelta(days=7)]


def test_the_story_needs_a_week() -> None:
    with pytest.raises(ValueError, match="at least one week"):
        next(story(10, 1, weeks=0))


def test_the_demo_records_the_weeks_before_today_once(tmp_path: Path) -> None:
    from bridge.demo import demo_history_name, record_story

    settings = history.HistorySettings(path=tmp_path / "history.sqlite")
    first = record_story(settings, mailboxes=40, seed=3, options=ALL, psbridge_version="9")
    assert first.today.device_frame().equals(demo_organisation(40, 3).device_frame())
    name = demo_history_name("Contoso", 40, 3)
    assert name == "Contoso (psbridge sandbox, 40 mailboxes, seed 3)"
    with history.History(settings.path) as recorded:  # type: ignore[arg-type]
        runs = recorded.runs(name)
    assert [run.run_id for run in runs] == first.recorded == list(range(1, STORY_WEEKS + 1))
    assert [run.started for run in runs] == [
        first.today.reference_time - timedelta(weeks=STORY_WEEKS - n)
        for n in range(STORY_WEEKS)]
    assert {run.source for run in runs} == {"demo"}
    # a second demo finds its story there; another scope gets a story of its own
    again = record_story(settings, mailboxes=40, seed=3, options=ALL)
    assert again.recorded == []
    classic = record_story(settings, mailboxes=40, seed=3, options=frames.ReportOptions())
    assert len(classic.recorded) == STORY_WEEKS
    off = record_story(history.HistorySettings(path=None), mailboxes=40, seed=3, options=ALL)
    assert off.recorded == [] and off.today.reference_time == first.today.reference_time
