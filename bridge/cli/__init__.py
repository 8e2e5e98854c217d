"""The psbridge command line: the only package that imports click. Thin: a command parses
its options, calls the library (bridge.jobs for reports) and prints.

Every BridgeError becomes one ``Error: ...`` line on stderr and the error's exit code;
``--debug`` shows the traceback instead (see :mod:`bridge.cli.terminal`).
"""

from __future__ import annotations

import click

from bridge import __version__
from bridge.cli import convert, history, report, run, sandbox, scripts
from bridge.cli.history import history_for_run
from bridge.cli.options import history_options
from bridge.cli.terminal import BridgeGroup

__all__ = ["cli", "history_for_run", "history_options", "main"]


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psbridge")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """psbridge: Exchange PowerShell data into Excel workbooks, CSV and Parquet."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# in the order `psbridge --help` has always listed them (click sorts by name anyway)
for command in (history.history_group, history.diff_command, run.run_command,
                scripts.scripts_command, report.mobile_command, report.demo_command,
                sandbox.sandbox_group, convert.convert_command):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="psbridge")
