"""psbridge: Exchange PowerShell output (CLIXML) into pandas DataFrames and Excel reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from bridge.errors import (
    AuthenticationFailed,
    BridgeError,
    ClixmlError,
    ConfigError,
    ConnectionFailed,
    ExitCode,
    InputError,
    OutputError,
    RemoteCommandError,
    ReportError,
)

try:
    __version__ = version("psbridge")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+checkout"

__all__ = [
    "AuthenticationFailed",
    "BridgeError",
    "ClixmlError",
    "ConfigError",
    "ConnectionFailed",
    "ExitCode",
    "InputError",
    "OutputError",
    "RemoteCommandError",
    "ReportError",
    "__version__",
]
