"""The WSMan session: Session runs Command pipelines and scripts on pooled connections."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell

from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    Row,
    SessionStats,
    is_read_only,
    pipeline_text,
)
from bridge.errors import BridgeError, ConnectionFailed, RemoteCommandError
from bridge.remote.channel import _Channel, _ChannelPool
from bridge.remote.faults import (
    _LIBRARY_ERRORS,
    _classify,
    _error_record,
    _raise_terminating,
    _Stopped,
    _Transient,
    _tries,
    _warning_text,
)
from bridge.remote.output import _read_output
from bridge.remote.retry import RetryLoop, _Pacing
from bridge.remote.settings import ConnectionSettings

log = logging.getLogger(__name__)


class Session:
    """Connections to one endpoint; :meth:`run` is thread safe and retries transient failures.

    Use as a context manager: entering opens the first connection (so a wrong server or
    password fails at once), leaving closes every pool. The password lives only in the
    channel pool and in pypsrp's transport; it is never in repr(), logs or messages.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        password: str | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = SessionStats()
        self._rng = rng or random.Random()
        self._lock = threading.Condition()
        self._pool = _ChannelPool(settings, password, self.stats, self._lock)
        self._pacing = _Pacing(settings, self.stats, self._lock, sleep)
        self._retry = RetryLoop(settings, self._pool, self._pacing, self._rng, self._invoke)

    @property
    def opened_at(self) -> datetime | None:
        """When the first connection opened (None before)."""
        return self._pool.opened_at

    def __repr__(self) -> str:
        return f"Session({self.settings.url!r}, user={self.settings.who!r})"

    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- connections

    def open(self) -> None:
        """Open the first connection now, so configuration errors surface before any work."""
        policy = self.settings.retry
        attempt = 1
        while True:
            try:
                channel = self._pool._acquire()
            except _Transient as exc:
                if attempt >= policy.attempts:
                    raise ConnectionFailed(
                        f"cannot open a PowerShell session at {self.settings.url}: gave up "
                        f"after {_tries(attempt)}: {exc}"
                    ) from exc
                self._pacing._pause(policy.delay(attempt, self._rng, exc.server_wait))
                attempt += 1
                continue
            self._pool._release(channel)
            return

    def close(self) -> None:
        self._pacing._stopped.set()
        self._pool.close()

    def abort(self) -> None:
        """Make commands running in other threads stop at their next round trip.

        For Ctrl+C or a fatal error in one worker: the others give up at once instead
        of finishing a long pipeline. The session cannot run commands afterwards.
        """
        self._pool.abort()
        self._pacing._stopped.set()

    @property
    def endpoint(self) -> str:
        return self.settings.url

    @property
    def configuration(self) -> str | None:
        return self.settings.configuration

    @property
    def user(self) -> str | None:
        return self.settings.username

    @property
    def pipelines(self) -> bool:
        return True

    def set_concurrency(self, connections: int) -> None:
        """Allow up to ``connections`` connections at once (one runspace each)."""
        self._pool.set_concurrency(connections)

    @property
    def concurrency(self) -> int:
        return self._pool.concurrency

    # ---- commands

    def run(
        self,
        commands: Command | Sequence[Command],
        *,
        on_output: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """Run one pipeline; retry transient failures on a fresh connection.

        Once the command reached the server, only a pipeline of read-only verbs (see
        :func:`is_read_only`) is run again; any other then raises RemoteCommandError
        saying it may or may not have run. A pipeline the server ends Stopped is such a
        failure: its partial rows are never returned.

        ``on_output(n)`` is told how many objects this try has received so far, as they
        arrive (it starts again from 0 when a retry starts over), for progress display.
        Raises :class:`CommandNotFound` for a cmdlet the endpoint lacks (or RBAC hides),
        :class:`RemoteCommandError` for a terminating error, :class:`ConnectionFailed` /
        :class:`AuthenticationFailed` when the server cannot be used.
        """
        pipeline = [commands] if isinstance(commands, Command) else list(commands)
        if not pipeline:
            raise ValueError("no command to run")
        return self._retry._with_retries(
            pipeline_text(pipeline),
            lambda ps: _add_commands(ps, pipeline),
            on_output,
            rerun_safe=is_read_only(pipeline),
        )

    def run_script(
        self, script: str, parameters: Mapping[str, object] | None = None
    ) -> CommandResult:
        """Run script text with parameters (full-language endpoints such as a jump host)."""

        def build(ps: PowerShell) -> None:
            ps.add_script(script)
            for name, value in (parameters or {}).items():
                ps.add_parameter(name, value)

        # psbridge's own ps_scripts only collect (Get-PsbridgeExoData.ps1): safe to rerun
        return self._retry._with_retries("script", build, rerun_safe=True)

    def _invoke(
        self,
        channel: _Channel,
        label: str,
        build: Callable[[PowerShell], None],
        on_output: Callable[[int], None] | None = None,
    ) -> CommandResult:
        ps = PowerShell(channel.pool)
        build(ps)
        rows: list[Row] = []
        started = False
        try:
            ps.begin_invoke()
            started = True
            while ps.state == PSInvocationState.RUNNING:
                if self._pool._aborted:
                    # stop the command on the server too, then leave the connection
                    ps.stop()
                    raise RemoteCommandError(f"{label}: stopped (the run was interrupted)")
                ps.poll_invoke()
                if ps.output:
                    # read each batch as it arrives: only rows are kept, never the XML
                    # of a whole large answer
                    rows.extend(_read_output(item, label) for item in ps.output)
                    ps.output.clear()
                    if on_output is not None:
                        on_output(len(rows))
        except _LIBRARY_ERRORS as exc:
            try:
                _classify(exc, self.settings, first_contact=False)
            except _Transient as transient:
                # A fault answering the Command request means the server refused the
                # command; any other failure from sending it on leaves unknown whether
                # it ran (a drop or timeout may come after the server started it).
                transient.maybe_ran = started or not (
                    isinstance(exc, WSManFaultError) or transient.refused
                )
                raise
            raise
        except BridgeError:
            if ps.state == PSInvocationState.RUNNING:
                # output psbridge cannot read (ClixmlError): the pipeline runs on, and on
                # this connection's one runspace the next command would queue behind it
                # for ever. Dropping the connection deletes its shell, pipeline and all.
                channel.broken = True
            raise
        with self._lock:
            self.stats.commands += 1
        errors = [_error_record(record) for record in ps.streams.error]
        warning_texts = [_warning_text(record) for record in ps.streams.warning]
        # Exchange writes a micro delay under 10 s as a verbose record, longer as a warning
        self._pacing._note_warnings(
            [*warning_texts, *(_warning_text(r) for r in ps.streams.verbose)]
        )
        self._release_pipeline(channel, ps)
        if ps.state == PSInvocationState.FAILED:
            terminating = errors.pop() if errors else ErrorRecord("", "NotSpecified", "", "")
            _raise_terminating(label, terminating, self.settings)
        if ps.state == PSInvocationState.STOPPED:
            # Stopped on the server (an admin, IIS recycling, Exchange throttling): the
            # rows are partial. A transient failure: a read-only command starts over, its
            # partial rows dropped here (callers see rows only from a finished try).
            record = errors.pop() if errors else None
            why = record.message if record is not None and record.message else "no reason given"
            stopped = _Stopped(f"the server stopped the command ({why})", keep_connection=True)
            stopped.maybe_ran = True
            raise stopped
        return CommandResult(rows=rows, errors=errors, warnings=warning_texts)

    def _release_pipeline(self, channel: _Channel, ps: PowerShell) -> None:
        # Signal terminate: MS-WSMV says the client MUST send it before the next command
        # so the server can free the command; without it Windows refuses commands once
        # MaxConcurrentCommandsPerShell (1000) is reached (pypsrp #148), i.e. halfway
        # through a 2,000-mailbox per-mailbox run. It costs one round trip per command.
        try:
            ps.close()
        except _LIBRARY_ERRORS as exc:
            # The answer is complete: running the command again (a Set- or Remove- one
            # through psbridge run, too) would be wrong. Drop the connection instead;
            # deleting its shell frees the command on the server.
            log.debug("%s: freeing the finished command failed: %s", ps.id, exc)
            channel.broken = True


def _add_commands(ps: PowerShell, pipeline: Sequence[Command]) -> None:
    # Values always travel as parameters, never pasted into script text (NoLanguage).
    for command in pipeline:
        ps.add_cmdlet(command.name)
        for name, value in command.parameters.items():
            ps.add_parameter(name, list(value) if isinstance(value, tuple) else value)
