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
    exception_type: str  # e.g. "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    category: str  # ErrorCategory name, e.g. "NotSpecified", "ObjectNotFound", "InvalidArgument"
    fully_qualified_error_id: str
    command_name: str = ""
    target_name: str = ""
    target_type: str = ""
    activity: str = ""
    reason: str = ""  # CategoryInfo.Reason, usually the exception's short type name


@dataclass
class PipelineOutcome:
    """What a pipeline produced, in order.

    ``output`` yields either psrpcore PSObjects or pre-serialized CLIXML element strings
    (a fast path: a cached ``<Obj>...</Obj>`` text for each organisation object).
    Non-terminating ``errors`` and ``warnings`` are written after the output that
    preceded them when ``events`` is used; ``terminating`` ends the pipeline Failed.
    """

    output: Iterator[Any]
    errors: list[ErrorSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    terminating: ErrorSpec | None = None


class CmdletHost(Protocol):
    """The Exchange side: runs a pipeline of commands for one configuration."""

    def invoke(self, commands: list[CommandCall], user: str) -> PipelineOutcome:
        """Run ``commands`` as one pipeline for ``user``."""
        ...
