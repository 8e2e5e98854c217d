"""``psbridge run``: one Exchange cmdlet's output to a table (bridge.jobs.run_cmdlet_to_file)."""

from __future__ import annotations

from pathlib import Path

import click

from bridge import jobs
from bridge.cli import exo as exo_cli
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
@exo_cli.exo_app_options
@exo_cli.exo_options
def run_command(cmdlet: str, parameters: tuple[str, ...], output: Path,
                connection: ConnectionValues, app: exo_cli.ExoAppValues,
                exo: exo_cli.ExoValues) -> None:
    """Run one Exchange cmdlet and write its output as a table.

    \b
    Example:
      psbridge run Get-CASMailbox -p ResultSize=Unlimited -o cas.xlsx --server mail
      psbridge run Get-Mailbox -o mailboxes.csv --tenant contoso.onmicrosoft.com
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
    online = exo_cli.exchange_online(app, connection, exo)
    if online is not None and exo["sign_out"]:
        exo_cli.sign_out(online)
        return
    terminal.quiet_library_logs()
    if online is not None:
        from bridge.exo.job import run_cmdlet_on_exchange_online

        result = run_cmdlet_on_exchange_online(online, cmdlet, typed, output,
                                               on_device_code=exo_cli.show_device_code,
                                               notify=terminal.echo_note)
    else:
        server = jobs.ExchangeServer(settings_from_options(connection),
                                     prompt=terminal.password_prompt())
        result = jobs.run_cmdlet_to_file(server, cmdlet, typed, output,
                                         notify=terminal.echo_note)
    click.echo(f"{commands.pipeline_text(result.command)}: {result.rows} row(s) -> {output}")
    if result.errors:
        first = result.errors[0]
        click.echo(f"Error: {len(result.errors)} error record(s) from the server; first: "
                   f"{first.kind}: {first.message}", err=True)  # fmt: skip
        click.get_current_context().exit(int(result.exit_code))
