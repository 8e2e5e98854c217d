"""Stopping a run: Ctrl+C, SIGTERM and SIGHUP through a real child process against a
sandbox that is slow or hung mid-command; and Ctrl+C or end of input at the password
prompt (through a pseudo-terminal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(sb: Sandbox, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PSBRIDGE_PASSWORD": sb.password,
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "mobile", "--server", sb.host,
         "--port", str(sb.port), "--http", "--auth", "ntlm", "--user", sb.username,
         "--concurrency", "3", "--no-history", "-o", str(tmp_path / "report.xlsx"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_mid_command(sb: Sandbox, process: subprocess.Popen[str]) -> None:
    """Until the run has its three runspaces open and commands sent to them."""
    deadline = time.monotonic() + 60
    while sb.open_shells() < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never opened its runspaces"
        time.sleep(0.05)
    time.sleep(1.0)


def _stop(process: subprocess.Popen[str], *signals: signal.Signals) -> tuple[float, int, str]:
    """Send ``signals`` 0.2 s apart; seconds from the first to the exit, code, stderr."""
    sent = time.monotonic()
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    _stdout, stderr = process.communicate(timeout=60)
    return time.monotonic() - sent, process.returncode, stderr


@pytest.fixture
def hung() -> Iterator[Sandbox]:
    # every Receive of command output hangs for 30 s: no command ever finishes
    with Sandbox(mailboxes=40, seed=3, receive_stall=30.0) as sb:
        yield sb


@pytest.mark.parametrize(("number", "code", "line"), [
    (signal.SIGINT, 130, "Error: interrupted."),
    (signal.SIGTERM, 143, "Error: interrupted by SIGTERM."),
    (signal.SIGHUP, 129, "Error: interrupted by SIGHUP."),
])  # fmt: skip
def test_a_stop_signal_on_a_hung_server_exits_at_once_and_closes_every_shell(
    hung: Sandbox, tmp_path: Path, number: signal.Signals, code: int, line: str
) -> None:
    process = _start(hung, tmp_path)
    _wait_mid_command(hung, process)
    seconds, returncode, stderr = _stop(process, number)
    assert (returncode, stderr.splitlines()[-1:]) == (code, [line]), stderr
    assert "Traceback" not in stderr
    assert seconds < 5  # a round trip here is well under 1 s; the server hangs for 30
    assert hung.open_shells() == 0
    assert not (tmp_path / "report.xlsx.psbridge-run").exists()  # nothing was kept


def test_three_ctrl_c_on_a_slow_server_keep_the_progress_without_a_traceback(
    tmp_path: Path,
) -> None:
    # 0.1 s an object: the small slices finish, the large ones are streaming
    with Sandbox(mailboxes=60, seed=3, latency_per_object=0.1) as sb:
        process = _start(sb, tmp_path)
        _wait_mid_command(sb, process)
        time.sleep(1.0)
        seconds, returncode, stderr = _stop(process, *[signal.SIGINT] * 3)
        assert returncode == 130, stderr
        assert stderr.splitlines()[-2:] == [
            f"Progress is saved in {tmp_path / 'report.xlsx.psbridge-run'}; run the same "
            "command with --resume to continue.",
            "Error: interrupted; what was collected so far is kept.",
        ]
        assert "Traceback" not in stderr
        assert seconds < 5
        assert sb.open_shells() == 0
        # the saved slices are not asked again: the resumed run completes
        resumed = _start(sb, tmp_path, "--resume")
        _out, resumed_err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, resumed_err
        assert sb.internal_errors == []


def _prompt_child(tmp_path: Path) -> tuple[int, int]:
    """psbridge mobile asking for a password on a pseudo-terminal: (pid, master fd)."""
    import pty

    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    env.pop("PSBRIDGE_PASSWORD", None)
    argv = [sys.executable, "-m", "bridge.cli", "mobile", "--server", "127.0.0.1", "--port",
            "9", "--http", "--auth", "ntlm", "--user", "admin@contoso.com", "--no-history",
            "-o", str(tmp_path / "report.xlsx")]
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, as a console is
        os.execve(sys.executable, argv, env)
    return pid, master


def _read_until(master: int, wanted: bytes, seconds: float = 60) -> bytes:
    import select

    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            continue
        try:
            seen += os.read(master, 4096)
        except OSError:  # the child has exited
            break
    return seen


def _finish(pid: int, master: int) -> tuple[int, str]:
    rest = _read_until(master, b"\x00never", seconds=30)
    os.close(master)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), rest.decode(errors="replace")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"psbridge did not exit; it printed {rest!r}")
        time.sleep(0.05)


@pytest.mark.parametrize(("key", "code", "line"), [
    (b"\x03", 130, "Error: interrupted."),  # Ctrl+C, as typed: the terminal sends SIGINT
    (b"\x04", 8, "Error: no password given (the password prompt reached the end of its "
                 "input): type it at the prompt, or set PSBRIDGE_PASSWORD or store it in "
                 "the keyring for scheduled runs"),  # Ctrl+D
])  # fmt: skip
def test_ctrl_c_or_end_of_input_at_the_password_prompt(
    tmp_path: Path, key: bytes, code: int, line: str
) -> None:
    pid, master = _prompt_child(tmp_path)
    prompt = _read_until(master, b"Password for admin@contoso.com at 127.0.0.1: ")
    assert prompt.endswith(b"Password for admin@contoso.com at 127.0.0.1: "), prompt
    time.sleep(0.5)  # typed once the prompt reads: input typed before it is discarded
    os.write(master, key)
    returncode, output = _finish(pid, master)
    lines = [text.strip() for text in output.splitlines() if text.strip()]
    assert (returncode, lines[-1:]) == (code, [line]), output
    assert "Traceback" not in output and "Aborted!" not in output
