"""``psbridge sandbox export|serve``: the built-in emulated Exchange endpoint and its
synthetic organisation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click


@click.group("sandbox")
def sandbox_group() -> None:
    """The built-in emulated Exchange endpoint and its synthetic organisation."""


@sandbox_group.command("export")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--mailboxes", type=click.IntRange(0, 100_000), default=200, show_default=True,
              help="Size of the sandbox organisation.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the organisation: the same seed writes the same files.")
def sandbox_export(folder: Path, mailboxes: int, seed: int) -> None:
    """Write the files an Exchange admin's Export-Clixml would, for the sandbox organisation.

    DIR gets Mailboxes.xml, MobileDeviceStatistics.xml (UTF-16, Deserialized objects, as
    from an Exchange Management Shell) and psbridge-manifest.json: input for
    `psbridge mobile --from-clixml DIR`.
    """
    from bridge.sandbox.export import export_organisation
    from bridge.sandbox.organisation import Organisation

    organisation = Organisation(mailboxes=mailboxes, seed=seed, online_client_types=True)
    summary = export_organisation(organisation, folder)
    click.echo(f"Wrote {summary.mailboxes} mailboxes and {summary.devices} device "
               f"partnerships (seed {seed}) to {folder}: "
               + ", ".join(path.name for path in summary.files))


@sandbox_group.command("serve")
@click.option("--mailboxes", type=click.IntRange(0, 100_000), default=200, show_default=True,
              help="Size of the sandbox organisation.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the organisation.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port on 127.0.0.1; 0 picks a free one.")
@click.option("--https", is_flag=True,
              help="Serve HTTPS with a certificate generated now (its CA file is printed); "
                   "Basic auth is then accepted too.")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0,
              help="Delay before each command's first object.")
@click.option("--object-latency-ms", type=click.FloatRange(min=0), default=0.0,
              help="Delay between objects.")
@click.option("--max-shells", type=click.IntRange(min=1), metavar="N",
              help="Open runspaces allowed per user (Exchange: 18 on-premises, 3 online); "
                   "the next is refused with Exchange's throttling error.")
@click.option("--cmdlet-budget", type=click.IntRange(min=1), metavar="N",
              help="Cmdlets per --budget-window before micro delays (and, over twice N, "
                   "throttling errors), as in Exchange Online.")
@click.option("--budget-window", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="Seconds of the --cmdlet-budget window.")
@click.option("--drop-after", type=click.IntRange(min=1), metavar="N",
              help="Close the connection without an answer after every N objects.")
@click.option("--http-error-every", type=click.IntRange(min=1), metavar="N",
              help="Answer every Nth request with --http-error-status.")
@click.option("--http-error-status", type=click.Choice(["500", "503"]), default="503",
              show_default=True)
@click.option("--fixed-clock", is_flag=True,
              help="Date the organisation from its fixed reference time (as tests and the "
                   "demo do) instead of from now.")
def sandbox_serve(mailboxes: int, seed: int, port: int, https: bool, latency_ms: float,
                  object_latency_ms: float, max_shells: int | None, cmdlet_budget: int | None,
                  budget_window: float, drop_after: int | None, http_error_every: int | None,
                  http_error_status: str, fixed_clock: bool) -> None:
    """Serve an emulated Exchange PowerShell endpoint on 127.0.0.1 until Ctrl+C.

    Prints the URL and the user and password it generated for this run (a throwaway
    account of this sandbox only). Connect with configuration Microsoft.Exchange.
    """
    import time

    from bridge.sandbox import Sandbox
    from bridge.sandbox.organisation import Organisation

    # A live report counts days since the last sync from now; an organisation dated from
    # its fixed 2025 reference time would look entirely stale to it.
    organisation = Organisation(mailboxes=mailboxes, seed=seed, online_client_types=True,
                                reference_time=None if fixed_clock else datetime.now(UTC))
    sandbox = Sandbox(
        mailboxes=mailboxes, seed=seed, https=https, port=port, organisation=organisation,
        latency_per_command=latency_ms / 1000, latency_per_object=object_latency_ms / 1000,
        max_shells_per_user=max_shells, cmdlet_budget=cmdlet_budget,
        budget_window=budget_window, drop_after_objects=drop_after,
        http_error_every=http_error_every, http_error_status=int(http_error_status),
    ).start()
    try:
        click.echo(f"Sandbox: {mailboxes} mailboxes (seed {seed}) at {sandbox.url}")
        click.echo("Configuration: Microsoft.Exchange")
        click.echo(f"User: {sandbox.username}")
        click.echo(f"Password: {sandbox.password}")
        if sandbox.ca_file is not None:
            click.echo(f"CA file: {sandbox.ca_file}")
        click.echo("Press Ctrl+C to stop.", nl=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo(f"Stopped after {sandbox.requests_served} requests.")
    finally:
        sandbox.stop()
