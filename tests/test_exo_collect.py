"""The mobile report through Exchange Online's REST endpoint: nothing lost or doubled, few
requests, the same report as on-premises WSMan, resumable, and no token anywhere."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bridge import frames, history, workbook
from bridge.checkpoint import Checkpoint
from bridge.commands import Command, CommandResult
from bridge.errors import RemoteCommandError
from bridge.exchange import collect
from bridge.remote import ConnectionSettings, RetryPolicy, Session
from bridge.sandbox.server import Sandbox
from tests.exo_support import delegated, exo_sandbox, source_for

KEY = {"strategy": "bulk", "source": "exo"}


def users_with_devices(org: Any) -> list[Any]:
    return [m for m in org.mailbox_entries if m.kind == "user" and m.devices]


def test_every_device_once_and_statistics_only_for_mailboxes_with_devices(
        tmp_path: Path) -> None:
    with exo_sandbox(mailboxes=80, seed=3) as exo:
        source = source_for(exo, delegated(exo, tmp_path), page_size=25)
        result = collect(source)
        org = exo.organisation
        users = [m for m in org.mailbox_entries if m.kind == "user"]
        owners = users_with_devices(org)
        assert sorted(str(m["Name"]) for m in result.mailboxes) == sorted(m.name for m in users)
        expected = sorted(d.guid for m in users for d in m.devices)
        assert sorted(str(d["Guid"]) for d in result.devices) == expected  # none lost, none twice
        assert result.errors == []
        stats = [i for i in exo.service.invocations if i.cmdlet == "Get-MobileDeviceStatistics"]
        by_upn = {str(m["UserPrincipalName"]): str(m["ExternalDirectoryObjectId"])
                  for m in result.mailboxes}
        assert sorted(i.parameters["Mailbox"] for i in stats) == sorted(
            by_upn[m.upn] for m in owners)  # ExternalDirectoryObjectId, never empty
        assert all(i.batched and i.parameters["Mailbox"] for i in stats)
        assert exo.service.requests["$batch"] == math.ceil(len(owners) / 10)
        assert isinstance(result.devices[0]["LastSuccessSync"] or datetime.now(UTC), datetime)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns[:3]) + ["DeviceId"]).reset_index(drop=True) \
        if "DeviceId" in frame.columns else frame.sort_values(list(frame.columns)).reset_index(
            drop=True)


def test_the_same_organisation_gives_the_same_report_online_and_on_premises(
        sandbox: Sandbox, tmp_path: Path) -> None:
    settings = ConnectionSettings(server=sandbox.host, port=sandbox.port, auth="ntlm",
                                  username=sandbox.username,
                                  retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05))
    with Session(settings, sandbox.password) as session:
        on_premises = collect(session)
    with exo_sandbox(organisation=sandbox.organisation) as exo:
        online = collect(source_for(exo, delegated(exo, tmp_path)))
    started = sandbox.organisation.reference_time
    reports = [frames.build_report(c.mailboxes, c.devices, c.errors, run_started=started,
                                   options=frames.ReportOptions(all_devices=True))
               for c in (on_premises, online)]
    wsman, rest = reports
    assert len(rest.devices) == sum(len(m.devices) for m in sandbox.organisation.mailbox_entries
                                    if m.kind == "user")
    pd.testing.assert_frame_equal(_sorted(wsman.devices_sheet()), _sorted(rest.devices_sheet()))
    pd.testing.assert_frame_equal(_sorted(wsman.users_without_devices),
                                  _sorted(rest.users_without_devices))
    assert wsman.figures == rest.figures
    for table in ("by_protocol", "by_platform", "by_stale", "by_access_state"):
        pd.testing.assert_frame_equal(getattr(wsman, table), getattr(rest, table))
    assert list(wsman.mailboxes.dtypes) == list(rest.mailboxes.dtypes)


def test_an_interrupted_run_resumes_without_asking_a_mailbox_twice(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # one request at a time: org config, Get-Mailbox, Get-MobileDevice, batch 1, batch 2...
    with exo_sandbox(mailboxes=120, seed=5, fault_at={5: "503"}) as exo:
        tokens = delegated(exo, tmp_path)
        store = Checkpoint.open(run_dir, KEY, resume=False)
        with pytest.raises(RemoteCommandError, match="gave up after 1 try"):
            collect(source_for(exo, tokens, retries=0), checkpoint=store, concurrency=1)
        store.close()
        first = sum(i.cmdlet == "Get-MobileDeviceStatistics" for i in exo.service.invocations)
        assert first == 10
        store = Checkpoint.open(run_dir, KEY, resume=True)
        result = collect(source_for(exo, tokens), checkpoint=store, concurrency=1)
        store.discard()
        users = [m for m in exo.organisation.mailbox_entries if m.kind == "user"]
        assert sorted(str(d["Guid"]) for d in result.devices) == sorted(
            d.guid for m in users for d in m.devices)
        stats = [i.parameters["Mailbox"] for i in exo.service.invocations
                 if i.cmdlet == "Get-MobileDeviceStatistics"]
        assert len(stats) == len(set(stats)) == len(users_with_devices(exo.organisation))
        assert sum(i.cmdlet == "Get-Mailbox" for i in exo.service.invocations) == 1
        assert result.meta["resumed"] is True


class _OneByOne:
    """A WSMan session seen as a source without pipelines or $batch (the fallback path)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.stats = session.stats
        self.endpoint, self.configuration, self.user = (session.endpoint, None, session.user)
        self.pipelines = False

    @property
    def concurrency(self) -> int:
        return self._session.concurrency

    def set_concurrency(self, connections: int) -> None:
        self._session.set_concurrency(connections)

    def run(self, commands: Command | Sequence[Command], *,
            on_output: Callable[[int], None] | None = None) -> CommandResult:
        return self._session.run(commands, on_output=on_output)

    def abort(self) -> None:
        self._session.abort()


def test_without_batch_the_plan_runs_the_statistics_one_by_one(sandbox: Sandbox) -> None:
    settings = ConnectionSettings(server=sandbox.host, port=sandbox.port, auth="ntlm",
                                  username=sandbox.username)
    with Session(settings, sandbox.password) as session:
        result = collect(_OneByOne(session))
        users = [m for m in sandbox.organisation.mailbox_entries if m.kind == "user"]
        assert sorted(str(d["Guid"]) for d in result.devices) == sorted(
            d.guid for m in users for d in m.devices)
        owners = sum(1 for m in users if m.devices)
        assert result.meta["commands"] == 3 + owners  # org config, mailboxes, devices, stats


def _files_text(folder: Path) -> bytes:
    """Every byte psbridge left under ``folder``, workbooks unzipped."""
    found = b""
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as archive:
                found += b"".join(archive.read(name) for name in archive.namelist())
        else:
            found += path.read_bytes()
    return found


def test_no_token_in_the_workbook_history_or_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with exo_sandbox(fault_at={4: "expired"}, token_lifetime=3599.0) as exo:
        tokens = delegated(exo, tmp_path / "cache")
        source = source_for(exo, tokens)
        store = Checkpoint.open(out / "report.xlsx.psbridge-run", KEY, resume=False)
        result = collect(source, checkpoint=store)
        store.close()  # kept, so its content is searched too
        started = datetime.now(UTC)
        report = frames.build_report(result.mailboxes, result.devices, result.errors,
                                     run_started=started)
        view = history.record_and_view(history.HistorySettings(path=out / "history.sqlite"),
                                       report, organisation=str(result.meta["organization"]),
                                       server=source.endpoint, source="live")
        run = workbook.RunDetails(command_line="psbridge mobile --tenant x", organisation="x",
                                  server=source.endpoint, endpoint=source.endpoint,
                                  source="live (Exchange Online REST)", strategy="bulk",
                                  started=started, finished=datetime.now(UTC), version="t",
                                  extra={"Collected as": str(result.meta["user"])})
        workbook.write_report(out / "report.xlsx", report, run, history=view)
    assert len(tokens.issued) == 2  # the expired one and its successor
    everything = _files_text(out) + repr(result.meta).encode()
    assert b"admin@contoso.onmicrosoft.com" in everything  # the search does see the files
    for token in tokens.issued:
        assert token.encode() not in everything


def test_statistics_errors_become_error_rows_with_exchange_text(tmp_path: Path) -> None:
    org_probe = exo_sandbox(mailboxes=60, seed=4)
    with org_probe as exo:
        owners = users_with_devices(exo.organisation)
        single = next(m for m in owners if len(m.devices) == 1)
        double = next(m for m in owners if len(m.devices) >= 2)
    failing = {single.devices[0].device_id, double.devices[0].device_id}
    with exo_sandbox(mailboxes=60, seed=4, statistics_errors=frozenset(failing)) as exo:
        result = collect(source_for(exo, delegated(exo, tmp_path)))
    users = [m for m in exo.organisation.mailbox_entries if m.kind == "user"]
    expected = sorted(d.guid for m in users for d in m.devices if d.device_id not in failing)
    assert sorted(str(d["Guid"]) for d in result.devices) == expected
    assert len(result.errors) == 2
    by_mailbox = {str(e["Mailbox"]): e for e in result.errors}
    assert set(by_mailbox) == {single.name, double.name}
    for error in result.errors:
        assert error["Command"] == (
            f"Get-MobileDeviceStatistics -Mailbox {error['Command'].split()[-1]}")
        message = str(error["Message"])
        assert message and "|" not in message and "Error executing" not in message
