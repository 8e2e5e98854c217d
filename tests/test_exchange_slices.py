"""Large reads in slices: every mailbox and device in exactly one slice, and a connection
that drops every N objects (N below the organisation's size) costs one slice, not the run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bridge.checkpoint import Checkpoint
from bridge.errors import ConnectionFailed
from bridge.exchange import (
    MAILBOX_NAME_BOUNDS,
    PHASE_MAILBOXES,
    Slice,
    collect,
    device_pipeline,
    mailbox_command,
    slices,
)
from bridge.remote import ConnectionSettings, RetryPolicy, Session
from bridge.sandbox.server import Sandbox
from tests.ground_truth import classic_users

FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)


def _settings(sb: Sandbox, concurrency: int) -> ConnectionSettings:
    return ConnectionSettings(server=sb.host, port=sb.port, auth="ntlm", username=sb.username,
                              concurrency=concurrency, retry=FAST_RETRY)


def test_slices_have_complementary_bounds() -> None:
    assert slices(()) == [Slice()]
    assert [part.key for part in slices(("c", "f"))] == ["..c", "c..f", "f.."]
    assert [part.opath("Name") for part in slices(("c", "f"))] == [
        "Name -lt 'c'", "Name -ge 'c' -and Name -lt 'f'", "Name -ge 'f'"]
    assert Slice(None, "o'b").opath("Name") == "Name -lt 'o''b'"
    assert mailbox_command(("UserMailbox",), Slice("c", "f")).parameters == {
        "RecipientTypeDetails": ["UserMailbox"], "ResultSize": "Unlimited",
        "Filter": "Name -ge 'c' -and Name -lt 'f'"}
    assert device_pipeline("DeviceOS -like 'iOS*'", Slice("s"))[0].parameters["Filter"] == (
        "(DeviceOS -like 'iOS*') -and (DeviceId -ge 's')")
    assert "Filter" not in mailbox_command().parameters  # unsliced: as before


def test_every_name_falls_in_exactly_one_slice_on_the_server() -> None:
    # digits, punctuation, accents, other scripts, names equal to a bound: each is found
    # by exactly one Name slice (the sandbox's OPATH compares as the directory does)
    odd = ["0day", "_svc", "'quoted", "Zoë", "Ärzte", "ł", "李", "c", "C", "t", "~", "Émile"]
    with Sandbox(mailboxes=30, seed=4) as sb:
        for at, name in enumerate(odd):
            sb.organisation.mailbox_entries[at].name = name
        with Session(_settings(sb, 3), sb.password) as session:
            found = collect(session, "bulk", ("UserMailbox", "SharedMailbox", "RoomMailbox"))
        assert sb.internal_errors == []
    names = Counter(str(m["Name"]) for m in found.mailboxes)
    assert all(names[name] == 1 for name in odd), names
    assert sum(names.values()) == 30


# the drop counts the objects of all commands in flight: three side by side share it
@pytest.mark.parametrize(("concurrency", "every"), [(1, 60), (3, 150)])
def test_a_connection_dropping_every_n_objects_loses_and_doubles_nothing(
    tmp_path: Path, concurrency: int, every: int
) -> None:
    # 176 user mailboxes and 234 devices, no slice over 49 objects: unsliced, Get-Mailbox
    # would start over at every drop and never finish; sliced, a drop redoes one slice
    with Sandbox(mailboxes=200, seed=1, drop_after_objects=every) as sb:
        store = Checkpoint.open(tmp_path, {"strategy": "bulk"}, resume=False)
        with Session(_settings(sb, concurrency), sb.password) as session:
            result = collect(session, "bulk", checkpoint=store, concurrency=concurrency)
            reconnects = session.stats.reconnects
        store.close()
        assert sb.internal_errors == []
        users = classic_users(sb.organisation)
    # every drop closes a connection: a new one replaces it (the command on it retried,
    # unless the drop hit the request freeing a finished one)
    assert reconnects >= 2
    assert Counter(str(m["Identity"]) for m in result.mailboxes) == Counter(
        m.identity for m in users)
    assert Counter(str(d["Identity"]) for d in result.devices) == Counter(
        d.identity for m in users for d in m.devices)
    assert result.errors == []
    saved = Checkpoint.open(tmp_path, {"strategy": "bulk"}, resume=True)
    assert saved.done_keys(PHASE_MAILBOXES) == {part.key for part in slices(MAILBOX_NAME_BOUNDS)}


def test_unsliced_the_same_drops_never_let_get_mailbox_finish() -> None:
    # the baseline the slices fix: each retry of the whole Get-Mailbox is cut at 60 again
    with Sandbox(mailboxes=200, seed=1, drop_after_objects=60) as sb:
        with Session(_settings(sb, 1), sb.password) as session:
            with pytest.raises(ConnectionFailed, match="Get-Mailbox.*gave up after 5 tries"):
                collect(session, "bulk", concurrency=1, sliced=False)
