"""Stop signals: Ctrl+C, SIGTERM (a scheduler or service stopping the run), SIGHUP (a
closed terminal) and, on Windows, SIGBREAK (Ctrl+Break, a closed console) all stop a run
the same way: the first raises :class:`StopRequested` (a KeyboardInterrupt) in the main
thread, so the run saves its progress and deletes its shells as for Ctrl+C; the next
ones are ignored, so a second Ctrl+C never interrupts that cleanup or the exit.

Exit codes: 130 for Ctrl+C and Ctrl+Break, 143 for SIGTERM, 129 for SIGHUP (128 + the
signal's number, as a shell reports a process the signal killed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from bridge.errors import ExitCode

#: signal name -> (exit code, how the "interrupted" line names it; None: Ctrl+C)
_STOPS: dict[str, tuple[ExitCode, str | None]] = {
    "SIGINT": (ExitCode.INTERRUPTED, None),
    "SIGTERM": (ExitCode.TERMINATED, "SIGTERM"),
    "SIGHUP": (ExitCode.HANGUP, "SIGHUP"),  # not on Windows
    "SIGBREAK": (ExitCode.INTERRUPTED, "Ctrl+Break"),  # Windows only
}


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived; handled wherever Ctrl+C is."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.exit_code, self.cause = _STOPS[signal_name]


def stop_signals() -> list[signal.Signals]:
    """The stop signals this platform has."""
    return [getattr(signal, name) for name in _STOPS if hasattr(signal, name)]


class StopSignals:
    """Installs the stop handlers (main thread only); ``received`` names the first."""

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for number in stop_signals():
            try:
                signal.signal(number, self._handle)
            except (OSError, ValueError):  # not the main thread, or not allowed here
                continue

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            return  # stopping already: let the cleanup finish
        self.received = signal.Signals(number).name
        # Ignored, not handled, from now on: Python puts back the default action of the
        # signals it handles while it exits, and a second Ctrl+C then would kill it
        # (exit -2) after its "interrupted" line.
        for other in stop_signals():
            try:
                signal.signal(other, signal.SIG_IGN)
            except (OSError, ValueError):
                continue
        raise StopRequested(self.received)


def exit_now(code: int) -> None:
    """Exit with ``code`` without waiting for worker threads.

    After a stop the session has deleted its shells and the checkpoint is closed, but a
    worker thread may still wait for a hung server to answer (up to the read timeout);
    Python would join it before exiting. Nothing else is left to do, so exit at once.
    """
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not others:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue
    os._exit(code)
