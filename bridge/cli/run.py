"""``psbridge run``: one Exchange cmdlet's output to a table (bridge.jobs.run_cmdlet_to_file)."""

from __future__ import annotations

from pathlib import Path

import click

from bridge import jobs
from bridge.cli import terminal
from bridge.cli.options import ConnectionValues, connection_options, settings_from_options


@click.command("run")
@click.argument("cmdlet")
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME[=VALUE]",
              help="A parameter (repeatable): -p ResultSize=Unlimited, -p Filter=\"...\", "
                   "-p Archive (a switch). Numbers, true/false and comma lists are typed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .xlsx, .csv, .parquet or .json.")
@connection_options
def run_command(cmdlet: str, parameters: tuple[str, ...], output: Path,
                connection: ConnectionValues) -> None:
    """Run one Exchange cmdlet and write its output as a table.

    \b
    Example:
      psbridge run Get-CASMailbox -p ResultSize=Unlimited -o cas.xlsx --server mail
    """  # fmt: skip
    from bridge import commands

    if not commands.is_cmdlet_name(cmdlet):
        raise click.BadParameter(
            f"{cmdlet!r} is not a cmdlet name like Get-Mailbox (the Exchange endpoint runs "
            "cmdlets with parameters only, no script text or pipelines)", param_hint="CMDLET")
    typed: dict[str, object] = {}
    for spec in parameters:
        try:
            name, value = commands.parse_parameter(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-p/--parameter") from exc
        typed[name] = value
    jobs.check_table_output(output)
    server = jobs.ExchangeServer(settings_from_options(connection),
                                 prompt=terminal.password_prompt())
    terminal.quiet_library_logs()
    result = jobs.run_cmdlet_to_file(server, cmdlet, typed, output,
                                     notify=terminal.echo_note)
    click.echo(f"{commands.pipeline_text(result.command)}: {result.rows} row(s) -> {output}")
    if result.errors:
        first = result.errors[0]
        click.echo(f"Error: {len(result.errors)} error record(s) from the server; first: "
                   f"{first.kind}: {first.message}", err=True)  # fmt: skip
        click.get_current_context().exit(int(result.exit_code))
