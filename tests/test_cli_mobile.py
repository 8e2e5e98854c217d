"""psbridge mobile: offline (--from-clixml) and live (the sandbox over WSMan/NTLM)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from bridge.cli import cli
from bridge.history import History
from bridge.sandbox import Sandbox
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation
from tests.ground_truth import classic_users, figure_lines, outlook_devices

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
EXPORT = SAMPLES / "exchange-export"
AS_OF = "2025-06-16T08:20:00"  # the sample export's creation time (its manifest)
CORPUS_MAILBOX_SERVER = (
    Path(__file__).resolve().parents[2] / "shared" / "corpus" / "clixml"
    / "microsoft__CSS-Exchange__Diagnostics__HealthChecker__Tests__DataCollection__E19__"
      "Exchange__GetMailboxServer.xml")

# what samples/exchange-export was made from
ORG = Organisation(mailboxes=25, seed=1, online_client_types=True)
USERS = classic_users(ORG)
DEVICES = len(outlook_devices(ORG))
FIGURES = "".join(f"{line}\n" for line in figure_lines(ORG))


def _mobile(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["mobile", *args])


def _devices(path: Path) -> list[tuple[object, ...]]:
    return list(openpyxl.load_workbook(path)["Devices"].iter_rows(values_only=True))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Sandbox]:
    """The organisation the sample export was made from (25 mailboxes, seed 1)."""
    with Sandbox(mailboxes=25, seed=1, online_client_types=True) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


def _live_args(sandbox: Sandbox) -> list[str]:
    return ["--server", sandbox.host, "--port", str(sandbox.port), "--http", "--auth", "ntlm",
            "--user", sandbox.username, "-q"]


def test_offline_report_from_the_sample_export(tmp_path: Path) -> None:
    output = tmp_path / "report.xlsx"
    result = _mobile("--from-clixml", str(EXPORT), "-o", str(output), "--no-history")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Report written to {output.resolve()}\n{FIGURES}"
    book = openpyxl.load_workbook(output)
    assert book.sheetnames == ["Summary", "Devices", "Users without devices", "Run"]
    assert book["Summary"]["A2"].value.startswith("Contoso  ·  server EXCH01  ·  run ")
    run = {row[0]: row[1] for row in book["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Strategy"] == "offline"
    assert run["Source"] == (
        "Export-Clixml files (psbridge sandbox export with Exchange Online's ClientTypes)")
    assert str(run["Days since last sync counted from (UTC)"]) == "2025-06-16 08:20:00"


def test_summary_says_from_when_days_are_counted(tmp_path: Path) -> None:
    # from the export's time, or from --as-of (which is not "when the data was taken")
    output = tmp_path / "report.xlsx"
    for as_of in ([], ["--as-of", "2027-01-01"]):
        result = _mobile("--from-clixml", str(EXPORT), "-o", str(output), "--no-history", *as_of)
        assert result.exit_code == 0, result.output
        when = "2027-01-01 00:00" if as_of else "2025-06-16 08:20"
        assert openpyxl.load_workbook(output)["Summary"]["A3"].value == (
            f"Days since the last sync are counted from {when} UTC, not from when this report "
            "was made.")


def test_files_are_classified_by_type_names_not_file_names(tmp_path: Path) -> None:
    shutil.copy(EXPORT / "Mailboxes.xml", tmp_path / "b.xml")
    shutil.copy(EXPORT / "MobileDeviceStatistics.xml", tmp_path / "a.xml")
    output = tmp_path / "report.xlsx"
    result = _mobile("--from-clixml", str(tmp_path / "a.xml"), "--from-clixml",
                     str(tmp_path / "b.xml"), "-o", str(output), "--no-history",
                     "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(FIGURES)


def test_live_and_offline_give_identical_devices_sheets(endpoint: Sandbox,
                                                        tmp_path: Path) -> None:
    live, offline = tmp_path / "live.xlsx", tmp_path / "offline.xlsx"
    result = _mobile(*_live_args(endpoint), "-o", str(live), "--as-of", AS_OF, "--no-history",
                     env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Report written to {live.resolve()}\n{FIGURES}"
    assert endpoint.password not in result.output
    assert _mobile("--from-clixml", str(EXPORT), "-o", str(offline), "--no-history"
                   ).exit_code == 0
    assert _devices(live) == _devices(offline)
    assert len(_devices(live)) == DEVICES + 1
    run = {row[0]: row[1] for row in
           openpyxl.load_workbook(live)["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Strategy"] == "bulk" and run["Server"] == "127.0.0.1"
    assert run["Server-side device filter"] == "DeviceModel -eq 'Outlook for iOS and Android'"
    assert endpoint.password not in str(run)


def test_live_and_offline_runs_share_one_history(endpoint: Sandbox, tmp_path: Path) -> None:
    """Both name the organisation by Get-OrganizationConfig's Name (the export's manifest
    records it): one history, and the offline run compares with the live one."""
    store = tmp_path / "history.sqlite"
    live, offline = tmp_path / "live.xlsx", tmp_path / "offline.xlsx"
    result = _mobile(*_live_args(endpoint), "-o", str(live), "--as-of", AS_OF,
                     "--history", str(store), env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    run = {row[0]: row[1] for row in
           openpyxl.load_workbook(live)["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Organisation"] == endpoint.organisation.organization == "Contoso"
    export_organisation(endpoint.organisation, tmp_path / "export")
    result = _mobile("--from-clixml", str(tmp_path / "export"), "-o", str(offline),
                     "--history", str(store))
    assert result.exit_code == 0, result.output
    changes = openpyxl.load_workbook(offline)["Changes"]
    assert changes["A2"].value.startswith("Contoso  ·  run 2 (")
    assert "compared with run 1 (" in changes["A2"].value
    notes = [cell for row in changes.iter_rows(values_only=True) for cell in row
             if isinstance(cell, str) and cell.startswith("No changes:")]
    assert len(notes) == 1
    with History(store) as history:
        assert [(r.organisation, r.source) for r in history.runs()] == [
            ("Contoso", "live"), ("Contoso", "clixml")]


def test_live_per_mailbox_strategy_gives_the_same_devices(endpoint: Sandbox,
                                                          tmp_path: Path) -> None:
    output = tmp_path / "per-mailbox.xlsx"
    result = _mobile(*_live_args(endpoint), "--strategy", "per-mailbox", "--all-devices",
                     "-o", str(output), "--as-of", AS_OF, "--no-history",
                     env={"PSBRIDGE_PASSWORD": endpoint.password})
    assert result.exit_code == 0, result.output
    offline = tmp_path / "offline.xlsx"
    _mobile("--from-clixml", str(EXPORT), "--all-devices", "-o", str(offline), "--no-history")
    assert _devices(output) == _devices(offline)


def test_wrong_password_is_exit_6(endpoint: Sandbox, tmp_path: Path) -> None:
    result = _mobile(*_live_args(endpoint), "-o", str(tmp_path / "r.xlsx"), "--no-history",
                     env={"PSBRIDGE_PASSWORD": "not-the-password"})
    assert result.exit_code == 6
    assert result.stderr == (
        f"Error: the server refused the credentials of {endpoint.username} (auth: ntlm) at "
        f"http://127.0.0.1:{endpoint.port}/PowerShell. Check the user name (UPN or "
        "DOMAIN\\user) and password.\n")
    assert not (tmp_path / "r.xlsx").exists()


@pytest.mark.parametrize(("output_format", "reader"), [
    ("csv", lambda p: pd.read_csv(p, encoding="utf-8-sig")),
    ("parquet", pd.read_parquet),
    ("json", lambda p: pd.DataFrame(json.loads(Path(p).read_text(encoding="utf-8")))),
])
def test_devices_table_for_power_bi(tmp_path: Path, output_format: str, reader: Any) -> None:
    output = tmp_path / f"devices.{output_format}"
    result = _mobile("--from-clixml", str(EXPORT), "--format", output_format, "-o",
                     str(output), "--no-history")
    assert result.exit_code == 0, result.output
    frame = reader(output)
    assert list(frame.columns[:5]) == ["User", "Device", "OS", "SyncType", "LastSync"]
    assert len(frame) == DEVICES
    assert "DeviceImei" not in frame.columns


def test_format_decides_the_default_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.chdir(tmp_path)
    result = _mobile("--from-clixml", str(EXPORT), "--format", "csv", "--no-history")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mobile-devices.csv").is_file()


def test_filters_and_identifiers(tmp_path: Path) -> None:
    output = tmp_path / "all.csv"
    result = _mobile("--from-clixml", str(EXPORT), "--all-devices", "--recipient-type",
                     "UserMailbox", "--recipient-type", "SharedMailbox", "--stale-days", "31",
                     "--include-identifiers", "-o", str(output), "--no-history")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(output, encoding="utf-8-sig")
    assert set(frame["RecipientTypeDetails"]) <= {"UserMailbox", "SharedMailbox"}
    assert (frame["DaysSinceLastSync"].isna() | (frame["DaysSinceLastSync"] >= 31)).all()
    assert frame["LastSync"].isna().sum() == frame["DaysSinceLastSync"].isna().sum() > 0
    assert {"DeviceImei", "DevicePhoneNumber"} <= set(frame.columns)
    assert (frame["DeviceModel"] != "Outlook for iOS and Android").any()


def test_stale_buckets_option(tmp_path: Path) -> None:
    output = tmp_path / "r.csv"
    result = _mobile("--from-clixml", str(EXPORT), "--stale-buckets", "7,14", "-o",
                     str(output), "--no-history")
    assert result.exit_code == 0, result.output
    assert "  Stale (over 7 days)" in result.stdout
    buckets = set(pd.read_csv(output, encoding="utf-8-sig")["StaleBucket"])
    assert buckets <= {"0-7 days", "8-14 days", "Over 14 days", "Never"}


def test_open_launches_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(click, "launch", lambda target, **_kw: opened.append(target) or 0)
    output = tmp_path / "r.xlsx"
    result = _mobile("--from-clixml", str(EXPORT), "-o", str(output), "--open", "--no-history")
    assert result.exit_code == 0, result.output
    assert opened == [str(output)]


def test_export_errors_make_a_partial_run(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    shutil.copytree(EXPORT, folder)
    manifest = json.loads((folder / "psbridge-manifest.json").read_text(encoding="utf-8"))
    manifest["errors"] = [{"Mailbox": "contoso.com/Staff/Gone", "Category": "NotSpecified",
                           "Message": "Couldn't find 'Gone' as a recipient.",
                           "When": "2025-06-16T08:19:00Z"}]
    (folder / "psbridge-manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    output = tmp_path / "r.xlsx"
    result = _mobile("--from-clixml", str(folder), "-o", str(output), "--no-history")
    assert result.exit_code == 9
    assert result.stderr == ("Error: 1 mailbox(es) or command(s) failed; the report lists "
                             "them (Errors sheet of the workbook).\n")
    errors = list(openpyxl.load_workbook(output)["Errors"].iter_rows(values_only=True))
    assert errors[1][:4] == ("contoso.com/Staff/Gone", None, "NotSpecified",
                             "Couldn't find 'Gone' as a recipient.")


def test_history_adds_changes_and_trend(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    for name in ("first.xlsx", "second.xlsx"):
        result = _mobile("--from-clixml", str(EXPORT), "-o", str(tmp_path / name),
                         "--history", str(history))
        assert result.exit_code == 0, result.output
    names = openpyxl.load_workbook(tmp_path / "second.xlsx").sheetnames
    assert names == ["Summary", "Devices", "Users without devices", "Run", "Changes", "Trend"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--from-clixml", str(EXPORT / "Mailboxes.xml")], 3,
     "Error: no Get-MobileDeviceStatistics export among the files given: export both "
     "Get-Mailbox and Get-MobileDeviceStatistics (ps_scripts/Export-PsbridgeData.ps1).\n"),
    (["--from-clixml", str(EXPORT / "MobileDeviceStatistics.xml")], 3,
     "Error: no Get-Mailbox export among the files given: export both Get-Mailbox and "
     "Get-MobileDeviceStatistics (ps_scripts/Export-PsbridgeData.ps1).\n"),
    (["--from-clixml", "/no/such/export"], 3, "Error: /no/such/export does not exist.\n"),
    (["--from-clixml", str(EXPORT), "-o", "report.txt"], 4,
     "Error: cannot write report.txt: unknown output type '.txt'; use .xlsx, .csv, .parquet "
     "or .json.\n"),
])
def test_input_and_output_errors(args: list[str], code: int, message: str) -> None:
    result = _mobile(*args, "--no-history")
    assert result.exit_code == code
    assert result.stderr == message


def test_a_file_of_another_cmdlet_is_refused() -> None:
    if not CORPUS_MAILBOX_SERVER.is_file():
        pytest.skip("shared corpus not found")
    result = _mobile("--from-clixml", str(CORPUS_MAILBOX_SERVER), "--no-history")
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: {CORPUS_MAILBOX_SERVER} is neither a Get-Mailbox nor a "
        "Get-MobileDeviceStatistics export (no Mailbox or MobileDeviceConfiguration objects "
        "in it).\n")


def test_an_export_without_any_device_gives_a_report(tmp_path: Path) -> None:
    # Export-Clixml of no objects at all (nobody has a mobile device) writes an empty <Objs>
    shutil.copy(EXPORT / "Mailboxes.xml", tmp_path)
    (tmp_path / "MobileDeviceStatistics.xml").write_bytes(
        '\ufeff<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04" />'
        .encode("utf-16-le"))
    output = tmp_path / "report.xlsx"
    result = _mobile("--from-clixml", str(tmp_path), "-o", str(output), "--no-history")
    assert result.exit_code == 0, result.output
    assert f"  Users without devices   {len(USERS):>8,}\n" in result.stdout
    assert "  Devices                        0\n" in result.stdout
    assert len(_devices(output)) == 1  # the header


def test_a_malformed_file_is_reported_as_such(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text('<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
                      '2004/04">\n  <Obj RefId="0">\n    <Props>\n', encoding="utf-8")
    result = _mobile("--from-clixml", str(broken), "--from-clixml", str(EXPORT), "--no-history")
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: {broken}: line 4, column 1: malformed XML: Premature end of data in tag Props "
        "line 3\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--from-clixml", str(EXPORT), "--server", "mail"],
     "Error: --from-clixml reads files: leave out --server/--profile."),
    (["--from-clixml", str(EXPORT), "--strategy", "per-mailbox"],
     "Error: --from-clixml reads files: --strategy, --resume and --run-dir are for collecting "
     "from a server; leave them out."),
    (["--from-clixml", str(EXPORT), "--resume"],
     "Error: --from-clixml reads files: --strategy, --resume and --run-dir are for collecting "
     "from a server; leave them out."),
    (["--from-clixml", str(EXPORT), "--format", "csv", "-o", "a.xlsx"],
     "Error: Invalid value for '-o' / '--output': a.xlsx does not end in .csv"),
    (["--from-clixml", str(EXPORT), "--stale-buckets", "90,30"],
     "Error: Invalid value for '--stale-buckets': '90,30': the days must increase and be "
     "from 1 to 36,500"),
    (["--from-clixml", str(EXPORT), "--stale-buckets", "a,b"],
     "Error: Invalid value for '--stale-buckets': 'a,b' is not a comma list of days like "
     "30,90,365"),
    (["--from-clixml", str(EXPORT), "--recipient-type", "User Mailbox"],
     "Error: Invalid value for '--recipient-type': 'User Mailbox' is not a recipient type "
     "like UserMailbox"),
    (["--from-clixml", str(EXPORT), "--stale-days", "-1"],
     "Error: Invalid value for '--stale-days': -1 is not in the range 0<=x<=36500."),
])
def test_usage_errors_are_exit_2(args: list[str], message: str) -> None:
    result = _mobile(*args, "--no-history")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == message


def test_neither_server_nor_files_is_a_configuration_error(tmp_path: Path) -> None:
    result = _mobile("-o", str(tmp_path / "r.xlsx"), "--no-history")
    assert result.exit_code == 8
    assert result.stderr == "Error: no server given: use --server NAME or --profile NAME\n"
    assert list(tmp_path.iterdir()) == []
