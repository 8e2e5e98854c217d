"""``psbridge history list|show|prune`` and ``psbridge diff``: past runs from the history
database, and two of them compared in a workbook."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge import history, jobs, workbook
from bridge.cli import terminal
from bridge.cli.options import history_file_option
from bridge.errors import HistoryError, OutputError

if TYPE_CHECKING:
    from bridge import frames


def history_for_run(settings: history.HistorySettings, report: frames.Report, *,
                    organisation: str, server: str = "", source: str = "",
                    finished: datetime | None = None) -> history.HistoryView | None:
    """Record the run (as jobs.record_history); on failure warn on stderr and go on."""
    return jobs.record_history(settings, report, organisation=organisation, server=server,
                               source=source, finished=finished, notify=terminal.echo_note)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _counts_text(counts: dict[str, int], empty: str = "none") -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or empty


@click.group("history")
def history_group() -> None:
    """Past runs: list them, show one, prune old ones (see also: psbridge diff)."""


@history_group.command("list")
@history_file_option
@click.option("--organisation", "--organization", help="Only runs of this organisation.")
def history_list(history_path: Path | None, organisation: str | None) -> None:
    """List recorded runs with their key figures."""
    path = history_path or history.default_history_path()
    if not path.exists():
        click.echo(f"No runs recorded yet ({path} does not exist).")
        return
    with history.History(path, create=False) as store:
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
@history_file_option
def history_show(run_id: int, history_path: Path | None) -> None:
    """Show one run: its figures and what changed since the run before it."""
    path = history_path or history.default_history_path()
    if not path.exists():  # opening it would create an empty history there
        raise HistoryError(f"there is no history at {path}; run 'psbridge mobile' first.")
    with history.History(path, create=False) as store:
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
@history_file_option
def history_prune(keep: int, organisation: str | None, history_path: Path | None) -> None:
    """Delete all but the newest N runs of each organisation."""
    path = history_path or history.default_history_path()
    if not path.exists():
        click.echo(f"Nothing to prune ({path} does not exist).")
        return
    with history.History(path, create=False) as store:
        removed = store.prune(keep, organisation)
        if removed:
            store.vacuum()
    click.echo(f"Removed {removed} run(s); kept the newest {keep} per organisation.")


@click.command("diff")
@click.argument("run_a", metavar="RUN_A", type=int)
@click.argument("run_b", metavar="RUN_B", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Workbook to write (default: psbridge-diff-RUN_A-RUN_B.xlsx).")
@history_file_option
def diff_command(run_a: int, run_b: int, output: Path | None, history_path: Path | None) -> None:
    """Compare two recorded runs: a workbook with the Changes and Trend sheets."""
    target = output or Path(f"psbridge-diff-{run_a}-{run_b}.xlsx")
    if target.suffix.lower() != ".xlsx":
        raise OutputError(f"cannot write {target}: psbridge diff writes an .xlsx workbook.")
    path = history_path or history.default_history_path()
    if not path.exists():
        raise HistoryError(f"there is no history at {path}; run 'psbridge mobile' first.")
    with history.History(path, create=False) as store:
        view = store.compare(run_a, run_b)
    workbook.write_history_workbook(target, view)
    click.echo(f"Run {run_a} -> run {run_b} ({view.current.organisation}): "
               f"{_counts_text(view.change_counts, 'no changes')}.")
    click.echo(f"Wrote {target}")
