"""The report jobs: one library call from a source to every output file.

:func:`mobile_report` collects from a :class:`ReportSource` (an Exchange server over
WSMan, a jump host, a local pwsh, Export-Clixml files, the sandbox), builds the report,
records history and writes every output; it returns a :class:`ReportRun` with all a
caller shows. A new kind of source is one more class with a ``collect`` method, not an
edit here. :func:`run_cmdlet_to_file` does the same for one cmdlet (``psbridge run``).
The command line only parses options, calls these and prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from bridge import __version__
from bridge.errors import BridgeError, ExitCode, OutputError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import pandas as pd

    from bridge.commands import Command, ErrorRecord
    from bridge.eas import Environment
    from bridge.exchange import Collection, Progress
    from bridge.frames import Figures, Report, ReportOptions
    from bridge.history import HistorySettings, HistoryView
    from bridge.remote import ConnectionSettings
    from bridge.scripts import ExoApp, ScriptCollection
    from bridge.workbook import RunDetails

Row = dict[str, object]

#: What a report can be written as: the workbook, or the Devices table alone.
REPORT_FORMATS = ("xlsx", "csv", "parquet", "json")
#: What ``psbridge run`` writes a cmdlet's output as, by extension.
TABLE_SUFFIXES = (".xlsx", ".csv", ".parquet", ".json")
LIBRARY_CALL = "(library call: bridge.jobs)"

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
        store = checkpoints.Checkpoint.open(run_dir, run_key, resume=self.resume)
        progress = request.progress
        try:
            password = _password(self.settings, self.password, self.prompt)
            with remote.Session(self.settings, password) as session:
                result = exchange.collect(
                    session, strategy=self.strategy, recipient_types=recipient_types,
                    device_filter=request.device_filter, checkpoint=store, progress=progress,
                    concurrency=session.settings.concurrency,
                )  # fmt: skip
            yield live_collected(result)
        except BaseException:
            if progress is not None:  # end the bar's line and show the terminal's cursor
                progress.finish()
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


# -- the mobile report -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReportOutput:
    """A file to write: the workbook (xlsx) or the Devices table (csv, parquet, json)."""

    path: Path
    format: str

    def __post_init__(self) -> None:
        if self.format not in REPORT_FORMATS:
            raise OutputError(f"cannot write {self.path}: unknown output type "
                              f"'{self.format}'; use .xlsx, .csv, .parquet or .json.")

    @classmethod
    def for_path(cls, path: Path | str) -> ReportOutput:
        """The output its extension names."""
        target = Path(path)
        suffix = target.suffix.lower().lstrip(".")
        if suffix not in REPORT_FORMATS:
            raise OutputError(f"cannot write {target}: unknown output type '{target.suffix}'; "
                              "use .xlsx, .csv, .parquet or .json.")
        return cls(target, suffix)


@dataclass(frozen=True)
class ReportRun:
    """What a report job did: the report, the Run sheet's facts, the files written, the
    history view (None: off or not recorded) and every note said on the way."""

    report: Report
    run: RunDetails
    outputs: tuple[ReportOutput, ...]
    history: HistoryView | None
    notes: tuple[Note, ...]
    #: the cleanup script written, and how many partnerships it removes
    cleanup_script: tuple[Path, int] | None = None

    @property
    def figures(self) -> Figures:
        """The key figures (the Summary sheet's)."""
        return self.report.figures

    @property
    def exit_code(self) -> ExitCode:
        """PARTIAL when mailboxes or commands failed (the Errors sheet lists them), else OK."""
        return ExitCode.PARTIAL if self.report.figures.errors else ExitCode.OK


def record_history(settings: HistorySettings | None, report: Report, *, organisation: str,
                   server: str = "", source: str = "", finished: datetime | None = None,
                   notify: Notify = _ignore) -> HistoryView | None:
    """Record the run and return its history view; when history fails, a warning note and
    None (the report is still written, without the Changes and Trend sheets)."""
    from bridge import history

    if settings is None:
        return None
    try:
        return history.record_and_view(settings, report, organisation=organisation,
                                       server=server, source=source, finished=finished,
                                       psbridge_version=__version__)
    except BridgeError as exc:
        notify(Note("warning", f"history not recorded: {exc} The report is written without "
                               "the Changes and Trend sheets."))
        return None


def write_report_output(target: ReportOutput, report: Report, run: RunDetails,
                        view: HistoryView | None) -> None:
    """Write one output: the workbook, or the Devices table as CSV/Parquet/JSON."""
    from bridge import output as outputs
    from bridge import workbook

    if target.format == "xlsx":
        workbook.write_report(target.path, report, run, history=view)
    else:
        outputs.write_frame(target.path, report.devices_sheet())


def mobile_report(
    source: ReportSource,
    options: ReportOptions | None = None,
    outputs: Sequence[ReportOutput | Path | str] = (Path("mobile-devices.xlsx"),),
    history_settings: HistorySettings | None = None,
    progress: Progress | None = None,
    *,
    as_of: datetime | None = None,
    notify: Notify | None = None,
    command_line: str = LIBRARY_CALL,
    cleanup_script: Path | None = None,
) -> ReportRun:
    """The mobile device report from ``source`` to every file in ``outputs``.

    ``as_of`` (UTC) is when days since the last sync count from (default: when the data
    was taken). History is off unless ``history_settings`` names a file.
    ``cleanup_script``: after the outputs, also write the PowerShell script that removes
    the stale partnerships (``options.cleanup_days``, else the first stale threshold).
    Raises BridgeError subclasses; a run with failed mailboxes returns with exit_code
    PARTIAL.
    """
    from bridge import cleanup, frames, workbook
    from bridge import output as output_files

    started = datetime.now(UTC)
    targets = tuple(target if isinstance(target, ReportOutput) else ReportOutput.for_path(target)
                    for target in outputs)
    if not targets:
        raise OutputError("no output given: name at least one report file.")
    for target in targets:  # say so before collecting, not after
        output_files.check_writable(target.path)
    if cleanup_script is not None:
        output_files.check_writable(cleanup_script)
    notes: list[Note] = []

    def say(note: Note) -> None:
        notes.append(note)
        if notify is not None:
            notify(note)

    options = options or frames.ReportOptions()
    request = CollectRequest(options, targets[0].path, progress, say)
    with source.collect(request) as collected:
        for text in collected.warnings:
            say(Note("warning", text))
        if cleanup_script is not None and options.cleanup_days is None:
            options = replace(options, cleanup_days=options.stale_after)
        report = frames.build_report(collected.mailboxes, collected.devices, collected.errors,
                                     options=options,
                                     run_started=as_of or collected.clock or started,
                                     environment=collected.environment)
        organisation = collected.organisation or frames.organisation_name(
            report.mailboxes, collected.organisation_fallback)
        run = workbook.RunDetails(
            command_line=command_line, organisation=organisation, server=collected.server,
            endpoint=collected.endpoint, source=collected.source, strategy=collected.strategy,
            started=started, finished=datetime.now(UTC), version=__version__,
            extra=collected.extra)  # fmt: skip
        view = record_history(history_settings, report,
                              organisation=organisation + collected.history_suffix,
                              server=collected.history_server, source=collected.history_source,
                              finished=run.finished, notify=say)
        for target in targets:
            write_report_output(target, report, run, view)
        written = None
        if cleanup_script is not None:
            written = (cleanup_script, cleanup.write_for_report(
                cleanup_script, report, organisation=organisation,
                report_name=str(targets[0].path.resolve()), written=datetime.now(UTC),
                psbridge_version=__version__))
    return ReportRun(report, run, targets, view, tuple(notes), written)


def demo_report(output: Path, mailboxes: int = 200, seed: int = 1,
                history_settings: HistorySettings | None = None, *,
                notify: Notify | None = None, command_line: str = LIBRARY_CALL) -> ReportRun:
    """``psbridge demo``: the sandbox organisation's report, collected live, as a workbook."""
    if output.suffix.lower() != ".xlsx":
        raise OutputError(f"cannot write {output}: the demo writes a workbook; use a name "
                          "ending in .xlsx.")
    from bridge import demo, frames
    from bridge import output as output_files

    output_files.check_writable(output)  # before the story is recorded, not after
    # every device, and a story: the weeks before today go to the demo's history first
    # (once), so the first workbook already has changes and a trend
    options = frames.ReportOptions(all_devices=True)
    today, lines = demo.today_for_demo(history_settings, mailboxes=mailboxes, seed=seed,
                                       options=options, psbridge_version=__version__)
    for kind, text in lines:
        (notify or _ignore)(Note(kind, text))
        if kind == "warning":  # said once: the demo goes on without history
            history_settings = None
    return mobile_report(SandboxOrganisation(mailboxes, seed, today), options,
                         [ReportOutput(output, "xlsx")], history_settings, notify=notify,
                         command_line=command_line)


# -- one cmdlet to a file --------------------------------------------------------------------


@dataclass(frozen=True)
class CmdletRun:
    """What ``run_cmdlet_to_file`` did: the command as run (maybe with ResultSize
    Unlimited added), rows written, and the server's warnings and error records."""

    command: Command
    rows: int
    output: Path
    warnings: tuple[str, ...]
    errors: tuple[ErrorRecord, ...]

    @property
    def exit_code(self) -> ExitCode:
        """PARTIAL when the server sent error records, else OK."""
        return ExitCode.PARTIAL if self.errors else ExitCode.OK


def check_table_output(output: Path) -> None:
    """Raise OutputError unless ``output`` ends in a type run_cmdlet_to_file writes."""
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise OutputError(f"cannot write {output}: unknown output type '{output.suffix}'; "
                          "use .xlsx, .csv, .parquet or .json.")


def run_cmdlet_to_file(server: ExchangeServer, cmdlet: str, parameters: Mapping[str, object],
                       output: Path, *, notify: Notify = _ignore) -> CmdletRun:
    """Run one cmdlet on ``server`` and write its rows to ``output`` (.xlsx with an Errors
    sheet when the server sent error records, or .csv/.parquet/.json). The server's
    warnings are told to ``notify`` before the file is written."""
    from bridge import clixml, exchange, remote, workbook
    from bridge import output as outputs

    check_table_output(output)
    outputs.check_writable(output)
    with remote.Session(server.settings,
                        _password(server.settings, server.password, server.prompt)) as session:
        command, result = exchange.run_cmdlet(session, cmdlet, dict(parameters))
    warnings = tuple(dict.fromkeys(result.warnings))
    for text in warnings:
        notify(Note("warning", text))
    frame = clixml.records_to_frame(result.rows)
    if output.suffix.lower() == ".xlsx":
        tables = {cmdlet: frame}
        if result.errors:
            tables["Errors"] = clixml.records_to_frame(
                [{"Category": e.kind, "Message": e.message, "Target": e.target,
                  "ErrorId": e.error_id} for e in result.errors])  # fmt: skip
        workbook.write_tables(output, tables)
    else:
        outputs.write_frame(output, frame)
    return CmdletRun(command, len(result.rows), output, warnings, tuple(result.errors))
