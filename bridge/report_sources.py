"""Where a report's data comes from: the sources a job collects from (an Exchange
server over WSMan, a jump host, a local pwsh, Export-Clixml files, the sandbox), what
they hand the job (:class:`Collected`), and the notes a job tells its caller.

:mod:`bridge.jobs` re-exports every name here; a new kind of source (Exchange Online's
REST endpoint, :mod:`bridge.exo.job`) is one more class with a ``collect`` method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import pandas as pd

    from bridge.checkpoint import Checkpoint
    from bridge.eas import Environment
    from bridge.exchange import Collection, Progress
    from bridge.frames import ReportOptions
    from bridge.remote import ConnectionSettings
    from bridge.scripts import ExoApp, ScriptCollection

Row = dict[str, object]


# -- what a job tells its caller while it runs ---------------------------------------------

#: status: a step of the run (the demo's lines on stdout); info: what runs now (quiet
#: runs leave it out); warning: something the user must see; saved: a resumable run
#: failed, and its progress is kept in the folder the note names.
NoteKind = Literal["status", "info", "warning", "saved"]


@dataclass(frozen=True)
class Note:
    """A line for the user, said while the job runs (and kept in :attr:`ReportRun.notes`)."""

    kind: NoteKind
    text: str


Notify = Callable[[Note], None]


def _ignore(_note: Note) -> None:
    """The default listener: notes are still kept in the run's result."""


# -- sources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectRequest:
    """What a source is asked for: which mailboxes and devices, and whom to tell."""

    options: ReportOptions
    #: the report's first output; a resumable run keeps its folder beside it by default
    output: Path
    progress: Progress | None = None
    notify: Notify = _ignore

    @property
    def device_filter(self) -> str | None:
        """The OPATH filter for Get-MobileDevice (None: every device)."""
        if self.options.all_devices:
            return None
        return f"DeviceModel -eq '{self.options.device_model}'"


@dataclass
class Collected:
    """Rows from a source, and what the Run sheet and the history say about where from."""

    #: rows, or a frame of them (an export's files are read straight into frames)
    mailboxes: list[Row] | pd.DataFrame
    devices: list[Row] | pd.DataFrame
    errors: list[Row]
    #: the organisation's name as the source knows it (Get-OrganizationConfig, a manifest)
    organisation: str | None
    #: ... and what to call it when neither that nor the mailboxes' domain tells
    organisation_fallback: str
    server: str
    endpoint: str
    source: str
    strategy: str
    #: the source as history records it (live, clixml, demo) and its server there
    history_source: str
    history_server: str
    #: appended to the organisation in history, so a sandbox never shares a real history
    history_suffix: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: when the data was taken, if not now (an export's date, the sandbox's clock)
    clock: datetime | None = None
    warnings: list[str] = field(default_factory=list)
    #: Exchange Online or on-premises: EAS clients below 16.1 are blocked, or would be
    environment: Environment = "on-premises"


class ReportSource(Protocol):
    """Where a report's rows come from. ``collect`` is a context manager: a source that
    saves progress keeps it when the body (writing the report) fails."""

    def collect(self, request: CollectRequest) -> AbstractContextManager[Collected]:
        """Collect mailboxes, devices and errors for ``request``."""
        ...


def _password(settings: ConnectionSettings, password: str | None,
              prompt: Callable[[str], str] | None) -> str | None:
    from bridge import config

    if password is not None:
        return password
    return config.resolve_password(settings, prompt=prompt)


def _meta_text(meta: Mapping[str, object], key: str, default: str = "") -> str:
    value = meta.get(key)
    return default if value is None else str(value)


def live_collected(collection: Collection | ScriptCollection, *,
                   source: str = "live (WSMan/PSRP)") -> Collected:
    """Rows and Run-sheet facts of a run that talked to Exchange (exchange.collect's or a
    script's meta), for any source that collects live."""
    meta = collection.meta
    server = _meta_text(meta, "server")
    warnings = meta.get("warnings")
    return Collected(
        mailboxes=collection.mailboxes, devices=collection.devices, errors=collection.errors,
        organisation=_meta_text(meta, "organization") or None, organisation_fallback=server,
        server=server.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0],
        endpoint=f"{server} ({_meta_text(meta, 'configuration')})",
        source=source, strategy=_meta_text(meta, "strategy"),
        history_source="live", history_server=server,
        extra={
            "Collected as": str(meta.get("user") or "the current Windows/Kerberos identity"),
            "Commands sent": _meta_text(meta, "commands"),
            "Retries / reconnects": f"{meta.get('retries', 0)} / {meta.get('reconnects', 0)}",
            "Concurrency": _meta_text(meta, "concurrency"),
            "Server-side device filter": str(meta.get("device_filter") or "none"),
            "Resumed": "yes" if meta.get("resumed") else "no",
        },
        warnings=[str(text) for text in warnings] if isinstance(warnings, list) else [],
    )  # fmt: skip


@dataclass(frozen=True)
class ExchangeServer:
    """An Exchange endpoint over WSMan/PSRP (on-premises /PowerShell, or any endpoint the
    settings name), collected with a resumable run folder.

    The password: ``password``, else PSBRIDGE_PASSWORD, the keyring, then ``prompt``.
    """

    settings: ConnectionSettings
    strategy: str = "bulk"
    resume: bool = False
    #: where progress is saved (default: beside the first output, OUTPUT.psbridge-run)
    run_dir: Path | None = None
    password: str | None = field(default=None, repr=False)
    prompt: Callable[[str], str] | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Connect and collect; the run folder goes only when the caller's body succeeds."""
        from bridge import checkpoint as checkpoints
        from bridge import exchange, remote

        run_dir = self.run_dir or checkpoints.default_run_dir(request.output)
        recipient_types = request.options.recipient_types
        run_key = {
            "server": self.settings.url,
            "configuration": self.settings.configuration,
            "user": self.settings.username,
            "strategy": self.strategy,
            "recipient_types": list(recipient_types),
            "device_filter": request.device_filter,
        }
        # the run folder is checked before the password prompt: a forgotten resume is
        # reported at once
        with resumable(run_dir, run_key, self.resume, request) as store:
            password = _password(self.settings, self.password, self.prompt)
            with remote.Session(self.settings, password) as session:
                result = exchange.collect(
                    session, strategy=self.strategy, recipient_types=recipient_types,
                    device_filter=request.device_filter, checkpoint=store,
                    progress=request.progress, concurrency=session.settings.concurrency,
                )  # fmt: skip
            yield live_collected(result)


@contextlib.contextmanager
def resumable(run_dir: Path, run_key: Mapping[str, object], resume: bool,
              request: CollectRequest) -> Iterator[Checkpoint]:
    """A live collection's run folder, opened (or resumed) now; deleted when the body
    succeeds; kept, and the user told, when it fails with progress to resume from."""
    from bridge import checkpoint as checkpoints

    store = checkpoints.Checkpoint.open(run_dir, dict(run_key), resume=resume)
    try:
        yield store
    except BaseException:
        if request.progress is not None:  # end the bar's line and show the cursor
            request.progress.finish()
        if store.has_progress():
            store.close()
            request.notify(Note("saved", str(run_dir)))
        else:
            store.discard()  # nothing to resume: do not leave a folder that blocks a rerun
        raise
    store.discard()


def _script_collected(result: ScriptCollection, via: str, started: datetime) -> Collected:
    from bridge import scripts

    result.meta.update(strategy=f"script via {via} ({scripts.EXO_SCRIPT})",
                       seconds=(datetime.now(UTC) - started).total_seconds())
    # the script connects to Exchange Online (Connect-ExchangeOnline)
    return replace(live_collected(result), environment="online")


@dataclass(frozen=True)
class JumpHost:
    """A Windows host's full-language endpoint (WinRM, Microsoft.PowerShell) running
    psbridge's Get-PsbridgeExoData.ps1 against Exchange Online as ``app``."""

    settings: ConnectionSettings
    app: ExoApp
    password: str | None = field(default=None, repr=False)
    prompt: Callable[[str], str] | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Run the script on the jump host."""
        from bridge import remote, scripts

        started = datetime.now(UTC)
        session = remote.Session(self.settings,
                                 _password(self.settings, self.password, self.prompt))
        request.notify(Note("info", f"Running {scripts.EXO_SCRIPT} on {self.settings.url} "
                                    f"for {self.app.organization} ..."))
        with session:
            result = scripts.collect_via_jumphost(
                session, self.app, recipient_types=request.options.recipient_types,
                all_devices=request.options.all_devices)
        result.meta.update(server=self.settings.url, configuration=self.settings.configuration,
                           user=self.settings.username)
        yield _script_collected(result, "jumphost", started)


@dataclass(frozen=True)
class LocalPwsh:
    """PowerShell 7 on this machine running Get-PsbridgeExoData.ps1 as ``app``; a .pfx
    password goes to pwsh in its environment only."""

    app: ExoApp
    certificate_password: str | None = field(default=None, repr=False)
    executable: str | None = None

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Run the script in a local pwsh."""
        from bridge import scripts

        started = datetime.now(UTC)
        request.notify(Note("info", f"Running {scripts.EXO_SCRIPT} in pwsh for "
                                    f"{self.app.organization} ..."))
        result = scripts.collect_via_pwsh(
            self.app, recipient_types=request.options.recipient_types,
            all_devices=request.options.all_devices,
            certificate_password=self.certificate_password, executable=self.executable,
            progress=request.progress)
        result.meta.update(server="local pwsh", configuration="pwsh -File")
        yield _script_collected(result, "pwsh", started)


@dataclass(frozen=True)
class ExportFiles:
    """Export-Clixml files of Get-Mailbox and Get-MobileDeviceStatistics (files or
    folders), e.g. from ps_scripts' Export-PsbridgeData.ps1: the offline report."""

    paths: tuple[Path, ...]

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Read the files (and the folder's manifest)."""
        from bridge import eas, frames

        export = frames.load_exports(list(self.paths))
        cmdlets = export.manifest.get("cmdlets")
        files = export.mailbox_files + export.device_files
        server = str(export.manifest.get("computer") or "(offline export)")
        origin = export.manifest.get("source")
        yield Collected(
            mailboxes=export.mailboxes, devices=export.devices, errors=export.errors,
            organisation=export.organisation, organisation_fallback="offline export",
            server=server, endpoint=", ".join(str(path) for path in files),
            source="Export-Clixml files" + (f" ({origin})" if origin else ""),
            strategy="offline", history_source="clixml", history_server=server,
            clock=export.created,
            environment=eas.environment_for(
                "clixml", cmdlets if isinstance(cmdlets, list) else (),
                export.device_identities),
        )  # fmt: skip


@dataclass(frozen=True)
class SandboxOrganisation:
    """psbridge's emulated Exchange endpoint on 127.0.0.1, collected over real WSMan/NTLM.

    Days since the last sync count from the sandbox's own clock, so figures are stable.
    """

    mailboxes: int = 200
    seed: int = 1
    #: the organisation to serve (a sandbox.organisation.Organisation; default: a new one
    #: of ``mailboxes`` and ``seed``)
    organisation: object = None

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Start the sandbox, collect from it in bulk, stop it."""
        from bridge import config, exchange, remote
        from bridge.sandbox import Sandbox

        # the report's story is REST -> Outlook: a demo organisation reports Exchange
        # Online's ClientTypes (demo_organisation's does; an on-premises one reports EAS)
        with Sandbox(mailboxes=self.mailboxes, seed=self.seed, online_client_types=True,
                     organisation=self.organisation) as sandbox:
            settings = config.build_settings({
                "server": sandbox.host, "port": sandbox.port, "https": False, "auth": "ntlm",
                "user": sandbox.username})  # fmt: skip
            request.notify(Note("status", f"Sandbox: {self.mailboxes} mailboxes (seed "
                                          f"{self.seed}) at {sandbox.url}; connecting over "
                                          "WSMan/PSRP with NTLM ..."))
            with remote.Session(settings, sandbox.password) as session:
                result = exchange.collect(session, strategy="bulk",
                                          recipient_types=request.options.recipient_types,
                                          device_filter=request.device_filter)
            request.notify(Note(
                "status", f"Collected {len(result.mailboxes)} mailboxes and "
                          f"{len(result.devices)} devices in {result.meta.get('seconds', 0):.1f} s "
                          f"({result.meta.get('commands', 0)} commands, bulk strategy)."))
            collected = live_collected(result)
            label = f"{self.mailboxes} mailboxes, seed {self.seed}"
            yield replace(
                collected, organisation_fallback=sandbox.host,
                source=f"psbridge demo: sandbox organisation ({label}) over WSMan/PSRP, "
                       "with Exchange Online's ClientTypes (REST, Outlook)",
                history_source="demo", history_server=collected.server,
                history_suffix=f" (psbridge sandbox, {label})",
                clock=sandbox.organisation.reference_time)
