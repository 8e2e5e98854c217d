"""The seam between the sandbox's protocol side (HTTP, WSMan, PSRP) and its Exchange side.

The protocol side decodes a CreatePipeline into :class:`CommandCall` objects and hands
them to a :class:`CmdletHost`; the Exchange side answers with a :class:`PipelineOutcome`
that the protocol side streams back as PSRP messages. Neither side knows the other's
internals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CommandCall:
    """One command of a pipeline as the client sent it (parameters already deserialized)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    # positional arguments (parameters sent without a name)
    arguments: tuple[Any, ...] = ()
    # True when the client sent script text rather than a command name (IsScript)
    is_script: bool = False


@dataclass(frozen=True)
class ErrorSpec:
    """An error record as Exchange would write it; the protocol side builds the ErrorRecord."""

    message: str
    # full .NET name, e.g. "Microsoft.Exchange.Configuration.Tasks.
    # ManagementObjectNotFoundException"
    exception_type: str
    # ErrorCategory name, e.g. "NotSpecified", "ObjectNotFound", "InvalidArgument", or
    # Exchange's own "Context" (ExchangeErrorCategory 1003, cast to ErrorCategory)
    category: str
    fully_qualified_error_id: str
    command_name: str = ""
    target_name: str = ""
    target_type: str = ""
    activity: str = ""
    reason: str = ""  # CategoryInfo.Reason, usually the exception's short type name


@dataclass(frozen=True)
class WarningMessage:
    """A warning record's text (goes to the client's warning stream)."""

    text: str


@dataclass(frozen=True)
class VerboseMessage:
    """A verbose record's text (goes to the client's verbose stream)."""

    text: str


@dataclass(frozen=True)
class SerializedObject:
    """A pre-serialized CLIXML element (``<Obj RefId="0">...</Obj>``), the fast path for
    organisation objects whose CLIXML is cached once per organisation."""

    clixml: str


@dataclass
class PipelineOutcome:
    """What a pipeline produces, in order.

    ``events`` yields, in the order the client must see them: output objects (psrpcore
    PSObjects or :class:`SerializedObject`), non-terminating errors (:class:`ErrorSpec`),
    warnings (:class:`WarningMessage`) and verbose notes (:class:`VerboseMessage`). It is
    consumed lazily, so large outputs stream. ``terminating`` (checked before and after
    ``events`` is drained; an iterator may also set it while running) ends the pipeline
    Failed.
    """

    events: Iterator[Any]
    terminating: ErrorSpec | None = None


class CmdletHost(Protocol):
    """The Exchange side: runs a pipeline of commands for one configuration."""

    def has_command(self, name: str) -> bool:
        """Whether ``name`` (case-insensitive) exists in this session; the protocol side
        answers unknown names with CommandNotFoundException before calling invoke."""
        ...

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        """Run ``commands`` as one pipeline for ``user``.

        Parameter values are plain Python (str, int, bool, list, dict, None, datetime);
        a switch sent without a value (``add_parameter("ActiveSync")``) arrives as None,
        which PowerShell binds as the switch being present.
        """
        ...
