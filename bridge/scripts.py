"""psbridge's own PowerShell (ps_scripts/) and the two ways of running it.

- ``--via pwsh``: a local PowerShell 7 runs ``Get-PsbridgeExoData.ps1`` with
  ``-OutputFormat xml``; its ``#< CLIXML`` output goes through :mod:`bridge.clixml`.
- ``--via jumphost``: a Windows host's full-language endpoint (``Microsoft.PowerShell``)
  runs the same script text through :meth:`bridge.remote.Session.run_script`.

Either way every value travels as a parameter, never pasted into script text, and the
script's tagged output (``PsbridgeKind``) is sorted into mailboxes, devices, errors and a
manifest. The scripts ship inside the wheel (``bridge/ps_scripts``, see setup.py) and are
found from a checkout (``ps_scripts/`` beside ``bridge/``) too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.clixml import iter_records, read_streams
from bridge.errors import (
    AuthenticationFailed,
    ConfigError,
    InputError,
    PowerShellNotFound,
    RemoteCommandError,
)

if TYPE_CHECKING:  # pragma: no cover
    from bridge.exchange import Progress
    from bridge.remote import Session

Row = dict[str, object]

EXPORT_SCRIPT = "Export-PsbridgeData.ps1"
EXO_SCRIPT = "Get-PsbridgeExoData.ps1"
SCRIPT_NAMES = (EXPORT_SCRIPT, EXO_SCRIPT)

# The environment variable psbridge reads a .pfx password from, and hands on to pwsh
# under the same name (the script reads it through -CertificatePasswordVariable).
CERTIFICATE_PASSWORD_VARIABLE = "PSBRIDGE_CERTIFICATE_PASSWORD"
# psbridge's own sign-in password (bridge.config.PASSWORD_VARIABLE, not imported: that
# would load pypsrp for --via pwsh). pwsh signs in with the app's certificate and never
# needs it, so it is kept out of pwsh's environment.
_SIGN_IN_PASSWORD_VARIABLE = "PSBRIDGE_PASSWORD"

# Every parameter of Get-PsbridgeExoData.ps1 that psbridge may pass (tests check these
# against the script's param() block). CertificatePassword, a SecureString, is declared
# too but only for people running the script by hand.
EXO_SCRIPT_PARAMETERS = frozenset(
    {
        "Organization",
        "AppId",
        "CertificateThumbprint",
        "CertificateFilePath",
        "CertificatePasswordVariable",
        "RecipientTypeDetails",
        "OutlookOnly",
    }
)
RECIPIENT_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")

PWSH_INSTALL_HINT = (
    "pwsh (PowerShell 7) was not found on PATH. Install it "
    "(Windows: winget install Microsoft.PowerShell; macOS: brew install powershell/tap/powershell; "
    "Linux: https://learn.microsoft.com/powershell/scripting/install/installing-powershell-on-linux),"
    " then in pwsh: Install-Module ExchangeOnlineManagement -Scope CurrentUser"
)

_CLIXML_HEADER = b"#< CLIXML"
# the script's Write-Progress status, as pwsh serializes it to stderr (a ProgressRecord's SD)
_PROGRESS = re.compile(rb"<SD>Mobile devices: mailbox (\d+) of (\d+)</SD>")
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
_ORGANIZATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)+$")
_AUTH_FAILURE = re.compile(
    r"AADSTS\d+|unauthorized_client|invalid_client|certificate.*(not found|expired|invalid)"
    r"|The role assigned to application .* isn't supported",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- locating


def scripts_dir() -> Path:
    """The folder holding the .ps1 files: inside the installed package, else the checkout's."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "ps_scripts", package_dir.parent / "ps_scripts"):
        if (candidate / EXO_SCRIPT).is_file():
            return candidate
    raise InputError(
        f"psbridge's PowerShell scripts were not found (looked in {package_dir / 'ps_scripts'} "
        f"and {package_dir.parent / 'ps_scripts'}): reinstall psbridge"
    )


def script_path(name: str) -> Path:
    """The path of one of psbridge's scripts, by file name (e.g. ``Get-PsbridgeExoData.ps1``)."""
    if name not in SCRIPT_NAMES:
        raise InputError(f"unknown psbridge script {name!r}: one of {', '.join(SCRIPT_NAMES)}")
    return scripts_dir() / name


def script_text(name: str) -> str:
    """A script's text, as sent to a jump host (a byte order mark, if any, removed)."""
    return script_path(name).read_text(encoding="utf-8-sig")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ExoApp:
    """The Exchange Online app registration the script connects as (app-only, certificate).

    Holds no secret: a .pfx password is passed separately and never stored here.
    """

    organization: str  # the tenant's initial domain, e.g. contoso.onmicrosoft.com
    app_id: str
    certificate_thumbprint: str | None = None
    certificate_file: str | None = None

    def __post_init__(self) -> None:
        if not self.organization or not _ORGANIZATION.match(self.organization):
            raise ConfigError(
                f"--tenant {self.organization!r} is not a domain name: use the tenant's "
                "initial domain, e.g. contoso.onmicrosoft.com"
            )
        if not self.app_id or not _GUID.match(self.app_id):
            raise ConfigError(
                f"--app-id {self.app_id!r} is not a GUID: use the app registration's "
                "Application (client) ID"
            )
        if (self.certificate_thumbprint is None) == (self.certificate_file is None):
            raise ConfigError("give exactly one of --certificate-thumbprint and --certificate-file")
        if self.certificate_thumbprint is not None and not _THUMBPRINT.match(
            self.certificate_thumbprint
        ):
            raise ConfigError(
                f"--certificate-thumbprint {self.certificate_thumbprint!r} is not 40 hex digits"
            )


def exo_parameters(
    app: ExoApp,
    *,
    recipient_types: Sequence[str] = ("UserMailbox",),
    all_devices: bool = True,
    password_variable: str | None = None,
) -> dict[str, object]:
    """The parameters for Get-PsbridgeExoData.ps1, by name. A switch is ``True`` when set."""
    unknown = [kind for kind in recipient_types if kind not in RECIPIENT_TYPES]
    if unknown or not recipient_types:
        raise ConfigError(
            f"unknown recipient type {', '.join(unknown) or '(none)'}: use "
            f"{', '.join(RECIPIENT_TYPES)}"
        )
    parameters: dict[str, object] = {"Organization": app.organization, "AppId": app.app_id}
    if app.certificate_thumbprint is not None:
        parameters["CertificateThumbprint"] = app.certificate_thumbprint
    else:
        parameters["CertificateFilePath"] = app.certificate_file
        if password_variable is not None:
            parameters["CertificatePasswordVariable"] = password_variable
    parameters["RecipientTypeDetails"] = list(recipient_types)
    if not all_devices:
        parameters["OutlookOnly"] = True
    return parameters


def pwsh_arguments(executable: str, script: Path, parameters: Mapping[str, object]) -> list[str]:
    """The argv for ``pwsh -File``: a switch is ``-Name`` alone; a list is comma-joined (the
    script splits it: -File hands every argument over as a string)."""
    argv = [
        executable,
        "-NoProfile",
        "-NonInteractive",
        "-OutputFormat",
        "xml",
        "-File",
        str(script),
    ]
    for name, value in parameters.items():
        if value is True:
            argv.append(f"-{name}")
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            argv += [f"-{name}", ",".join(str(item) for item in value)]
        else:
            argv += [f"-{name}", str(value)]
    return argv


# --------------------------------------------------------------------------- results


@dataclass
class ScriptCollection:
    """What the script emitted, sorted by its PsbridgeKind tag (same fields as
    :class:`bridge.exchange.Collection`)."""

    mailboxes: list[Row] = field(default_factory=list)
    devices: list[Row] = field(default_factory=list)
    errors: list[Row] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)


def sort_tagged(rows: Iterable[Row], *, source: str) -> ScriptCollection:
    """Sort the script's output rows by their ``PsbridgeKind`` tag, dropping the tag.

    The script's own error objects become Errors rows as they are; a row without a known
    tag means the script text and psbridge disagree, which is a bug worth a clear error.
    """
    collection = ScriptCollection()
    for row in rows:
        kind = row.pop("PsbridgeKind", None)
        if kind == "Mailbox":
            collection.mailboxes.append(row)
        elif kind == "MobileDeviceStatistics":
            collection.devices.append(row)
        elif kind == "Error":
            collection.errors.append(row)
        elif kind == "Manifest":
            collection.meta.update(row)
        else:
            raise RemoteCommandError(
                f"{source}: the script wrote an object psbridge does not know "
                f"(PsbridgeKind={kind!r}); is {EXO_SCRIPT} the one shipped with psbridge?"
            )
    collection.meta.setdefault("source", EXO_SCRIPT)
    return collection


def _error_row(source: str, category: str, message: str) -> Row:
    return {"Command": source, "Category": category, "Message": message, "When": datetime.now(UTC)}


def _raise_failure(source: str, message: str) -> None:
    if _AUTH_FAILURE.search(message):
        raise AuthenticationFailed(f"{source}: Exchange Online refused the app sign-in: {message}")
    raise RemoteCommandError(f"{source}: {message}")


# --------------------------------------------------------------------------- --via pwsh


def find_pwsh(executable: str | None = None) -> str:
    """The pwsh to run: the one given, else the first ``pwsh`` on PATH."""
    found = shutil.which(executable or "pwsh")
    if found is None:
        raise PowerShellNotFound(PWSH_INSTALL_HINT)
    return found


def _clixml_body(stream: bytes) -> bytes | None:
    """pwsh's CLIXML from its first ``#< CLIXML`` line on, or None when there is none.

    pwsh may start a second ``#< CLIXML`` line and ``<Objs>`` block when the script writes
    to several streams (PowerShell/PowerShell#12489): later header lines are dropped so
    the blocks read as one stream (a literal ``#<`` cannot occur inside the XML).
    """
    start = stream.find(_CLIXML_HEADER)
    if start < 0:
        return None
    rest = start + len(_CLIXML_HEADER)
    return stream[start:rest] + stream[rest:].replace(_CLIXML_HEADER, b"")


def _stderr_errors(stderr: bytes) -> list[tuple[str, str]]:
    """(category, message) for each error record pwsh wrote to stderr (CLIXML or text)."""
    body = _clixml_body(stderr)
    if body is None:
        text = stderr.decode("utf-8", errors="replace").strip()
        return [("NotSpecified", text)] if text else []
    return [
        (_category(record), str(record.get("Message") or ""))
        for record in read_streams(body).get("error", [])
    ]


def _category(record: Row) -> str:
    """The ErrorCategory name: serialized records carry it as a number, and as the text
    before the colon of CategoryInfo (``NotSpecified: (:) [], ...``)."""
    category = record.get("Category")
    if isinstance(category, str) and category:
        return category
    info = str(record.get("CategoryInfo") or "")
    return info.split(":", 1)[0].strip() or "NotSpecified"


def _stdout_rows(stdout: bytes) -> list[Row]:
    """The objects pwsh wrote to its success stream (marked ``S="Output"``)."""
    body = _clixml_body(stdout)
    if body is None or not body[len(_CLIXML_HEADER) :].strip():
        return []
    return list(iter_records(body))


class _ProgressReader:
    """Follows the script's progress records on pwsh's stderr while it runs."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.chunks: list[bytes] = []
        self._tail = b""
        self._done = 0
        self._started = False

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        if self.progress is None:
            return
        window = self._tail + chunk
        last_end = 0
        for match in _PROGRESS.finditer(window):
            done, total = int(match.group(1)), int(match.group(2))
            if not self._started:
                self.progress.start("Mobile devices", total)
                self._started = True
            if done > self._done:
                self.progress.advance(done - self._done)
                self._done = done
            last_end = match.end()
        # keep enough to complete a record cut between two reads, never a counted one
        self._tail = window[max(last_end, len(window) - 256) :]

    def finish(self) -> None:
        if self.progress is not None and self._started:
            self.progress.finish()


def _run_pwsh(
    argv: list[str], env: dict[str, str], progress: Progress | None
) -> tuple[int, bytes, bytes]:
    """Run pwsh, reading stdout and stderr together (no pipe can fill and stall it) and
    reporting the script's progress as it comes; pwsh is stopped if psbridge is."""
    reader = _ProgressReader(progress)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    errors = process.stderr.fileno()

    def follow_stderr() -> None:
        for chunk in iter(lambda: os.read(errors, 1 << 16), b""):
            reader.feed(chunk)

    thread = threading.Thread(target=follow_stderr, name="psbridge-pwsh-stderr", daemon=True)
    thread.start()
    try:
        stdout = process.stdout.read()
        thread.join()
        returncode = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        reader.finish()
    return returncode, stdout, b"".join(reader.chunks)


THUMBPRINT_OFF_WINDOWS = (
    "--certificate-thumbprint works only on Windows (Connect-ExchangeOnline reads the "
    "certificate from the Windows certificate store): here, give the app's certificate "
    "with --certificate-file (a .pfx, its password in PSBRIDGE_CERTIFICATE_PASSWORD)"
)


def thumbprint_supported() -> bool:
    """Whether Connect-ExchangeOnline -CertificateThumbprint can work in a local pwsh: it
    reads the Windows certificate store, so only on Windows."""
    return sys.platform == "win32"


def collect_via_pwsh(
    app: ExoApp,
    *,
    recipient_types: Sequence[str] = ("UserMailbox",),
    all_devices: bool = True,
    certificate_password: str | None = None,
    executable: str | None = None,
    progress: Progress | None = None,
) -> ScriptCollection:
    """Run Get-PsbridgeExoData.ps1 in a local pwsh and sort what it emitted.

    A .pfx password goes to pwsh in its environment, never on its command line. Error
    records pwsh writes while the script carries on become Errors rows; a script that
    fails (non-zero exit) raises with the error's message.
    """
    if app.certificate_thumbprint is not None and not thumbprint_supported():
        # before starting pwsh: Connect-ExchangeOnline would fail there after a long wait
        raise ConfigError(THUMBPRINT_OFF_WINDOWS)
    pwsh = find_pwsh(executable)
    # the environment pwsh needs (PATH, PSModulePath, HOME, proxies...) without
    # psbridge's secrets; the .pfx password is put back below only when it is used
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in (_SIGN_IN_PASSWORD_VARIABLE, CERTIFICATE_PASSWORD_VARIABLE)
    }
    password_variable = None
    if certificate_password:
        if app.certificate_file is None:
            raise ConfigError("a certificate password goes with --certificate-file only")
        env[CERTIFICATE_PASSWORD_VARIABLE] = certificate_password
        password_variable = CERTIFICATE_PASSWORD_VARIABLE
    parameters = exo_parameters(
        app,
        recipient_types=recipient_types,
        all_devices=all_devices,
        password_variable=password_variable,
    )
    argv = pwsh_arguments(pwsh, script_path(EXO_SCRIPT), parameters)
    source = f"pwsh {EXO_SCRIPT}"
    try:
        returncode, stdout, stderr = _run_pwsh(argv, env, progress)
    except OSError as exc:
        raise PowerShellNotFound(f"{pwsh} could not be started ({exc}). {PWSH_INSTALL_HINT}") from (
            exc
        )

    failures = _stderr_errors(stderr)
    if returncode != 0:
        message = "; ".join(text for _, text in failures if text) or (
            f"pwsh exited with code {returncode} and no error message"
        )
        _raise_failure(source, message)
    collection = sort_tagged(_stdout_rows(stdout), source=source)
    collection.errors.extend(_error_row(source, category, text) for category, text in failures)
    collection.meta.setdefault("via", "pwsh")
    return collection


# --------------------------------------------------------------------------- --via jumphost


def collect_via_jumphost(
    session: Session,
    app: ExoApp,
    *,
    recipient_types: Sequence[str] = ("UserMailbox",),
    all_devices: bool = True,
) -> ScriptCollection:
    """Run Get-PsbridgeExoData.ps1 on a Windows jump host (configuration Microsoft.PowerShell).

    The script text comes from ps_scripts/ and every value goes as a parameter.
    Non-terminating error records become Errors rows; a terminating one raises.
    """
    parameters = exo_parameters(app, recipient_types=recipient_types, all_devices=all_devices)
    source = f"jump host {EXO_SCRIPT}"
    try:
        result = session.run_script(script_text(EXO_SCRIPT), parameters)
    except RemoteCommandError as exc:
        _raise_failure(source, str(exc).removeprefix("script: "))
        raise  # pragma: no cover  # _raise_failure always raises
    collection = sort_tagged(result.rows, source=source)
    collection.errors.extend(
        _error_row(source, record.category, record.message) for record in result.errors
    )
    collection.meta.setdefault("via", "jumphost")
    return collection
