"""The terminal side of the command line: errors to exit codes, the progress bar, the
notes and figures a run prints."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from bridge.errors import BridgeError, ExitCode

if TYPE_CHECKING:
    from bridge.jobs import Note, ReportRun


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
            # only a run that saved its progress (see `echo_note`) has kept anything
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


def debugging() -> bool:
    """True when the command line asked for --debug."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx else None
    return bool(isinstance(root, dict) and root.get("debug"))


class _LibraryWarnings(logging.Handler):
    """psbridge's own log warnings (a retry, a runspace refused) as ``Warning:`` lines on
    stderr, like every other warning; above the progress bar when there is one. Without
    it Python printed them bare (its last-resort handler), even with -q."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.bar: _ProgressBar | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = f"Warning: {self.format(record)}"
        if self.bar is not None:
            self.bar.note(text)
        else:
            click.echo(text, err=True)


_LIBRARY_WARNINGS = _LibraryWarnings()


def quiet_library_logs() -> None:
    """pypsrp logs every timeout it meets with a full traceback at ERROR; psbridge retries
    those and reports what matters itself. --debug shows them. psbridge's own warnings
    become ``Warning:`` lines."""
    if not debugging():
        logging.getLogger("pypsrp").setLevel(logging.CRITICAL)
    bridge_logger = logging.getLogger("bridge")
    if _LIBRARY_WARNINGS not in bridge_logger.handlers:
        bridge_logger.addHandler(_LIBRARY_WARNINGS)
    _LIBRARY_WARNINGS.bar = None


def password_prompt() -> Callable[[str], str] | None:
    """A hidden prompt on stderr when stdin is a terminal, else None (scheduled runs)."""
    import sys

    def prompt(text: str) -> str:
        return str(click.prompt(text, hide_input=True, err=True))

    return prompt if sys.stdin is not None and sys.stdin.isatty() else None


def echo_note(note: Note, *, quiet: bool = False) -> None:
    """Print a job's note: warnings and saved progress on stderr always, what runs now on
    stderr unless quiet, a run's steps on stdout."""
    if note.kind == "status":
        click.echo(note.text)
    elif note.kind == "warning":
        click.echo(f"Warning: {note.text}", err=True)
    elif note.kind == "saved":
        click.echo(f"Progress is saved in {note.text}; run the same command with --resume "
                   "to continue.", err=True)  # fmt: skip
        root = click.get_current_context().find_root()
        if isinstance(root.obj, dict):
            root.obj["progress_saved"] = True
    elif not quiet:
        click.echo(note.text, err=True)


def note_printer(quiet: bool = False) -> Callable[[Note], None]:
    """``echo_note`` as a job's ``notify``."""
    return lambda note: echo_note(note, quiet=quiet)


class _ProgressBar:
    """exchange.Progress on stderr: a bar with count, rate and ETA when the total is known,
    else a running count of objects with their rate. Only used on a terminal; thread safe
    (bulk commands report from their worker threads)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        import sys
        import threading

        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._bar: Any = None  # click's ProgressBar, entered by hand
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


def progress_for(quiet: bool) -> _ProgressBar | None:
    """A progress reporter for a job, or None (quiet, or stderr not a terminal)."""
    import sys

    if quiet or not sys.stderr.isatty():
        return None
    bar = _ProgressBar()
    # bridge's warnings (retries) go on lines of their own, not glued to the bar
    quiet_library_logs()
    _LIBRARY_WARNINGS.bar = bar
    return bar


def print_figures(run: ReportRun, output: Path) -> None:
    """The key figures under the path of the report written."""
    figures = run.figures
    lines = [
        ("Mailboxes checked", f"{figures.mailboxes_checked:,}"),
        ("Users with devices", f"{figures.users_with_devices:,}"),
        ("Users without devices", f"{figures.users_without_devices:,}"),
        ("Devices", f"{figures.devices:,}"),
        ("On Outlook native sync", f"{figures.native_share:.1%}"),
        ("Still on REST (legacy)", f"{figures.rest:,}"),
        (f"Stale (over {run.report.options.stale_after} days)", f"{figures.stale:,}"),
        ("Never synced", f"{figures.never_synced:,}"),
    ]
    if run.report.eas_figures is not None:
        lines.append(("EAS below 16.1", f"{run.report.eas_figures.below_minimum:,}"))
    if figures.errors:
        lines.append(("Errors", f"{figures.errors:,}"))
    click.echo(f"Report written to {output.resolve()}")
    width = max(len(label) for label, _value in lines)
    for label, value in lines:
        click.echo(f"  {label:<{width}}  {value:>8}")


def finish_report(run: ReportRun, open_report: bool) -> None:
    """Print the figures, open the report if asked, exit PARTIAL when some mailboxes or
    commands failed."""
    output = run.outputs[0].path
    print_figures(run, output)
    if run.cleanup_script is not None:
        path, count = run.cleanup_script
        click.echo(f"Cleanup script written to {path.resolve()}: {count} partnership(s); "
                   "review it, then run it with -Execute to remove them.")
    if open_report:
        click.launch(str(output))
    if run.figures.errors:
        click.echo(f"Error: {run.figures.errors} mailbox(es) or command(s) failed; the "
                   f"report lists them (Errors sheet of the workbook).", err=True)
        click.get_current_context().exit(int(run.exit_code))


def command_line() -> str:
    """This process's command line for the Run sheet, secrets redacted."""
    import sys

    from bridge import workbook

    return workbook.redact_command_line(["psbridge", *sys.argv[1:]])
