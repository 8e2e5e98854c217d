"""Exchange Online in the report jobs: :class:`ExchangeOnline` is a
:class:`bridge.jobs.ReportSource` (``psbridge mobile --tenant``),
:func:`run_cmdlet_on_exchange_online` is ``psbridge run --tenant`` and
:func:`exo_demo_report` is ``psbridge demo --exo`` against the emulated Exchange Online.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import ConfigError, OutputError
from bridge.exchange import Collection
from bridge.exo.client import ExoSource
from bridge.exo.settings import ExoSettings
from bridge.exo.signin import SignIn, Tokens
from bridge.jobs import (
    LIBRARY_CALL,
    CmdletRun,
    Collected,
    CollectRequest,
    Note,
    Notify,
    ReportOutput,
    ReportRun,
    check_table_output,
    live_collected,
    mobile_report,
    resumable,
    write_cmdlet_output,
)

if TYPE_CHECKING:
    from bridge.history import HistorySettings

SOURCE_LABEL = "live (Exchange Online REST)"
DeviceCode = Callable[[str], None]


def open_source(settings: ExoSettings, on_device_code: DeviceCode | None = None) -> ExoSource:
    """An ExoSource for ``settings``, signed in (so a refusal shows before anything else)."""
    tokens = Tokens(settings.sign_in, on_device_code=on_device_code)
    tokens.token()
    return ExoSource(tokens, settings.sign_in.tenant, endpoint=settings.endpoint,
                     verify=settings.verify, concurrency=settings.concurrency,
                     retries=settings.retries)


def _collected(result: Collection, source: ExoSource) -> Collected:
    collected = live_collected(result, source=SOURCE_LABEL)
    return replace(collected, endpoint=f"{source.endpoint} (REST)", environment="online",
                   extra={**collected.extra, "Collected as": source.user or "unknown",
                          "HTTP requests": str(source.stats.http_requests)})


@dataclass(frozen=True)
class ExchangeOnline:
    """Exchange Online through its REST endpoint, signed in with MSAL; resumable."""

    settings: ExoSettings
    strategy: str = "bulk"
    resume: bool = False
    #: where progress is saved (default: beside the first output, OUTPUT.psbridge-run)
    run_dir: Path | None = None
    on_device_code: DeviceCode | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Sign in and collect; the run folder goes only when the caller's body succeeds."""
        from bridge import checkpoint as checkpoints
        from bridge import exchange

        run_dir = self.run_dir or checkpoints.default_run_dir(request.output)
        sign_in = self.settings.sign_in
        run_key = {
            "server": self.settings.endpoint, "tenant": sign_in.tenant, "app": sign_in.app_id,
            "user": sign_in.username, "strategy": self.strategy,
            "recipient_types": list(request.options.recipient_types),
            "device_filter": request.device_filter,
        }
        with resumable(run_dir, run_key, self.resume, request) as store:
            with open_source(self.settings, self.on_device_code) as source:
                result = exchange.collect(
                    source, strategy=self.strategy,
                    recipient_types=request.options.recipient_types,
                    device_filter=request.device_filter, checkpoint=store,
                    progress=request.progress, concurrency=self.settings.concurrency)
                collected = _collected(result, source)
            yield collected


def run_cmdlet_on_exchange_online(settings: ExoSettings, cmdlet: str,
                                  parameters: Mapping[str, object], output: Path, *,
                                  on_device_code: DeviceCode | None = None,
                                  notify: Notify | None = None) -> CmdletRun:
    """``psbridge run --tenant``: one read-only cmdlet on Exchange Online to a file."""
    from bridge import exchange
    from bridge import output as outputs
    from bridge.commands import Command, is_read_only

    if not is_read_only(Command(cmdlet)):
        raise ConfigError(f"{cmdlet}: psbridge runs only read-only cmdlets (Get-, Test-...) "
                          "on Exchange Online")
    check_table_output(output)
    outputs.check_writable(output)  # before signing in, as for a server
    with open_source(settings, on_device_code) as source:
        command, result = exchange.run_cmdlet(source, cmdlet, dict(parameters))
    return write_cmdlet_output(command, result, output, notify=notify)


@dataclass(frozen=True)
class SandboxExchangeOnline:
    """psbridge's emulated Exchange Online (Entra and the REST endpoint on 127.0.0.1, HTTPS
    with its own CA), signed in with a device code the sandbox approves itself."""

    mailboxes: int = 200
    seed: int = 1

    @contextlib.contextmanager
    def collect(self, request: CollectRequest) -> Iterator[Collected]:
        """Start the emulation, collect through the REST client, stop it."""
        from bridge.sandbox.exo_server import DEFAULT_ADMIN, ExoSandbox

        with ExoSandbox(mailboxes=self.mailboxes, seed=self.seed) as sandbox, \
                tempfile.TemporaryDirectory(prefix="psbridge-demo-cache-") as cache:
            request.notify(Note("status", f"Sandbox: {self.mailboxes} mailboxes (seed "
                                          f"{self.seed}) as Exchange Online at "
                                          f"{sandbox.endpoint}; signing in with a device code "
                                          "..."))

            def approve(message: str) -> None:  # what the admin does in the browser
                request.notify(Note("status", message))
                for code in sandbox.entra.pending_user_codes():
                    sandbox.approve_device_code(code, DEFAULT_ADMIN)
                request.notify(Note("status", f"(the sandbox signed in as {DEFAULT_ADMIN})"))

            settings = ExoSettings(
                sign_in=SignIn(tenant=sandbox.tenant, authority_host=sandbox.endpoint,
                               verify=str(sandbox.ca_file), cache_dir=Path(cache)),
                endpoint=sandbox.endpoint, verify=str(sandbox.ca_file))
            run_dir = Path(cache) / "run"
            source = ExchangeOnline(settings, run_dir=run_dir, on_device_code=approve)
            with source.collect(request) as collected:
                label = f"{self.mailboxes} mailboxes, seed {self.seed}"
                request.notify(Note(
                    "status", f"Collected {len(collected.mailboxes)} mailboxes and "
                              f"{len(collected.devices)} devices "
                              f"({collected.extra.get('HTTP requests')} HTTPS requests)."))
                yield replace(
                    collected, organisation_fallback=sandbox.tenant,
                    source=f"psbridge demo: sandbox organisation ({label}) over Exchange "
                           "Online's REST endpoint",
                    history_source="demo", history_server=collected.server,
                    history_suffix=f" (psbridge Exchange Online sandbox, {label})",
                    clock=sandbox.organisation.reference_time)


def exo_demo_report(output: Path, mailboxes: int = 200, seed: int = 1,
                    history_settings: HistorySettings | None = None, *,
                    notify: Notify | None = None,
                    command_line: str = LIBRARY_CALL) -> ReportRun:
    """``psbridge demo --exo``: the sandbox organisation's report through the REST client."""
    if output.suffix.lower() != ".xlsx":
        raise OutputError(f"cannot write {output}: the demo writes a workbook; use a name "
                          "ending in .xlsx.")
    if not output.parent.is_dir():
        raise OutputError(f"cannot write {output}: folder {output.parent} does not exist.")
    return mobile_report(SandboxExchangeOnline(mailboxes, seed), None,
                         [ReportOutput(output, "xlsx")], history_settings, notify=notify,
                         command_line=command_line)
