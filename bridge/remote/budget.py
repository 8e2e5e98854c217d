"""Pacing to Exchange Online's cmdlet budget (PowerShellMaxCmdlets per
PowerShellMaxCmdletsTimePeriod, 200 per 5 s by default).

Exchange does not say the budget up front; it says when a command went over it, with a
micro delay. At that moment the commands sent in the last period are the budget (plus
the few in flight), so from then on psbridge sends at most a little under that many per
sliding period: the rate the budget allows, without the micro delays, throttling errors
and backoffs of sending faster. Another micro delay lowers the limit again. (Before,
each micro delay doubled a pause before every command and each quiet answer halved it:
about 9 commands/s against a budget allowing 20/s.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

#: Exchange Online's PowerShellMaxCmdletsTimePeriod (seconds): the period counted
WINDOW = 5.0
#: the share of the last period's commands psbridge keeps to after a micro delay: room
#: for the commands in flight and for other sessions of the user
MARGIN = 0.95


class CmdletBudget:
    """A sliding-window limit on commands, learned from Exchange's micro delays; shared by
    a session's threads. No limit until the first micro delay (on-premises: none)."""

    def __init__(
        self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        #: commands allowed per window; None until Exchange showed where its budget is
        self.limit: int | None = None

    def _forget_old(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()

    def wait(self) -> float:
        """Seconds to wait before the next command may go; 0 means go now (it is counted)."""
        with self._lock:
            now = self._clock()
            self._forget_old(now)
            if self.limit is not None and len(self._sent) >= self.limit:
                return max(0.001, self._sent[0] + self.window - now)
            self._sent.append(now)
            return 0.0

    def over_budget(self) -> None:
        """A command got a micro delay: send less than went in the last window."""
        with self._lock:
            self._forget_old(self._clock())
            sent = len(self._sent)
            learned = max(1, int(sent * MARGIN))
            self.limit = learned if self.limit is None else max(1, min(self.limit, learned))
