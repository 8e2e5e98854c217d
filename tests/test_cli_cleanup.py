"""psbridge mobile --cleanup-script: live (sandbox over WSMan) and offline, exact output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner, Result

from bridge.cli import cli
from bridge.sandbox import Sandbox
from bridge.sandbox.export import export_organisation
from tests.eas_org import SPECS, known_organisation
from tests.test_cleanup import removals

ORG, ENTRIES = known_organisation()
AS_OF = ORG.reference_time.strftime("%Y-%m-%dT%H:%M:%S")
REMOVED = {entry.identity for entry, spec in zip(ENTRIES, SPECS, strict=True) if spec.removed}


def _mobile(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["mobile", *args, "--no-history", "--as-of", AS_OF])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Sandbox]:
    with Sandbox(organisation=ORG) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


def _marked(workbook: Path) -> dict[str, str]:
    rows = list(openpyxl.load_workbook(workbook)["Devices"].iter_rows(values_only=True))
    headers = list(rows[0])
    marks = {}
    for row in rows[1:]:
        values = dict(zip(headers, row, strict=True))
        if values["CleanupScript"]:
            marks[str(values["DeviceId"])] = str(values["CleanupScript"])
    return marks


def test_live_report_writes_the_script_and_marks_its_rows(endpoint: Sandbox,
                                                         tmp_path: Path) -> None:
    output, script = tmp_path / "report.xlsx", tmp_path / "remove-stale.ps1"
    result = _mobile("--server", endpoint.host, "--port", str(endpoint.port), "--http", "--auth",
                     "ntlm", "--user", endpoint.username, "-q", "--all-devices", "-o", str(output),
                     "--cleanup-script", str(script),
                     env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Report written to {output.resolve()}"
    assert lines[-2:] == [
        "  EAS below 16.1                 4",
        f"Cleanup script written to {script.resolve()}: 4 partnership(s); review it, then run "
        "it with -Execute to remove them.",
    ]
    text = script.read_bytes().decode("utf-8-sig")
    assert {identity for identity, _rest in removals(text)} == REMOVED
    assert "# Organisation:  Contoso\r\n" in text
    assert f"# Report:        {output.resolve()} (data as of " in text
    assert "# Scope:         all devices; UserMailbox\r\n" in text
    by_id = {entry.device_id: spec for entry, spec in zip(ENTRIES, SPECS, strict=True)}
    marks = _marked(output)
    assert {by_id[device].removed for device in marks} == {True} and len(marks) == 4
    summary = [row[0] for row in openpyxl.load_workbook(output)["Summary"].iter_rows(
        values_only=True)]
    assert "EAS below 16.1: would be blocked in Exchange Online" in summary  # on-premises


def test_offline_cleanup_days(tmp_path: Path) -> None:
    export_organisation(ORG, tmp_path / "export")
    output, script = tmp_path / "report.xlsx", tmp_path / "old.ps1"
    result = _mobile("--from-clixml", str(tmp_path / "export"), "--all-devices", "-o",
                     str(output), "--cleanup-script", str(script), "--cleanup-days", "29")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"Cleanup script written to {script.resolve()}: 5 partnership(s); review it, then "
        "run it with -Execute to remove them.")
    assert len(removals(script.read_bytes().decode("utf-8-sig"))) == 5
    assert "#   .\\old.ps1 -Execute   removes the partnerships listed below" in (
        script.read_text(encoding="utf-8-sig"))


def test_cleanup_days_alone_is_a_usage_error(tmp_path: Path) -> None:
    result = _mobile("--from-clixml", str(tmp_path), "--cleanup-days", "3")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == ("Error: --cleanup-days goes with --cleanup-script "
                                              "FILE.")


def test_an_unwritable_script_stops_before_collecting(tmp_path: Path) -> None:
    export_organisation(ORG, tmp_path / "export")
    output, script = tmp_path / "report.xlsx", tmp_path / "missing" / "remove-stale.ps1"
    result = _mobile("--from-clixml", str(tmp_path / "export"), "-o", str(output),
                     "--cleanup-script", str(script))
    assert result.exit_code == 4
    assert result.stderr == (f"Error: cannot write {script}: folder {script.parent} does not "
                             "exist.\n")
    assert result.stdout == "" and not output.exists()


def test_the_report_job_writes_the_script_without_click(tmp_path: Path) -> None:
    from bridge import frames, jobs

    export_organisation(ORG, tmp_path / "export")
    script = tmp_path / "remove-stale.ps1"
    run = jobs.mobile_report(jobs.ExportFiles((tmp_path / "export",)),
                             frames.ReportOptions(all_devices=True), [tmp_path / "r.csv"],
                             cleanup_script=script)
    assert run.cleanup_script == (script, 4)
    assert run.report.options.cleanup_days == 30  # the first stale threshold
    assert run.report.eas_figures is not None and run.report.eas_figures.below_minimum == 4
    assert run.report.eas_figures.wording == "would be blocked in Exchange Online"
    assert {identity for identity, _rest in removals(
        script.read_bytes().decode("utf-8-sig"))} == REMOVED


def test_cleanup_days_beyond_a_century_is_a_usage_error(tmp_path: Path) -> None:
    result = _mobile("--from-clixml", str(tmp_path), "--cleanup-script", "x.ps1",
                     "--cleanup-days", "36501")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--cleanup-days': 36501 is not in the range 0<=x<=36500.")
