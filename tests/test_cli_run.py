"""`psbridge run` and the shared connection options, against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook

from bridge.cli import cli
from bridge.sandbox.cmdlets import ExchangeCmdlets
from bridge.sandbox.contract import CommandCall, PipelineOutcome, SerializedObject, WarningMessage
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.server import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=15, seed=9) as sb:
        yield sb
        assert sb.internal_errors == []


def connect_args(sb: Sandbox) -> list[str]:
    return ["--server", sb.host, "--port", str(sb.port), "--auth", "ntlm", "--user", sb.username]


def invoke(sb: Sandbox, args: list[str], password: str | None = None) -> Result:
    env = {"PSBRIDGE_PASSWORD": sb.password if password is None else password}
    return CliRunner().invoke(cli, args, env=env)


def test_run_writes_csv_with_every_row(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "users.csv"
    result = invoke(
        sandbox,
        ["run", "Get-Mailbox", "-p", "RecipientTypeDetails=UserMailbox,SharedMailbox",
         "-p", "ResultSize=Unlimited", "-o", str(out), *connect_args(sandbox)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = [
        m for m in sandbox.organisation.mailboxes
        if m["RecipientTypeDetails"] in ("UserMailbox", "SharedMailbox")
    ]  # fmt: skip
    assert result.output == (
        "Get-Mailbox -RecipientTypeDetails UserMailbox,SharedMailbox -ResultSize Unlimited: "
        f"{len(expected)} row(s) -> {out}\n"
    )
    frame = pd.read_csv(out, encoding="utf-8-sig")
    assert list(frame["Identity"]) == [m["Identity"] for m in expected]


def test_run_writes_xlsx_and_warnings_go_to_stderr(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "two.xlsx"
    result = invoke(
        sandbox,
        ["run", "Get-Mailbox", "-p", "ResultSize=2", "-o", str(out), *connect_args(sandbox)],
    )
    assert result.exit_code == 0, result.output
    assert "Warning: There are more results available than are currently displayed." in (
        result.output
    )
    sheet = load_workbook(out, read_only=True)["Get-Mailbox"]
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == 3 and "Identity" in rows[0]


def test_wrong_password(sandbox: Sandbox, tmp_path: Path) -> None:
    result = invoke(
        sandbox, ["run", "Get-Mailbox", "-o", str(tmp_path / "x.csv"), *connect_args(sandbox)],
        password="not-it",
    )  # fmt: skip
    assert result.exit_code == 6
    assert result.output == (
        f"Error: the server refused the credentials of {sandbox.username} (auth: ntlm) at "
        f"{sandbox.url}. Check the user name (UPN or DOMAIN\\user) and password.\n"
    )
    assert not (tmp_path / "x.csv").exists()


def test_unknown_cmdlet_exit_code(sandbox: Sandbox, tmp_path: Path) -> None:
    result = invoke(
        sandbox, ["run", "Get-Nothing", "-o", str(tmp_path / "x.csv"), *connect_args(sandbox)]
    )
    assert result.exit_code == 7
    assert result.output.startswith(
        "Error: Get-Nothing: the endpoint has no such cmdlet (or your RBAC roles do not grant "
        "it): The term 'Get-Nothing' is not recognized"
    )


class _SetThingHost:
    """Set-Thing: one object and Exchange's default-ResultSize warning; counts its runs."""

    def __init__(self, organisation: Organisation) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.runs = 0

    def has_command(self, name: str) -> bool:
        return name == "Set-Thing" or self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name != "Set-Thing":
            return self.real.invoke(commands, user)
        self.runs += 1
        warning = WarningMessage("By default, only the first 1000 items are returned.")
        thing = SerializedObject('<Obj RefId="0"><MS><I32 N="N">1</I32></MS></Obj>')
        return PipelineOutcome(events=iter([warning, thing]))


@pytest.mark.parametrize("drop", [None, 1])
def test_a_change_is_never_run_twice(drop: int | None, tmp_path: Path) -> None:
    # neither to lift the default ResultSize nor after a failure once it was sent
    organisation = Organisation(mailboxes=2, seed=2)
    host = _SetThingHost(organisation)
    with Sandbox(organisation=organisation, host=host, drop_after_objects=drop) as sb:
        out = tmp_path / "x.csv"
        result = invoke(sb, ["run", "Set-Thing", "-o", str(out), *connect_args(sb)])
        assert sb.internal_errors == []
    assert host.runs == 1
    if drop is None:
        assert result.exit_code == 0, result.output
        assert result.output.endswith(f"Set-Thing: 1 row(s) -> {out}\n")
        return
    assert result.exit_code == 7, result.output
    assert result.output == (
        f"Error: Set-Thing: the connection to {sb.url} dropped; the command had been sent, "
        "so it may or may not have run: check its effect before running it again\n"
    )
    assert not out.exists()


def test_a_command_the_server_keeps_stopping_is_one_error(tmp_path: Path) -> None:
    with Sandbox(mailboxes=3, seed=2, stop_after_objects=2) as sb:
        out = tmp_path / "x.csv"
        result = invoke(sb, ["run", "Get-Mailbox", "-o", str(out), "--retries", "1",
                             *connect_args(sb)])  # fmt: skip
        assert sb.internal_errors == []
    assert result.exit_code == 7, result.output
    assert result.output.endswith(
        "Error: Get-Mailbox: gave up after 2 tries: the server stopped the command (The "
        "pipeline has been stopped.)\n"
    )
    assert not out.exists()


def test_server_errors_make_a_partial_result(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = invoke(
        sandbox,
        ["run", "Get-Mailbox", "-p", "Identity=nobody", "-o", str(out), *connect_args(sandbox)],
    )
    assert result.exit_code == 9
    assert result.output.splitlines()[-1] == (
        "Error: 1 error record(s) from the server; first: ManagementObjectNotFoundException: "
        "The operation couldn't be performed because object 'nobody' couldn't be found on "
        "'DC01.contoso.com'."
    )
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "Get-Mailbox | Format-List", "-o", "x.csv"],
            "is not a cmdlet name like Get-Mailbox",
        ),
        (["run", "Get-Mailbox", "-p", "=5", "-o", "x.csv"], "is not Name=Value"),
    ],
)
def test_usage_errors(sandbox: Sandbox, args: list[str], message: str) -> None:
    result = invoke(sandbox, [*args, *connect_args(sandbox)])
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_output_type_fails_before_connecting(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "Get-Mailbox", "-o", str(tmp_path / "x.txt"), "--server", "127.0.0.1",
              "--port", "1"],
    )  # fmt: skip
    assert result.exit_code == 4
    assert result.output == (
        f"Error: cannot write {tmp_path / 'x.txt'}: unknown output type '.txt'; use .xlsx, "
        ".csv, .parquet or .json.\n"
    )


def test_no_password_and_no_terminal(sandbox: Sandbox, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "Get-Mailbox", "-o", str(tmp_path / "x.csv"), *connect_args(sandbox)],
        env={"PSBRIDGE_PASSWORD": ""},
    )  # fmt: skip
    assert result.exit_code == 8
    assert result.output == (
        f"Error: no password for {sandbox.username}: set PSBRIDGE_PASSWORD, store it with "
        f"'keyring set psbridge {sandbox.username}', or run interactively\n"
    )


def test_profile_supplies_the_connection(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.lab]\nserver = "{sandbox.host}"\nport = {sandbox.port}\nauth = "ntlm"\n'
        f'user = "{sandbox.username}"\nconcurrency = 2\n',
        encoding="utf-8",
    )
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(
        cli, ["run", "Get-Mailbox", "-p", "ResultSize=3", "-o", str(out), "--profile", "lab"],
        env={"PSBRIDGE_PASSWORD": sandbox.password, "PSBRIDGE_CONFIG": str(config)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 3


def test_missing_profile(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "Get-Mailbox", "-o", "x.csv", "--profile", "nope"],
        env={"PSBRIDGE_CONFIG": str(tmp_path / "none.toml")},
    )  # fmt: skip
    assert result.exit_code == 8
    assert result.output == (
        f"Error: profile 'nope' asked for, but there is no config file at "
        f"{tmp_path / 'none.toml'} (set PSBRIDGE_CONFIG to use another file)\n"
    )


def test_no_verify_warns_loudly(tmp_path: Path) -> None:
    with Sandbox(mailboxes=3, seed=1, https=True) as sb:
        result = CliRunner().invoke(
            cli,
            ["run", "Get-Mailbox", "-o", str(tmp_path / "x.csv"), "--https", "--no-verify",
             *connect_args(sb)],
            env={"PSBRIDGE_PASSWORD": sb.password},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "WARNING: --no-verify: the server's certificate is NOT checked; anyone on the network "
        "path could read your credentials and data. Use --ca-bundle instead.\n"
    )


def test_default_result_size_never_cuts_the_output(tmp_path: Path) -> None:
    # Exchange stops at 1000 items without -ResultSize: psbridge asks again for all
    with Sandbox(mailboxes=1010, seed=3) as sb:
        out = tmp_path / "cas.csv"
        result = invoke(sb, ["run", "Get-CASMailbox", "-o", str(out), *connect_args(sb)])
        assert sb.internal_errors == []
    assert result.exit_code == 0, result.output
    assert result.output == f"Get-CASMailbox -ResultSize Unlimited: 1010 row(s) -> {out}\n"
    assert len(pd.read_csv(out, encoding="utf-8-sig")) == 1010


class _DyingHost:
    """The sandbox's cmdlets; after ``dies_after`` per-mailbox queries the server answers
    every request with HTTP 503 (a dead server) until the test revives it."""

    def __init__(self, organisation: Organisation, dies_after: int) -> None:
        self.real = ExchangeCmdlets(organisation)
        self.dies_after = dies_after
        self.calls = 0
        self.sandbox: Sandbox | None = None

    def has_command(self, name: str) -> bool:
        return self.real.has_command(name)

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        if commands[0].name == "Get-MobileDeviceStatistics" and self.sandbox is not None:
            self.calls += 1
            if self.calls == self.dies_after:
                self.sandbox.knobs = replace(self.sandbox.knobs, http_error_every=1)
        return self.real.invoke(commands, user)


def test_a_failed_run_keeps_its_progress_and_resume_finishes_it(tmp_path: Path) -> None:
    # the server dies after 10 mailboxes: the first run stops (one mailbox giving up is an
    # error row, but give-ups in a row mean the server is gone); the resumed one, once
    # the server is back, finishes; nothing is asked twice or lost
    organisation = Organisation(mailboxes=40, seed=5)
    host = _DyingHost(organisation, dies_after=10)
    with Sandbox(organisation=organisation, host=host) as sb:
        host.sandbox = sb
        out = tmp_path / "devices.csv"
        base = ["mobile", "--all-devices", "--format", "csv", "-o", str(out),
                "--strategy", "per-mailbox", "--concurrency", "1", *connect_args(sb)]  # fmt: skip
        failed = invoke(sb, [*base, "--retries", "0"])
        assert failed.exit_code == 5, failed.output
        lines = failed.output.splitlines()
        assert lines[-2] == (
            f"Progress is saved in {out}.psbridge-run; run the same command with --resume to "
            "continue."
        )
        assert lines[-1].startswith("Error: Get-MobileDeviceStatistics -Mailbox ")
        assert "gave up after 1 try: HTTP 503 Service Unavailable from" in lines[-1]
        assert not out.exists()
        sb.knobs = replace(sb.knobs, http_error_every=None)  # the server is back

        rerun = invoke(sb, base)
        assert rerun.exit_code == 8
        assert "add --resume to continue it" in rerun.output

        resumed = invoke(sb, [*base, "--resume", "--retries", "3"])
        assert resumed.exit_code == 0, resumed.output
        assert not (tmp_path / "devices.csv.psbridge-run").exists()
        upn = {
            m["Identity"]: m["UserPrincipalName"] for m in sb.organisation.mailboxes
            if m["RecipientTypeDetails"] == "UserMailbox"
        }  # fmt: skip
        expected = sorted(
            (str(upn[d["MailboxIdentity"]]), str(d["DeviceID"]))
            for d in sb.organisation.devices
            if d["MailboxIdentity"] in upn
        )
        assert sb.internal_errors == []
    frame = pd.read_csv(out, encoding="utf-8-sig", dtype=str)
    assert sorted(zip(frame["UserPrincipalName"], frame["DeviceId"], strict=True)) == expected


def test_progress_counts_objects_when_the_total_is_unknown() -> None:
    import io

    from bridge.cli.terminal import _ProgressBar

    stream = io.StringIO()
    bar = _ProgressBar(stream)
    bar.start("Mailboxes and devices", None)
    for count in (5, -2, 10):  # a retried command starts its count over
        bar.advance(count)
    bar.finish()
    assert stream.getvalue().startswith("\rMailboxes and devices: 0 objects")
    assert (
        stream.getvalue().rstrip().split("\r")[-1].startswith("Mailboxes and devices: 13 objects")
    )
    assert stream.getvalue().endswith("\n")


def test_a_failed_run_ends_the_progress_bar_and_shows_the_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on a terminal the bar hides the cursor; a run that stops mid-way (here the server
    # dies, as after Ctrl+C) must give the cursor back and end the bar's line before
    # "Progress is saved ..."
    import io

    from bridge.cli import terminal as cli_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(cli_module, "progress_for", lambda quiet: cli_module._ProgressBar(terminal))
    organisation = Organisation(mailboxes=40, seed=5)
    host = _DyingHost(organisation, dies_after=10)
    with Sandbox(organisation=organisation, host=host) as sb:
        host.sandbox = sb
        out = tmp_path / "devices.csv"
        failed = invoke(sb, ["mobile", "--all-devices", "-o", str(out), "--strategy",
                             "per-mailbox", "--concurrency", "1", "--retries", "0",
                             *connect_args(sb)])  # fmt: skip
    assert failed.exit_code == 5, failed.output
    assert "Mailboxes  [#" in terminal.getvalue()  # the bar was shown
    assert terminal.getvalue().endswith("\x1b[?25h\n")


def test_retry_warnings_get_their_own_line_above_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging
    import sys

    from bridge.cli import terminal as cli_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    logger = logging.getLogger("bridge")
    before = list(logger.handlers)
    try:
        bar = cli_module.progress_for(quiet=False)
        assert bar is not None
        bar.start("Mailboxes", 10)
        bar.advance()
        logging.getLogger("bridge.remote").warning("Get-X: dropped; retrying in %.1f s", 1.0)
        bar.finish()
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
    text = terminal.getvalue()
    line = text.index("Warning: Get-X: dropped; retrying in 1.0 s\n")
    assert "1/10" in text[:line]  # the bar was drawn first ...
    assert text[:line].endswith(" \r")  # ... and its line blanked before the warning
