"""Exchange Online's REST client against the emulated endpoint over real HTTPS, real MSAL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.commands import Command
from bridge.errors import CommandNotFound, RemoteCommandError
from bridge.exo.client import ROLE_HINT
from tests.exo_support import delegated, exo_sandbox, source_for

ALL_MAILBOXES = Command("Get-Mailbox", {"ResultSize": "Unlimited"})
ALL_DEVICES = Command("Get-MobileDevice", {"ResultSize": "Unlimited"})


def test_pages_are_followed_with_the_same_body_until_the_last(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        source = source_for(exo, delegated(exo, tmp_path), page_size=7)
        result = source.run(ALL_MAILBOXES)
        names = [row["Name"] for row in result.rows]
        assert sorted(names) == sorted(m.name for m in exo.organisation.mailbox_entries)
        assert len(set(names)) == len(names) == 30
        pages = [i for i in exo.service.invocations if i.cmdlet == "Get-Mailbox"]
        assert [i.offset for i in pages] == [0, 7, 14, 21, 28]
        assert all(i.parameters == {"ResultSize": "Unlimited"} for i in pages)
        assert source.stats.http_requests == 5


def test_a_number_as_result_size_stops_there(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        source = source_for(exo, delegated(exo, tmp_path), page_size=4)
        result = source.run(Command("Get-Mailbox", {"ResultSize": 10}))
        assert len(result.rows) == 10


def test_429_waits_as_long_as_retry_after_says(tmp_path: Path) -> None:
    with exo_sandbox(fault_at={1: "429"}, retry_after=7) as exo:
        source = source_for(exo, delegated(exo, tmp_path))
        result = source.run(ALL_MAILBOXES)
        assert len(result.rows) == 30
        assert source.slept == [7.0]  # type: ignore[attr-defined]
        assert source.stats.retries == 1


def test_503_504_transient_and_concurrency_refusals_back_off_and_retry(tmp_path: Path) -> None:
    faults = {1: "503", 2: "504", 3: "transient", 4: "concurrency"}
    with exo_sandbox(fault_at=faults) as exo:
        source = source_for(exo, delegated(exo, tmp_path), backoff=2.0)
        result = source.run(ALL_DEVICES)
        assert len(result.rows) == sum(len(m.devices) for m in exo.organisation.mailbox_entries)
        slept = source.slept  # type: ignore[attr-defined]
        # exponential from 2 s, each within +-25% jitter
        assert [round(s / base, 2) >= 0.75 and s / base <= 1.25
                for s, base in zip(slept, (2, 4, 8, 16), strict=True)] == [True] * 4


def test_retries_are_bounded(tmp_path: Path) -> None:
    with exo_sandbox(fault_every={"503": 1}) as exo:
        source = source_for(exo, delegated(exo, tmp_path), retries=2)
        with pytest.raises(RemoteCommandError, match=r"^Get-Mailbox -ResultSize Unlimited: "
                           r"gave up after 3 tries: HTTP 503"):
            source.run(ALL_MAILBOXES)
        assert exo.service.requests["InvokeCommand"] == 3


def test_a_claims_challenge_gets_a_new_token_with_those_claims(tmp_path: Path) -> None:
    with exo_sandbox(fault_at={2: "claims"}) as exo:
        tokens = delegated(exo, tmp_path)
        source = source_for(exo, tokens, page_size=10)
        result = source.run(ALL_MAILBOXES)
        assert len({row["Name"] for row in result.rows}) == 30
        assert exo.entra.claims_received  # the new token was asked for with the claims
        assert len(tokens.issued) == 2


def test_an_expired_token_is_renewed_without_losing_the_page(tmp_path: Path) -> None:
    with exo_sandbox(fault_at={3: "expired"}) as exo:
        tokens = delegated(exo, tmp_path)
        source = source_for(exo, tokens, page_size=10)
        result = source.run(ALL_MAILBOXES)
        assert sorted(row["Name"] for row in result.rows) == sorted(
            m.name for m in exo.organisation.mailbox_entries)
        assert len(tokens.issued) == 2
        offsets = [i.offset for i in exo.service.invocations if i.cmdlet == "Get-Mailbox"]
        assert offsets == [0, 10, 20]  # the refused page was asked again, none skipped


def test_an_odata_error_becomes_an_error_record_with_the_details_text(tmp_path: Path) -> None:
    with exo_sandbox() as exo:
        source = source_for(exo, delegated(exo, tmp_path))
        with pytest.raises(RemoteCommandError) as caught:
            source.run(Command("Get-MobileDeviceStatistics", {"Mailbox": "nobody-here"}))
        record = caught.value.record
        assert record is not None
        assert "nobody-here" in record.message and "|" not in record.message
        assert record.reason.endswith("NotFoundException")
        [outcome] = source.run_batch([Command("Get-MobileDeviceStatistics",
                                              {"Mailbox": "nobody-here"})])
        assert isinstance(outcome, RemoteCommandError) and outcome.record == record


def test_403_with_an_empty_body_names_the_missing_role(tmp_path: Path) -> None:
    with exo_sandbox(forbidden_cmdlets=frozenset({"Get-MobileDeviceStatistics"})) as exo:
        source = source_for(exo, delegated(exo, tmp_path))
        command = Command("Get-MobileDeviceStatistics", {"Mailbox": "x"})
        with pytest.raises(CommandNotFound) as caught:
            source.run(command)
        assert str(caught.value) == (
            f"Get-MobileDeviceStatistics -Mailbox x: Exchange Online refused it (HTTP 403): "
            f"{ROLE_HINT}")
        with pytest.raises(CommandNotFound):  # in a batch too: it fails for every mailbox
            source.run_batch([command])


def test_a_next_link_to_another_host_never_receives_the_token(tmp_path: Path) -> None:
    with exo_sandbox(foreign_next_link=True) as exo:
        source = source_for(exo, delegated(exo, tmp_path), page_size=10)
        with pytest.raises(RemoteCommandError, match="link to another host"):
            source.run(ALL_MAILBOXES)
        assert exo.service.foreign_requests == 0
        assert exo.service.foreign_tokens == 0


def test_a_batch_answers_each_cmdlet_in_order_and_retries_only_the_throttled(
        tmp_path: Path) -> None:
    with exo_sandbox(fault_at={1: "429"}, retry_after=1) as exo:
        source = source_for(exo, delegated(exo, tmp_path))
        owners = [m for m in exo.organisation.mailbox_entries if m.devices][:12]
        commands = [Command("Get-MobileDeviceStatistics", {"Mailbox": m.upn}) for m in owners]
        outcomes = source.run_batch(commands)
        assert [len(o.rows) for o in outcomes] == [len(m.devices) for m in owners]  # type: ignore[union-attr]
        assert exo.service.requests["$batch"] == 3  # 10 + 2, the first one refused once
        assert source.slept == [1.0]  # type: ignore[attr-defined]


def test_the_token_never_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    caplog.set_level(logging.DEBUG)
    with exo_sandbox(fault_at={2: "expired", 3: "503"}) as exo:
        tokens = delegated(exo, tmp_path)
        source = source_for(exo, tokens, page_size=10)
        source.run(ALL_MAILBOXES)
        assert repr(source).startswith("<ExoSource https://127.0.0.1:")
    assert tokens.issued and caplog.text
    for token in tokens.issued:
        assert token not in caplog.text
        assert token not in repr(tokens) and token not in repr(source)


def test_an_app_only_token_refused_as_expired_is_replaced(tmp_path: Path) -> None:
    from bridge.exo import Tokens
    from tests.exo_support import APP_ID, make_certificate, sign_in_for

    path, public = make_certificate(tmp_path)
    with exo_sandbox(fault_at={2: "expired"}) as exo:
        exo.entra.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        tokens = Tokens(sign_in_for(exo, tmp_path, app_id=APP_ID, certificate=path))
        source = source_for(exo, tokens, page_size=10)
        assert len(source.run(ALL_MAILBOXES).rows) == 30
        assert exo.entra.requests["oauth2/v2.0/token"] == 2


def test_the_tenant_concurrency_limit_is_waited_out(tmp_path: Path) -> None:
    import time

    from bridge.exchange import collect

    with exo_sandbox(mailboxes=60, seed=2, max_concurrent=1, latency_ms=20) as exo:
        source = source_for(exo, delegated(exo, tmp_path), retries=10,
                            sleep=lambda seconds: time.sleep(seconds / 100))
        result = collect(source, concurrency=3)
        users = [m for m in exo.organisation.mailbox_entries if m.kind == "user"]
        assert sorted(str(d["Guid"]) for d in result.devices) == sorted(
            d.guid for m in users for d in m.devices)
        assert result.errors == []
        assert source.stats.retries > 0  # refused while another request was in flight


def test_a_403_fault_mid_run_names_the_role(tmp_path: Path) -> None:
    with exo_sandbox(fault_at={2: "403"}) as exo:
        source = source_for(exo, delegated(exo, tmp_path), page_size=10)
        with pytest.raises(CommandNotFound, match="View-Only Organization Management"):
            source.run(ALL_MAILBOXES)
