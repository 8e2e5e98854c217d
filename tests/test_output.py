"""Atomic output files and frame writers (CSV, Parquet, JSON), read back from disk."""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bridge.errors import ExitCode, OutputError
from bridge.output import atomic_write, open_for_writer, write_frame


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Name": ["Ann", "Bob"],
            "Size": [2**64 - 1, 5],
            "When": pd.to_datetime([datetime(2024, 5, 1, 12, 30, tzinfo=UTC), None], utc=True),
            "Addresses": [["SMTP:ann@contoso.com", "smtp:a@contoso.com"], []],
        }
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as temp_path:
        temp_path.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with atomic_write(target) as temp_path:
        assert temp_path.parent == tmp_path
        temp_path.write_text("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_mode(
    tmp_path: Path,
) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.csv"
        with atomic_write(fresh) as temp_path:
            temp_path.write_text("x")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
        shared = tmp_path / "shared.csv"
        shared.write_text("old")
        shared.chmod(0o664)
        with atomic_write(shared) as temp_path:
            temp_path.write_text("new")
        assert shared.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(umask)


def test_permission_error_says_close_it_in_excel(tmp_path: Path) -> None:
    target = tmp_path / "report.xlsx"
    with pytest.raises(OutputError) as caught, atomic_write(target):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert str(caught.value) == (
        f"cannot write {target}: permission denied. "
        "If the file is open in Excel, close it and run again."
    )
    assert caught.value.exit_code == ExitCode.OUTPUT
    assert _leftovers(tmp_path) == []


def test_full_disk_is_an_output_error(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with pytest.raises(OutputError) as caught, atomic_write(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value) == (
        f"cannot write {target}: the disk is full. Free some space and run again."
    )
    assert not target.exists()


def test_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "out.csv"
    with pytest.raises(OutputError) as caught:
        write_frame(target, _frame())
    assert str(caught.value) == f"cannot write {target}: folder {target.parent} does not exist."


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_is_a_permission_error(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            write_frame(folder / "out.csv", _frame())
    finally:
        folder.chmod(0o700)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(OutputError) as caught:
        write_frame(tmp_path / "out.txt", _frame())
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'out.txt'}: unknown output type '.txt'; "
        "use .xlsx, .csv, .parquet or .json."
    )


def test_csv_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_frame(target, _frame())
    assert target.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    back = pd.read_csv(target, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert back["Size"].tolist() == ["18446744073709551615", "5"]
    assert back["When"].tolist() == ["2024-05-01 12:30:00+00:00", ""]
    assert json.loads(back["Addresses"][0]) == ["SMTP:ann@contoso.com", "smtp:a@contoso.com"]


def test_parquet_round_trip_keeps_types(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    frame = _frame().assign(Mixed=[1, "two"])
    write_frame(target, frame)
    back = pd.read_parquet(target)
    assert back["Size"].tolist() == [2**64 - 1, 5]
    assert back["When"][0] == pd.Timestamp("2024-05-01 12:30", tz="UTC")
    assert pd.isna(back["When"][1])
    assert back["Mixed"].tolist() == ["1", "two"]  # one type per column


def test_json_keeps_lists_and_exact_integers(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_frame(target, _frame())
    records = json.loads(target.read_text(encoding="utf-8"))
    assert records[0]["Size"] == 2**64 - 1
    assert records[0]["When"] == "2024-05-01T12:30:00+00:00"
    assert records[1]["When"] is None
    assert records[0]["Addresses"] == ["SMTP:ann@contoso.com", "smtp:a@contoso.com"]


def test_csv_makes_formula_looking_text_literal(tmp_path: Path) -> None:
    """A DisplayName such as =HYPERLINK(...) from Exchange is data: CSV output guards the
    leading = + - @ tab CR with a quote, and leaves numbers (even negative) alone."""
    target = tmp_path / "out.csv"
    frame = pd.DataFrame({
        "DisplayName": ['=HYPERLINK("http://x","Click me")', "+1 555", "-cmd", "@SUM(A1)",
                        "\tTab", "\rCR", "Plain", None],
        "Count": [-5, 1, 2, 3, 4, 5, 6, 7],
    })
    write_frame(target, frame)
    back = pd.read_csv(target, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(back["DisplayName"]) == [
        '\'=HYPERLINK("http://x","Click me")', "'+1 555", "'-cmd", "'@SUM(A1)",
        "'\tTab", "'\rCR", "Plain", ""]
    assert list(back["Count"]) == ["-5", "1", "2", "3", "4", "5", "6", "7"]


def test_parquet_and_json_keep_formula_looking_text_as_it_was(tmp_path: Path) -> None:
    frame = pd.DataFrame({"DisplayName": ["=1+1", "-x"]})
    write_frame(tmp_path / "out.parquet", frame)
    write_frame(tmp_path / "out.json", frame)
    assert list(pd.read_parquet(tmp_path / "out.parquet")["DisplayName"]) == ["=1+1", "-x"]
    assert '"=1+1"' in (tmp_path / "out.json").read_text(encoding="utf-8")


class _FillsUp(io.RawIOBase):
    """A file on a disk that is full after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if size > self.room:
            self.room = 0  # a full disk stays full
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return size


def _zip_until_full(handle: Any) -> None:
    archive = zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED)
    archive.writestr("sheet.xml", os.urandom(50_000))  # fails: the disk is full
    archive.close()


def test_a_writer_failing_on_a_full_disk_fails_once_not_again_when_collected(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(OSError):
        _zip_until_full(_FillsUp(room=1000))
    gc.collect()
    assert unraisable, "the plain file shows the failure again when collected"
    unraisable.clear()
    target = tmp_path / "x.zip"
    with pytest.raises(OSError), open_for_writer(target) as handle:
        monkeypatch.setattr(handle, "_raw", _FillsUp(room=1000))
        _zip_until_full(handle)
    gc.collect()
    assert unraisable == []
