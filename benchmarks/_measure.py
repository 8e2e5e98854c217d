"""Time and peak memory of one callable, measured in a forked child process.

Peak memory is the growth of the child's resident set (ru_maxrss minus the RSS at
start), so it counts C allocations (lxml, numpy) that tracemalloc would miss, and one
measurement cannot inflate the next.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """Wall time in seconds, peak RSS growth in bytes, and what the callable returned."""

    seconds: float
    peak_bytes: int
    result: Any


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(fn: Callable[[], Any], conn: Connection) -> None:
    start_rss = _rss_bytes()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn.send(Measurement(seconds, max(0, peak - start_rss), result))
    conn.close()


def measure(fn: Callable[[], Any]) -> Measurement:
    """Run ``fn`` once in a forked child; its return value must be picklable."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(fn, child))
    process.start()
    child.close()
    measurement: Measurement = parent.recv()
    process.join()
    return measurement


def ratio(numerator: float, denominator: float) -> str:
    """A ratio for printing, '-' when the denominator is zero."""
    return f"{numerator / denominator:.2f}x" if denominator else "-"
