"""psbridge sandbox serve: a person's trial endpoint, driven as a person would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.frames import load_exports


def _serve(*options: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from bridge.cli import main; main()", "sandbox", "serve",
         "--mailboxes", "20", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    printed: dict[str, str] = {}
    for line in process.stdout:
        key, _, value = line.partition(": ")
        printed[key] = value.strip()
        if line.startswith("Press Ctrl+C"):
            break
    return process, printed


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    out, _err = process.communicate(timeout=20)
    assert process.returncode == 0
    return out


@pytest.mark.parametrize("fixed_clock", [False, True])
def test_serve_prints_how_to_connect_and_dates_its_organisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixed_clock: bool
) -> None:
    process, printed = _serve(*(["--fixed-clock"] if fixed_clock else []))
    try:
        url = printed["Sandbox"].split(" at ", 1)[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/PowerShell")
        assert printed["Configuration"] == "Microsoft.Exchange"
        port = url.rsplit(":", 1)[1].split("/", 1)[0]
        monkeypatch.setenv("PSBRIDGE_PASSWORD", printed["Password"])
        output = tmp_path / "devices.json"
        result = CliRunner().invoke(cli, [
            "mobile", "--server", "127.0.0.1", "--port", port, "--auth", "ntlm",
            "--user", printed["User"], "--all-devices", "--no-history", "-o", str(output)])
        assert result.exit_code == 0, result.output
    finally:
        stopped = _stop(process)
    assert stopped.startswith("Stopped after ") and stopped.rstrip().endswith(" requests.")
    newest = max(datetime.fromisoformat(row["LastSync"]) for row in
                 json.loads(output.read_text()) if row["LastSync"])
    if fixed_clock:  # the organisation's own 2025 reference time, as in tests and the demo
        assert newest < datetime(2025, 12, 31, tzinfo=UTC)
    else:  # dated from now, so a live report's days since the last sync make sense
        assert datetime.now(UTC) - newest < timedelta(days=2)


def test_serve_refuses_a_busy_port() -> None:
    process, printed = _serve()
    try:
        port = printed["Sandbox"].rsplit(":", 1)[1].split("/", 1)[0]
        second = subprocess.run(
            [sys.executable, "-c", "from bridge.cli import main; main()", "sandbox", "serve",
             "--mailboxes", "5", "--port", port],
            capture_output=True, text=True, timeout=30, env={**os.environ})
    finally:
        _stop(process)
    assert second.returncode == 8
    assert second.stderr.startswith("Error: ")
    assert second.stderr.count("\n") == 1


def test_export_folder_is_what_mobile_from_clixml_reads(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "export", str(tmp_path), "--mailboxes", "12",
                                      "--seed", "5"])
    assert result.exit_code == 0, result.output
    export = load_exports([tmp_path])
    assert len(export.mailboxes) == 12
