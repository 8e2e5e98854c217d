"""The run folder: rows survive a crash, resume skips finished units, nothing doubles."""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from click.testing import CliRunner

from bridge.checkpoint import Checkpoint, decode_row, default_run_dir, encode_row
from bridge.cli import cli
from bridge.errors import ConfigError, InputError

KEY = {"server": "http://mail:80/PowerShell", "strategy": "per-mailbox"}


def test_rows_round_trip_with_their_types() -> None:
    row: dict[str, object] = {
        "When": datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=-7))),
        "Day": date(2024, 1, 2),
        "Retain": timedelta(days=14, microseconds=5),
        "Raw": b"\x00\xff",
        "Size": 12345678901234567890,
        "Ratio": 0.5,
        "Quota": None,
        "Amount": Decimal("1.10"),
        "Guid": UUID("d8f0c0a5-2f54-4a4e-9c3e-0f5b1b2f7c11"),
        "Proxy": ["SMTP:a@b", "smtp:c@d"],
        "Nested": {"$dt": "not a date", "x": 1},
        "Lonely": {"$dt": "still not a date"},
        "Name": "Zoë O'Brien, 山田",
    }
    assert decode_row(encode_row(row)) == row


def test_default_run_dir_sits_beside_the_output(tmp_path: Path) -> None:
    assert default_run_dir(tmp_path / "report.xlsx") == tmp_path / "report.xlsx.psbridge-run"


def test_resume_reads_back_saved_units_and_skips_them(tmp_path: Path) -> None:
    store = Checkpoint.open(tmp_path / "run", KEY, resume=False)
    assert not store.resumed and not store.has_progress()
    store.save("mailboxes", "", [{"Identity": "a"}, {"Identity": "b"}])
    store.save("mailbox-devices", "a", [{"DeviceId": "1"}], [{"Message": "x"}])
    store.close()

    again = Checkpoint.open(tmp_path / "run", KEY, resume=True)
    assert again.resumed
    assert again.is_done("mailboxes") and not again.is_done("devices")
    assert again.done_keys("mailbox-devices") == {"a"}
    assert again.rows("mailboxes") == {"": [{"Identity": "a"}, {"Identity": "b"}]}
    assert again.rows("mailbox-devices") == {"a": [{"DeviceId": "1"}]}
    assert again.errors() == [{"Message": "x"}]


def test_saving_a_unit_twice_is_refused_and_adds_no_rows(tmp_path: Path) -> None:
    store = Checkpoint.open(tmp_path / "run", KEY, resume=False)
    store.save("mailbox-devices", "a", [{"DeviceId": "1"}])
    with pytest.raises(InputError, match="already saved"):
        store.save("mailbox-devices", "a", [{"DeviceId": "1"}, {"DeviceId": "2"}])
    assert store.rows("mailbox-devices") == {"a": [{"DeviceId": "1"}]}


def test_an_existing_run_needs_resume_and_the_same_settings(tmp_path: Path) -> None:
    Checkpoint.open(tmp_path / "run", KEY, resume=False).close()
    with pytest.raises(ConfigError, match="add --resume to continue it"):
        Checkpoint.open(tmp_path / "run", KEY, resume=False)
    with pytest.raises(ConfigError, match="started with other settings"):
        Checkpoint.open(tmp_path / "run", {**KEY, "strategy": "bulk"}, resume=True)


def test_resume_without_a_saved_run_starts_fresh(tmp_path: Path) -> None:
    store = Checkpoint.open(tmp_path / "new", KEY, resume=True)
    assert not store.resumed


def _crash_after_three_units(folder: str) -> None:
    store = Checkpoint.open(folder, KEY, resume=False)
    for name in ("a", "b", "c"):
        store.save("mailbox-devices", name, [{"DeviceId": name, "When": datetime.now(UTC)}])
    os._exit(3)  # no close, no cleanup: as a killed process


def test_a_crashed_process_loses_no_saved_unit(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    child = mp.get_context("fork").Process(target=_crash_after_three_units, args=(str(folder),))
    child.start()
    child.join(30)
    assert child.exitcode == 3
    store = Checkpoint.open(folder, KEY, resume=True)
    assert store.done_keys("mailbox-devices") == {"a", "b", "c"}
    assert sum(len(rows) for rows in store.rows("mailbox-devices").values()) == 3


def test_discard_removes_the_folder(tmp_path: Path) -> None:
    store = Checkpoint.open(tmp_path / "run", KEY, resume=False)
    store.save("mailboxes", "", [])
    store.discard()
    assert not (tmp_path / "run").exists()


def test_discard_never_deletes_files_it_did_not_write(tmp_path: Path) -> None:
    # --run-dir may name a folder the admin already uses (e.g. Documents)
    (tmp_path / "keep.txt").write_text("mine")
    store = Checkpoint.open(tmp_path, KEY, resume=False)
    store.save("mailboxes", "", [])
    store.discard()
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_second_run_on_a_folder_in_use_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    first = Checkpoint.open(tmp_path / "run", KEY, resume=False)
    first.save("mailboxes", "", [{"Identity": "a"}])
    for resume in (False, True):  # neither "interrupted" nor a second writer
        with pytest.raises(ConfigError) as caught:
            Checkpoint.open(tmp_path / "run", KEY, resume=resume)
        assert str(caught.value) == (
            f"another psbridge run is using {tmp_path / 'run'} (pid {os.getpid()}); "
            "wait for it to finish"
        )
        assert caught.value.exit_code == 8
    first.close()
    again = Checkpoint.open(tmp_path / "run", KEY, resume=True)
    assert again.rows("mailboxes") == {"": [{"Identity": "a"}]}
    again.discard()
    assert not (tmp_path / "run").exists()


def _hold_the_folder(folder: str, ready: object, done: object) -> None:
    store = Checkpoint.open(folder, KEY, resume=False)
    ready.set()  # type: ignore[attr-defined]
    done.wait(30)  # type: ignore[attr-defined]
    store.close()


def test_another_process_holding_the_folder_is_named_by_its_pid(tmp_path: Path) -> None:
    context = mp.get_context("fork")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_hold_the_folder, args=(str(tmp_path / "run"), ready, done))
    child.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ConfigError) as caught:
            Checkpoint.open(tmp_path / "run", KEY, resume=True)
        assert str(caught.value) == (
            f"another psbridge run is using {tmp_path / 'run'} (pid {child.pid}); "
            "wait for it to finish"
        )
    finally:
        done.set()
        child.join(30)
    Checkpoint.open(tmp_path / "run", KEY, resume=True).close()


def test_the_cli_refuses_a_second_run_with_one_line_and_exit_8(tmp_path: Path) -> None:
    out = tmp_path / "report.xlsx"
    holder = Checkpoint.open(default_run_dir(out), {"other": "run"}, resume=False)
    try:
        result = CliRunner().invoke(
            cli, ["mobile", "--server", "127.0.0.1", "--port", "1", "--user", "u", "-o", str(out)],
            env={"PSBRIDGE_PASSWORD": "p"},
        )
    finally:
        holder.close()
    assert result.exit_code == 8, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: another psbridge run is using {default_run_dir(out)} (pid {os.getpid()}); "
        "wait for it to finish"
    )


@pytest.mark.parametrize("under", ["", "deeper/"])
def test_a_run_folder_under_a_file_is_one_clear_error(tmp_path: Path, under: str) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    folder = tmp_path / "notes.txt" / f"{under}run"
    with pytest.raises(ConfigError) as caught:
        Checkpoint.open(folder, KEY, resume=False)
    assert str(caught.value) == (
        f"cannot create the run folder {folder}: {tmp_path / 'notes.txt'} is a file, not a "
        "folder (give another --run-dir or output path)"
    )


def test_a_run_folder_name_taken_by_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file")
    with pytest.raises(ConfigError) as caught:
        Checkpoint.open(tmp_path / "run", KEY, resume=False)
    assert str(caught.value) == (
        f"cannot create the run folder {tmp_path / 'run'}: a file of that name is in the way "
        "(give another --run-dir or output name)"
    )
