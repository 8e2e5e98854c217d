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
@click.option("--shell-idle-timeout", type=click.FloatRange(min=0.1), default=900.0,
              show_default=True, metavar="SECONDS",
              help="Forget a shell nobody used for this long (its client vanished), freeing "
                   "its place under --max-shells.")
@click.option("--micro-delay-ms", type=click.FloatRange(min=0), default=50.0,
              show_default=True, help="The micro delay of a command over --cmdlet-budget.")
@click.option("--receive-stall", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Hold each Receive of command output this long, then time it out: a hung "
                   "server.")
@click.option("--receive-stalls", type=click.IntRange(min=1), metavar="N",
              help="Stall only the first N Receives (default: all).")
@click.option("--stop-after", type=click.IntRange(min=1), metavar="N",
              help="Stop a pipeline from the server side after N objects (an admin's Stop, "
                   "an IIS recycle).")
@click.option("--pipeline-stops", type=click.IntRange(min=1), metavar="N",
              help="Stop only the first N pipelines (default: all).")
@click.option("--over-budget-after", type=click.IntRange(min=1), metavar="N",
              help="End a running cmdlet with OverBudgetException after N objects.")
@click.option("--over-budget-failures", type=click.IntRange(min=1), metavar="N",
              help="Only the first N cmdlets end over budget (default: all).")
@click.option("--over-budget-wait", type=click.FloatRange(min=0), default=1.0,
              show_default=True, metavar="SECONDS",
              help="The 'Please wait for N seconds.' of an over-budget refusal.")
@click.option("--on-premises-client-types", is_flag=True,
              help="Report ClientType EAS for Outlook for iOS and Android, as an on-premises "
                   "server does (default: Exchange Online's REST/Outlook, as the demo does).")
@click.option("--fixed-clock", is_flag=True,
              help="Date the organisation from its fixed reference time (as tests and the "
                   "demo do) instead of from now.")
@click.option("--exo", is_flag=True,
              help="Serve Exchange Online instead: its REST endpoint and Entra sign-in over "
                   "HTTPS (with --latency-ms and the --fault-every, --retry-after, "
                   "--max-concurrent, --forbid, --token-lifetime knobs).")
@click.option("--fault-every", multiple=True, metavar="FAULT=N",
              help="--exo: answer every Nth REST request with FAULT (429, 503, 504, "
                   "concurrency, transient, claims, expired, 403); repeatable.")
@click.option("--retry-after", type=click.IntRange(min=0), default=1, show_default=True,
              help="--exo: the Retry-After seconds of a 429.")
@click.option("--max-concurrent", type=click.IntRange(min=1), metavar="N",
              help="--exo: REST requests in flight per tenant before the concurrency refusal.")
@click.option("--forbid", multiple=True, metavar="CMDLET",
              help="--exo: answer this cmdlet 403 with an empty body (a missing role).")
@click.option("--token-lifetime", type=click.FloatRange(min=1), default=3599.0,
              show_default=True, help="--exo: seconds an access token lives.")
def sandbox_serve(mailboxes: int, seed: int, port: int, https: bool, latency_ms: float,
                  object_latency_ms: float, max_shells: int | None, cmdlet_budget: int | None,
                  budget_window: float, drop_after: int | None, http_error_every: int | None,
                  http_error_status: str, shell_idle_timeout: float, micro_delay_ms: float,
                  receive_stall: float, receive_stalls: int | None, stop_after: int | None,
                  pipeline_stops: int | None, over_budget_after: int | None,
                  over_budget_failures: int | None, over_budget_wait: float,
                  on_premises_client_types: bool, fixed_clock: bool, exo: bool,
                  fault_every: tuple[str, ...], retry_after: int, max_concurrent: int | None,
                  forbid: tuple[str, ...], token_lifetime: float) -> None:
    """Serve an emulated Exchange PowerShell endpoint on 127.0.0.1 until Ctrl+C.

    Prints the URL and the user and password it generated for this run (a throwaway
    account of this sandbox only). Connect with configuration Microsoft.Exchange.
    """
    import time

    from bridge.sandbox import Sandbox
    from bridge.sandbox.organisation import Organisation

    # A live report counts days since the last sync from now; an organisation dated from
    # its fixed 2025 reference time would look entirely stale to it.
    organisation = Organisation(mailboxes=mailboxes, seed=seed,
                                online_client_types=not on_premises_client_types,
                                reference_time=None if fixed_clock else datetime.now(UTC))
    if exo:
        from bridge.cli import exo as exo_cli

        exo_cli.serve_exo(organisation, {
            "latency_ms": latency_ms, "fault_every": exo_cli.parse_faults(fault_every),
            "retry_after": retry_after, "max_concurrent": max_concurrent,
            "forbidden_cmdlets": frozenset(forbid), "token_lifetime": token_lifetime})
        return
    sandbox = Sandbox(
        mailboxes=mailboxes, seed=seed, https=https, port=port, organisation=organisation,
        latency_per_command=latency_ms / 1000, latency_per_object=object_latency_ms / 1000,
        max_shells_per_user=max_shells, cmdlet_budget=cmdlet_budget,
        budget_window=budget_window, drop_after_objects=drop_after,
        http_error_every=http_error_every, http_error_status=int(http_error_status),
        shell_idle_timeout=shell_idle_timeout, micro_delay=micro_delay_ms / 1000,
        receive_stall=receive_stall, receive_stalls=receive_stalls,
        stop_after_objects=stop_after, pipeline_stops=pipeline_stops,
        over_budget_after_objects=over_budget_after, over_budget_failures=over_budget_failures,
        over_budget_wait=over_budget_wait,
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
