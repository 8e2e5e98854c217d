"""Bad input a careful admin gives psbridge: one clear line, or plain data (issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from bridge.cli import cli

EXPORT = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"


def _figures(output: str) -> list[str]:
    return [line for line in output.splitlines() if ":" in line and "Wrote" not in line]


def test_the_same_export_given_twice_counts_every_mailbox_once(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(EXPORT, copy)
    shutil.copy(EXPORT / "Mailboxes.xml", copy / "Mailboxes (2).xml")  # a copy beside it
    once = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "--no-history",
                                    "-o", str(tmp_path / "once.xlsx")])
    twice = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "--from-clixml",
                                     str(copy), "--no-history", "-o", str(tmp_path / "twice.xlsx")])
    assert once.exit_code == 0 and twice.exit_code == 0, twice.output
    assert _figures(twice.output) == _figures(once.output)
    book = openpyxl.load_workbook(tmp_path / "twice.xlsx")
    summary_text = [c.value for row in book["Summary"].iter_rows() for c in row if c.value]
    assert any("mailbox row(s) appeared more than once" in str(v) for v in summary_text)
    def rows(name: str) -> list[tuple[object, ...]]:
        return list(openpyxl.load_workbook(tmp_path / name)["Devices"].iter_rows(values_only=True))
    assert rows("twice.xlsx") == rows("once.xlsx")


def test_day_options_out_of_range_are_usage_errors(tmp_path: Path) -> None:
    base = ["mobile", "--from-clixml", str(EXPORT), "-o", str(tmp_path / "r.xlsx")]
    cases = {
        ("--stale-buckets", "99999999999999999999"):
            "Error: Invalid value for '--stale-buckets': '99999999999999999999': the days must "
            "increase and be from 1 to 36,500",
        ("--stale-days", "99999999999999999999"):
            "Error: Invalid value for '--stale-days': 99999999999999999999 is not in the range "
            "0<=x<=36500.",
        ("--as-of", "0001-01-01"):
            "Error: Invalid value for '--as-of': 0001-01-01 is not between 2000-01-01 and "
            "2100-12-31",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 2
        assert result.output.splitlines()[-1] == message
    assert not (tmp_path / "r.xlsx").exists()


def test_a_value_sqlite_cannot_store_is_a_history_error_and_the_report_is_written(
        tmp_path: Path) -> None:
    from bridge.errors import HistoryError
    from bridge.frames import build_report, load_exports
    from bridge.history import History

    export = load_exports([EXPORT])
    assert export.created is not None
    report = build_report(export.mailboxes, export.devices, run_started=export.created)
    with History(tmp_path / "h.sqlite") as store, pytest.raises(HistoryError) as caught:
        store.record(report.devices, organisation="x", started=export.created,
                     mailboxes=2**70)
    assert str(caught.value).startswith(f"cannot use history {tmp_path / 'h.sqlite'}: ")


@pytest.mark.parametrize("command", [["history", "list"], ["history", "show", "1"],
                                     ["history", "prune", "--keep", "1"], ["diff", "1", "2"]])
def test_history_commands_never_turn_an_empty_file_into_a_history(
        tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"")
    result = CliRunner().invoke(cli, [*command, "--history", str(path)])
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        f"Error: {path} is an empty file, not a psbridge history; give the file psbridge "
        "records to (see --history in --help).")
    assert path.read_bytes() == b""


def test_quiet_runs_print_retries_as_warning_lines_not_bare_log_lines(tmp_path: Path) -> None:
    from bridge.sandbox import Sandbox

    with Sandbox(mailboxes=5, seed=1, http_error_every=4) as sandbox:
        result = CliRunner(env={"PSBRIDGE_PASSWORD": sandbox.password}).invoke(cli, [
            "run", "Get-Mailbox", "-o", str(tmp_path / "m.csv"), "--server", sandbox.host,
            "--port", str(sandbox.port), "--http", "--auth", "ntlm", "--user",
            sandbox.username, "-q", "--retries", "1"])
    assert result.exit_code == 5, result.output  # every 4th request fails: it gives up
    retries = [line for line in result.output.splitlines() if "retrying in" in line]
    assert retries, result.output
    assert all(line.startswith("Warning: ") for line in retries), retries


def test_a_bad_tenant_for_via_pwsh_names_the_option_psbridge_has(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "mobile", "--via", "pwsh", "--tenant", "not a domain", "--app-id",
        "00000000-0000-0000-0000-000000000000", "--certificate-file", "c.pfx",
        "-o", str(tmp_path / "r.xlsx")])
    assert result.exit_code == 8
    assert result.output.splitlines()[-1] == (
        "Error: --tenant 'not a domain' is not a domain name: use the tenant's initial "
        "domain, e.g. contoso.onmicrosoft.com")
    assert "--tenant" in CliRunner().invoke(cli, ["mobile", "--help"]).output


def test_a_read_only_report_is_not_replaced(tmp_path: Path) -> None:
    import os
    import stat

    output = tmp_path / "report.xlsx"
    output.write_bytes(b"kept")
    os.chmod(output, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for extra in ([], ["--format", "xlsx"]):
        result = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "-o",
                                          str(output), "--no-history", *extra])
        assert result.exit_code == 4
        assert result.output.splitlines()[-1] == (
            f"Error: cannot write {output}: the file is read-only. Make it writable to "
            "replace it, or write another file with -o.")
    assert output.read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.xlsx"]


def test_a_live_run_refuses_a_read_only_report_before_collecting(sandbox: object,
                                                                  tmp_path: Path) -> None:
    import os
    import stat

    from bridge.sandbox import Sandbox

    assert isinstance(sandbox, Sandbox)
    output = tmp_path / "report.xlsx"
    output.write_bytes(b"kept")
    os.chmod(output, stat.S_IRUSR)
    result = CliRunner(env={"PSBRIDGE_PASSWORD": sandbox.password}).invoke(cli, [
        "mobile", "--server", sandbox.host, "--port", str(sandbox.port), "--http", "--auth",
        "ntlm", "--user", sandbox.username, "-q", "--no-history", "-o", str(output)])
    assert result.exit_code == 4
    assert result.output.splitlines()[-1].endswith("the file is read-only. Make it writable "
                                                   "to replace it, or write another file with -o.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.xlsx"]  # no run folder
