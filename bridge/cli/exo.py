"""Exchange Online's REST endpoint on the command line: ``--tenant`` without ``--server``
(``psbridge mobile``, ``psbridge run``), its sign-in options and ``--sign-out``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypedDict

import click

from bridge.cli.options import ConnectionValues, option_group

if TYPE_CHECKING:
    from bridge.exo.settings import ExoSettings
    from bridge.sandbox.organisation import Organisation


class ExoValues(TypedDict):
    """What `exo_options` passes as ``exo``."""

    exo_endpoint: str | None
    authority: str | None
    interactive: bool
    sign_out: bool


class ExoAppValues(TypedDict):
    """What `exo_app_options` passes as ``app`` (``mobile`` has them in --via's group)."""

    tenant: str | None
    app_id: str | None
    certificate_file: str | None


# --exo-endpoint/--authority/--interactive/--sign-out; the command receives ``exo``.
exo_options = option_group("exo", [
    click.option("--exo-endpoint", metavar="URL",
                 help="Exchange Online's REST endpoint with --tenant "
                      "(https://outlook.office365.com); another for a sovereign cloud or "
                      "psbridge's sandbox."),
    click.option("--authority", metavar="URL",
                 help="The sign-in service with --tenant (https://login.microsoftonline.com)."),
    click.option("--interactive", is_flag=True, default=False,
                 help="With --tenant: sign in in the browser, not with a device code."),
    click.option("--sign-out", is_flag=True, default=False,
                 help="With --tenant: forget the cached Exchange Online sign-in, then stop."),
])  # fmt: skip

# --tenant/--app-id/--certificate-file for commands without --via; passed as ``app``.
exo_app_options = option_group("app", [
    click.option("--tenant", metavar="DOMAIN",
                 help="Exchange Online organisation (contoso.onmicrosoft.com or its id): run "
                      "there through its REST endpoint instead of on --server."),
    click.option("--app-id", metavar="GUID",
                 help="With --tenant: the app registration (app-only with --certificate-file "
                      "or $PSBRIDGE_CLIENT_SECRET; else your own public client app)."),
    click.option("--certificate-file", metavar="PEM_OR_PFX",
                 help="With --tenant: the app's certificate (.pem with its key, or .pfx with "
                      "its password in $PSBRIDGE_CERTIFICATE_PASSWORD)."),
])  # fmt: skip


def exchange_online(app: ExoAppValues, connection: ConnectionValues,
                    exo: ExoValues) -> ExoSettings | None:
    """Exchange Online settings when the command names a tenant (on the command line or in
    its profile) and no server; None for an Exchange server (WSMan)."""
    from bridge import config
    from bridge.exo.settings import exo_settings
    from bridge.exo.signin import CLIENT_SECRET_ENV

    name = connection.get("profile")
    profile = config.load_profile(name) if name else {}
    if app.get("tenant") and connection.get("server"):
        raise click.UsageError("--tenant runs on Exchange Online: leave out --server.")
    tenant = app.get("tenant") or profile.get("tenant")
    server = connection.get("server") or profile.get("server")
    if not tenant or (server and not app.get("tenant")):  # an Exchange server over WSMan
        if exo["sign_out"] or exo["exo_endpoint"] or exo["authority"] or exo["interactive"]:
            raise click.UsageError("--exo-endpoint, --authority, --interactive and --sign-out "
                                   "go with --tenant (Exchange Online).")
        return None
    certificate = app.get("certificate_file")
    secret_env = (CLIENT_SECRET_ENV if os.environ.get(CLIENT_SECRET_ENV) and not certificate
                  and not profile.get("certificate") else None)
    values: dict[str, object | None] = {
        "tenant": tenant, "app_id": app.get("app_id"), "certificate": certificate,
        "client_secret_env": secret_env, "endpoint": exo["exo_endpoint"],
        "authority": exo["authority"], "ca_bundle": connection.get("ca_bundle"),
        "concurrency": connection.get("concurrency"), "retries": connection.get("retries"),
        "interactive": exo["interactive"] or None, "user": connection.get("user"),
    }
    if connection.get("no_verify"):
        raise click.UsageError("--no-verify is not offered for Exchange Online: give the CA "
                               "with --ca-bundle.")
    exo_profile = {key: value for key, value in profile.items()
                   if key in ("tenant", "app_id", "certificate", "client_secret_env",
                              "endpoint", "authority", "ca_bundle", "concurrency", "retries",
                              "user")}
    return exo_settings(values, exo_profile)


def show_device_code(message: str) -> None:
    """The device-code instructions, on stderr (stdout may be a pipe)."""
    click.echo(message, err=True)


def sign_out(settings: ExoSettings) -> None:
    """``--sign-out``: forget the cached sign-in of this tenant and app."""
    from bridge.exo.signin import Tokens

    removed = Tokens(settings.sign_in).sign_out()
    click.echo(f"Signed out of {settings.sign_in.tenant}: {removed} cached sign-in(s) removed.")


def parse_faults(values: tuple[str, ...]) -> dict[str, int]:
    """``--fault-every 429=10`` (repeatable) -> {"429": 10}."""
    from bridge.sandbox.exo_rest import FAULTS

    faults: dict[str, int] = {}
    for value in values:
        name, _, every = value.partition("=")
        if name not in FAULTS or not every.isdigit() or int(every) < 1:
            raise click.BadParameter(f"{value!r}: use FAULT=N with FAULT one of "
                                     f"{', '.join(FAULTS)}", param_hint="--fault-every")
        faults[name] = int(every)
    return faults


def serve_exo(organisation: Organisation, knobs: dict[str, Any]) -> None:
    """``psbridge sandbox serve --exo``: the emulated Exchange Online until Ctrl+C; device
    codes are approved as the sandbox's admin as soon as they are asked for."""
    import time

    from bridge.sandbox.exo_server import DEFAULT_ADMIN, ExoSandbox

    sandbox = ExoSandbox(organisation=organisation, **knobs).start()
    try:
        options = (f"--tenant {sandbox.tenant} --exo-endpoint {sandbox.endpoint} "
                   f"--authority {sandbox.endpoint} --ca-bundle {sandbox.ca_file}")
        click.echo(f"Exchange Online sandbox at {sandbox.endpoint} (tenant {sandbox.tenant})")
        click.echo(f"CA file: {sandbox.ca_file}")
        click.echo(f"Device codes are approved as {DEFAULT_ADMIN} as soon as they are asked for.")
        click.echo(f"Try: psbridge mobile {options} -o report.xlsx")
        click.echo("Press Ctrl+C to stop.")
        while True:
            for code in sandbox.entra.pending_user_codes():
                sandbox.approve_device_code(code, DEFAULT_ADMIN)
            time.sleep(0.2)
    except KeyboardInterrupt:
        served = sandbox.requests["InvokeCommand"] + sandbox.requests["$batch"]
        click.echo(f"Stopped after {served} REST requests.")
    finally:
        sandbox.stop()
