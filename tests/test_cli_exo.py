"""`psbridge mobile|run --tenant` and `psbridge demo --exo`: Exchange Online's REST endpoint
from the command line, against the emulated tenant with real MSAL."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openpyxl
import pandas as pd
from click.testing import CliRunner, Result

from bridge.cli import cli
from bridge.exo import CERTIFICATE_PASSWORD_ENV
from bridge.sandbox.exo_server import DEFAULT_ADMIN, ExoSandbox
from tests.exo_support import APP_ID, exo_sandbox, make_certificate
from tests.ground_truth import classic_users, figure_lines, outlook_devices


def exo_args(exo: ExoSandbox) -> list[str]:
    return ["--tenant", exo.tenant, "--exo-endpoint", exo.endpoint, "--authority",
            exo.endpoint, "--ca-bundle", str(exo.ca_file)]


def invoke(args: list[str], **env: str) -> Result:
    return CliRunner().invoke(cli, args, env=env)


@contextmanager
def approving(exo: ExoSandbox) -> Iterator[None]:
    """The admin, in a browser elsewhere, enters each device code that shows up."""
    done = threading.Event()

    def approve() -> None:
        while not done.wait(0.05):
            for code in exo.entra.pending_user_codes():
                exo.approve_device_code(code, DEFAULT_ADMIN)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_demo_exo_writes_the_same_report_through_exchange_online(tmp_path: Path) -> None:
    output = tmp_path / "demo.xlsx"
    result = invoke(["demo", "--exo", "--mailboxes", "40", "-o", str(output)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Sandbox: 40 mailboxes \(seed 1\) as Exchange Online at "
                        r"https://127\.0\.0\.1:\d+; signing in with a device code \.\.\.",
                        lines[0])
    assert "microsoft.com/devicelogin" in lines[1]
    assert lines[2] == f"(the sandbox signed in as {DEFAULT_ADMIN})"
    from bridge.sandbox.organisation import Organisation

    org = Organisation(mailboxes=40, seed=1, online_client_types=True)
    assert re.fullmatch(rf"Collected {len(classic_users(org))} mailboxes and \d+ devices "
                        r"\(\d+ HTTPS requests\)\.", lines[3])
    assert lines[4:] == [f"Report written to {output.resolve()}", *figure_lines(org)]
    book = openpyxl.load_workbook(output)
    assert book["Devices"].max_row == len(outlook_devices(org)) + 1
    run = {row[0]: row[1] for row in book["Run"].iter_rows(values_only=True) if row[0]}
    assert run["Source"] == ("psbridge demo: sandbox organisation (40 mailboxes, seed 1) over "
                             "Exchange Online's REST endpoint")
    assert run["Collected as"] == DEFAULT_ADMIN


def test_mobile_with_a_tenant_and_a_certificate(tmp_path: Path) -> None:
    certificate, public = make_certificate(tmp_path, pfx_password="pw")
    output = tmp_path / "report.xlsx"
    with exo_sandbox(mailboxes=40, seed=2) as exo:
        exo.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        as_of = exo.organisation.reference_time.strftime("%Y-%m-%dT%H:%M:%S")
        result = invoke(["mobile", *exo_args(exo), "--app-id", APP_ID, "--certificate-file",
                         str(certificate), "--as-of", as_of, "--no-history", "-q", "-o",
                         str(output)], **{CERTIFICATE_PASSWORD_ENV: "pw"})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"Report written to {output.resolve()}",
                                          *figure_lines(exo.organisation)]
    assert not (tmp_path / "report.xlsx.psbridge-run").exists()


def test_device_code_sign_in_then_sign_out(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        with approving(exo):
            result = invoke(["run", "Get-Mailbox", *exo_args(exo), "-o",
                             str(tmp_path / "m.csv")])
        assert result.exit_code == 0, result.output
        assert "microsoft.com/devicelogin" in result.stderr
        assert result.stdout == (f"Get-Mailbox: 30 row(s) -> {tmp_path / 'm.csv'}\n")
        assert len(pd.read_csv(tmp_path / "m.csv")) == 30
        again = invoke(["run", "Get-Mailbox", *exo_args(exo), "-o", str(tmp_path / "n.csv")])
        assert again.exit_code == 0, again.output  # from the cache: no device code
        assert exo.requests["oauth2/v2.0/devicecode"] == 1
        out = invoke(["mobile", *exo_args(exo), "--sign-out"])
        assert (out.exit_code, out.stdout) == (0, f"Signed out of {exo.tenant}: 1 cached "
                                                  "sign-in(s) removed.\n")


def test_a_refused_sign_in_is_one_line_with_exit_10(tmp_path: Path) -> None:
    certificate, public = make_certificate(tmp_path)
    with exo_sandbox() as exo:
        exo.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"],
                         consented=False)
        result = invoke(["run", "Get-Mailbox", *exo_args(exo), "--app-id", APP_ID,
                         "--certificate-file", str(certificate), "-o", str(tmp_path / "m.csv")])
    assert result.exit_code == 10
    assert result.stderr == (
        f"Error: sign-in to {exo.tenant} refused (AADSTS65001): consent missing: the app may "
        "not call Exchange Online in this tenant; fix: an administrator grants admin consent "
        "to the app for Office 365 Exchange Online (Entra admin center > Enterprise "
        "applications > the app > Permissions)\n")


def test_run_refuses_a_changing_cmdlet_on_exchange_online(tmp_path: Path) -> None:
    result = invoke(["run", "Set-Mailbox", "-p", "Identity=x", "--tenant", "contoso.onmicrosoft"
                     ".com", "-o", str(tmp_path / "m.csv")])
    assert result.exit_code == 8
    assert result.stderr == ("Error: Set-Mailbox: psbridge runs only read-only cmdlets (Get-, "
                             "Test-...) on Exchange Online\n")


def test_exo_options_need_a_tenant(tmp_path: Path) -> None:
    result = invoke(["mobile", "--server", "mail", "--sign-out"])
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: --exo-endpoint, --authority, --interactive and "
                                  "--sign-out go with --tenant (Exchange Online).\n")


def test_sandbox_serve_exo_is_what_mobile_tenant_reaches(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", "from bridge.cli import main; main()", "sandbox", "serve",
         "--exo", "--mailboxes", "20", "--fixed-clock", "--fault-every", "429=4",
         "--retry-after", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl+C"):
            break
    assert re.fullmatch(r"Exchange Online sandbox at https://127\.0\.0\.1:\d+ \(tenant "
                        r"contoso\.onmicrosoft\.com\)", lines[0])
    assert lines[3].startswith("Try: psbridge mobile --tenant contoso.onmicrosoft.com ")
    options = lines[3].removeprefix("Try: psbridge mobile ").removesuffix(" -o report.xlsx")
    output = tmp_path / "report.xlsx"
    result = invoke(["mobile", *options.split(), "--no-history", "-q", "-o", str(output)])
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert result.exit_code == 0, result.output
    assert "microsoft.com/devicelogin" in result.stderr
    from bridge.sandbox.organisation import Organisation

    devices = outlook_devices(Organisation(mailboxes=20, seed=1))
    assert openpyxl.load_workbook(output)["Devices"].max_row == len(devices) + 1
    assert re.fullmatch(r"Stopped after \d+ REST requests\.\n", out)


def test_mobile_tenant_resumes_an_interrupted_run(tmp_path: Path) -> None:
    certificate, public = make_certificate(tmp_path)
    output = tmp_path / "report.xlsx"
    with exo_sandbox(mailboxes=120, seed=5, fault_at={5: "503"}) as exo:
        exo.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        args = ["mobile", *exo_args(exo), "--app-id", APP_ID, "--certificate-file",
                str(certificate), "--concurrency", "1", "--no-history", "-q", "-o",
                str(output)]
        first = invoke([*args, "--retries", "0"])
        assert first.exit_code == 7, first.output
        assert first.stderr == (
            f"Progress is saved in {tmp_path / 'report.xlsx.psbridge-run'}; run the same "
            "command with --resume to continue.\n"
            "Error: $batch of 10 (Get-MobileDeviceStatistics): gave up after 1 try: HTTP 503\n")
        second = invoke([*args, "--resume"])
        assert second.exit_code == 0, second.output
        stats = [i.parameters["Mailbox"] for i in exo.invocations
                 if i.cmdlet == "Get-MobileDeviceStatistics"]
        # the classic report filters Get-MobileDevice on the server: statistics only for
        # the owners of Outlook for iOS and Android partnerships, each asked once
        owners = {d.mailbox.name for d in outlook_devices(exo.organisation)}
        assert len(stats) == len(set(stats)) == len(owners)
        devices = len(outlook_devices(exo.organisation))
    assert openpyxl.load_workbook(output)["Devices"].max_row == devices + 1
    assert not (tmp_path / "report.xlsx.psbridge-run").exists()


def test_an_exchange_online_report_says_eas_clients_are_blocked_not_would_be(
        tmp_path: Path) -> None:
    from bridge.eas import ON_PREMISES_WORDING, ONLINE_WORDING

    certificate, public = make_certificate(tmp_path)
    output = tmp_path / "report.xlsx"
    with exo_sandbox(mailboxes=60, seed=3) as exo:
        exo.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        result = invoke(["mobile", *exo_args(exo), "--app-id", APP_ID, "--certificate-file",
                         str(certificate), "--all-devices", "--as-of", "2026-06-01",
                         "--no-history", "-q", "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = " ".join(str(cell.value) for row in openpyxl.load_workbook(output)["Summary"]
                    .iter_rows() for cell in row if cell.value is not None)
    assert f"EAS below 16.1: {ONLINE_WORDING}" in text
    assert ON_PREMISES_WORDING not in text
