"""Realism knobs: ways the sandbox can be slow or fail the way Exchange is and does.

All are off by default. Each maps to something a client meets against a real server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Knobs:
    """Behaviour switches for one sandbox (``Sandbox(**knobs)``)."""

    # Delay before a pipeline's first output, and between output objects (seconds).
    # A command slower than the client's OperationTimeout is answered with WSMan fault
    # 2150858793 and the client polls again, as against a busy Exchange server.
    latency_per_command: float = 0.0
    latency_per_object: float = 0.0
    # PowerShellMaxConcurrency: open shells (runspace pools) per user; the next Create
    # is refused with Exchange's throttling text. Exchange on-prem default 18, EXO 3.
    max_shells_per_user: int | None = None
    # Seconds after which a shell nobody used (its client vanished without closing it)
    # is forgotten, freeing its place under max_shells_per_user. The shell IdleTimeOut
    # the sandbox announces is 900 s, like Exchange's default.
    shell_idle_timeout: float = 900.0
    # Cmdlet budget (PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod): commands
    # over the budget within the window run after a micro delay (noted as verbose, or as a
    # warning from 10 s up); over twice the budget a new command is refused with HTTP 400
    # and Exchange's plain-text "Please wait for N seconds." body.
    cmdlet_budget: int | None = None
    budget_window: float = 5.0
    micro_delay: float = 0.05
    # A running cmdlet ends Failed with OverBudgetException ("Please wait for
    # over_budget_wait seconds.") once it has sent this many objects;
    # ``over_budget_failures`` limits how many do (None: all).
    over_budget_after_objects: int | None = None
    over_budget_failures: int | None = None
    over_budget_wait: float = 1.0
    # Close the TCP connection without an answer after this many output objects.
    drop_after_objects: int | None = None
    # Answer every Nth WSMan request (after authentication) with this HTTP status.
    http_error_every: int | None = None
    http_error_status: int = 503
    # Hold a Receive of command output this long, ignoring the client's OperationTimeout,
    # so the client's HTTP read timeout trips (a hung server); no data is taken by a
    # stalled Receive. ``receive_stalls`` limits how many Receives stall (None: all), so
    # 1 is a blip that pypsrp's own resend (5 times, on a new connection) gets over.
    receive_stall: float = 0.0
    receive_stalls: int | None = None
    # End a pipeline Stopped from the server side (an admin's Stop, an IIS recycle,
    # Exchange throttling) once it has sent this many output objects; ``pipeline_stops``
    # limits how many pipelines are stopped (None: all). The client gets the Stopped
    # state with PipelineStoppedException "The pipeline has been stopped.".
    stop_after_objects: int | None = None
    pipeline_stops: int | None = None

    # Report Exchange Online's ClientTypes (REST, Outlook, UniversalOutlook) rather than an
    # on-premises server's EAS (organisation.py's docstring says what is unverified).
    # Applies to the organisation the sandbox builds itself (not one passed in).
    online_client_types: bool = False

    @classmethod
    def names(cls) -> list[str]:
        return [knob.name for knob in fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Knobs:
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown sandbox knob(s): {', '.join(unknown)}")
        return cls(**kwargs)
