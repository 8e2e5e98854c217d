"""The psbridge command line: the only module that imports click. Thin: parse, call, report.

Every BridgeError becomes one ``Error: ...`` line on stderr and the error's exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import traceback
from typing import Any

import click

from bridge import __version__
from bridge.errors import BridgeError, ExitCode


class BridgeGroup(click.Group):
    """A click group that turns BridgeError into one clear line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("Error: interrupted; what was collected so far is kept.", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psbridge")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """psbridge: Exchange PowerShell data into Excel workbooks, CSV and Parquet."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# Commands are added below, one block per feature, each calling into the library.


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="psbridge")


if __name__ == "__main__":  # pragma: no cover
    main()
