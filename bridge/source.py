"""What a collection strategy runs on: anything that runs a cmdlet and gives back rows.

The WSMan :class:`bridge.remote.Session` is one source; Exchange Online's REST client
and the script runners are others. :mod:`bridge.exchange`'s strategies are written
against :class:`Source` only, so no strategy is copied per transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.commands import Command, CommandResult, SessionStats


class Source(Protocol):
    """Runs Exchange cmdlets, several at once up to :attr:`concurrency`, thread-safely."""

    #: counters for the Run sheet and benchmarks (commands, retries, reconnects, ...)
    stats: SessionStats

    @property
    def endpoint(self) -> str:
        """Where the cmdlets run, for the Run sheet (a URL, a host, a file)."""
        ...

    @property
    def configuration(self) -> str | None:
        """The PowerShell session configuration, when there is one."""
        ...

    @property
    def user(self) -> str | None:
        """Who runs the cmdlets, when known (a user name, UPN or app id; never a secret)."""
        ...

    @property
    def pipelines(self) -> bool:
        """True when several commands may be sent as one pipeline (WSMan); False when each
        request holds one cmdlet (Exchange Online's REST endpoint)."""
        ...

    @property
    def concurrency(self) -> int:
        """How many commands may run at once."""
        ...

    def set_concurrency(self, connections: int) -> None:
        """Allow up to ``connections`` commands at once."""
        ...

    def run(
        self,
        commands: Command | Sequence[Command],
        *,
        on_output: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """Run one command (or pipeline, when :attr:`pipelines`), retrying what is safe.

        ``on_output(n)``: objects received so far by this try, for progress display.
        Raises :class:`bridge.errors.BridgeError` subclasses (CommandNotFound,
        RemoteCommandError, ConnectionFailed, AuthenticationFailed, Throttled...).
        """
        ...

    def abort(self) -> None:
        """Make commands running in other threads stop at their next round trip."""
        ...
