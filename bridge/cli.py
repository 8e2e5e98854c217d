"""The psbridge command line: the only module that imports click. Thin: parse, call, report.

Every BridgeError becomes one ``Error: ...`` line on stderr and the error's exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge import __version__, history, workbook
from bridge.errors import BridgeError, ExitCode, HistoryError, OutputError

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

    summary = export_organisation(Organisation(mailboxes=mailboxes, seed=seed), folder)
    click.echo(f"Wrote {summary.mailboxes} mailboxes and {summary.devices} device "
               f"partnerships (seed {seed}) to {folder}: "
               + ", ".join(path.name for path in summary.files))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="psbridge")


if __name__ == "__main__":  # pragma: no cover
    main()
