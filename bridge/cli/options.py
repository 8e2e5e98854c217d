"""Option groups shared by commands, and what they turn into: connection settings, report
options, history settings, the report's output.

An option group passes its values to the command as one keyword (a TypedDict), so options
that belong together travel together. pypsrp and friends load only when a command runs,
so ``psbridge --help`` stays quick.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import click

from bridge import history
from bridge.errors import OutputError
from bridge.frames.options import MAX_DAYS
from bridge.jobs import REPORT_FORMATS

if TYPE_CHECKING:
    from bridge.remote import ConnectionSettings

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class ConnectionValues(TypedDict, total=False):
    """What `connection_options` passes as ``connection``."""

    server: str | None
    port: int | None
    https: bool | None
    path: str | None
    configuration: str | None
    auth: str | None
    user: str | None
    ca_bundle: str | None
    no_verify: bool
    concurrency: int | None
    retries: int | None
    profile: str | None
    quiet: bool


class CollectionValues(TypedDict):
    """What `collection_options` passes as ``collection``."""

    strategy: str
    resume: bool
    run_dir: Path | None


class ViaValues(TypedDict):
    """What `via_options` passes as ``via``."""

    via: str
    tenant: str | None
    app_id: str | None
    certificate_thumbprint: str | None
    certificate_file: str | None


def option_group(argument: str, options: Sequence[Decorator]) -> Decorator:
    """A decorator adding ``options``; the command receives their values as one dict,
    the keyword ``argument``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        names: list[str] = []

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[argument] = {name: kwargs.pop(name) for name in names}
            return command(*args, **kwargs)

        before = len(getattr(wrapper, "__click_params__", ()))
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        # click collects each option's parameter on the function: the group's are the new ones
        names.extend(str(param.name) for param in decorated.__click_params__[before:])
        result: Callable[..., Any] = decorated
        return result

    return decorate


# --- history ---

_HISTORY_HELP = (
    "History database (default: per user, "
    "%LOCALAPPDATA%\\psbridge\\history.sqlite on Windows, "
    "$XDG_DATA_HOME/psbridge/history.sqlite or ~/.local/share/psbridge/history.sqlite elsewhere)."
)


def history_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --history PATH (or PSBRIDGE_HISTORY) as ``history_path``."""
    return click.option(
        "--history", "history_path", type=click.Path(dir_okay=False, path_type=Path),
        envvar="PSBRIDGE_HISTORY", help=_HISTORY_HELP,
    )(command)


def history_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --history PATH, --no-history and --history-keep N; passes ``history_settings``."""

    @functools.wraps(command)
    def wrapper(*args: Any, history_path: Path | None, no_history: bool,
                history_keep: int | None, **kwargs: Any) -> Any:
        path = None if no_history else (history_path or history.default_history_path())
        kwargs["history_settings"] = history.HistorySettings(path=path, keep=history_keep)
        return command(*args, **kwargs)

    wrapper = click.option(
        "--history-keep", type=click.IntRange(min=1), metavar="N",
        help="After recording, keep only the newest N runs of this organisation.",
    )(wrapper)
    wrapper = click.option("--no-history", is_flag=True,
                           help="Do not record this run; no Changes and Trend sheets.")(wrapper)
    return history_file_option(wrapper)


# --- connection ---

_AUTH_CHOICES = ("negotiate", "kerberos", "ntlm", "basic", "credssp", "certificate")

# The connection options of every remote command; the command receives ``connection``.
connection_options = option_group("connection", [
        click.option("--server", metavar="HOST", help="Exchange server (or load balancer) name."),
        click.option("--port", type=click.IntRange(1, 65535),
                     help="Port (default 80, or 443 with --https)."),
        click.option("--https/--http", "https", default=None,
                     help="HTTPS, or HTTP with Kerberos/NTLM message encryption (the default)."),
        click.option("--path", metavar="PATH", help="Endpoint path (default PowerShell)."),
        click.option("--configuration", metavar="NAME",
                     help="Session configuration (default Microsoft.Exchange; a jump host: "
                          "Microsoft.PowerShell)."),
        click.option("--auth", type=click.Choice(_AUTH_CHOICES),
                     help="Authentication (default negotiate: Kerberos, else NTLM)."),
        click.option("--user", metavar="USER",
                     help="User (UPN or DOMAIN\\user); default the current Windows/Kerberos "
                          "identity. The password comes from PSBRIDGE_PASSWORD, the keyring or "
                          "a prompt, never from the command line."),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False),
                     help="PEM file of the CA that issued the server's certificate."),
        click.option("--no-verify", is_flag=True, default=False,
                     help="Do not check the server's certificate (test labs only)."),
        click.option("--concurrency", type=click.IntRange(1, 18),
                     help="Connections at once (default 3: Exchange Online's limit; "
                          "on-premises allows 18)."),
        click.option("--retries", type=click.IntRange(0, 20),
                     help="Retries of a dropped, throttled or failed command (default 4)."),
        click.option("--profile", metavar="NAME",
                     help="Connection profile from the config file (PSBRIDGE_CONFIG, "
                          "~/.config/psbridge/config.toml, %APPDATA%\\psbridge\\config.toml)."),
        click.option("-q", "--quiet", is_flag=True, default=False,
                     help="No progress bar or progress lines (for scheduled runs); "
                          "warnings and errors still print."),
])  # fmt: skip


def settings_from_options(connection: ConnectionValues) -> ConnectionSettings:
    """The options of `connection_options` (over the profile's) as ConnectionSettings."""
    from bridge import config

    name = connection.get("profile")
    profile = config.load_profile(name) if name else None
    values: dict[str, object] = {
        key: connection.get(key)
        for key in ("server", "port", "https", "path", "configuration", "auth", "user",
                    "ca_bundle", "concurrency", "retries")
    }  # fmt: skip
    if connection.get("no_verify"):
        values["verify"] = False
    settings = config.build_settings(values, profile)
    if not settings.verify and settings.https:
        click.echo(
            "WARNING: --no-verify: the server's certificate is NOT checked; anyone on the "
            "network path could read your credentials and data. Use --ca-bundle instead.",
            err=True,
        )
    return settings


def jumphost_connection(connection: ConnectionValues) -> ConnectionValues:
    """A jump host's WinRM defaults (/wsman, 5985 or 5986, Microsoft.PowerShell) for what
    neither the command line nor the profile sets."""
    from bridge import config

    name = connection.get("profile")
    profile = config.load_profile(name) if name else {}
    jump = ConnectionValues(**connection)
    if jump.get("configuration") is None and "configuration" not in profile:
        jump["configuration"] = "Microsoft.PowerShell"
    if jump.get("path") is None and "path" not in profile:
        jump["path"] = "wsman"
    if jump.get("port") is None and "port" not in profile:
        https = jump.get("https") if jump.get("https") is not None else profile.get("https")
        jump["port"] = 5986 if https else 5985
    return jump


# --strategy/--resume/--run-dir; the command receives ``collection``.
collection_options = option_group("collection", [
        click.option("--strategy", type=click.Choice(("bulk", "per-mailbox")), default="bulk",
                     show_default=True,
                     help="bulk: one Get-MobileDevice | Get-MobileDeviceStatistics pipeline; "
                          "per-mailbox: the classic Get-MobileDeviceStatistics -Mailbox loop."),
        click.option("--resume", is_flag=True, default=False,
                     help="Continue an interrupted run from its run folder."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where progress is saved (default: OUTPUT.psbridge-run)."),
])  # fmt: skip

# --- scripts (--via) ---

VIA_CHOICES = ("direct", "jumphost", "pwsh")

# --via and the Exchange Online app options; the command receives ``via``.
via_options = option_group("via", [
        click.option("--via", type=click.Choice(VIA_CHOICES), default="direct",
                     show_default=True,
                     help="direct: the Exchange endpoint (/PowerShell); jumphost: a Windows "
                          "host (the connection options name it; WinRM /wsman, configuration "
                          "Microsoft.PowerShell) runs ps_scripts' Get-PsbridgeExoData.ps1 "
                          "against Exchange Online; pwsh: the same script in a local "
                          "PowerShell 7."),
        click.option("--tenant", metavar="DOMAIN",
                     help="Exchange Online organisation for --via jumphost/pwsh: the initial "
                          "domain, e.g. contoso.onmicrosoft.com."),
        click.option("--app-id", metavar="GUID",
                     help="Application (client) ID of the app registration (app-only sign-in)."),
        click.option("--certificate-thumbprint", metavar="HEX",
                     help="The app's certificate in the Windows certificate store."),
        click.option("--certificate-file", metavar="PFX",
                     help="The app's certificate as a .pfx file (a path where the script runs); "
                          "its password from PSBRIDGE_CERTIFICATE_PASSWORD, never the command "
                          "line (--via pwsh)."),
])  # fmt: skip

# --- the report ---


def _stale_buckets(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        days = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of days like 30,90,365") from None
    if not days or any(not 1 <= day <= MAX_DAYS for day in days) or list(days) != sorted(
            set(days)):
        raise click.BadParameter(
            f"{value!r}: the days must increase and be from 1 to {MAX_DAYS:,}")
    return days


#: --as-of's range: ActiveSync partnerships exist since 2003; a date past 2100 is a typo
AS_OF_RANGE = (datetime(2000, 1, 1), datetime(2100, 12, 31, 23, 59, 59))


def _as_of(_ctx: click.Context, _param: click.Parameter, value: datetime | None
           ) -> datetime | None:
    if value is not None and not AS_OF_RANGE[0] <= value <= AS_OF_RANGE[1]:
        raise click.BadParameter(f"{value.date().isoformat()} is not between 2000-01-01 and "
                                 "2100-12-31")
    return value


def report_output(output: Path | None, output_format: str | None, stem: str) -> tuple[Path, str]:
    """The output path and format: --format, else the extension of -o, else xlsx."""
    if output is None:
        chosen = output_format or "xlsx"
        return Path(f"{stem}.{chosen}"), chosen
    suffix = output.suffix.lower().lstrip(".")
    if output_format is None:
        if suffix not in REPORT_FORMATS:
            raise OutputError(f"cannot write {output}: unknown output type '{output.suffix}'; "
                              "use .xlsx, .csv, .parquet or .json.")
        return output, suffix
    if suffix != output_format:
        raise click.BadParameter(f"{output} does not end in .{output_format}",
                                 param_hint="'-o' / '--output'")
    return output, output_format


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The report's filters and output options; the command receives ``report_options``
    (frames.ReportOptions) besides output, output_format, as_of and open_report."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bridge import frames

        recipient_types = kwargs.pop("recipient_types") or ("UserMailbox",)
        for kind in recipient_types:
            if not kind.isalpha():
                raise click.BadParameter(f"{kind!r} is not a recipient type like UserMailbox",
                                         param_hint="'--recipient-type'")
        stale_thresholds = kwargs.pop("stale_buckets")
        cleanup_days = kwargs.pop("cleanup_days")
        if cleanup_days is not None and kwargs["cleanup_script"] is None:
            raise click.UsageError("--cleanup-days goes with --cleanup-script FILE.")
        if kwargs["cleanup_script"] is not None and cleanup_days is None:
            cleanup_days = stale_thresholds[0]
        kwargs["report_options"] = frames.ReportOptions(
            all_devices=kwargs.pop("all_devices"),
            recipient_types=tuple(dict.fromkeys(recipient_types)),
            stale_days=kwargs.pop("stale_days"),
            stale_thresholds=stale_thresholds,
            include_identifiers=kwargs.pop("include_identifiers"),
            cleanup_days=cleanup_days,
        )
        return command(*args, **kwargs)

    options = [
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Report file (default mobile-devices.xlsx, or .csv/.parquet/.json "
                          "with --format)."),
        click.option("--format", "output_format", type=click.Choice(REPORT_FORMATS),
                     help="xlsx: the workbook (default); csv, parquet, json: the Devices "
                          "table only, for Power BI and scripts."),
        click.option("--all-devices", is_flag=True,
                     help="Every device, not only Outlook for iOS and Android."),
        click.option("--recipient-type", "recipient_types", multiple=True, metavar="TYPE",
                     help="Mailbox RecipientTypeDetails to include (repeatable; default "
                          "UserMailbox), e.g. --recipient-type SharedMailbox."),
        click.option("--stale-days", type=click.IntRange(0, MAX_DAYS), metavar="N",
                     help="Only devices without a successful sync for N days or more "
                          "(or never)."),
        click.option("--stale-buckets", default="30,90,365", show_default=True,
                     callback=_stale_buckets, metavar="D1,D2,...",
                     help="StaleBucket edges in days; past the first a device counts as "
                          "stale."),
        click.option("--include-identifiers", is_flag=True,
                     help="Keep DeviceImei and DevicePhoneNumber (left out by default)."),
        click.option("--as-of", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
                                                      "%Y-%m-%d %H:%M"]), callback=_as_of,
                     metavar="YYYY-MM-DD[THH:MM:SS]",
                     help="Count days since the last sync from this UTC time (default: now, "
                          "or when an offline export was taken)."),
        click.option("--open", "open_report", is_flag=True,
                     help="Open the report when it is written."),
        click.option("--cleanup-script", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE.ps1",
                     help="Also write a PowerShell script that removes the stale partnerships "
                          "(review it; it runs with -WhatIf unless given -Execute). psbridge "
                          "itself changes nothing."),
        click.option("--cleanup-days", type=click.IntRange(0, MAX_DAYS), metavar="N",
                     help="The script removes partnerships without a successful sync for N "
                          "days or more, or never synced and set up N or more days ago "
                          "(default: the first stale bucket, 30)."),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
