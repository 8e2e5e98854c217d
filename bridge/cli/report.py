"""``psbridge mobile`` and ``psbridge demo``: options to a report source, then
bridge.jobs.mobile_report (demo_report) does the work and the figures are printed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge import history, jobs
from bridge.cli import terminal
from bridge.cli.options import (
    CollectionValues,
    ConnectionValues,
    ViaValues,
    collection_options,
    connection_options,
    history_options,
    jumphost_connection,
    report_options,
    report_output,
    settings_from_options,
    via_options,
)
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.frames import ReportOptions


def _offline_source(from_clixml: tuple[Path, ...], connection: ConnectionValues,
                    via: ViaValues) -> jobs.ExportFiles:
    if connection.get("server") or connection.get("profile"):
        raise click.UsageError("--from-clixml reads files: leave out --server/--profile.")
    if via["via"] != "direct":
        raise click.UsageError("--from-clixml reads files: leave out --via.")
    source = click.get_current_context().get_parameter_source
    if any(source(name) is not click.core.ParameterSource.DEFAULT
           for name in ("strategy", "resume", "run_dir")):
        raise click.UsageError(
            "--from-clixml reads files: --strategy, --resume and --run-dir are for "
            "collecting from a server; leave them out.")
    return jobs.ExportFiles(from_clixml)


def _live_source(via: ViaValues, connection: ConnectionValues,
                 collection: CollectionValues) -> jobs.ReportSource:
    """The source --via names: the Exchange endpoint, a jump host or a local pwsh."""
    from bridge import scripts

    if via["via"] == "direct":
        app_values = (via["tenant"], via["app_id"], via["certificate_thumbprint"],
                      via["certificate_file"])
        if any(value is not None for value in app_values):
            raise click.UsageError("--tenant/--app-id/--certificate-* go with --via jumphost "
                                   "or --via pwsh.")
        settings = settings_from_options(connection)
        terminal.quiet_library_logs()
        return jobs.ExchangeServer(settings, strategy=collection["strategy"],
                                   resume=collection["resume"], run_dir=collection["run_dir"],
                                   prompt=terminal.password_prompt())
    if collection["resume"]:
        raise click.UsageError(f"--resume works with --via direct; --via {via['via']} runs the "
                               "script in one go.")
    if not via["tenant"] or not via["app_id"]:
        raise click.UsageError(f"--via {via['via']} needs --tenant and --app-id (and "
                               "--certificate-thumbprint or --certificate-file).")
    app = scripts.ExoApp(via["tenant"], via["app_id"], via["certificate_thumbprint"],
                         via["certificate_file"])
    certificate_password = os.environ.get(scripts.CERTIFICATE_PASSWORD_VARIABLE) or None
    if via["via"] == "pwsh":
        if connection.get("server") or connection.get("profile"):
            raise click.UsageError("--via pwsh runs PowerShell on this machine: leave out "
                                   "--server/--profile.")
        return jobs.LocalPwsh(app, certificate_password)
    if certificate_password:
        raise ConfigError("--via jumphost cannot pass a .pfx password: import the "
                          "certificate into the jump host's store and use "
                          "--certificate-thumbprint.")
    settings = settings_from_options(jumphost_connection(connection))
    terminal.quiet_library_logs()
    return jobs.JumpHost(settings, app, prompt=terminal.password_prompt())


@click.command("mobile")
@click.option("--from-clixml", "from_clixml", multiple=True, metavar="DIR_OR_FILE",
              type=click.Path(path_type=Path),
              help="Build the report offline from Export-Clixml files of Get-Mailbox and "
                   "Get-MobileDeviceStatistics (a folder or files; repeatable).")
@report_options
@connection_options
@collection_options
@via_options
@history_options
def mobile_command(from_clixml: tuple[Path, ...], output: Path | None,
                   output_format: str | None, open_report: bool, as_of: datetime | None,
                   cleanup_script: Path | None,
                   report_options: ReportOptions, connection: ConnectionValues,
                   collection: CollectionValues, via: ViaValues,
                   history_settings: history.HistorySettings) -> None:
    """The mobile device report: which devices sync each mailbox, with what, how recently.

    Live: psbridge mobile --server mail.contoso.com --user admin@contoso.com -o report.xlsx

    Offline: psbridge mobile --from-clixml .\\export -o report.xlsx
    """
    output, output_format = report_output(output, output_format, "mobile-devices")
    quiet = bool(connection.get("quiet"))
    if from_clixml:
        source: jobs.ReportSource = _offline_source(from_clixml, connection, via)
        progress = None
    else:
        source = _live_source(via, connection, collection)
        # a jump host runs the script in one go: nothing to count on the way
        progress = None if via["via"] == "jumphost" else terminal.progress_for(quiet)
    run = jobs.mobile_report(
        source, report_options, [jobs.ReportOutput(output, output_format)], history_settings,
        progress, as_of=as_of.replace(tzinfo=UTC) if as_of else None,
        notify=terminal.note_printer(quiet), command_line=terminal.command_line(),
        cleanup_script=cleanup_script)
    terminal.finish_report(run, open_report)


@click.command("demo")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("psbridge-demo.xlsx"), show_default=True, help="Workbook to write.")
@click.option("--mailboxes", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Size of the sandbox organisation.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the sandbox organisation.")
@click.option("--open", "open_report", is_flag=True, help="Open the workbook when written.")
@history_options
def demo_command(output: Path, mailboxes: int, seed: int, open_report: bool,
                 history_settings: history.HistorySettings) -> None:
    """Try psbridge: the report of a sandbox Exchange organisation, collected live.

    Starts the built-in Exchange sandbox on 127.0.0.1, connects to it over WSMan/PSRP
    with NTLM like to a real server, runs the mobile report (all devices) and writes the
    workbook. The first demo also records the organisation's last six weeks in history.
    """
    run = jobs.demo_report(output, mailboxes, seed, history_settings,
                           notify=terminal.note_printer(), command_line=terminal.command_line())
    terminal.finish_report(run, open_report)
