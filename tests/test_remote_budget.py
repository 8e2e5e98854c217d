"""The cmdlet budget pacer: no limit until Exchange's first micro delay, then a little
under the commands of the last period, per sliding period."""

from __future__ import annotations

from bridge.remote.budget import CmdletBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_limit_until_a_micro_delay_then_the_last_periods_count() -> None:
    clock = _Clock()
    budget = CmdletBudget(window=5.0, clock=clock)
    for _ in range(40):  # 40 commands in 2 s: no micro delay yet, none waits
        assert budget.wait() == 0.0
        clock.now += 0.05
    budget.over_budget()  # the 40th went over: 38 per 5 s from now on
    assert budget.limit == 38
    assert budget.wait() > 0  # 40 sent in the last 5 s
    clock.now = 105.11  # the first three have left the period: 37 in it
    assert budget.wait() == 0.0
    assert budget.wait() > 0  # 38 again
    budget.over_budget()  # another micro delay: lower, never higher
    assert budget.limit == 36


def test_the_wait_is_until_the_oldest_command_leaves_the_period() -> None:
    clock = _Clock()
    budget = CmdletBudget(window=1.0, clock=clock)
    budget.wait()
    clock.now += 0.25
    budget.wait()
    budget.over_budget()
    assert budget.limit == 1
    assert abs(budget.wait() - 0.75) < 1e-9  # the first leaves at 101.0: 0.75 s to go
