"""The sandbox's Receive side: pipelines run lazily, a response at a time, paced by the knobs.

:class:`PipelineRunner` is a part of :class:`bridge.sandbox.server.Sandbox`: a Receive
starts a pipeline (checking it against the session configuration), pulls the cmdlet
host's events into PSRP messages until an envelope is full, and applies the knobs that
slow, stall, stop or fail a pipeline.
"""

from __future__ import annotations

import base64
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bridge.sandbox import wsman
from bridge.sandbox.contract import CmdletHost, CommandCall, ErrorSpec
from bridge.sandbox.knobs import Knobs
from bridge.sandbox.psrp import (
    PipelineRun,
    ShellSession,
    command_not_found_error,
    no_language_error,
)
from bridge.sandbox.throttling import Budgets


class _Terminated(Exception):
    """A statement's outcome carried a terminating error."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


def _run_statements(
    statements: list[list[CommandCall]], host: CmdletHost, user: str, prefix: list[Any]
) -> Iterator[Any]:
    """Run each statement through the host in turn, as one event stream."""
    yield from prefix
    for statement in statements:
        outcome = host.invoke(statement, user)
        if outcome.terminating is not None:
            raise _Terminated(outcome.terminating)
        yield from outcome.events
        if outcome.terminating is not None:
            raise _Terminated(outcome.terminating)



class PipelineRunner:
    """WSMan Receive: run, pump and end pipelines (the Sandbox supplies the state)."""

    knobs: Knobs
    budgets: Budgets
    objects_sent: int
    _lock: threading.Lock
    _stalls_done: int
    _stops_done: int
    _over_budget_done: int
    _objects_since_drop: int
    _drop_pending: bool

    if TYPE_CHECKING:  # the Sandbox's (a stub here would shadow it in the MRO)

        def record_internal_error(self, where: str, detail: str) -> None: ...

    def _receive(self, shell: ShellSession, request: wsman.Request) -> str:
        started = time.monotonic()
        deadline = started + max(0.2, request.operation_timeout - 0.2)
        body = request.body
        desired = body.find("rsp:DesiredStream", wsman.NS) if body is not None else None
        command_id = desired.get("CommandId") if desired is not None else None
        overhead = wsman.receive_overhead(request.message_id, command_id)
        amount = max(64, (request.max_envelope_size - overhead) * 3 // 4)

        if command_id is None:
            while True:
                with shell.lock:
                    payload = shell.take(shell.pool_queue, amount)
                if payload or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            if not payload:
                raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
            return wsman.receive_response(base64.b64encode(payload).decode(), None, False)

        key = command_id.upper()
        receiving = shell.receive_lock(key)
        # one Receive per command at a time: pypsrp resends a Receive that timed out on
        # its side while the first may still be running here
        if not receiving.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        try:
            return self._receive_output(shell, request, key, amount, deadline)
        finally:
            receiving.release()

    def _receive_output(
        self, shell: ShellSession, request: wsman.Request, key: str, amount: int, deadline: float
    ) -> str:
        replay = shell.last_receive.get(key)
        if replay is not None and replay[0] == request.message_id:
            # the resent Receive gets the answer the first one got (and the client never
            # read), as from WinRM: nothing is lost or repeated
            return replay[1]
        if self._take_stall():
            # a hung server: no answer within the client's read timeout, and no data taken
            # from the pipeline (the client has given up on this request by now)
            time.sleep(self.knobs.receive_stall)
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        with shell.lock:
            run = shell.pipelines.get(uuid.UUID(key))
        if run is None:
            raise wsman.WSManFault(
                wsman.INVALID_SELECTORS,
                f"The command with CommandId {key} was not found.",
                "w:InvalidSelectors",
            )
        self._pump(shell, run, amount, deadline)
        with shell.lock:
            payload = shell.take(run.queue, amount)
            done = run.finished and not run.queue
            if done:
                shell.pipelines.pop(run.pipeline.pipeline_id, None)
                if run.pipeline.pipeline_id in shell.pool.pipeline_table:
                    run.pipeline.close()
        if not payload and not done:
            raise wsman.WSManFault(wsman.OPERATION_TIMEOUT, wsman.TIMEOUT_MESSAGE, "w:TimedOut")
        answer = wsman.receive_response(base64.b64encode(payload).decode(), key, done)
        shell.remember_receive(key, request.message_id, answer)
        return answer

    def _take_stall(self) -> bool:
        with self._lock:
            limit = self.knobs.receive_stalls
            if not self.knobs.receive_stall or (limit is not None and self._stalls_done >= limit):
                return False
            self._stalls_done += 1
            return True

    def _start(self, shell: ShellSession, run: PipelineRun) -> None:
        """Check the pipeline against the configuration, then hand it to the host."""
        configuration = shell.configuration
        for statement in run.statements:
            for call in statement:
                if call.is_script and configuration.no_language:
                    shell.fail(run, no_language_error(call.name), target_object=call.name)
                    return
                if not call.is_script and not configuration.host.has_command(call.name):
                    shell.fail(run, command_not_found_error(call.name), target_object=call.name)
                    return
        prefix: list[Any] = []
        delay = self.knobs.latency_per_command
        if run.micro_delay:
            delay += run.micro_delay
            prefix.append(
                self.budgets.micro_delay_note(shell.user, run.budget_used, run.micro_delay)
            )
        run.events = _run_statements(run.statements, configuration.host, shell.user, prefix)
        run.ready_at = time.monotonic() + delay
        shell.mark_running(run)

    def _pump(self, shell: ShellSession, run: PipelineRun, amount: int, deadline: float) -> None:
        """Pull the host's events into the pipeline's queue until a response is full, the
        pipeline ends, or waiting longer (latency knobs) would pass the deadline. Data
        already queued is answered at once rather than held for a latency wait."""
        while True:
            with shell.lock:
                if run.finished or shell.queued_bytes(run.queue) >= amount:
                    return
                if run.started and run.events is None:
                    try:
                        self._start(shell, run)
                    except Exception:  # noqa: BLE001 - a host bug: recorded, pipeline failed
                        self._host_failed(shell, run)
                    continue
                wait_until = run.ready_at if run.started else None
            now = time.monotonic()
            if wait_until is None:  # waiting for the client's input to end
                if run.queue or now >= deadline:
                    return
                time.sleep(min(0.05, deadline - now))
                continue
            if wait_until > now:
                if run.queue:
                    return
                if wait_until > deadline:
                    time.sleep(max(0.0, deadline - now))
                    return
                time.sleep(wait_until - now)
            with shell.lock:
                if run.finished or run.events is None:
                    continue
                try:
                    event = next(run.events)
                except StopIteration:
                    shell.complete(run)
                    return
                except _Terminated as terminated:
                    shell.fail(run, terminated.spec)
                    return
                except Exception:  # noqa: BLE001 - a host bug: recorded, pipeline failed
                    self._host_failed(shell, run)
                    return
                if not shell.write_event(run, event):
                    continue
                if self._stop_now(run):
                    shell.stop_from_server(run)
                    return
                if self._over_budget_now(run):
                    name = run.statements[0][0].name if run.statements else ""
                    wait = self.knobs.over_budget_wait
                    shell.fail(run, self.budgets.over_budget_error(name, shell.user, wait))
                    return
                if self.knobs.latency_per_object:
                    run.ready_at = time.monotonic() + self.knobs.latency_per_object
            with self._lock:
                self.objects_sent += 1
                limit = self.knobs.drop_after_objects
                if limit:
                    self._objects_since_drop += 1
                    if self._objects_since_drop >= limit:
                        self._objects_since_drop = 0
                        self._drop_pending = True
                        return

    def _stop_now(self, run: PipelineRun) -> bool:
        """Whether the stop_after_objects knob stops ``run`` now (it just sent an object)."""
        limit = self.knobs.stop_after_objects
        if not limit or run.objects_written < limit:
            return False
        with self._lock:
            stops = self.knobs.pipeline_stops
            if stops is not None and self._stops_done >= stops:
                return False
            self._stops_done += 1
            self.objects_sent += 1  # the object just written, which _pump counts otherwise
            return True

    def _over_budget_now(self, run: PipelineRun) -> bool:
        """Whether the over_budget_after_objects knob fails ``run`` now."""
        limit = self.knobs.over_budget_after_objects
        if not limit or run.objects_written < limit:
            return False
        with self._lock:
            failures = self.knobs.over_budget_failures
            if failures is not None and self._over_budget_done >= failures:
                return False
            self._over_budget_done += 1
            self.objects_sent += 1  # the object just written, which _pump counts otherwise
            return True

    def _host_failed(self, shell: ShellSession, run: PipelineRun) -> None:
        self.record_internal_error("cmdlet host", traceback.format_exc())
        shell.fail(
            run,
            ErrorSpec(
                message="The sandbox's cmdlet host failed (internal error).",
                exception_type="System.InvalidOperationException",
                category="NotSpecified",
                fully_qualified_error_id="SandboxInternalError",
            ),
        )

