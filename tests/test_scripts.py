"""bridge.scripts: finding ps_scripts, ``--via pwsh`` with a stand-in pwsh, ``--via jumphost``
against the sandbox's emulated jump host over real WSMan/PSRP."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from psrpcore.types import serialize

from bridge import scripts, sizes
from bridge.config import PASSWORD_VARIABLE
from bridge.errors import AuthenticationFailed, PowerShellNotFound, RemoteCommandError
from bridge.sandbox import Sandbox
from bridge.sandbox.contract import ErrorSpec
from bridge.sandbox.jumphost import ExoTenant, JumpHost, enable_jumphost, exo_script_document
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.psrp import error_record
from bridge.scripts import (
    CERTIFICATE_PASSWORD_VARIABLE,
    EXO_SCRIPT,
    PWSH_INSTALL_HINT,
    ExoApp,
    collect_via_jumphost,
    collect_via_pwsh,
    exo_parameters,
    script_path,
    scripts_dir,
)

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "5c1a4e2f-3b7d-4c8e-9f01-2a3b4c5d6e7f"
THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"
TENANT = "contoso.onmicrosoft.com"
TYPES = ["UserMailbox", "SharedMailbox"]


# --------------------------------------------------------------------------- locating


def test_scripts_are_found_in_the_checkout() -> None:
    assert scripts_dir() == ROOT / "ps_scripts"
    assert script_path(EXO_SCRIPT).read_text(encoding="utf-8").startswith("<#")


def test_built_package_carries_the_scripts_and_finds_them(tmp_path: Path) -> None:
    """setup.py's build hook puts ps_scripts/ into bridge/ps_scripts/, where an installed
    psbridge (and the sandbox) look first."""
    spec = importlib.util.spec_from_file_location("psbridge_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    setup_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_module)
    from setuptools.dist import Distribution

    build = setup_module.BuildPyWithPsScripts(Distribution({"packages": []}))
    build.initialize_options()
    build.build_lib = str(tmp_path)
    build.finalize_options()
    build.run()
    shipped = sorted(p.name for p in (tmp_path / "bridge" / "ps_scripts").iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "ps_scripts").glob("*.ps1"))

    # an installed layout: the package with its scripts inside, no checkout beside it
    shutil.copytree(
        ROOT / "bridge",
        tmp_path / "bridge",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    probe = (
        "from bridge.scripts import scripts_dir; from bridge.sandbox import jumphost; "
        "print(scripts_dir()); print(jumphost.scripts_dir())"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert found == [str(tmp_path / "bridge" / "ps_scripts")] * 2


# --------------------------------------------------------------------------- --via pwsh

STAND_IN = """\
import json, os, sys
folder = os.environ["FAKE_PWSH_DIR"]
with open(os.path.join(folder, "call.json"), "w") as call:
    json.dump({"argv": sys.argv, "password": os.environ.get("PSBRIDGE_CERTIFICATE_PASSWORD"),
               "env": dict(os.environ)}, call)
for name, stream in (("stdout.bin", sys.stdout), ("stderr.bin", sys.stderr)):
    path = os.path.join(folder, name)
    if os.path.exists(path):
        with open(path, "rb") as data:
            stream.buffer.write(data.read())
sys.exit(int(open(os.path.join(folder, "exitcode")).read()))
"""


@pytest.fixture(scope="module")
def organisation() -> Organisation:
    return Organisation(mailboxes=20, seed=3)


@pytest.fixture
def fake_pwsh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ``pwsh`` on PATH that records its call and replays prepared streams."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pwsh = bin_dir / "pwsh"
    pwsh.write_text(f"#!{sys.executable}\n{STAND_IN}", encoding="utf-8")
    pwsh.chmod(pwsh.stat().st_mode | stat.S_IXUSR)
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "exitcode").write_text("0")
    monkeypatch.setenv("FAKE_PWSH_DIR", str(replay))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # as on Windows, where -CertificateThumbprint works (the platform check, not the OS)
    monkeypatch.setattr(scripts, "thumbprint_supported", lambda: True)
    yield replay


def _stderr(*records: ErrorSpec, warning: str | None = None) -> bytes:
    """What pwsh -OutputFormat xml writes to stderr: progress, warnings, error records."""
    parts = [
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject'
        '</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record">'
        "<AV>psbridge</AV><AI>0</AI><Nil /><PI>-1</PI><PC>50</PC><T>Processing</T><SR>-1</SR>"
        "<SD>Mobile devices: mailbox 1 of 2</SD></PR></MS></Obj>"
    ]
    if warning:
        parts.append(f'<S S="warning">{warning}</S>')
    for spec in records:
        element = serialize(error_record(spec), None)
        element.attrib["S"] = "Error"
        parts.append(ElementTree.tostring(element, encoding="unicode"))
    body = "".join(parts).replace('RefId="0"><TN RefId="0">', 'RefId="90"><TN RefId="90">', 1)
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f"{body}</Objs>"
    ).encode()


NOT_FOUND = ErrorSpec(
    message="The operation couldn't be performed because 'Ghost' couldn't be found.",
    exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
    category="ObjectNotFound",
    fully_qualified_error_id="[Server=EXO] 6A3D1B4C,Get-EXOMailbox",
    reason="ManagementObjectNotFoundException",
)


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the sandbox's ground truth states them: the generic reader leaves sizes
    ('50 GB (53,687,091,200 bytes)', 'Unlimited') as text; bridge.sizes converts them
    where the schema says so."""
    return [{k: (sizes.size_bytes(v) if isinstance(v, str) and v.endswith(" bytes)")
                 else None if v == "Unlimited" else v) for k, v in row.items()} for row in rows]


class _RecordingProgress:
    """An exchange.Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def start(self, label: str, total: int | None) -> None:
        self.calls.append(("start", label, total))

    def advance(self, count: int = 1) -> None:
        self.calls.append(("advance", count))

    def finish(self) -> None:
        self.calls.append(("finish",))


def _call(replay: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((replay / "call.json").read_text())
    return result


def test_pwsh_argv_output_and_error_records(fake_pwsh: Path, organisation: Organisation) -> None:
    app = ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT)
    tenant = ExoTenant(organisation, app_id=APP_ID)
    parameters = exo_parameters(app, recipient_types=TYPES, all_devices=False)
    (fake_pwsh / "stdout.bin").write_text(exo_script_document(tenant, parameters), "utf-8")
    (fake_pwsh / "stderr.bin").write_bytes(_stderr(NOT_FOUND, warning="Micro delay applied."))

    progress = _RecordingProgress()
    collection = collect_via_pwsh(app, recipient_types=TYPES, all_devices=False, progress=progress)

    call = _call(fake_pwsh)
    call.pop("env")
    assert call == {
        "argv": [
            shutil.which("pwsh"),
            "-NoProfile",
            "-NonInteractive",
            "-OutputFormat",
            "xml",
            "-File",
            str(ROOT / "ps_scripts" / EXO_SCRIPT),
            "-Organization",
            TENANT,
            "-AppId",
            APP_ID,
            "-CertificateThumbprint",
            THUMBPRINT,
            "-RecipientTypeDetails",
            "UserMailbox,SharedMailbox",
            "-OutlookOnly",
        ],
        "password": None,
    }
    truth = [m for m in organisation.mailboxes if m["RecipientTypeDetails"] in TYPES]
    assert _plain(collection.mailboxes) == truth
    wanted = {m["Identity"] for m in truth}
    devices = [
        d
        for d in organisation.devices
        if d["MailboxIdentity"] in wanted and d["DeviceModel"] == "Outlook for iOS and Android"
    ]
    assert devices, "the organisation should hold Outlook devices for this test to mean much"
    # the script names each mailbox by UserPrincipalName (no Identity in Exchange Online)
    upn = {m["Identity"]: m["UserPrincipalName"] for m in organisation.mailboxes}
    assert [d.pop("QueriedMailbox") for d in collection.devices] == [
        upn[d["MailboxIdentity"]] for d in devices
    ]
    assert _plain(collection.devices) == [
        {k: v for k, v in d.items() if k != "MailboxIdentity"} for d in devices
    ]
    # the non-terminating error record becomes an Errors row; warnings and progress do not
    assert [(e["Command"], e["Category"], e["Message"]) for e in collection.errors] == [
        (f"pwsh {EXO_SCRIPT}", "ObjectNotFound", NOT_FOUND.message)
    ]
    assert collection.meta["mailboxes"] == len(truth)
    assert collection.meta["devices"] == len(devices)
    assert collection.meta["via"] == "pwsh"
    # the script's Write-Progress records on stderr drive psbridge's progress bar
    assert progress.calls == [("start", "Mobile devices", 2), ("advance", 1), ("finish",)]


def test_pwsh_certificate_password_travels_in_the_environment_only(
    fake_pwsh: Path, organisation: Organisation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CERTIFICATE_PASSWORD_VARIABLE, "left-over-from-the-shell")
    monkeypatch.setenv(PASSWORD_VARIABLE, "exchange-sign-in-S3cret!")
    monkeypatch.setenv("PSMODULEPATH", "/opt/modules")
    app = ExoApp(TENANT, APP_ID, certificate_file="/secure/app.pfx")
    secret = "pfx-S3cret!"
    collection = collect_via_pwsh(app, certificate_password=secret)
    call = _call(fake_pwsh)
    assert call["password"] == secret
    assert secret not in " ".join(call["argv"])
    # pwsh gets what it needs, not psbridge's own sign-in password
    assert PASSWORD_VARIABLE not in call["env"]
    assert call["env"]["PSMODULEPATH"] == "/opt/modules"
    assert call["env"]["PATH"] == os.environ["PATH"]
    assert call["argv"][7:] == [
        "-Organization",
        TENANT,
        "-AppId",
        APP_ID,
        "-CertificateFilePath",
        "/secure/app.pfx",
        "-CertificatePasswordVariable",
        CERTIFICATE_PASSWORD_VARIABLE,
        "-RecipientTypeDetails",
        "UserMailbox",
    ]
    assert collection.mailboxes == [] and collection.errors == []


def test_pwsh_without_password_does_not_leak_one_from_the_shell(
    fake_pwsh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CERTIFICATE_PASSWORD_VARIABLE, "left-over-from-the-shell")
    monkeypatch.setenv(PASSWORD_VARIABLE, "exchange-sign-in-S3cret!")
    collect_via_pwsh(ExoApp(TENANT, APP_ID, certificate_file="app.pfx"))
    call = _call(fake_pwsh)
    assert call["password"] is None
    assert "exchange-sign-in-S3cret!" not in json.dumps(call["env"])
    assert "-CertificatePasswordVariable" not in call["argv"]


SIGN_IN = ErrorSpec(
    message=(
        "AADSTS700016: Application with identifier '5c1a4e2f-3b7d-4c8e-9f01-2a3b4c5d6e7f' was "
        "not found in the directory 'contoso.onmicrosoft.com'."
    ),
    exception_type="Microsoft.Identity.Client.MsalServiceException",
    category="NotSpecified",
    fully_qualified_error_id="Microsoft.Identity.Client.MsalServiceException",
)


def test_pwsh_failed_sign_in_is_an_authentication_error(fake_pwsh: Path) -> None:
    (fake_pwsh / "stderr.bin").write_bytes(_stderr(SIGN_IN))
    (fake_pwsh / "exitcode").write_text("1")
    with pytest.raises(AuthenticationFailed) as failure:
        collect_via_pwsh(ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT))
    assert str(failure.value) == (
        f"pwsh {EXO_SCRIPT}: Exchange Online refused the app sign-in: {SIGN_IN.message}"
    )


def test_pwsh_failing_script_is_a_remote_error_with_its_message(fake_pwsh: Path) -> None:
    (fake_pwsh / "stderr.bin").write_bytes(b"The term 'Connect-ExchangeOnline' is not recognized")
    (fake_pwsh / "exitcode").write_text("1")
    with pytest.raises(RemoteCommandError) as failure:
        collect_via_pwsh(ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT))
    assert str(failure.value) == (
        f"pwsh {EXO_SCRIPT}: The term 'Connect-ExchangeOnline' is not recognized"
    )


def test_missing_pwsh_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(scripts, "thumbprint_supported", lambda: True)
    with pytest.raises(PowerShellNotFound) as failure:
        collect_via_pwsh(ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT))
    assert str(failure.value) == PWSH_INSTALL_HINT
    assert failure.value.exit_code == 8


# --------------------------------------------------------------------------- --via jumphost


@pytest.fixture(scope="module")
def jumphost() -> Iterator[tuple[Sandbox, JumpHost]]:
    with Sandbox(mailboxes=20, seed=3) as sandbox:
        yield sandbox, enable_jumphost(sandbox, app_id=APP_ID)
        assert sandbox.internal_errors == []


def _session(sandbox: Sandbox) -> Any:
    from bridge.remote import ConnectionSettings, Session

    settings = ConnectionSettings(
        server=sandbox.host,
        port=sandbox.port,
        configuration="Microsoft.PowerShell",
        username=sandbox.username,
        auth="ntlm",
    )
    return Session(settings, sandbox.password)


def test_jumphost_runs_the_script_and_sorts_its_output(
    jumphost: tuple[Sandbox, JumpHost],
) -> None:
    sandbox, host = jumphost
    failing = sandbox.organisation.mailbox_entries[1].identity
    host.tenant.failing_mailboxes = {failing}
    try:
        with _session(sandbox) as session:
            collection = collect_via_jumphost(
                session,
                ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT),
                recipient_types=TYPES,
            )
    finally:
        host.tenant.failing_mailboxes = set()
    # the script got its values as parameters, bound against its param() block
    name, bound = host.runs[-1]
    assert (name, bound) == (
        EXO_SCRIPT,
        {
            "Organization": TENANT,
            "AppId": APP_ID,
            "CertificateThumbprint": THUMBPRINT,
            "RecipientTypeDetails": TYPES,
        },
    )
    truth = [m for m in sandbox.organisation.mailboxes if m["RecipientTypeDetails"] in TYPES]
    assert _plain(collection.mailboxes) == truth
    devices = [
        d
        for d in sandbox.organisation.devices
        if d["MailboxIdentity"] in {m["Identity"] for m in truth}
        and d["MailboxIdentity"] != failing
    ]
    assert [d["Guid"] for d in collection.devices] == [d["Guid"] for d in devices]
    upn = next(m["UserPrincipalName"] for m in truth if m["Identity"] == failing)
    assert [(e["Mailbox"], e["Category"]) for e in collection.errors] == [(upn, "NotSpecified")]
    assert collection.meta["errors"] == 1 and collection.meta["via"] == "jumphost"


def test_jumphost_wrong_tenant_is_an_authentication_error(
    jumphost: tuple[Sandbox, JumpHost],
) -> None:
    sandbox, _ = jumphost
    with _session(sandbox) as session, pytest.raises(AuthenticationFailed) as failure:
        collect_via_jumphost(
            session, ExoApp("fabrikam.onmicrosoft.com", APP_ID, certificate_thumbprint=THUMBPRINT)
        )
    assert str(failure.value) == (
        f"jump host {EXO_SCRIPT}: Exchange Online refused the app sign-in: AADSTS90002: "
        "Tenant 'fabrikam.onmicrosoft.com' not found. Check to make sure you have the correct "
        "tenant ID and are signing into the correct cloud."
    )


def test_jumphost_accepts_only_psbridge_scripts_and_declared_parameters(
    jumphost: tuple[Sandbox, JumpHost],
) -> None:
    sandbox, _ = jumphost
    script = script_path(EXO_SCRIPT).read_text(encoding="utf-8")
    with _session(sandbox) as session:
        with pytest.raises(RemoteCommandError, match="runs only psbridge's own scripts"):
            session.run_script(script + "\nGet-Process\n", {})
        with pytest.raises(
            RemoteCommandError,
            match="A parameter cannot be found that matches parameter name 'Password'",
        ):
            session.run_script(script, {"Organization": TENANT, "Password": "x"})
        with pytest.raises(RemoteCommandError, match="missing mandatory parameters: AppId"):
            session.run_script(
                script, {"Organization": TENANT, "CertificateThumbprint": THUMBPRINT}
            )
        with pytest.raises(RemoteCommandError, match="Parameter set cannot be resolved"):
            session.run_script(
                script,
                {
                    "Organization": TENANT,
                    "AppId": APP_ID,
                    "CertificateThumbprint": THUMBPRINT,
                    "CertificateFilePath": "C:\\app.pfx",
                },
            )
        with pytest.raises(RemoteCommandError, match="does not match the"):
            session.run_script(
                script,
                {
                    "Organization": TENANT,
                    "AppId": "not-a-guid",
                    "CertificateThumbprint": THUMBPRINT,
                },
            )


# --------------------------------------------------------------------------- the command line


def _psbridge(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from bridge.cli import cli

    result = CliRunner(env=env).invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _outlook_user_devices(organisation: Organisation) -> int:
    users = {
        m["Identity"] for m in organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"
    }
    return sum(
        1
        for d in organisation.devices
        if d["MailboxIdentity"] in users and d["DeviceModel"] == "Outlook for iOS and Android"
    )


def test_cli_mobile_via_pwsh(fake_pwsh: Path, organisation: Organisation, tmp_path: Path) -> None:
    app = ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT)
    document = exo_script_document(
        ExoTenant(organisation, app_id=APP_ID), exo_parameters(app, all_devices=False)
    )
    (fake_pwsh / "stdout.bin").write_text(document, "utf-8")
    output = tmp_path / "report.csv"
    code, stdout, stderr = _psbridge(
        "mobile",
        "--via",
        "pwsh",
        "--tenant",
        TENANT,
        "--app-id",
        APP_ID,
        "--certificate-thumbprint",
        THUMBPRINT,
        "--no-history",
        "-o",
        str(output),
    )
    assert (code, stderr) == (0, f"Running {EXO_SCRIPT} in pwsh for {TENANT} ...\n")
    assert f"Report written to {output.resolve()}" in stdout
    devices = _outlook_user_devices(organisation)
    assert f"  Devices                 {devices:>8}" in stdout.splitlines()
    # the report's defaults travel to the script: user mailboxes, Outlook devices only
    assert _call(fake_pwsh)["argv"][-3:] == ["-RecipientTypeDetails", "UserMailbox", "-OutlookOnly"]
    assert len(output.read_text(encoding="utf-8-sig").splitlines()) == devices + 1


@pytest.mark.parametrize("windows", [True, False])
def test_cli_via_pwsh_refuses_a_thumbprint_off_windows(
    fake_pwsh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool
) -> None:
    monkeypatch.setattr(scripts, "thumbprint_supported", lambda: windows)
    (fake_pwsh / "exitcode").write_text("1")  # pwsh, when reached, fails: exit 7
    code, _, stderr = _psbridge(
        "mobile", "--via", "pwsh", "--tenant", TENANT, "--app-id", APP_ID,
        "--certificate-thumbprint", THUMBPRINT, "--no-history", "-q",
        "-o", str(tmp_path / "r.xlsx"),
    )  # fmt: skip
    if windows:
        assert code == 7 and (fake_pwsh / "call.json").exists()  # pwsh was started
    else:
        assert (code, stderr) == (8, f"Error: {scripts.THUMBPRINT_OFF_WINDOWS}\n")
        assert not (fake_pwsh / "call.json").exists()  # refused before starting pwsh


def test_cli_via_pwsh_without_pwsh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(scripts, "thumbprint_supported", lambda: True)
    code, _, stderr = _psbridge(
        "mobile",
        "--via",
        "pwsh",
        "--tenant",
        TENANT,
        "--app-id",
        APP_ID,
        "--certificate-thumbprint",
        THUMBPRINT,
        "--no-history",
        "-q",
        "-o",
        str(tmp_path / "r.xlsx"),
    )
    assert (code, stderr) == (8, f"Error: {PWSH_INSTALL_HINT}\n")


def test_cli_via_options_are_checked(tmp_path: Path) -> None:
    out = str(tmp_path / "r.xlsx")
    code, _, stderr = _psbridge("mobile", "--server", "mail", "--tenant", TENANT, "-o", out)
    assert code == 2
    assert stderr.endswith("Error: --tenant runs on Exchange Online: leave out --server.\n")
    code, _, stderr = _psbridge("mobile", "--server", "mail", "--app-id", APP_ID, "-o", out)
    assert code == 2
    assert stderr.endswith(
        "Error: --app-id/--certificate-* go with --tenant (Exchange Online), --via jumphost or "
        "--via pwsh.\n"
    )
    code, _, stderr = _psbridge("mobile", "--via", "pwsh", "--app-id", APP_ID, "-o", out)
    assert code == 2
    assert stderr.endswith(
        "Error: --via pwsh needs --tenant and --app-id (and --certificate-thumbprint or "
        "--certificate-file).\n"
    )
    code, _, stderr = _psbridge(
        "mobile", "--via", "pwsh", "--tenant", TENANT, "--app-id", "nope", "-o", out
    )
    assert (code, stderr) == (
        8,
        "Error: --app-id 'nope' is not a GUID: use the app registration's Application "
        "(client) ID\n",
    )


def test_cli_mobile_via_jumphost(jumphost: tuple[Sandbox, JumpHost], tmp_path: Path) -> None:
    sandbox, host = jumphost
    output = tmp_path / "report.xlsx"
    code, stdout, stderr = _psbridge(
        "mobile",
        "--via",
        "jumphost",
        "--server",
        sandbox.host,
        "--port",
        str(sandbox.port),
        "--path",
        "PowerShell",
        "--auth",
        "ntlm",
        "--user",
        sandbox.username,
        "--tenant",
        TENANT,
        "--app-id",
        APP_ID,
        "--certificate-thumbprint",
        THUMBPRINT,
        "--no-history",
        "-o",
        str(output),
        env={"PSBRIDGE_PASSWORD": sandbox.password},
    )
    assert code == 0, stderr
    assert stderr == (
        f"Running {EXO_SCRIPT} on http://{sandbox.host}:{sandbox.port}/PowerShell for "
        f"{TENANT} ...\n"
    )
    devices = _outlook_user_devices(sandbox.organisation)
    assert f"  Devices                 {devices:>8}" in stdout.splitlines()
    assert host.runs[-1][1]["OutlookOnly"] is True
    assert sandbox.password not in stdout + stderr


def test_cli_scripts_shows_and_copies_them(tmp_path: Path) -> None:
    code, stdout, _ = _psbridge("scripts")
    assert (code, stdout) == (
        0,
        f"{ROOT / 'ps_scripts'}\n  Export-PsbridgeData.ps1\n  Get-PsbridgeExoData.ps1\n",
    )
    code, stdout, _ = _psbridge("scripts", "--copy-to", str(tmp_path / "take"))
    assert code == 0
    assert (tmp_path / "take" / EXO_SCRIPT).read_bytes() == script_path(EXO_SCRIPT).read_bytes()


# --------------------------------------------------------------------------- round trip


def test_round_trip_export_and_script_reports_equal_the_live_report(
    fake_pwsh: Path, tmp_path: Path
) -> None:
    """Sandbox export -> --from-clixml, and the script's output via pwsh, give the very
    report a live collection of the same organisation gives."""
    import pandas as pd

    from bridge import exchange, frames
    from bridge.output import write_frame
    from bridge.remote import ConnectionSettings, Session
    from bridge.sandbox.export import export_organisation

    organisation = Organisation(mailboxes=30, seed=5)
    options = frames.ReportOptions()
    started = organisation.reference_time
    with Sandbox(organisation=organisation) as sandbox:
        settings = ConnectionSettings(
            server=sandbox.host, port=sandbox.port, auth="ntlm", username=sandbox.username
        )
        with Session(settings, sandbox.password) as session:
            live = exchange.collect(
                session,
                recipient_types=options.recipient_types,
                device_filter=f"DeviceModel -eq '{options.device_model}'",
            )
        assert sandbox.internal_errors == []
    live_report = frames.build_report(
        live.mailboxes, live.devices, live.errors, options=options, run_started=started
    )
    assert len(live_report.devices) > 3

    export = tmp_path / "export"
    export_organisation(organisation, export)
    offline_csv, live_csv = tmp_path / "offline.csv", tmp_path / "live.csv"
    code, _, stderr = _psbridge(
        "mobile", "--from-clixml", str(export), "--no-history", "-o", str(offline_csv)
    )
    assert code == 0, stderr
    write_frame(live_csv, live_report.devices_sheet())
    assert offline_csv.read_bytes() == live_csv.read_bytes()

    app = ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT)
    parameters = exo_parameters(app, all_devices=False)
    document = exo_script_document(ExoTenant(organisation, app_id=APP_ID), parameters)
    (fake_pwsh / "stdout.bin").write_text(document, "utf-8")
    script = collect_via_pwsh(app, all_devices=False)
    script_report = frames.build_report(
        script.mailboxes, script.devices, script.errors, options=options, run_started=started
    )
    pd.testing.assert_frame_equal(script_report.devices_sheet(), live_report.devices_sheet())
    pd.testing.assert_frame_equal(
        script_report.users_without_devices, live_report.users_without_devices
    )
    assert script_report.figures == live_report.figures


def test_pwsh_stdout_with_a_second_clixml_block_is_read_whole(
    fake_pwsh: Path, organisation: Organisation
) -> None:
    """pwsh can start a second '#< CLIXML' + <Objs> block (PowerShell/PowerShell#12489)."""
    app = ExoApp(TENANT, APP_ID, certificate_thumbprint=THUMBPRINT)
    document = exo_script_document(ExoTenant(organisation, app_id=APP_ID), exo_parameters(app))
    second = (
        '\r\n#< CLIXML\r\n<Objs Version="1.1.0.1" '
        'xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<S S="verbose">Disconnected.</S></Objs>'
    )
    (fake_pwsh / "stdout.bin").write_text(document + second, "utf-8")
    collection = collect_via_pwsh(app)
    users = [m for m in organisation.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    assert [m["Identity"] for m in collection.mailboxes] == [m["Identity"] for m in users]
    assert collection.meta["mailboxes"] == len(users)


def test_jumphost_connection_defaults_are_winrms() -> None:
    from bridge.cli.options import jumphost_connection as _jumphost_connection

    given = {"server": "jump01", "port": None, "https": None, "path": None,
             "configuration": None, "profile": None}  # fmt: skip
    jump = _jumphost_connection(given)
    assert (jump["path"], jump["port"], jump["configuration"]) == (
        "wsman",
        5985,
        "Microsoft.PowerShell",
    )
    assert _jumphost_connection({**given, "https": True})["port"] == 5986
    chosen = _jumphost_connection({**given, "path": "PowerShell", "port": 8080})
    assert (chosen["path"], chosen["port"]) == ("PowerShell", 8080)
