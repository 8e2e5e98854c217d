"""bridge.jobs without click: the report job gives the workbook the command line gives."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
from click.testing import CliRunner

from bridge import jobs
from bridge.cli import cli
from bridge.config import build_settings
from bridge.errors import ExitCode
from bridge.frames import ReportOptions
from bridge.history import HistorySettings
from bridge.sandbox import Sandbox

EXPORT = Path(__file__).resolve().parents[1] / "samples" / "exchange-export"
AS_OF = datetime(2025, 6, 16, 8, 20, tzinfo=UTC)
#: Run sheet rows that say when and how a run was started, not what it found
_RUN_ONLY = {"Command line", "Started (UTC)", "Finished (UTC)", "Duration"}
_RUN_TIME = re.compile(r"run \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( UTC)?")

Sheets = dict[str, list[tuple[object, ...]]]


def _sheets(path: Path) -> Sheets:
    """Every sheet's cell values, without the run's own timestamps and command line."""
    book = openpyxl.load_workbook(path)
    sheets: Sheets = {}
    for sheet in book.worksheets:
        rows = [tuple(_RUN_TIME.sub("run <time>", value) if isinstance(value, str) else value
                      for value in row) for row in sheet.iter_rows(values_only=True)]
        if sheet.title == "Run":
            rows = [row for row in rows if row[0] not in _RUN_ONLY]
        sheets[sheet.title] = rows
    return sheets


def _cli(*args: str, password: str | None = None) -> None:
    env = {"PSBRIDGE_PASSWORD": password} if password else None
    result = CliRunner(env=env).invoke(cli, ["mobile", *args, "--no-history", "-q"])
    assert result.exit_code == 0, result.output


def test_offline_job_writes_the_workbook_the_cli_writes(tmp_path: Path) -> None:
    by_job, by_cli = tmp_path / "job.xlsx", tmp_path / "cli.xlsx"
    run = jobs.mobile_report(jobs.ExportFiles((EXPORT,)), outputs=[by_job])
    _cli("--from-clixml", str(EXPORT), "-o", str(by_cli))
    assert run.exit_code is ExitCode.OK and run.notes == ()
    assert run.outputs == (jobs.ReportOutput(by_job, "xlsx"),)
    assert (run.run.organisation, run.run.strategy, run.report.run_started) == (
        "Contoso", "offline", AS_OF)  # the export's date, from its manifest
    job_sheets = _sheets(by_job)
    assert job_sheets == _sheets(by_cli)
    assert run.figures.devices == len(job_sheets["Devices"]) - 1


def test_live_job_writes_the_workbook_the_cli_writes(tmp_path: Path, sandbox: Sandbox) -> None:
    by_job, by_cli = tmp_path / "job.xlsx", tmp_path / "cli.csv"
    settings = build_settings({"server": sandbox.host, "port": sandbox.port, "https": False,
                               "auth": "ntlm", "user": sandbox.username})
    server = jobs.ExchangeServer(settings, password=sandbox.password)
    options = ReportOptions(all_devices=True)
    run = jobs.mobile_report(server, options, [by_job, by_cli.with_suffix(".json")],
                             as_of=AS_OF)
    by_cli = tmp_path / "cli.xlsx"
    _cli("--all-devices", "--as-of", "2025-06-16T08:20:00", "-o", str(by_cli),
         *("--server", sandbox.host, "--port", str(sandbox.port), "--http", "--auth", "ntlm",
           "--user", sandbox.username), password=sandbox.password)
    assert sandbox.password not in repr(server)
    assert run.run.strategy == "bulk" and run.run.source == "live (WSMan/PSRP)"
    assert _sheets(by_job) == _sheets(by_cli)
    # every output is written; the run folder goes once the report is written
    assert (tmp_path / "cli.json").stat().st_size > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cli.json", "cli.xlsx",
                                                                "job.xlsx"]


def test_the_job_records_history_and_warns_when_it_cannot(tmp_path: Path) -> None:
    source = jobs.ExportFiles((EXPORT,))
    settings = HistorySettings(path=tmp_path / "history.sqlite")
    first = jobs.mobile_report(source, outputs=[tmp_path / "a.xlsx"], history_settings=settings)
    second = jobs.mobile_report(source, outputs=[tmp_path / "b.xlsx"], history_settings=settings)
    assert first.history is not None and first.history.previous is None
    assert second.history is not None and second.history.previous is not None
    assert "Changes" in openpyxl.load_workbook(tmp_path / "b.xlsx").sheetnames
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    heard: list[jobs.Note] = []
    run = jobs.mobile_report(source, outputs=[tmp_path / "c.xlsx"], notify=heard.append,
                             history_settings=HistorySettings(path=damaged))
    assert run.history is None and run.notes == tuple(heard)
    assert [note.kind for note in heard] == ["warning"]
    assert heard[0].text.startswith(f"history not recorded: history {damaged} is damaged")


class _Renamed:
    """A source of a new kind: the job runs it without a change of its own."""

    def __init__(self, inner: jobs.ExportFiles) -> None:
        self.inner = inner

    @contextlib.contextmanager
    def collect(self, request: jobs.CollectRequest) -> Iterator[jobs.Collected]:
        with self.inner.collect(request) as collected:
            collected.source, collected.organisation = "a new source", "Fabrikam"
            collected.warnings.append("the new source is new")
            yield collected


def test_a_new_kind_of_source_needs_no_change_to_the_job(tmp_path: Path) -> None:
    run = jobs.mobile_report(_Renamed(jobs.ExportFiles((EXPORT,))),
                             outputs=[tmp_path / "devices.csv"])
    assert (run.run.source, run.run.organisation) == ("a new source", "Fabrikam")
    assert run.notes == (jobs.Note("warning", "the new source is new"),)
    assert (tmp_path / "devices.csv").read_text("utf-8-sig").count("\n") == run.figures.devices + 1
