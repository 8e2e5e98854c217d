"""The psbridge command line: the only module that imports click. Thin: parse, call, report.

Every BridgeError becomes one ``Error: ...`` line on stderr and the error's exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge import __version__, history, workbook
from bridge.errors import BridgeError, ConfigError, ExitCode, HistoryError, OutputError

if TYPE_CHECKING:
    from bridge import frames


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
            # only a run that saved its progress (see `collecting`) has kept anything
            kept = bool(ctx.obj and ctx.obj.get("progress_saved"))
            click.echo("Error: interrupted; what was collected so far is kept." if kept
                       else "Error: interrupted.", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # the last line of defence: a bug, said as one line
            if isinstance(exc, BrokenPipeError):  # `psbridge ... | head`: not a bug
                _silence_stdout()
                ctx.exit(int(ExitCode.PIPE_CLOSED))
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (a bug in psbridge: "
                       "run again with --debug and report the traceback).", err=True)
            ctx.exit(int(ExitCode.INTERNAL))


def _silence_stdout() -> None:
    """After the reader of stdout went away (``| head``; sockets' broken pipes arrive
    wrapped by bridge.remote), send stdout to devnull so Python's flush at exit is quiet."""
    import os
    import sys

    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psbridge")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """psbridge: Exchange PowerShell data into Excel workbooks, CSV and Parquet."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# Commands are added below, one block per feature, each calling into the library.


# --- history commands ---
# `history list|show|prune` and `diff`; `history_options` is the decorator `mobile` applies
# (it passes one `history_settings: HistorySettings`), and `history_for_run` records a run
# and returns the HistoryView for write_report, or None with a warning on stderr.

_HISTORY_HELP = (
    "History database (default: per user, "
    "%LOCALAPPDATA%\\psbridge\\history.sqlite on Windows, "
    "$XDG_DATA_HOME/psbridge/history.sqlite or ~/.local/share/psbridge/history.sqlite elsewhere)."
)


def _history_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
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
    return _history_file_option(wrapper)


def history_for_run(settings: history.HistorySettings, report: frames.Report,
                    **run: Any) -> history.HistoryView | None:
    """Record the run (keywords as history.record_and_view); on failure warn and go on."""
    try:
        return history.record_and_view(settings, report, **run)
    except BridgeError as exc:
        click.echo(f"Warning: history not recorded: {exc} The report is written without "
                   "the Changes and Trend sheets.", err=True)
        return None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _counts_text(counts: dict[str, int], empty: str = "none") -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or empty


@cli.group("history")
def history_group() -> None:
    """Past runs: list them, show one, prune old ones (see also: psbridge diff)."""


@history_group.command("list")
@_history_file_option
@click.option("--organisation", "--organization", help="Only runs of this organisation.")
def history_list(history_path: Path | None, organisation: str | None) -> None:
    """List recorded runs with their key figures."""
    path = history_path or history.default_history_path()
    if not path.exists():
        click.echo(f"No runs recorded yet ({path} does not exist).")
        return
    with history.History(path) as store:
        runs = store.runs(organisation)
        table = [
            (run.run_id, _when(run.started), run.organisation, run.source, run.devices,
             _protocol_share(store.counts(run.run_id, "SyncProtocol"), "REST"),
             _protocol_share(store.counts(run.run_id, "SyncProtocol"), "Outlook"),
             run.stale, run.never_synced)
            for run in runs
        ]
    if not table:
        click.echo(f"No runs recorded yet in {path}.")
        return
    headers = ("Run", "Started (UTC)", "Organisation", "Source", "Devices", "REST", "Outlook",
               "Stale", "Never synced")
    click.echo(f"{len(table)} run(s) in {path}:")
    click.echo(_text_table(headers, table))


def _protocol_share(counts: dict[str, int], prefix: str) -> int:
    return sum(count for name, count in counts.items() if name.startswith(prefix))


def _text_table(headers: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in
              enumerate(headers)]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(value.rjust(width) if right else value.ljust(width)
                         for value, width, right in zip(values, widths, numeric, strict=True)
                         ).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


@history_group.command("show")
@click.argument("run_id", metavar="RUN", type=int)
@_history_file_option
def history_show(run_id: int, history_path: Path | None) -> None:
    """Show one run: its figures and what changed since the run before it."""
    path = history_path or history.default_history_path()
    if not path.exists():  # opening it would create an empty history there
        raise HistoryError(f"there is no history at {path}; run 'psbridge mobile' first.")
    with history.History(path) as store:
        view = store.view(run_id)
        protocols = store.counts(run_id, "SyncProtocol")
        platforms = store.counts(run_id, "Platform")
    run, previous = view.current, view.previous
    server = f"server {run.server}, " if run.server else ""
    click.echo(f"Run {run.run_id}: {run.organisation} ({server}{run.source or 'unknown source'}), "
               f"started {_when(run.started)} UTC")
    mailboxes = "" if run.mailboxes is None else f"Mailboxes: {run.mailboxes}  "
    click.echo(f"{mailboxes}Devices: {run.devices}  Stale (over {run.stale_days} days): "
               f"{run.stale}  Never synced: {run.never_synced}")
    if run.scope:
        click.echo(f"Scope: {run.scope}")
    click.echo(f"By sync protocol: {_counts_text(protocols)}")
    click.echo(f"By platform: {_counts_text(platforms)}")
    if previous is None:
        click.echo("No earlier run of this organisation recorded: nothing to compare yet.")
    else:
        click.echo(f"Changes since run {previous.run_id} ({_when(previous.started)} UTC): "
                   f"{_counts_text(view.change_counts, 'no changes')}")


@history_group.command("prune")
@click.option("--keep", type=click.IntRange(min=1), required=True, metavar="N",
              help="How many of the newest runs to keep per organisation.")
@click.option("--organisation", "--organization", help="Prune only this organisation.")
@_history_file_option
def history_prune(keep: int, organisation: str | None, history_path: Path | None) -> None:
    """Delete all but the newest N runs of each organisation."""
    path = history_path or history.default_history_path()
    if not path.exists():
        click.echo(f"Nothing to prune ({path} does not exist).")
        return
    with history.History(path) as store:
        removed = store.prune(keep, organisation)
        if removed:
            store.vacuum()
    click.echo(f"Removed {removed} run(s); kept the newest {keep} per organisation.")


@cli.command("diff")
@click.argument("run_a", metavar="RUN_A", type=int)
@click.argument("run_b", metavar="RUN_B", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Workbook to write (default: psbridge-diff-RUN_A-RUN_B.xlsx).")
@_history_file_option
def diff_command(run_a: int, run_b: int, output: Path | None, history_path: Path | None) -> None:
    """Compare two recorded runs: a workbook with the Changes and Trend sheets."""
    target = output or Path(f"psbridge-diff-{run_a}-{run_b}.xlsx")
    if target.suffix.lower() != ".xlsx":
        raise OutputError(f"cannot write {target}: psbridge diff writes an .xlsx workbook.")
    path = history_path or history.default_history_path()
    if not path.exists():
        raise HistoryError(f"there is no history at {path}; run 'psbridge mobile' first.")
    with history.History(path) as store:
        view = store.compare(run_a, run_b)
    workbook.write_history_workbook(target, view)
    click.echo(f"Run {run_a} -> run {run_b} ({view.current.organisation}): "
               f"{_counts_text(view.change_counts, 'no changes')}.")
    click.echo(f"Wrote {target}")


# --- remote commands ---
# Shared by every command that talks to Exchange (`run` here; `mobile` reuses them):
# `connection_options` adds --server/--port/--https/--path/--configuration/--auth/--user/
# --ca-bundle/--no-verify/--concurrency/--retries/--profile/--quiet and passes one
# `connection: dict` keyword; `settings_from_options(connection)` -> ConnectionSettings;
# `session_from_options(connection)` -> an unopened remote.Session (password from
# PSBRIDGE_PASSWORD, the keyring or a prompt; never argv; `session_for_settings` when the
# settings are already built); `collection_options` adds
# --strategy/--resume/--run-dir (a `collection: dict` keyword) and
# `collecting(connection, collection, output=..., ...)` is a context manager yielding an
# exchange.Collection, keeping the run folder when anything fails so --resume continues.
# pypsrp and friends are imported lazily so `psbridge --help` stays quick.

_AUTH_CHOICES = ("negotiate", "kerberos", "ntlm", "basic", "credssp", "certificate")
def _option_group(
    argument: str, options: Sequence[Callable[[Any], Any]]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``options``; the command receives their values as one dict,
    the keyword ``argument``, so options that belong together travel together."""

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


# The connection options of every remote command; the command receives ``connection: dict``.
connection_options = _option_group("connection", [
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
                     help="No progress bar (for scheduled runs)."),
])  # fmt: skip


def settings_from_options(connection: dict[str, Any]) -> Any:
    """The options of `connection_options` (over the profile's) as ConnectionSettings."""
    from bridge import config

    profile = config.load_profile(connection["profile"]) if connection.get("profile") else None
    values = {
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


def session_from_options(connection: dict[str, Any]) -> Any:
    """An unopened remote.Session for the options, with the password resolved safely."""
    return session_for_settings(settings_from_options(connection))


def session_for_settings(settings: Any) -> Any:
    """An unopened remote.Session for ConnectionSettings (password: env, keyring, prompt)."""
    import logging
    import sys

    from bridge import config, remote

    ctx = click.get_current_context(silent=True)
    if not (ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug")):
        # pypsrp logs every timeout it meets with a full traceback at ERROR; psbridge
        # retries those and reports what matters itself. --debug shows them.
        logging.getLogger("pypsrp").setLevel(logging.CRITICAL)

    def prompt(text: str) -> str:
        return str(click.prompt(text, hide_input=True, err=True))

    interactive = sys.stdin is not None and sys.stdin.isatty()
    password = config.resolve_password(settings, prompt=prompt if interactive else None)
    return remote.Session(settings, password)


class _ProgressBar:
    """exchange.Progress on stderr: a bar with count, rate and ETA when the total is known,
    else a running count of objects with their rate. Only used on a terminal; thread safe
    (bulk commands report from their worker threads)."""

    def __init__(self, stream: Any = None) -> None:
        import sys
        import threading

        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._bar: Any = None
        self._label = ""
        self._counting = False
        self._started = 0.0
        self._shown = 0.0
        self._done = 0

    def start(self, label: str, total: int | None) -> None:
        import time

        self.finish()
        with self._lock:
            self._label, self._done = label, 0
            self._started = time.monotonic()
            self._counting = total is None
            if self._counting:
                self._show(force=True)
                return

            def rate(_item: object) -> str:
                seconds = time.monotonic() - self._started
                return f"{self._done / seconds:.1f}/s" if seconds > 0 and self._done else ""

            self._bar = click.progressbar(
                length=total, label=label, file=self._stream,
                show_pos=True, show_eta=True, item_show_func=rate,
            )  # fmt: skip
            self._bar.__enter__()

    def _show(self, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self._shown < 0.1:
            return
        self._shown = now
        seconds = now - self._started
        rate = f"  {self._done / seconds:,.0f}/s" if seconds > 0 and self._done else ""
        self._stream.write(f"\r{self._label}: {self._done:,} objects{rate}   ")
        self._stream.flush()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self._done += count
            if self._counting:
                self._show()
            elif self._bar is not None:
                self._bar.update(count, current_item=self._done)

    def note(self, text: str) -> None:
        """A line of its own (a retry warning): the bar's line is cleared, then redrawn."""
        import shutil

        blank = " " * (shutil.get_terminal_size().columns - 1)  # no ANSI: old Windows consoles
        with self._lock:
            self._stream.write(f"\r{blank}\r{text}\n")
            self._stream.flush()

    def finish(self) -> None:
        with self._lock:
            if self._counting:
                self._show(force=True)
                self._stream.write("\n")
                self._counting = False
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
                self._bar = None


def progress_for(quiet: bool) -> Any:
    """A progress reporter for exchange.collect, or None (quiet, or stderr not a terminal)."""
    import sys

    if quiet or not sys.stderr.isatty():
        return None
    import logging

    bar = _ProgressBar()

    class AboveTheBar(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            bar.note(self.format(record))

    # bridge's warnings (retries) go on lines of their own, not glued to the bar
    logging.getLogger("bridge").addHandler(AboveTheBar(logging.WARNING))
    return bar


# --strategy/--resume/--run-dir; the command receives ``collection: dict``.
collection_options = _option_group("collection", [
        click.option("--strategy", type=click.Choice(("bulk", "per-mailbox")), default="bulk",
                     show_default=True,
                     help="bulk: one Get-MobileDevice | Get-MobileDeviceStatistics pipeline; "
                          "per-mailbox: the classic Get-MobileDeviceStatistics -Mailbox loop."),
        click.option("--resume", is_flag=True, default=False,
                     help="Continue an interrupted run from its run folder."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where progress is saved (default: OUTPUT.psbridge-run)."),
])  # fmt: skip


@contextlib.contextmanager
def collecting(
    connection: dict[str, Any],
    collection: dict[str, Any],
    *,
    output: Path,
    recipient_types: Sequence[str] = ("UserMailbox",),
    device_filter: str | None = None,
) -> Iterator[Any]:
    """Connect, collect (with checkpoint and progress) and yield the exchange.Collection.

    The run folder is deleted only when the body (writing the report) succeeds; on any
    failure or Ctrl+C it is kept and stderr says how to resume.
    """
    from bridge import checkpoint as checkpoints
    from bridge import exchange

    settings = settings_from_options(connection)
    run_dir = collection.get("run_dir") or checkpoints.default_run_dir(output)
    run_key = {
        "server": settings.url,
        "configuration": settings.configuration,
        "user": settings.username,
        "strategy": collection["strategy"],
        "recipient_types": list(recipient_types),
        "device_filter": device_filter,
    }
    # the run folder is checked before the password prompt: a forgotten --resume is
    # reported at once
    store = checkpoints.Checkpoint.open(run_dir, run_key, resume=collection.get("resume", False))
    progress = progress_for(connection.get("quiet", False))
    try:
        session = session_for_settings(settings)
        with session:
            result = exchange.collect(
                session, strategy=collection["strategy"], recipient_types=recipient_types,
                device_filter=device_filter, checkpoint=store, progress=progress,
                concurrency=session.settings.concurrency,
            )  # fmt: skip
        yield result
    except BaseException:
        if progress is not None:  # end the bar's line and show the terminal's cursor again
            progress.finish()
        if store.has_progress():
            store.close()
            click.echo(f"Progress is saved in {run_dir}; run the same command with --resume "
                       "to continue.", err=True)  # fmt: skip
            root = click.get_current_context().find_root()
            if isinstance(root.obj, dict):
                root.obj["progress_saved"] = True
        else:
            store.discard()  # nothing to resume: do not leave a folder that blocks a rerun
        raise
    store.discard()


@cli.command("run")
@click.argument("cmdlet")
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME[=VALUE]",
              help="A parameter (repeatable): -p ResultSize=Unlimited, -p Filter=\"...\", "
                   "-p Archive (a switch). Numbers, true/false and comma lists are typed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .xlsx, .csv, .parquet or .json.")
@connection_options
def run_command(cmdlet: str, parameters: tuple[str, ...], output: Path,
                connection: dict[str, Any]) -> None:
    """Run one Exchange cmdlet and write its output as a table.

    \b
    Example:
      psbridge run Get-CASMailbox -p ResultSize=Unlimited -o cas.xlsx --server mail
    """  # fmt: skip
    from bridge import clixml, exchange, remote
    from bridge import output as outputs

    if not remote.is_cmdlet_name(cmdlet):
        raise click.BadParameter(
            f"{cmdlet!r} is not a cmdlet name like Get-Mailbox (the Exchange endpoint runs "
            "cmdlets with parameters only, no script text or pipelines)", param_hint="CMDLET")
    typed: dict[str, object] = {}
    for spec in parameters:
        try:
            name, value = remote.parse_parameter(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-p/--parameter") from exc
        typed[name] = value
    suffix = output.suffix.lower()
    if suffix != ".xlsx" and suffix not in outputs.FRAME_FORMATS:
        raise OutputError(f"cannot write {output}: unknown output type '{output.suffix}'; "
                          "use .xlsx, .csv, .parquet or .json.")  # fmt: skip
    with session_from_options(connection) as session:
        command, result = exchange.run_cmdlet(session, cmdlet, typed)
    for text in dict.fromkeys(result.warnings):
        click.echo(f"Warning: {text}", err=True)
    frame = clixml.records_to_frame(result.rows)
    if suffix == ".xlsx":
        tables = {cmdlet: frame}
        if result.errors:
            tables["Errors"] = clixml.records_to_frame(
                [{"Category": e.kind, "Message": e.message, "Target": e.target,
                  "ErrorId": e.error_id} for e in result.errors])  # fmt: skip
        workbook.write_tables(output, tables)
    else:
        outputs.write_frame(output, frame)
    click.echo(f"{remote.pipeline_text(command)}: {len(result.rows)} row(s) -> {output}")
    if result.errors:
        first = result.errors[0]
        click.echo(f"Error: {len(result.errors)} error record(s) from the server; first: "
                   f"{first.kind}: {first.message}", err=True)  # fmt: skip
        click.get_current_context().exit(int(ExitCode.PARTIAL))


# --- scripts commands ---
# The other ways in (ps_scripts/): `via_options` adds --via/--tenant/--app-id/
# --certificate-thumbprint/--certificate-file to `mobile` (a `via: dict` keyword) and
# `collecting_via(via, connection, collection, ...)` yields the same Collection shape as
# `collecting`, from Get-PsbridgeExoData.ps1 on a jump host or in a local pwsh.
# `psbridge scripts` shows (or copies) the scripts, e.g. Export-PsbridgeData.ps1 for a
# Windows admin to run.

_VIA_CHOICES = ("direct", "jumphost", "pwsh")
_APP_KEYS = ("tenant", "app_id", "certificate_thumbprint", "certificate_file")

# --via and the Exchange Online app options; the command receives ``via: dict``.
via_options = _option_group("via", [
        click.option("--via", type=click.Choice(_VIA_CHOICES), default="direct",
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


def _jumphost_connection(connection: dict[str, Any]) -> dict[str, Any]:
    """A jump host's WinRM defaults (/wsman, 5985 or 5986, Microsoft.PowerShell) for what
    neither the command line nor the profile sets."""
    from bridge import config

    profile = config.load_profile(connection["profile"]) if connection.get("profile") else {}
    jump = dict(connection)
    for key, default in (("configuration", "Microsoft.PowerShell"), ("path", "wsman")):
        if jump.get(key) is None and key not in profile:
            jump[key] = default
    if jump.get("port") is None and "port" not in profile:
        https = jump.get("https") if jump.get("https") is not None else profile.get("https")
        jump["port"] = 5986 if https else 5985
    return jump


@contextlib.contextmanager
def collecting_via(
    via: dict[str, Any],
    connection: dict[str, Any],
    collection: dict[str, Any],
    *,
    output: Path,
    recipient_types: Sequence[str] = ("UserMailbox",),
    all_devices: bool = False,
    device_filter: str | None = None,
) -> Iterator[Any]:
    """`collecting` for --via direct; otherwise run Get-PsbridgeExoData.ps1 (jump host or
    local pwsh) and yield its mailboxes, devices, errors and meta."""
    import os

    from bridge import scripts

    app_values = [via[key] for key in _APP_KEYS]
    if via["via"] == "direct":
        if any(value is not None for value in app_values):
            raise click.UsageError("--tenant/--app-id/--certificate-* go with --via jumphost "
                                   "or --via pwsh.")
        with collecting(connection, collection, output=output, recipient_types=recipient_types,
                        device_filter=device_filter) as result:
            yield result
        return
    if collection.get("resume"):
        raise click.UsageError(f"--resume works with --via direct; --via {via['via']} runs the "
                               "script in one go.")
    if not via["tenant"] or not via["app_id"]:
        raise click.UsageError(f"--via {via['via']} needs --tenant and --app-id (and "
                               "--certificate-thumbprint or --certificate-file).")
    app = scripts.ExoApp(via["tenant"], via["app_id"], via["certificate_thumbprint"],
                         via["certificate_file"])
    certificate_password = os.environ.get(scripts.CERTIFICATE_PASSWORD_VARIABLE) or None
    started = datetime.now(UTC)
    if via["via"] == "pwsh":
        if connection.get("server") or connection.get("profile"):
            raise click.UsageError("--via pwsh runs PowerShell on this machine: leave out "
                                   "--server/--profile.")
        if not connection.get("quiet"):
            click.echo(f"Running {scripts.EXO_SCRIPT} in pwsh for {app.organization} ...",
                       err=True)
        result = scripts.collect_via_pwsh(app, recipient_types=recipient_types,
                                          all_devices=all_devices,
                                          certificate_password=certificate_password,
                                          progress=progress_for(connection.get("quiet", False)))
        result.meta.update(server="local pwsh", configuration="pwsh -File")
    else:
        if certificate_password:
            raise ConfigError("--via jumphost cannot pass a .pfx password: import the "
                              "certificate into the jump host's store and use "
                              "--certificate-thumbprint.")
        session = session_from_options(_jumphost_connection(connection))
        if not connection.get("quiet"):
            click.echo(f"Running {scripts.EXO_SCRIPT} on {session.settings.url} for "
                       f"{app.organization} ...", err=True)
        with session:
            result = scripts.collect_via_jumphost(session, app, recipient_types=recipient_types,
                                                  all_devices=all_devices)
        result.meta.update(server=session.settings.url,
                           configuration=session.settings.configuration,
                           user=session.settings.username)
    result.meta.update(strategy=f"script via {via['via']} ({scripts.EXO_SCRIPT})",
                       seconds=(datetime.now(UTC) - started).total_seconds())
    yield result


@cli.command("scripts")
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


# --- report commands ---
# `mobile` (live with the connection options, or --from-clixml offline) and `demo` (the
# sandbox on loopback, collected over real WSMan/NTLM). Both build frames.build_report and
# write workbook.write_report (or the Devices table as CSV/Parquet/JSON).

_REPORT_FORMATS = ("xlsx", "csv", "parquet", "json")
_RECIPIENT_TYPE = r"^[A-Za-z]+$"


def _stale_buckets(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        days = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of days like 30,90,365") from None
    if not days or any(day < 1 for day in days) or list(days) != sorted(set(days)):
        raise click.BadParameter(f"{value!r}: the days must increase and be at least 1")
    return days


def _report_output(output: Path | None, output_format: str | None, stem: str) -> tuple[Path, str]:
    """The output path and format: --format, else the extension of -o, else xlsx."""
    if output is None:
        chosen = output_format or "xlsx"
        return Path(f"{stem}.{chosen}"), chosen
    suffix = output.suffix.lower().lstrip(".")
    if output_format is None:
        if suffix not in _REPORT_FORMATS:
            raise OutputError(f"cannot write {output}: unknown output type '{output.suffix}'; "
                              "use .xlsx, .csv, .parquet or .json.")
        return output, suffix
    if suffix != output_format:
        raise click.BadParameter(f"{output} does not end in .{output_format}",
                                 param_hint="'-o' / '--output'")
    return output, output_format


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The report's filters and output options; the command receives ``report_options``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bridge import frames

        recipient_types = kwargs.pop("recipient_types") or ("UserMailbox",)
        for kind in recipient_types:
            if not kind.isalpha():
                raise click.BadParameter(f"{kind!r} is not a recipient type like UserMailbox",
                                         param_hint="'--recipient-type'")
        kwargs["report_options"] = frames.ReportOptions(
            all_devices=kwargs.pop("all_devices"),
            recipient_types=tuple(dict.fromkeys(recipient_types)),
            stale_days=kwargs.pop("stale_days"),
            stale_thresholds=kwargs.pop("stale_buckets"),
            include_identifiers=kwargs.pop("include_identifiers"),
        )
        return command(*args, **kwargs)

    options = [
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Report file (default mobile-devices.xlsx, or .csv/.parquet/.json "
                          "with --format)."),
        click.option("--format", "output_format", type=click.Choice(_REPORT_FORMATS),
                     help="xlsx: the workbook (default); csv, parquet, json: the Devices "
                          "table only, for Power BI and scripts."),
        click.option("--all-devices", is_flag=True,
                     help="Every device, not only Outlook for iOS and Android."),
        click.option("--recipient-type", "recipient_types", multiple=True, metavar="TYPE",
                     help="Mailbox RecipientTypeDetails to include (repeatable; default "
                          "UserMailbox), e.g. --recipient-type SharedMailbox."),
        click.option("--stale-days", type=click.IntRange(min=0), metavar="N",
                     help="Only devices without a successful sync for N days or more "
                          "(or never)."),
        click.option("--stale-buckets", default="30,90,365", show_default=True,
                     callback=_stale_buckets, metavar="D1,D2,...",
                     help="StaleBucket edges in days; past the first a device counts as "
                          "stale."),
        click.option("--include-identifiers", is_flag=True,
                     help="Keep DeviceImei and DevicePhoneNumber (left out by default)."),
        click.option("--as-of", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
                                                      "%Y-%m-%d %H:%M"]),
                     metavar="YYYY-MM-DD[THH:MM:SS]",
                     help="Count days since the last sync from this UTC time (default: now, "
                          "or when an offline export was taken)."),
        click.option("--open", "open_report", is_flag=True,
                     help="Open the report when it is written."),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _command_line() -> str:
    import sys

    return workbook.redact_command_line(["psbridge", *sys.argv[1:]])


def _write_report_file(output: Path, output_format: str, report: frames.Report,
                       run: workbook.RunDetails, view: history.HistoryView | None) -> None:
    from bridge import output as outputs

    if output_format == "xlsx":
        workbook.write_report(output, report, run, history=view)
    else:
        outputs.write_frame(output, report.devices_sheet())


def _print_figures(report: frames.Report, output: Path) -> None:
    figures = report.figures
    lines = [
        ("Mailboxes checked", f"{figures.mailboxes_checked:,}"),
        ("Users with devices", f"{figures.users_with_devices:,}"),
        ("Users without devices", f"{figures.users_without_devices:,}"),
        ("Devices", f"{figures.devices:,}"),
        ("On Outlook native sync", f"{figures.native_share:.1%}"),
        ("Still on REST (legacy)", f"{figures.rest:,}"),
        (f"Stale (over {report.options.stale_after} days)", f"{figures.stale:,}"),
        ("Never synced", f"{figures.never_synced:,}"),
    ]
    if figures.errors:
        lines.append(("Errors", f"{figures.errors:,}"))
    click.echo(f"Report written to {output.resolve()}")
    width = max(len(label) for label, _value in lines)
    for label, value in lines:
        click.echo(f"  {label:<{width}}  {value:>8}")


def _finish(report: frames.Report, output: Path, open_report: bool) -> None:
    _print_figures(report, output)
    if open_report:
        click.launch(str(output))
    if report.figures.errors:
        click.echo(f"Error: {report.figures.errors} mailbox(es) or command(s) failed; the "
                   f"report lists them (Errors sheet of the workbook).", err=True)
        click.get_current_context().exit(int(ExitCode.PARTIAL))


@cli.command("mobile")
@click.option("--from-clixml", "from_clixml", multiple=True, metavar="DIR_OR_FILE",
              type=click.Path(path_type=Path),
              help="Build the report offline from Export-Clixml files of Get-Mailbox and "
                   "Get-MobileDeviceStatistics (a folder or files; repeatable).")
@report_options
@connection_options
@collection_options
@via_options
@history_options
def mobile_command(from_clixml: tuple[Path, ...], output: Path | None,
                   output_format: str | None, open_report: bool, as_of: datetime | None,
                   report_options: frames.ReportOptions, connection: dict[str, Any],
                   collection: dict[str, Any], via: dict[str, Any],
                   history_settings: history.HistorySettings) -> None:
    """The mobile device report: which devices sync each mailbox, with what, how recently.

    Live: psbridge mobile --server mail.contoso.com --user admin@contoso.com -o report.xlsx

    Offline: psbridge mobile --from-clixml .\\export -o report.xlsx
    """
    from bridge import frames

    output, output_format = _report_output(output, output_format, "mobile-devices")
    started = datetime.now(UTC)
    as_of = as_of.replace(tzinfo=UTC) if as_of else None
    if from_clixml:
        if connection.get("server") or connection.get("profile"):
            raise click.UsageError("--from-clixml reads files: leave out --server/--profile.")
        if via["via"] != "direct":
            raise click.UsageError("--from-clixml reads files: leave out --via.")
        source = click.get_current_context().get_parameter_source
        if any(source(name) is not click.core.ParameterSource.DEFAULT
               for name in ("strategy", "resume", "run_dir")):
            raise click.UsageError(
                "--from-clixml reads files: --strategy, --resume and --run-dir are for "
                "collecting from a server; leave them out.")
        export = frames.load_exports(list(from_clixml))
        run_started = as_of or export.created or started
        report = frames.build_report(export.mailboxes, export.devices, export.errors,
                                     options=report_options, run_started=run_started)
        organisation = export.organisation or frames.organisation_name(report.mailboxes,
                                                                       "offline export")
        files = export.mailbox_files + export.device_files
        run = workbook.RunDetails(
            command_line=_command_line(), organisation=organisation,
            server=str(export.manifest.get("computer") or "(offline export)"),
            endpoint=", ".join(str(path) for path in files),
            source="Export-Clixml files" + (f" ({export.manifest['source']})"
                                            if export.manifest.get("source") else ""),
            strategy="offline", started=started, finished=datetime.now(UTC),
            version=__version__)
        view = history_for_run(history_settings, report, organisation=organisation,
                               server=run.server, source="clixml", finished=run.finished,
                               psbridge_version=__version__)
        _write_report_file(output, output_format, report, run, view)
        _finish(report, output, open_report)
        return
    device_filter = (None if report_options.all_devices
                     else f"DeviceModel -eq '{report_options.device_model}'")
    with collecting_via(via, connection, collection, output=output,
                        recipient_types=report_options.recipient_types,
                        all_devices=report_options.all_devices,
                        device_filter=device_filter) as result:
        for text in result.meta.get("warnings") or []:
            click.echo(f"Warning: {text}", err=True)
        report = frames.build_report(result.mailboxes, result.devices, result.errors,
                                     options=report_options, run_started=as_of or started)
        server = str(result.meta.get("server", ""))
        # Get-OrganizationConfig's Name, as an export's manifest records it: one history
        # for live and offline runs of one organisation
        organisation = (str(result.meta.get("organization") or "")
                        or frames.organisation_name(report.mailboxes, server))
        run = _live_run_details(result.meta, organisation, started)
        view = history_for_run(history_settings, report, organisation=organisation,
                               server=server, source="live", finished=run.finished,
                               psbridge_version=__version__)
        _write_report_file(output, output_format, report, run, view)
    _finish(report, output, open_report)


def _live_run_details(meta: dict[str, object], organisation: str,
                      started: datetime) -> workbook.RunDetails:
    extra = {
        "Collected as": str(meta.get("user") or "the current Windows/Kerberos identity"),
        "Commands sent": str(meta.get("commands", "")),
        "Retries / reconnects": f"{meta.get('retries', 0)} / {meta.get('reconnects', 0)}",
        "Concurrency": str(meta.get("concurrency", "")),
        "Server-side device filter": str(meta.get("device_filter") or "none"),
        "Resumed": "yes" if meta.get("resumed") else "no",
    }
    server = str(meta.get("server", ""))
    return workbook.RunDetails(
        command_line=_command_line(), organisation=organisation,
        server=server.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0],
        endpoint=f"{server} ({meta.get('configuration', '')})", source="live (WSMan/PSRP)",
        strategy=str(meta.get("strategy", "")), started=started,
        finished=datetime.now(UTC), version=__version__, extra=extra)


@cli.command("demo")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("psbridge-demo.xlsx"), show_default=True, help="Workbook to write.")
@click.option("--mailboxes", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Size of the sandbox organisation.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the sandbox organisation.")
@click.option("--open", "open_report", is_flag=True, help="Open the workbook when written.")
@history_options
def demo_command(output: Path, mailboxes: int, seed: int, open_report: bool,
                 history_settings: history.HistorySettings) -> None:
    """Try psbridge: the report of a sandbox Exchange organisation, collected live.

    Starts the built-in Exchange sandbox on 127.0.0.1, connects to it over WSMan/PSRP
    with NTLM like to a real server, runs the mobile report and writes the workbook.
    """
    from bridge import config, exchange, frames, remote
    from bridge.sandbox import Sandbox

    if output.suffix.lower() != ".xlsx":
        raise OutputError(f"cannot write {output}: the demo writes a workbook; use a name "
                          "ending in .xlsx.")
    if not output.parent.is_dir():  # say so before collecting, not after
        raise OutputError(f"cannot write {output}: folder {output.parent} does not exist.")
    options = frames.ReportOptions()
    started = datetime.now(UTC)
    # the report's story is REST -> Outlook: the demo organisation reports Exchange
    # Online's ClientTypes (an on-premises sandbox reports EAS for those devices)
    with Sandbox(mailboxes=mailboxes, seed=seed, online_client_types=True) as sandbox:
        settings = config.build_settings({
            "server": sandbox.host, "port": sandbox.port, "https": False, "auth": "ntlm",
            "user": sandbox.username})
        click.echo(f"Sandbox: {mailboxes} mailboxes (seed {seed}) at {sandbox.url}; "
                   "connecting over WSMan/PSRP with NTLM ...")
        with remote.Session(settings, sandbox.password) as session:
            result = exchange.collect(
                session, strategy="bulk", recipient_types=options.recipient_types,
                device_filter=f"DeviceModel -eq '{options.device_model}'")
        # Days since the last sync count from the sandbox's own clock: stable figures.
        report = frames.build_report(result.mailboxes, result.devices, result.errors,
                                     options=options,
                                     run_started=sandbox.organisation.reference_time)
        click.echo(f"Collected {len(result.mailboxes)} mailboxes and {len(result.devices)} "
                   f"devices in {result.meta.get('seconds', 0):.1f} s "
                   f"({result.meta.get('commands', 0)} commands, bulk strategy).")
        organisation = (str(result.meta.get("organization") or "")
                        or frames.organisation_name(report.mailboxes, sandbox.host))
        run = _live_run_details(result.meta, organisation, started)
        run = workbook.RunDetails(**{**run.__dict__, "source": "psbridge demo: sandbox "
                                     f"organisation ({mailboxes} mailboxes, seed {seed}) "
                                     "over WSMan/PSRP, with Exchange Online's ClientTypes "
                                     "(REST, Outlook)"})
        # Recorded like any run (issue 7), under a name of its own so that a sandbox
        # never shares a history with a real organisation or a sandbox of another size.
        view = history_for_run(
            history_settings, report, server=run.server, source="demo",
            organisation=f"{run.organisation} (psbridge sandbox, {mailboxes} mailboxes, "
                         f"seed {seed})",
            finished=run.finished, psbridge_version=__version__)
        workbook.write_report(output, report, run, history=view)
    _finish(report, output, open_report)


# --- sandbox commands ---


@cli.group("sandbox")
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


# --- convert commands ---
# `convert`: Export-Clixml files to a workbook (a sheet per file) or one CSV/Parquet/JSON
# table; the work is bridge.convert.convert.


@cli.command("convert")
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="psbridge")


if __name__ == "__main__":  # pragma: no cover
    main()
