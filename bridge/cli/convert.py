"""``psbridge convert``: Export-Clixml files to a workbook (a sheet per file) or one
CSV/Parquet/JSON table; the work is bridge.convert.convert."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("convert")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...",
                type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file: .xlsx (one sheet per input), .csv, .parquet or .json (one "
                   "table; with several inputs a Source column says which file a row is from).")
def convert_command(inputs: tuple[Path, ...], output: Path) -> None:
    """Convert Export-Clixml files to Excel, CSV, Parquet or JSON.

    Example: psbridge convert Mailboxes.xml MobileDeviceStatistics.xml -o export.xlsx
    """  # fmt: skip
    from bridge.convert import convert

    for table in convert(list(inputs), output):
        target = f' -> sheet "{table.sheet}"' if table.sheet else ""
        click.echo(f"{table.source}: {table.rows} row(s){target}")
    click.echo(f"Wrote {output}")
