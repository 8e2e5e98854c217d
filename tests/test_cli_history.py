"""The history commands: history list/show/prune and diff, and the --history options."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner
from openpyxl.utils import get_column_letter

from bridge import history
from bridge.cli import cli, history_for_run, history_options
from bridge.history import History
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation
from bridge.workbook import _HistoryRows, _SheetRows
from tests.test_history import START, _expected_changes, _truth, make_devices, record


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A history with two Contoso runs (run 2: one device gone, one switched) and one
    Fabrikam run."""
    path = tmp_path / "history.sqlite"
    before = make_devices(6, seed=5)
    after = before.drop(index=[5]).copy()
    after.loc[0, "SyncProtocol"] = "Outlook (native sync)"
    before.loc[0, "SyncProtocol"] = "REST (legacy)"
    with History(path) as store:
        record(store, before, source="offline", server="exch01.contoso.com")
        record(store, after, started=START + timedelta(days=1), source="offline",
               server="exch01.contoso.com")
        record(store, make_devices(2, prefix="f"), organisation="Fabrikam", source="demo")
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_history_list(db: Path) -> None:
    code, out, err = run("history", "list", "--history", str(db))
    with History(db) as store:
        runs = store.runs()
        rest = [sum(n for p, n in store.counts(r.run_id, "SyncProtocol").items()
                    if p.startswith("REST")) for r in runs]
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"3 run(s) in {db}:"
    assert lines[1].split() == ["Run", "Started", "(UTC)", "Organisation", "Source", "Devices",
                                "REST", "Outlook", "Stale", "Never", "synced"]
    assert lines[2].split()[:7] == ["1", "2026-03-01", "08:00", "Contoso", "offline", "6",
                                    str(rest[0])]
    assert lines[4].split()[:6] == ["3", "2026-03-01", "08:00", "Fabrikam", "demo", "2"]
    code, out, _ = run("history", "list", "--history", str(db), "--organisation", "fabrikam")
    assert len(out.splitlines()) == 3


def test_history_list_without_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    assert run("history", "list", "--history", str(missing)) == (
        0, f"No runs recorded yet ({missing} does not exist).\n", "")
    assert not missing.exists()


def test_history_show(db: Path) -> None:
    code, out, err = run("history", "show", "2", "--history", str(db))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == ("Run 2: Contoso (server exch01.contoso.com, offline), "
                        "started 2026-03-02 08:00 UTC")
    assert lines[1].startswith("Devices: 5  Stale (over 30 days): ")
    assert lines[-1] == ("Changes since run 1 (2026-03-01 08:00 UTC): Removed partnership 1, "
                         "Protocol switch 1")
    _code, out, _err = run("history", "show", "3", "--history", str(db))
    assert out.splitlines()[-1] == (
        "No earlier run of this organisation recorded: nothing to compare yet.")


def test_history_show_unknown_run(db: Path) -> None:
    assert run("history", "show", "9", "--history", str(db)) == (
        3, "", f"Error: there is no run 9 in history {db}; see 'psbridge history list'.\n")


def test_history_show_without_a_file_creates_none(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    assert run("history", "show", "1", "--history", str(missing)) == (
        3, "", f"Error: there is no history at {missing}; run 'psbridge mobile' first.\n")
    assert not missing.exists()


def test_history_prune(db: Path) -> None:
    assert run("history", "prune", "--keep", "1", "--history", str(db)) == (
        0, "Removed 1 run(s); kept the newest 1 per organisation.\n", "")
    with History(db) as store:
        assert [r.run_id for r in store.runs()] == [2, 3]
    code, _out, err = run("history", "prune", "--keep", "0", "--history", str(db))
    assert code == 2 and "0 is not in the range x>=1" in err


def test_diff_writes_changes_and_trend(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "diff.xlsx"
    assert run("diff", "1", "2", "-o", str(target), "--history", str(db)) == (
        0, f"Run 1 -> run 2 (Contoso): Removed partnership 1, Protocol switch 1.\nWrote {target}\n",
        "")
    book = openpyxl.load_workbook(target)
    assert book.sheetnames == ["Changes", "Trend"]
    changes = book["Changes"]
    assert changes["A2"].value == ("Contoso  ·  run 2 (2026-03-02 08:00 UTC) compared with run 1 "
                                   "(2026-03-01 08:00 UTC)")
    tables = dict(changes.tables.items())
    assert tables == {"HistoryChangeCounts": "A5:B14", "HistoryChanges": "A17:I19"}
    counts = dict(changes.iter_rows(min_row=6, max_row=14, max_col=2, values_only=True))
    assert counts == {kind: 1 if kind in (history.REMOVED, history.PROTOCOL) else 0
                      for kind in history.CHANGE_KINDS}
    rows = list(changes.iter_rows(min_row=17, max_row=19, values_only=True))
    assert rows[0] == tuple(history.CHANGE_COLUMNS)
    assert [row[0] for row in rows[1:]] == [history.REMOVED, history.PROTOCOL]
    assert rows[2][4] == "dev0" and rows[2][6:8] == ("REST (legacy)", "Outlook (native sync)")
    trend = book["Trend"]
    headers = [cell.value for cell in trend[4] if cell.value is not None]
    assert headers[:5] == ["Run", "Started", "Devices", "Stale", "Never synced"]
    assert dict(trend.tables.items()) == {
        "HistoryTrend": f"A4:{get_column_letter(len(headers))}6"}
    assert [row[0] for row in trend.iter_rows(min_row=4, max_row=6, values_only=True)] == [
        "Run", 1, 2]
    assert trend["B5"].is_date and trend["C6"].value == 5  # Devices in run 2
    titles = []
    for chart in trend._charts:
        titles.append("".join(run.t for p in chart.title.tx.rich.p for run in (p.r or [])))
    assert titles == ["Devices by sync protocol", "Devices by platform",
                      "Stale and never-synced devices"]


def test_diff_refuses_other_organisations_and_formats(db: Path, tmp_path: Path) -> None:
    assert run("diff", "1", "3", "-o", str(tmp_path / "d.xlsx"), "--history", str(db)) == (
        3, "", "Error: runs 1 (Contoso) and 3 (Fabrikam) belong to different organisations; "
        "compare runs of one organisation.\n")
    assert run("diff", "1", "2", "-o", str(tmp_path / "d.csv"), "--history", str(db)) == (
        4, "", f"Error: cannot write {tmp_path / 'd.csv'}: psbridge diff writes an .xlsx "
        "workbook.\n")


def test_damaged_history_is_an_input_error(tmp_path: Path) -> None:
    damaged = tmp_path / "h.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    assert run("history", "list", "--history", str(damaged)) == (
        3, "", f"Error: history {damaged} is damaged (file is not a database); move it away "
        "(a new one is created) or use --history PATH / --no-history.\n")


def test_history_env_var_is_the_default(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_HISTORY", str(db))
    code, out, _err = run("history", "list")
    assert code == 0 and out.startswith(f"3 run(s) in {db}:")


@click.command()
@history_options
def _probe(history_settings: history.HistorySettings) -> None:
    click.echo(f"{history_settings.path} {history_settings.keep}")


def test_history_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    chosen = tmp_path / "x.sqlite"
    assert runner.invoke(_probe, ["--history", str(chosen), "--history-keep", "3"]
                         ).stdout == f"{chosen} 3\n"
    assert runner.invoke(_probe, ["--no-history"]).stdout == "None None\n"
    monkeypatch.delenv("PSBRIDGE_HISTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert runner.invoke(_probe, []).stdout == (
        f"{history.default_history_path()} None\n")


def test_history_for_run_warns_and_goes_on(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    frames = pytest.importorskip("bridge.frames")
    damaged = tmp_path / "h.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    report = frames.build_report([], [], run_started=START)
    settings = history.HistorySettings(path=damaged)
    assert history_for_run(settings, report, organisation="Contoso") is None
    assert capsys.readouterr().err == (
        f"Warning: history not recorded: history {damaged} is damaged (file is not a "
        "database); move it away (a new one is created) or use --history PATH / --no-history. "
        "The report is written without the Changes and Trend sheets.\n")
    fresh = history.HistorySettings(path=tmp_path / "fresh.sqlite")
    view = history_for_run(fresh, report, organisation="Contoso", source="offline")
    assert view is not None and view.previous is None and view.current.devices == 0


def _change_rows(path: Path) -> set[tuple[str, str, str, str]]:
    sheet = openpyxl.load_workbook(path)["Changes"]
    ref = dict(sheet.tables.items()).get("HistoryChanges")
    if ref is None:
        return set()
    rows = list(sheet[ref])
    header = [cell.value for cell in rows[0]]
    at = {name: header.index(name) for name in ("Change", "Mailbox", "DeviceType", "DeviceId")}
    return {(row[at["Change"]].value, row[at["Mailbox"]].value, row[at["DeviceType"]].value,
             row[at["DeviceId"]].value) for row in rows[1:]}


def test_mobile_runs_record_history(tmp_path: Path) -> None:
    """Two offline runs a month apart: the second workbook's Changes sheet holds exactly the
    changes of the sandbox's ground truth; a damaged history only warns."""
    org = Organisation(mailboxes=40, seed=11)
    store = tmp_path / "history.sqlite"
    export_organisation(org, tmp_path / "june")
    before = _truth(org, classic=True)
    code, _out, err = run("mobile", "--from-clixml", str(tmp_path / "june"), "-o",
                          str(tmp_path / "june.xlsx"), "--history", str(store))
    assert (code, err) == (0, "")
    first = openpyxl.load_workbook(tmp_path / "june.xlsx")
    assert first.sheetnames[-2:] == ["Changes", "Trend"]
    assert first["Changes"]["A4"].value.startswith("Nothing to compare yet")

    org.advance(60, seed=1)
    export_organisation(org, tmp_path / "august")
    code, _out, err = run("mobile", "--from-clixml", str(tmp_path / "august"), "-o",
                          str(tmp_path / "august.xlsx"), "--history", str(store))
    assert (code, err) == (0, "")
    expected = _expected_changes(before, _truth(org, classic=True))
    assert expected and _change_rows(tmp_path / "august.xlsx") == expected
    trend = openpyxl.load_workbook(tmp_path / "august.xlsx")["Trend"]
    assert [row[0] for row in trend.iter_rows(min_row=4, max_row=6, values_only=True)] == [
        "Run", 1, 2]

    code, _out, err = run("mobile", "--from-clixml", str(tmp_path / "august"), "-o",
                          str(tmp_path / "off.xlsx"), "--no-history")
    assert (code, err) == (0, "")
    assert "Changes" not in openpyxl.load_workbook(tmp_path / "off.xlsx").sheetnames

    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    code, _out, err = run("mobile", "--from-clixml", str(tmp_path / "august"), "-o",
                          str(tmp_path / "warned.xlsx"), "--history", str(damaged))
    assert (code, err) == (0, (
        f"Warning: history not recorded: history {damaged} is damaged (file is not a "
        "database); move it away (a new one is created) or use --history PATH / --no-history. "
        "The report is written without the Changes and Trend sheets.\n"))
    assert openpyxl.load_workbook(tmp_path / "warned.xlsx").sheetnames[0] == "Summary"
    with History(store) as history_store:
        assert len(history_store.runs()) == 2
    code, _out, err = run("mobile", "--from-clixml", str(tmp_path / "august"), "-o",
                          str(tmp_path / "kept.xlsx"), "--history", str(store),
                          "--history-keep", "1")
    assert (code, err) == (0, "")
    with History(store) as history_store:
        assert [r.run_id for r in history_store.runs()] == [3]


def test_history_rows_render_as_the_report_rows() -> None:
    """The Changes list is rendered column-wise; the XML must be exactly what the report's
    row renderer makes (escapes, kept spaces, Excel's _x escapes, illegal characters)."""
    frame = pd.DataFrame({
        "Change": ["New partnership", "OS upgrade", None, "A & B <c>"],
        "User": [" lead space", "trail ", "x_x0041_y", "bad\x01char"],
        "Count": pd.array([1, None, 3, 4], dtype="Int64"),
        "Share": [1.5, None, 2.25, 1e20],
        "Flag": pd.array([True, False, None, True], dtype="boolean"),
        "When": pd.to_datetime(["2026-01-01 08:00", None, "2025-06-16 08:20:30.5",
                                "2020-02-29"], utc=True, format="mixed"),
    })
    ours = _HistoryRows(frame, 2, 7)
    assert "".join(ours.chunks()) == "".join(_SheetRows(frame, ours.kinds, -1, 7, 7).chunks())
    below = "".join(_HistoryRows(frame, 16, 7).chunks())
    assert below.startswith('<row r="16"><c r="A16" t="inlineStr">') and 'r="F19"' in below
