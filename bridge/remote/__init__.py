"""Talking to Exchange PowerShell over WSMan/PSRP: the only package that imports pypsrp.

A :class:`Session` holds up to ``settings.concurrency`` connections, each with its own
RunspacePool, and runs :class:`Command` pipelines on them (cmdlets and parameters only:
Exchange's endpoint is NoLanguage). Output objects are read by :mod:`bridge.clixml`, so
live and Export-Clixml input give identical rows. Every pypsrp/requests failure becomes
a :class:`bridge.errors.BridgeError` here; transient ones are retried with backoff.

Modules: ``settings`` (ConnectionSettings, RetryPolicy), ``faults`` (error
classification), ``output`` (fast output reading), ``channel`` (connect, _Channel,
_ChannelPool), ``retry`` (RetryLoop, pacing), ``session`` (Session).
"""

from __future__ import annotations

from bridge.commands import (
    Command,
    CommandResult,
    ErrorRecord,
    SessionStats,
    is_cmdlet_name,
    is_read_only,
    parameter_value,
    parse_parameter,
    pipeline_text,
)
from bridge.remote.channel import MAX_ENVELOPE_SIZE, _Channel, _ChannelPool, _connect
from bridge.remote.faults import ERROR_CATEGORIES, _classify, _http_status_line, _Transient
from bridge.remote.retry import RetryLoop
from bridge.remote.session import Session
from bridge.remote.settings import AUTH_METHODS, ConnectionSettings, RetryPolicy

__all__ = [
    "AUTH_METHODS", "Command", "CommandResult", "ConnectionSettings", "ERROR_CATEGORIES",
    "ErrorRecord", "MAX_ENVELOPE_SIZE", "RetryLoop", "RetryPolicy", "Session", "SessionStats",
    "_Channel", "_ChannelPool", "_Transient", "_classify", "_connect", "_http_status_line",
    "is_cmdlet_name", "is_read_only", "parameter_value", "parse_parameter", "pipeline_text",
]
