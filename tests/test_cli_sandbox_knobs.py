"""psbridge sandbox serve exposes every fault knob of the sandbox, so an admin can
reproduce a fault by hand: the options reach the Sandbox as its knobs."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import bridge.sandbox
from bridge.cli import cli
from bridge.sandbox.knobs import Knobs

#: what every option below sets, as the Sandbox's knobs
ALL_OPTIONS = [
    "--latency-ms", "250", "--object-latency-ms", "20", "--max-shells", "3",
    "--shell-idle-timeout", "60", "--cmdlet-budget", "20", "--budget-window", "2",
    "--micro-delay-ms", "100", "--drop-after", "500", "--http-error-every", "7",
    "--http-error-status", "500", "--receive-stall", "30", "--receive-stalls", "2",
    "--stop-after", "40", "--pipeline-stops", "1", "--over-budget-after", "30",
    "--over-budget-failures", "2", "--over-budget-wait", "5",
]
EXPECTED = Knobs(
    latency_per_command=0.25, latency_per_object=0.02, max_shells_per_user=3,
    shell_idle_timeout=60.0, cmdlet_budget=20, budget_window=2.0, micro_delay=0.1,
    drop_after_objects=500, http_error_every=7, http_error_status=500, receive_stall=30.0,
    receive_stalls=2, stop_after_objects=40, pipeline_stops=1, over_budget_after_objects=30,
    over_budget_failures=2, over_budget_wait=5.0,
)


class _Stopped(Exception):
    pass


def _serve(monkeypatch: pytest.MonkeyPatch, *options: str) -> tuple[Any, Knobs]:
    """Run `sandbox serve` with a stand-in Sandbox that records its knobs."""
    seen: dict[str, Any] = {}

    class Recorder:
        url = "http://127.0.0.1:1/PowerShell"
        username, password, ca_file, requests_served = "u", "p", None, 0

        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def start(self) -> Recorder:
            return self

        def stop(self) -> None:
            pass

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bridge.sandbox, "Sandbox", Recorder)
    monkeypatch.setattr("time.sleep", ctrl_c)
    result = CliRunner().invoke(cli, ["sandbox", "serve", "--mailboxes", "5", *options])
    knobs = {k: v for k, v in seen.items() if k in Knobs.names()}
    return result, Knobs.from_kwargs(knobs)


def test_every_knob_has_an_option_that_reaches_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {f.name for f in EXPECTED.__dataclass_fields__.values()} == set(Knobs.names())
    result, knobs = _serve(monkeypatch, *ALL_OPTIONS)
    assert result.exit_code == 0, result.output
    assert knobs == EXPECTED
    assert result.output.endswith("Stopped after 0 requests.\n")


def test_without_options_every_knob_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    result, knobs = _serve(monkeypatch)
    assert result.exit_code == 0, result.output
    assert knobs == Knobs()


@pytest.mark.parametrize(("option", "value"), [
    ("--receive-stalls", "0"), ("--stop-after", "0"), ("--pipeline-stops", "-1"),
    ("--receive-stall", "-1"), ("--micro-delay-ms", "x"), ("--shell-idle-timeout", "0"),
    ("--over-budget-after", "0"), ("--over-budget-wait", "-1"),
])  # fmt: skip
def test_a_knob_out_of_range_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    result, _knobs = _serve(monkeypatch, option, value)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output
