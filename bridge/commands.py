"""Transport-neutral commands and results: what any source runs and what it gives back.

A :class:`Command` (a cmdlet and its parameters) is what psbridge asks of Exchange,
whether over WSMan (:mod:`bridge.remote`), Exchange Online's REST endpoint or a script
runner; a :class:`CommandResult` is what came back. No third-party library here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Row = dict[str, object]

@dataclass(frozen=True)
class Command:
    """One cmdlet with named parameters; several in a list form one pipeline.

    A parameter whose value is None is a switch (``-ActiveSync``).
    """

    name: str
    parameters: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.name]
        for key, value in self.parameters.items():
            parts.append(f"-{key}" if value is None else f"-{key} {_display(value)}")
        return " ".join(parts)


def _display(value: object) -> str:
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list | tuple):
        return ",".join(_display(item) for item in value)
    if isinstance(value, str) and (not value or re.search(r"[\s'\",;]", value)):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


_CMDLET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9]+$")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_INT32 = range(-(2**31), 2**31)


def is_cmdlet_name(name: str) -> bool:
    """A plain Verb-Noun name, not script text (the endpoint is NoLanguage anyway)."""
    return bool(_CMDLET_NAME.match(name))


#: Verbs whose cmdlets only read, so running one twice changes nothing: Exchange's read
#: cmdlets are Get-* and Test-* (Test- probes; repeating a probe is harmless), plus the
#: object utilities an endpoint may expose (Select-/Sort-/Measure-/Group-/Format-Object).
#: Not Search- (Search-Mailbox -DeleteContent deletes mail) nor Export- (Export-
#: AutoDiscoverConfig writes to Active Directory, others write files on the server).
_READ_ONLY_VERBS = frozenset({"get", "test", "select", "sort", "measure", "group", "format"})


def is_read_only(commands: Command | Sequence[Command]) -> bool:
    """True when every command of the pipeline only reads (judged by its verb), so it
    may be run again after a failure that leaves unknown whether it ran."""
    pipeline = [commands] if isinstance(commands, Command) else commands
    return all(
        is_cmdlet_name(c.name) and c.name.split("-", 1)[0].lower() in _READ_ONLY_VERBS
        for c in pipeline
    )


def parameter_value(text: str) -> object:
    """A command-line parameter value typed as PowerShell would bind it sensibly.

    ``true``/``$false`` -> bool; a 32-bit integer without leading zeros -> int; a comma
    list (commas inside quotes do not count: ``Name -like 'Smith, *'`` stays whole) ->
    list of str; ``'quoted'`` or ``"quoted"`` -> the text inside, unsplit (a doubled
    quote inside stands for one, as in PowerShell: ``'O''Brien, Pat'``);
    anything else (``Unlimited``, identities, OPATH filters) -> str, which PowerShell's
    binder converts to the parameter's own type.
    """
    stripped = text.strip()
    if _is_quoted(stripped):
        return _unquote(stripped)
    lowered = stripped.lower()
    if lowered in ("true", "$true"):
        return True
    if lowered in ("false", "$false"):
        return False
    if _INT.match(stripped) and int(stripped) in _INT32:
        return int(stripped)
    items = _split_commas(stripped)
    if len(items) > 1:
        return [_unquote(item) if _is_quoted(item) else item for item in items if item]
    return text


def _is_quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def _unquote(text: str) -> str:
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)  # PowerShell's doubled quote


def _split_commas(text: str) -> list[str]:
    """``text`` split at commas outside quotes (``Name -like 'Smith, *'`` stays whole)."""
    items: list[str] = []
    start = 0
    quote = ""
    for at, char in enumerate(text):
        if quote:
            if char == quote:  # a doubled quote closes and reopens: the same in the end
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append(text[start:at].strip())
            start = at + 1
    items.append(text[start:].strip())
    return items


def parse_parameter(spec: str) -> tuple[str, object]:
    """``Name=Value`` -> (name, typed value); a bare ``Name`` is a switch (None)."""
    name, equals, value = spec.partition("=")
    name = name.strip().lstrip("-")
    if not name or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
        raise ValueError(f"{spec!r} is not Name=Value (a parameter name is letters and digits)")
    return name, (parameter_value(value) if equals else None)


def pipeline_text(commands: Command | Sequence[Command]) -> str:
    """How a pipeline reads in PowerShell, for messages and error rows."""
    items = [commands] if isinstance(commands, Command) else list(commands)
    return " | ".join(str(command) for command in items)


@dataclass(frozen=True)
class ErrorRecord:
    """A PowerShell error record as plain text."""

    message: str
    category: str  # ErrorCategory name, e.g. "ObjectNotFound", "NotSpecified"
    reason: str  # usually the exception's short type name
    error_id: str  # FullyQualifiedErrorId
    target: str = ""

    @property
    def kind(self) -> str:
        """The most telling short label: the exception name when known, else the category."""
        return self.reason or self.category


@dataclass
class CommandResult:
    """What one pipeline produced: output rows, non-terminating errors and warnings."""

    rows: list[Row]
    errors: list[ErrorRecord]
    warnings: list[str]


@dataclass
class SessionStats:
    """Counters for benchmarks and the Run sheet."""

    commands: int = 0
    retries: int = 0
    reconnects: int = 0
    micro_delays: int = 0
    http_requests: int = 0
