"""Names psbridge derives from an output's name fit the file system and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from bridge.checkpoint import CHECKPOINT_FILE, Checkpoint, default_run_dir
from bridge.cli import cli
from bridge.output import atomic_write
from bridge.paths import NAME_MAX, fitting_name, runs_folder
from bridge.sandbox import Sandbox

EXPORT = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"


def _long_name(tmp_path: Path, length: int, suffix: str = ".xlsx") -> Path:
    return tmp_path / ("r" * (length - len(suffix)) + suffix)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Sandbox]:
    with Sandbox(mailboxes=5, seed=1) as sandbox:
        yield sandbox
    assert sandbox.internal_errors == []


def test_short_names_are_left_as_they_are() -> None:
    assert default_run_dir("out/report.xlsx") == Path("out/report.xlsx.psbridge-run")
    assert fitting_name("report", ".xlsx") == "report.xlsx"


def test_long_names_are_shortened_but_stay_unique() -> None:
    first = fitting_name("a" * 250 + "1", ".psbridge-run")
    second = fitting_name("a" * 250 + "2", ".psbridge-run")
    assert first != second
    assert len(first.encode()) <= NAME_MAX and first.endswith(".psbridge-run")
    wide = fitting_name("\u00e9" * 200, ".psbridge-run")  # 2 bytes a character
    assert len(wide.encode()) <= NAME_MAX
    wide.encode("utf-8")  # never cut in the middle of a character


@pytest.mark.parametrize("length", [236, 250, 255])
def test_an_offline_report_with_a_name_near_255_bytes(tmp_path: Path, length: int) -> None:
    output = _long_name(tmp_path, length)
    result = CliRunner().invoke(cli, ["mobile", "--from-clixml", str(EXPORT), "-o", str(output),
                                      "-q", "--no-history"])
    assert result.exit_code == 0, result.output
    assert openpyxl.load_workbook(output)["Devices"].max_row > 1
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary left


def test_atomic_write_with_a_255_byte_name(tmp_path: Path) -> None:
    target = _long_name(tmp_path, 255, ".csv")
    with atomic_write(target) as temp:
        temp.write_text("x", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "x"


def test_a_live_report_with_a_name_near_255_bytes(endpoint: Sandbox, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_PASSWORD", endpoint.password)
    output = _long_name(tmp_path, 250)
    result = CliRunner().invoke(cli, [
        "mobile", "--server", endpoint.host, "--port", str(endpoint.port), "--http",
        "--auth", "ntlm", "--user", endpoint.username, "-q", "--no-history",
        "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert openpyxl.load_workbook(output)["Devices"].max_row > 1


def test_an_output_too_deep_for_sqlite_gets_its_run_folder_in_the_data_folder(
        tmp_path: Path) -> None:
    deep = tmp_path
    while len(str(deep)) < 500:
        deep = deep / ("d" * 60)
    output = deep / "report.xlsx"
    folder = default_run_dir(output)
    assert folder.parent == runs_folder()
    assert default_run_dir(output) == folder  # a rerun finds it again
    checkpoint = Checkpoint.open(folder, {"run": 1}, resume=False)
    try:
        checkpoint.save("mailboxes", "", [{"Name": "x"}])
    finally:
        checkpoint.close()
    assert (folder / CHECKPOINT_FILE).is_file()
