"""``psbridge scripts``: where psbridge's PowerShell scripts are, or a copy of them (e.g.
Export-PsbridgeData.ps1 for a Windows admin to run)."""

from __future__ import annotations

from pathlib import Path

import click

from bridge.errors import OutputError


@click.command("scripts")
@click.option("--copy-to", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Copy the scripts into DIR (created if missing), e.g. to take them to a "
                   "Windows host.")
def scripts_command(copy_to: Path | None) -> None:
    """Show where psbridge's PowerShell scripts are, or copy them.

    Export-PsbridgeData.ps1: run in an Exchange Management Shell (or after
    Connect-ExchangeOnline) to export the files `psbridge mobile --from-clixml` reads.
    Get-PsbridgeExoData.ps1: what --via jumphost and --via pwsh run.
    """
    import shutil

    from bridge import scripts

    folder = scripts.scripts_dir()
    if copy_to is None:
        click.echo(str(folder))
        for name in scripts.SCRIPT_NAMES:
            click.echo(f"  {name}")
        return
    try:
        copy_to.mkdir(parents=True, exist_ok=True)
        for name in scripts.SCRIPT_NAMES:
            shutil.copyfile(folder / name, copy_to / name)
    except OSError as exc:
        raise OutputError(f"cannot copy the scripts to {copy_to}: {exc.strerror or exc}") from exc
    click.echo(f"Copied {', '.join(scripts.SCRIPT_NAMES)} to {copy_to}")
