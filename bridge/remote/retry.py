"""Retrying transient failures with backoff (RetryLoop), and pacing commands while Exchange
Online applies micro delays (_Pacing)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from pypsrp.powershell import PowerShell

from bridge import throttling
from bridge.commands import CommandResult, SessionStats
from bridge.errors import BridgeError, ConnectionFailed, RemoteCommandError
from bridge.remote.budget import CmdletBudget
from bridge.remote.channel import _Channel, _ChannelPool
from bridge.remote.faults import _Stopped, _Transient, _tries
from bridge.remote.settings import ConnectionSettings

log = logging.getLogger(__name__)

#: runs a pipeline on a channel: (channel, label, build, on_output) -> result
Invoke = Callable[
    [_Channel, str, Callable[[PowerShell], None], Callable[[int], None] | None], CommandResult
]


class _Pacing:
    """Waits: the pace between commands under micro delays, and backoffs that abort() ends."""

    def __init__(
        self,
        settings: ConnectionSettings,
        stats: SessionStats,
        lock: threading.Condition,
        sleep: Callable[[float], None] | None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self._lock = lock
        # None: sleep, cut short by ``_stopped`` (set by abort() and close())
        self._sleep = sleep
        self._stopped = threading.Event()
        # the seconds an injected ``sleep`` (tests, benchmarks) was asked to wait: the
        # budget's clock moves on by them, as it would had they been slept
        self._slept = 0.0
        self._budget = CmdletBudget(clock=self._clock)  # the pace, once micro delays show it

    def _clock(self) -> float:
        return time.monotonic() + self._slept

    def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            self._slept += seconds
            return
        # short sleeps, not Event.wait: on Windows Ctrl+C does not interrupt a lock wait
        # (bpo-29971), but does interrupt time.sleep
        deadline = time.monotonic() + seconds
        while not self._stopped.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _note_warnings(self, texts: Iterable[str]) -> None:
        """Exchange's micro delays (warnings, or verbose records under 10 s): count them,
        and pace to the budget they show (bridge.remote.budget)."""
        delayed_ms = throttling.micro_delays_ms(texts)
        if delayed_ms:
            with self._lock:
                self.stats.micro_delays += len(delayed_ms)
            self._budget.over_budget()

    def _wait_for_pace(self) -> None:
        """Wait until the cmdlet budget (see :mod:`bridge.remote.budget`) allows a command."""
        while not self._stopped.is_set():
            wait = self._budget.wait()
            if wait <= 0:
                return
            self._pause(wait)


class RetryLoop:
    """Runs one pipeline on a pooled channel, retrying transient failures on a fresh one."""

    def __init__(
        self,
        settings: ConnectionSettings,
        pool: _ChannelPool,
        pacing: _Pacing,
        rng: random.Random,
        invoke: Invoke,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._pacing = pacing
        self._rng = rng
        self._invoke = invoke

    def _with_retries(
        self,
        label: str,
        build: Callable[[PowerShell], None],
        on_output: Callable[[int], None] | None = None,
        *,
        rerun_safe: bool,
    ) -> CommandResult:
        """Run ``build``'s pipeline, retrying transient failures. A failure after the
        command reached the server is retried only when ``rerun_safe`` (it only reads):
        a Set-/Remove-/New- command run again would make its change twice."""
        policy = self.settings.retry
        attempt = 1
        while True:
            self._pacing._wait_for_pace()
            channel: _Channel | None = None
            try:
                channel = self._pool._acquire()
                result = self._invoke(channel, label, build, on_output)
            except _Transient as exc:
                if channel is not None and exc.keep_connection:
                    self._pool._release(channel)
                elif channel is not None:
                    self._pool._discard(channel)
                if self._pool._aborted:
                    raise RemoteCommandError(f"{label}: stopped (the run was interrupted)") from exc
                if exc.maybe_ran and not rerun_safe:
                    raise RemoteCommandError(
                        f"{label}: {exc}; the command had been sent, so it may or may not "
                        "have run: check its effect before running it again"
                    ) from exc
                if attempt >= policy.attempts:
                    if isinstance(exc, _Stopped):  # the server failed the command: exit 7
                        raise RemoteCommandError(
                            f"{label}: gave up after {_tries(attempt)}: {exc}"
                        ) from exc
                    raise ConnectionFailed(
                        f"{label}: gave up after {_tries(attempt)}: {exc}"
                    ) from exc
                delay = policy.delay(attempt, self._rng, exc.server_wait)
                log.warning(
                    "%s",
                    throttling.retry_note(
                        label, str(exc), delay, throttled=exc.server_wait is not None
                    ),
                )
                with self._pool._lock:
                    self._pool.stats.retries += 1
                attempt += 1
                # a Ctrl+C elsewhere (abort) ends this wait at once: a thread left
                # sleeping out "Please wait for 300 seconds" would hold the exit up
                self._pacing._pause(delay)
                continue
            except BridgeError:
                if channel is not None:  # the server answered: the connection is fine
                    self._pool._release(channel)
                raise
            except BaseException:
                # Ctrl+C mid-request leaves the connection in an unknown state: drop it,
                # and delete its shell (a quick request on a fresh connection): left to
                # idle out, it would hold one of Exchange Online's 3 runspaces for 15
                # minutes, and a few Ctrl+C in a row would lock --resume out. One try
                # only: the user is waiting.
                if channel is not None:
                    self._pool._discard(channel, tries=1)
                raise
            self._pool._release(channel)
            return result
