"""The report jobs: one library call from a source to every output file.

:func:`mobile_report` collects from a :class:`ReportSource` (in bridge.report_sources,
re-exported here: an Exchange server over WSMan, a jump host, a local pwsh,
Export-Clixml files, the sandbox, and Exchange Online in bridge.exo), builds the report,
records history and writes every output; it returns a :class:`ReportRun` with all a
caller shows. A new kind of source is one more class with a ``collect`` method, not an
edit here. :func:`run_cmdlet_to_file` does the same for one cmdlet (``psbridge run``).
The command line only parses options, calls these and prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.errors import BridgeError, ExitCode, OutputError
from bridge.report_sources import (
    Collected,
    CollectRequest,
    ExchangeServer,
    ExportFiles,
    JumpHost,
    LocalPwsh,
    Note,
    Notify,
    ReportSource,
    SandboxOrganisation,
    _ignore,
    _password,
    live_collected,
    resumable,
)

if TYPE_CHECKING:
    from bridge.commands import Command, CommandResult, ErrorRecord
    from bridge.exchange import Progress
    from bridge.frames import Figures, Report, ReportOptions
    from bridge.history import HistorySettings, HistoryView
    from bridge.workbook import RunDetails

#: the jobs' public API, with the sources it re-exports from bridge.report_sources
__all__ = [
    "check_table_output",
    "CmdletRun",
    "Collected",
    "CollectRequest",
    "demo_report",
    "ExchangeServer",
    "ExportFiles",
    "JumpHost",
    "LIBRARY_CALL",
    "live_collected",
    "LocalPwsh",
    "mobile_report",
    "Note",
    "Notify",
    "record_history",
    "REPORT_FORMATS",
    "ReportOutput",
    "ReportRun",
    "ReportSource",
    "resumable",
    "run_cmdlet_to_file",
    "SandboxOrganisation",
    "TABLE_SUFFIXES",
    "write_cmdlet_output",
    "write_report_output",
]

#: What a report can be written as: the workbook, or the Devices table alone.
REPORT_FORMATS = ("xlsx", "csv", "parquet", "json")
#: What ``psbridge run`` writes a cmdlet's output as, by extension.
TABLE_SUFFIXES = (".xlsx", ".csv", ".parquet", ".json")
LIBRARY_CALL = "(library call: bridge.jobs)"

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
    frames.return_memory_promptly()
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
    from bridge import exchange, remote
    from bridge import output as outputs

    check_table_output(output)
    outputs.check_writable(output)
    with remote.Session(server.settings,
                        _password(server.settings, server.password, server.prompt)) as session:
        command, result = exchange.run_cmdlet(session, cmdlet, dict(parameters))
    return write_cmdlet_output(command, result, output, notify=notify)


def write_cmdlet_output(command: Command, result: CommandResult, output: Path, *,
                        notify: Notify | None = None) -> CmdletRun:
    """One cmdlet's rows to ``output``, for any source: the server's warnings told to
    ``notify`` first; .xlsx gets an Errors sheet when there were error records."""
    from bridge import clixml, workbook
    from bridge import output as outputs

    warnings = tuple(dict.fromkeys(result.warnings))
    for text in warnings:
        (notify or _ignore)(Note("warning", text))
    frame = clixml.records_to_frame(result.rows)
    if output.suffix.lower() == ".xlsx":
        tables = {command.name: frame}
        if result.errors:
            tables["Errors"] = clixml.records_to_frame(
                [{"Category": e.kind, "Message": e.message, "Target": e.target,
                  "ErrorId": e.error_id} for e in result.errors])  # fmt: skip
        workbook.write_tables(output, tables)
    else:
        outputs.write_frame(output, frame)
    return CmdletRun(command, len(result.rows), output, warnings, tuple(result.errors))
