"""psbridge: Exchange PowerShell output (CLIXML) into pandas DataFrames and Excel reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from bridge.errors import (
    AuthenticationFailed,
    BridgeError,
    ClixmlError,
    CommandNotFound,
    ConfigError,
    ConnectionFailed,
    ExitCode,
    HistoryError,
    InputError,
    OutputError,
    RemoteCommandError,
    ReportError,
)

if TYPE_CHECKING:
    from bridge.clixml import read_clixml

try:
    __version__ = version("psbridge")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+checkout"

__all__ = [
    "AuthenticationFailed",
    "BridgeError",
    "ClixmlError",
    "CommandNotFound",
    "ConfigError",
    "ConnectionFailed",
    "ExitCode",
    "HistoryError",
    "InputError",
    "OutputError",
    "RemoteCommandError",
    "ReportError",
    "__version__",
    "read_clixml",
]


def __getattr__(name: str) -> Any:
    # read_clixml loads pandas and lxml: only on first use, so `psbridge --help` stays quick
    if name == "read_clixml":
        from bridge.clixml import read_clixml

        return read_clixml
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
