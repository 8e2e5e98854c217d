"""psbridge's one error hierarchy: every failure a user can cause has a class and an exit code.

The CLI prints ``Error: <message>`` for any :class:`BridgeError` and exits with its
``exit_code``; anything else escaping is a bug and shows a traceback only with --debug.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    INTERNAL = 1  # a bug: an exception that is not a BridgeError
    USAGE = 2  # bad command line (click's own code)
    INPUT = 3  # unreadable or malformed input (CLIXML, missing file)
    OUTPUT = 4  # cannot write the output (locked workbook, full disk, bad extension)
    CONNECTION = 5  # server unreachable: DNS, refused, TLS, timeout
    AUTHENTICATION = 6  # credentials refused
    REMOTE = 7  # the server refused or failed a command (unknown cmdlet, RBAC, terminating error)
    CONFIG = 8  # missing or invalid config file, bad profile or settings
    PARTIAL = 9  # the run finished but some mailboxes or commands failed (see Errors sheet)
    SIGN_IN_REFUSED = 10  # Entra ID refused the sign-in (AADSTS: consent, role, Conditional Access)
    HANGUP = 129  # SIGHUP (the terminal closed); handled as Ctrl+C
    INTERRUPTED = 130  # Ctrl+C (Ctrl+Break on Windows); what was collected is kept
    TERMINATED = 143  # SIGTERM (a scheduler or service stopped the run); as Ctrl+C
    PIPE_CLOSED = 141  # the reader of stdout went away (`| head`), as a shell's SIGPIPE code


class BridgeError(Exception):
    """Root of every error psbridge raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(BridgeError):
    """An input file is missing, unreadable or of an unknown kind."""

    exit_code = ExitCode.INPUT


class ClixmlError(InputError):
    """CLIXML that cannot be read: not XML, truncated, wrong root, dangling Ref."""


class OutputError(BridgeError):
    """The output cannot be written (unknown extension, locked file, full disk)."""

    exit_code = ExitCode.OUTPUT


class ReportError(OutputError):
    """The report cannot be built or written."""


class HistoryError(InputError):
    """The run history database cannot be used (damaged, locked, newer schema, no such run).

    During a report run the CLI shows it as a warning and still writes the report.
    """


class ConfigError(BridgeError):
    """A profile or setting is missing or invalid."""

    exit_code = ExitCode.CONFIG


class PowerShellNotFound(ConfigError):
    """``--via pwsh`` was asked for but no PowerShell 7 (pwsh) is on PATH."""


class ConnectionFailed(BridgeError):
    """The server cannot be reached (name resolution, refused, TLS, timeout)."""

    exit_code = ExitCode.CONNECTION


class AuthenticationFailed(BridgeError):
    """The server refused the credentials."""

    exit_code = ExitCode.AUTHENTICATION


class SignInRefused(AuthenticationFailed):
    """Entra ID refused to sign in (an AADSTS code): consent, a role or Conditional Access.

    Its own exit code, because the fix lies with a tenant administrator, not in a retry.
    """

    exit_code = ExitCode.SIGN_IN_REFUSED

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # "AADSTS65001", or "" when Entra named none


class RemoteCommandError(BridgeError):
    """The server refused or failed a command."""

    exit_code = ExitCode.REMOTE

    def __init__(self, message: str, *, record: object | None = None) -> None:
        super().__init__(message)
        # the PowerShell error record (bridge.remote.ErrorRecord) when the server sent one
        self.record = record


class CommandNotFound(RemoteCommandError):
    """The endpoint has no such cmdlet, or the user's RBAC roles do not grant it."""
