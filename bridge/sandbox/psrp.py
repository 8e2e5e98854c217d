"""PSRP glue for the sandbox: psrpcore's ServerRunspacePool/ServerPipeline per WSMan shell.

psrpcore is sans-IO: it turns fragments into events and queues outgoing messages. This
module feeds it what WSMan Create/Command/Send carry, turns a CreatePipeline into
:class:`CommandCall` objects for a :class:`CmdletHost`, and writes the host's
:class:`PipelineOutcome` back, a little at a time, as each Receive asks for more.

psrpcore is pinned (pyproject.toml) because two private members are used, each in one
place: ``ServerPipeline._change_state`` (the only way to end a pipeline Failed with an
error record, or Running without a message) and the pool's ``_send_buffer`` /
``_fragment_counter`` (to route queued messages per target and to send pre-serialized
CLIXML without parsing it again).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore._payload import PSRPMessage, StreamType, create_fragment, create_message
from psrpcore.types import (
    CommandOrigin,
    CommandTypes,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    InvocationInfo,
    NETException,
    PSDict,
    PSInvocationState,
    PSList,
    PSObject,
    PSRPMessageType,
    RunspacePoolState,
    SessionStateEntryVisibility,
    VerboseRecord,
    WarningRecord,
    add_note_property,
)
from psrpcore.types._complex import RemoteCommandInfo

from bridge.sandbox.contract import (
    CmdletHost,
    CommandCall,
    ErrorSpec,
    PipelineOutcome,
    SerializedObject,
    VerboseMessage,
    WarningMessage,
)

FRAGMENT_HEADER = 21
REPLAY_COMMANDS = 16  # commands per shell whose last Receive answer is kept for a resend

NO_LANGUAGE_MESSAGE = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in "
    "no-language mode."
)
COMMAND_NOT_FOUND_MESSAGE = (
    "The term '{0}' is not recognized as the name of a cmdlet, function, script file, or "
    "operable program. Check the spelling of the name, or if a path was included, verify "
    "that the path is correct and try again."
)


class _CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose text matches PowerShell's ``Category: (target:type) [activity],
    reason`` (psrpcore 0.3.1 leaves out the colon after the category)."""

    def __str__(self) -> str:
        return (
            f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
            f"[{self.Activity or ''}], {self.Reason or ''}"
        )


#: Exchange's ExchangeErrorCategory values it casts to ErrorCategory (2013 code: an
#: OverBudgetException is thrown with Context). PowerShell has no text for them, so the
#: CategoryInfo reads "NotSpecified: ..." while the number on the wire stays 1003.
_EXCHANGE_CATEGORIES = {"Context": 1003}
#: the base classes between an exception and System.Exception, by namespace: Exchange's
#: exceptions derive from LocalizedException, PowerShell's from RuntimeException
_EXCEPTION_BASES = (
    ("Microsoft.Exchange.", ("Microsoft.Exchange.Data.Common.LocalizedException",)),
    (
        "System.Management.Automation.",
        ("System.Management.Automation.RuntimeException", "System.SystemException"),
    ),
)


_ESCAPED_TEXT = re.compile(r"(?i)_(?=x[0-9a-f]{4}_)|[\x00-\x1f\x7f-\x9f]")


def tostring_text(text: str) -> str:
    """``text`` escaped as PowerShell's serializer escapes strings (``_xHHHH_``): psrpcore
    writes a ``<ToString>`` as given, and an XML parser turns a raw CR into LF."""
    return _ESCAPED_TEXT.sub(lambda match: f"_x{ord(match.group(0)):04X}_", text)


class _ExchangeErrorRecord(ErrorRecord):
    """An ErrorRecord whose category number is Exchange's own, outside ErrorCategory (which
    psrpcore's ErrorCategoryInfo refuses): the number is put in when serializing."""

    @classmethod
    def ToPSObjectForRemoting(  # noqa: N802 - psrpcore's name
        cls, instance: ErrorRecord, **kwargs: Any
    ) -> PSObject:
        obj = super().ToPSObjectForRemoting(instance, **kwargs)
        number = getattr(instance, "_exchange_category", None)
        if number is not None:
            add_note_property(obj, "ErrorCategory_Category", number, force=True)
        return obj


def exception_type_names(exception_type: str) -> list[str]:
    """The exception's type chain as PowerShell serializes it, most derived first."""
    bases: tuple[str, ...] = ("System.SystemException",)
    for prefix, chain in _EXCEPTION_BASES:
        if exception_type.startswith(prefix):
            bases = chain
    if exception_type == "System.Exception":
        bases = ()
    return list(dict.fromkeys([exception_type, *bases, "System.Exception", "System.Object"]))


def invocation_info(
    spec: ErrorSpec, statements: list[list[CommandCall]]
) -> InvocationInfo | None:
    """Which command wrote the error (pypsrp's command_name, invocation_name,
    invocation_bound_parameters), as PowerShell adds when the client asks for it."""
    if not spec.command_name:
        return None
    for statement in statements:
        for position, call in enumerate(statement, start=1):
            if call.name.lower() != spec.command_name.lower():
                continue
            return InvocationInfo(
                BoundParameters=PSDict(call.parameters),
                CommandOrigin=CommandOrigin.Runspace,
                ExpectingInput=position > 1,
                HistoryId=1,
                InvocationName=call.name,
                Line="",
                MyCommand=RemoteCommandInfo(
                    CommandTypes.Cmdlet, spec.command_name, "", SessionStateEntryVisibility.Public
                ),
                OffsetInLine=0,
                PipelineLength=len(statement),
                PipelinePosition=position,
                PositionMessage="",
                PSCommandPath=None,
                PSScriptRoot="",
                ScriptLineNumber=0,
                ScriptName="",
                UnboundArguments=PSList(call.arguments),
            )
    return None


def error_record(
    spec: ErrorSpec, target_object: Any = None, invocation: InvocationInfo | None = None
) -> ErrorRecord:
    """An ErrorRecord as PowerShell serializes it, from the Exchange side's ErrorSpec."""
    exception = NETException(Message=spec.message, HResult=-2146233088)
    exception.PSObject.type_names = exception_type_names(spec.exception_type)
    # (no <ToString> on the exception itself: Exception.ToString() carries the server's
    # stack trace, which no public capture shows)
    try:
        category = ErrorCategory[spec.category]
    except KeyError:
        category = ErrorCategory.NotSpecified
    record = _ExchangeErrorRecord(
        Exception=exception,
        CategoryInfo=_CategoryInfo(
            Category=category,
            Activity=spec.activity or spec.command_name or None,
            Reason=spec.reason or spec.exception_type.rsplit(".", 1)[-1],
            TargetName=spec.target_name or None,
            TargetType=spec.target_type or None,
        ),
        TargetObject=target_object,
        FullyQualifiedErrorId=spec.fully_qualified_error_id,
        InvocationInfo=invocation,
    )
    record.serialize_extended_info = invocation is not None
    if spec.category in _EXCHANGE_CATEGORIES:
        object.__setattr__(record, "_exchange_category", _EXCHANGE_CATEGORIES[spec.category])
    # ErrorRecord.ToString() is the exception's message: what pypsrp and PowerShell print
    record.PSObject.to_string = tostring_text(spec.message)
    return record


def no_language_error(script: str) -> ErrorSpec:
    return ErrorSpec(
        message=NO_LANGUAGE_MESSAGE,
        exception_type="System.Management.Automation.ParseException",
        category="ParserError",
        fully_qualified_error_id="ScriptsNotAllowed",
        target_name=script,
        target_type="String",
        reason="ParseException",
    )


def command_not_found_error(name: str) -> ErrorSpec:
    return ErrorSpec(
        message=COMMAND_NOT_FOUND_MESSAGE.format(name),
        exception_type="System.Management.Automation.CommandNotFoundException",
        category="ObjectNotFound",
        fully_qualified_error_id="CommandNotFoundException",
        target_name=name,
        target_type="String",
        reason="CommandNotFoundException",
    )


def plain(value: Any) -> Any:
    """psrpcore's deserialized values (PSString, PSInt, PSList, ...) -> plain Python."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def set_pipeline_state(
    pipeline: ServerPipeline, state: PSInvocationState, error: ErrorRecord | None = None
) -> None:
    """The one use of ServerPipeline._change_state: Failed with an error record, or
    Running without telling the client (PowerShell does not send a Running state)."""
    pipeline._change_state(state, error, emit=state != PSInvocationState.Running)


def call_id(event: Any) -> int:
    """An event's ``ci``; pypsrp names it ``CI`` and PowerShell reads properties
    case-insensitively, psrpcore does not."""
    try:
        return int(event.ci)
    except AttributeError:
        return int(event._ps_object.CI)


class _ServerPool(ServerRunspacePool):
    """psrpcore's server pool, reading pypsrp's ``CI`` in SetMax/MinRunspaces."""

    def _process_SetMaxRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore's name
        ci = call_id(event)
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda _: setattr(self, "_max_runspaces", event.count)

    def _process_SetMinRunspaces(self, event: Any) -> None:  # noqa: N802
        ci = call_id(event)
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda _: setattr(self, "_min_runspaces", event.count)


@dataclass(frozen=True)
class SessionConfiguration:
    """A PowerShell session configuration the endpoint serves (``configuration_name``)."""

    name: str
    host: CmdletHost
    no_language: bool = True


@dataclass
class PipelineRun:
    """One WSMan command: a psrpcore pipeline and the host's lazily consumed outcome."""

    command_id: str
    pipeline: ServerPipeline
    queue: deque[PSRPMessage] = field(default_factory=deque)
    statements: list[list[CommandCall]] = field(default_factory=list)
    outcome: PipelineOutcome | None = None
    events: Iterator[Any] | None = None
    started: bool = False
    finished: bool = False
    ready_at: float = 0.0
    objects_written: int = 0
    # set when the command came over the user's cmdlet budget (sandbox throttling)
    micro_delay: float = 0.0
    budget_used: int = 0


class ShellSession:
    """A WSMan shell = one PSRP runspace pool, with per-target outgoing queues."""

    def __init__(
        self, shell_id: str, user: str, configuration: SessionConfiguration, resource_uri: str
    ) -> None:
        self.shell_id = shell_id
        self.user = user
        self.configuration = configuration
        self.resource_uri = resource_uri
        self.pool = _ServerPool()
        self.lock = threading.RLock()
        self.pool_queue: deque[PSRPMessage] = deque()
        self.pipelines: dict[uuid.UUID, PipelineRun] = {}
        self.closed = False
        self.last_used = time.monotonic()
        # the last Receive answer of the most recent commands, replayed when pypsrp
        # resends the same message after a read timeout; one Receive per command at a time
        self.last_receive: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._receive_locks: dict[str, threading.Lock] = {}

    def receive_lock(self, command_id: str) -> threading.Lock:
        with self.lock:
            return self._receive_locks.setdefault(command_id, threading.Lock())

    def remember_receive(self, command_id: str, message_id: str, answer: str) -> None:
        with self.lock:
            self.last_receive[command_id] = (message_id, answer)
            self.last_receive.move_to_end(command_id)
            while len(self.last_receive) > REPLAY_COMMANDS:
                evicted, _ = self.last_receive.popitem(last=False)
                if evicted not in self.pipelines:
                    self._receive_locks.pop(evicted, None)

    # -- incoming ---------------------------------------------------------------------

    def feed(self, data: bytes, pipeline_id: uuid.UUID | None, stream: str = "stdin") -> None:
        """Feed PSRP fragments (from Create, Command or Send) and act on complete messages."""
        from psrpcore import PSRPPayload

        stream_type = StreamType.prompt_response if stream == "pr" else StreamType.default
        with self.lock:
            self.pool.receive_data(PSRPPayload(data, stream_type, pipeline_id))
            while True:
                event = self.pool.next_event()
                if event is None:
                    break
                self._on_event(event)
            self.route()

    def create_pipeline(self, command_id: str, data: bytes) -> None:
        """WSMan Command: the pipeline must exist before its CreatePipeline is fed."""
        pipeline_id = uuid.UUID(command_id)
        with self.lock:
            pipeline = ServerPipeline(self.pool, pipeline_id)
            self.pipelines[pipeline_id] = PipelineRun(command_id=command_id, pipeline=pipeline)
        self.feed(data, pipeline_id)

    def _on_event(self, event: Any) -> None:
        from psrpcore import (
            CreatePipelineEvent,
            EndOfPipelineInputEvent,
            GetAvailableRunspacesEvent,
            ResetRunspaceStateEvent,
            SetMaxRunspacesEvent,
            SetMinRunspacesEvent,
        )

        if isinstance(event, SetMaxRunspacesEvent | SetMinRunspacesEvent | ResetRunspaceStateEvent):
            self.pool.runspace_availability_response(call_id(event), True)
        elif isinstance(event, GetAvailableRunspacesEvent):
            busy = sum(1 for run in self.pipelines.values() if not run.finished)
            self.pool.runspace_availability_response(
                call_id(event), max(0, max(1, self.pool.max_runspaces) - busy)
            )
        elif isinstance(event, CreatePipelineEvent):
            run = self.pipelines[event.pipeline_id]
            metadata = event.pipeline
            statements: list[list[CommandCall]] = [[]]
            for command in metadata.commands:
                named = {}
                positional = []
                for name, value in command.parameters:
                    if name:
                        named[str(name)] = plain(value)
                    else:
                        positional.append(plain(value))
                statements[-1].append(
                    CommandCall(
                        name=str(command.command_text),
                        parameters=named,
                        arguments=tuple(positional),
                        is_script=bool(command.is_script),
                    )
                )
                if command.end_of_statement:
                    statements.append([])
            run.statements = [statement for statement in statements if statement]
            if metadata.no_input:
                run.started = True
        elif isinstance(event, EndOfPipelineInputEvent) and event.pipeline_id is not None:
            waiting = self.pipelines.get(event.pipeline_id)
            if waiting is not None:
                waiting.started = True

    def route(self) -> None:
        """Move psrpcore's queued messages into one queue per target (pool or pipeline)."""
        buffer = self.pool._send_buffer
        for message in buffer:
            if message.pipeline_id is None:
                self.pool_queue.append(message)
            else:
                run = self.pipelines.get(message.pipeline_id)
                if run is not None:
                    run.queue.append(message)
        buffer.clear()

    # -- outgoing ---------------------------------------------------------------------

    def write_serialized(self, run: PipelineRun, clixml: str) -> None:
        """Queue pre-serialized CLIXML as PIPELINE_OUTPUT without parsing it again."""
        data = create_message(
            False,
            PSRPMessageType.PipelineOutput,
            clixml.encode("utf-8"),
            self.pool.runspace_pool_id,
            run.pipeline.pipeline_id,
        )
        run.queue.append(
            PSRPMessage(
                PSRPMessageType.PipelineOutput,
                bytearray(data),
                self.pool.runspace_pool_id,
                run.pipeline.pipeline_id,
                self.pool._fragment_counter,
            )
        )

    @staticmethod
    def take(queue: deque[PSRPMessage], amount: int) -> bytes:
        """Fragments from ``queue`` filling at most ``amount`` bytes, cut at fragment
        boundaries (a message may continue in the next Receive)."""
        out = bytearray()
        while queue and amount - len(out) > FRAGMENT_HEADER:
            message = queue[0]
            fragment = message.fragment(amount - len(out) - FRAGMENT_HEADER)
            out += create_fragment(
                fragment.object_id, fragment.fragment_id, bytes(fragment.data), fragment.end
            )
            if len(message) == 0:
                queue.popleft()
        return bytes(out)

    @staticmethod
    def queued_bytes(queue: deque[PSRPMessage]) -> int:
        return sum(len(message) + FRAGMENT_HEADER for message in queue)

    def fail(self, run: PipelineRun, spec: ErrorSpec, target_object: Any = None) -> None:
        """End a pipeline Failed with a terminating error (the client's invoke returns,
        had_errors is True and the record is in streams.error)."""
        if run.pipeline.state == PSInvocationState.NotStarted:
            set_pipeline_state(run.pipeline, PSInvocationState.Running)
        record = error_record(spec, target_object, invocation_info(spec, run.statements))
        set_pipeline_state(run.pipeline, PSInvocationState.Failed, record)
        run.finished = True
        run.events = None
        self.route()

    def mark_running(self, run: PipelineRun) -> None:
        set_pipeline_state(run.pipeline, PSInvocationState.Running)

    def stop(self, pipeline_id: uuid.UUID) -> None:
        """Ctrl+C or Terminate: the pipeline stops (Stopped state) and is forgotten."""
        with self.lock:
            run = self.pipelines.pop(pipeline_id, None)
            if run is None:
                return
            if run.pipeline.state in (PSInvocationState.Running, PSInvocationState.Stopping):
                run.pipeline.stop()
            run.finished = True
            run.events = None
            self.pool.pipeline_table.pop(pipeline_id, None)
            self.route()

    def stop_from_server(self, run: PipelineRun) -> None:
        """The server ends a running pipeline Stopped (psrpcore sends the Stopped state
        with its PipelineStoppedException); kept until the client's terminate Signal."""
        run.pipeline.stop()
        run.finished = True
        run.events = None
        self.route()

    def complete(self, run: PipelineRun) -> None:
        run.pipeline.complete()
        run.finished = True
        run.events = None
        self.route()

    def write_event(self, run: PipelineRun, event: Any) -> bool:
        """Write one outcome event; True when it was an output object."""
        if isinstance(event, SerializedObject):
            self.write_serialized(run, event.clixml)
            run.objects_written += 1
            return True
        if isinstance(event, ErrorSpec):
            record = error_record(
                event, event.target_name or None, invocation_info(event, run.statements)
            )
            run.pipeline.prepare_message(record, message_type=PSRPMessageType.ErrorRecord)
            self.route()
            return False
        if isinstance(event, WarningMessage | VerboseMessage):
            # InformationalRecord.ToString() is its message; psrpcore leaves it out
            kind = WarningRecord if isinstance(event, WarningMessage) else VerboseRecord
            informational = kind(Message=event.text)
            informational.serialize_extended_info = False
            informational.PSObject.to_string = tostring_text(event.text)
            run.pipeline.prepare_message(
                informational,
                message_type=PSRPMessageType.WarningRecord
                if kind is WarningRecord
                else PSRPMessageType.VerboseRecord,
            )
            self.route()
            return False
        if isinstance(event, PSObject) or event is not None:
            run.pipeline.write_output(event)
            self.route()
            run.objects_written += 1
            return True
        return False

    @property
    def is_open(self) -> bool:
        return self.pool.state == RunspacePoolState.Opened and not self.closed

