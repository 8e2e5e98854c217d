"""The sandbox's WSMan verbs: Create, Command, Send, Signal, Delete and Get on shells (runspace
pools); Receive is the PipelineRunner's. A part of :class:`bridge.sandbox.server.Sandbox`."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import TYPE_CHECKING

from bridge.sandbox import wsman
from bridge.sandbox.frontend import SERVER_NAME
from bridge.sandbox.knobs import Knobs
from bridge.sandbox.psrp import SessionConfiguration, ShellSession
from bridge.sandbox.throttling import Budgets


class WsmanShells:
    """Shells by id, per user, under the knobs' limits (the Sandbox sets the attributes)."""

    knobs: Knobs
    budgets: Budgets
    configurations: dict[str, SessionConfiguration]
    shells: dict[str, ShellSession]
    _lock: threading.Lock

    if TYPE_CHECKING:  # the Sandbox's and PipelineRunner's (no stubs: they shadow)

        @property
        def url(self) -> str: ...

        def _receive(self, shell: ShellSession, request: wsman.Request) -> str: ...

    def _dispatch(self, request: wsman.Request, user: str) -> bytes:
        action = request.action
        if action == wsman.ACTION_CREATE:
            body = self._create(request, user)
        else:
            shell = self._shell(request, user)
            if action == wsman.ACTION_RECEIVE:
                body = self._receive(shell, request)
            elif action == wsman.ACTION_COMMAND:
                body = self._command(shell, request)
            elif action == wsman.ACTION_SEND:
                body = self._send(shell, request)
            elif action == wsman.ACTION_SIGNAL:
                body = self._signal(shell, request)
            elif action == wsman.ACTION_DELETE:
                body = self._delete(shell)
            elif action == wsman.ACTION_GET:
                body = wsman.shell_fields(
                    shell.shell_id, shell.resource_uri, user, state="Connected"
                )
            else:
                raise wsman.WSManFault(
                    2150858768,  # 0x80338010 ERROR_WSMAN_ACTION_NOT_SUPPORTED
                    f"The WS-Management service cannot process the request. The action "
                    f"{action} is not supported.",
                    "w:ActionNotSupported",
                )
        return wsman.envelope(wsman.RESPONSE_ACTIONS[action], request.message_id, body)

    def _configuration(self, resource_uri: str) -> SessionConfiguration:
        name = resource_uri
        if resource_uri.lower().startswith(wsman.POWERSHELL_URI_PREFIX.lower()):
            name = resource_uri[len(wsman.POWERSHELL_URI_PREFIX) :]
        configuration = self.configurations.get(name.lower())
        if configuration is None:
            raise wsman.WSManFault(
                wsman.PLUGIN_CONFIGURATION_NOT_FOUND,
                "The WS-Management service cannot process the request. Cannot find the "
                f"{name} session configuration in the WSMan: drive on the {SERVER_NAME} "
                "computer.",
            )
        return configuration

    def _shell(self, request: wsman.Request, user: str) -> ShellSession:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self.shells.get(shell_id)
        if shell is not None:
            shell.last_used = time.monotonic()
        if shell is None or shell.user != user:
            raise wsman.WSManFault(
                wsman.INVALID_SELECTORS,
                wsman.SHELL_NOT_FOUND_MESSAGE.format(shell_id),
                "w:InvalidSelectors",
            )
        return shell

    def _create(self, request: wsman.Request, user: str) -> str:
        configuration = self._configuration(request.resource_uri)
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.INTERNAL_ERROR, "The Create request has no shell.")
        shell_id = (body.get("ShellId") or str(uuid.uuid4())).upper()
        creation = body.find("pwsh:creationXml", wsman.NS)
        with self._lock:
            self._expire_idle_shells()
            limit = self.knobs.max_shells_per_user
            if limit is not None:
                open_for_user = sum(1 for s in self.shells.values() if s.user == user)
                if open_for_user >= limit:
                    raise wsman.WSManFault(
                        wsman.SESSION_OPEN_FAILED, self.budgets.concurrency_message(user, limit)
                    )
            shell = ShellSession(shell_id, user, configuration, request.resource_uri)
            self.shells[shell_id] = shell
        if creation is not None and creation.text:
            shell.feed(base64.b64decode(creation.text), None)
        return wsman.create_response(self.url, request.resource_uri, shell_id, user)

    def _expire_idle_shells(self) -> None:
        """Shells a client abandoned (no Delete) end after the idle timeout, as Exchange's
        do; until then they count against the user's shell limit. Call under _lock."""
        cutoff = time.monotonic() - self.knobs.shell_idle_timeout
        for shell_id, shell in list(self.shells.items()):
            if shell.last_used < cutoff:
                del self.shells[shell_id]
                shell.closed = True

    def _command(self, shell: ShellSession, request: wsman.Request) -> str:
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.INTERNAL_ERROR, "The Command request has no body.")
        command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
        arguments = body.find("rsp:Arguments", wsman.NS)
        data = base64.b64decode(arguments.text) if arguments is not None and arguments.text else b""
        shell.create_pipeline(command_id, data)
        self._charge_budget(shell, command_id)
        return wsman.command_response(command_id)

    def _charge_budget(self, shell: ShellSession, command_id: str) -> None:
        """Count a new command's cmdlets against the user's budget: over it, the command
        will run after a micro delay; over twice it, it is refused with HTTP 400."""
        budget = self.knobs.cmdlet_budget
        if budget is None:
            return
        pipeline_id = uuid.UUID(command_id)
        with shell.lock:
            run = shell.pipelines.get(pipeline_id)
        if run is None:
            return
        count = max(1, sum(len(statement) for statement in run.statements))
        used, wait = self.budgets.charge(shell.user, count)
        if used > 2 * budget:
            shell.stop(pipeline_id)  # never started: forgotten, as if never created
            raise self.budgets.http_refusal(shell.user, used, wait)
        if used > budget:
            run.micro_delay = self.knobs.micro_delay
            run.budget_used = used

    def _send(self, shell: ShellSession, request: wsman.Request) -> str:
        body = request.body
        if body is not None:
            for stream in body.findall("rsp:Stream", wsman.NS):
                if not stream.text:
                    continue
                command_id = stream.get("CommandId")
                pipeline_id = uuid.UUID(command_id) if command_id else None
                shell.feed(base64.b64decode(stream.text), pipeline_id, stream.get("Name", "stdin"))
        return "<rsp:SendResponse/>"

    def _signal(self, shell: ShellSession, request: wsman.Request) -> str:
        """Ctrl+C (PowerShell.stop) or Terminate (PowerShell.close): the pipeline ends."""
        body = request.body
        command_id = body.get("CommandId", "") if body is not None else ""
        if not command_id:
            return "<rsp:SignalResponse/>"
        pipeline_id = uuid.UUID(command_id)
        shell.stop(pipeline_id)
        return "<rsp:SignalResponse/>"

    def _delete(self, shell: ShellSession) -> str:
        with self._lock:
            self.shells.pop(shell.shell_id, None)
        with shell.lock:
            shell.closed = True
            shell.pipelines.clear()
        return ""
