"""An offline export's files -> one frame per kind, the files read in parallel processes.

One lxml pass is single-threaded, and the offline report's two exports (Get-Mailbox and
Get-MobileDeviceStatistics) are each hundreds of megabytes in a large organisation: each
file is read in its own worker process (the largest first), projected to the columns
the report uses, and comes back as a frame (Arrow-backed strings pickle compactly).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

Columns = Collection[str] | None


def _read_file(path: Path, columns: Columns) -> pd.DataFrame:
    from bridge.clixml import read_clixml  # the package itself imports this module

    frame = read_clixml(path, columns=columns)
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            # the unit frames gets from rows (pandas' for Python datetimes), so a report
            # is the same whichever way its rows came
            frame[name] = frame[name].dt.as_unit("us")
    return frame


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with everything imported; it is safe only
    # without other threads, and only where the platform has it (not Windows)
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def read_export(
    files: Mapping[str, Sequence[Path]],
    columns: Mapping[str, Columns] | None = None,
    *,
    processes: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Read the CLIXML files of each kind into one frame per kind (rows in file order).

    ``files`` maps a kind ("mailboxes") to its files; ``columns`` maps a kind to the
    properties to keep (any case; the others are skipped unconverted), None for all.
    Files are read in up to ``processes`` worker processes (default: one per CPU, at most
    one per file); ``processes=1`` reads them in this process, one after the other.
    A kind without files gets an empty frame. Dates are datetime64[us, UTC].
    """
    columns = columns or {}
    jobs = [(kind, index, Path(path)) for kind, paths in files.items()
            for index, path in enumerate(paths)]
    workers = min(processes or os.cpu_count() or 1, len(jobs))
    read: dict[tuple[str, int], pd.DataFrame] = {}
    if workers <= 1:
        for kind, index, path in jobs:
            read[kind, index] = _read_file(path, columns.get(kind))
    else:
        def size(job: tuple[str, int, Path]) -> int:
            try:
                return job[2].stat().st_size
            except OSError:
                return 0  # read_clixml says what is wrong with it

        largest_first = sorted(jobs, key=size, reverse=True)
        with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
            futures = {(kind, index): pool.submit(_read_file, path, columns.get(kind))
                       for kind, index, path in largest_first}
            # in the order given, so the first bad file is the one reported
            for kind, index, _path in jobs:
                read[kind, index] = futures[kind, index].result()
    frames: dict[str, pd.DataFrame] = {}
    for kind, paths in files.items():
        parts = [read[kind, index] for index in range(len(paths))]
        if not parts:
            frames[kind] = pd.DataFrame(index=pd.RangeIndex(0))
        elif len(parts) == 1:
            frames[kind] = parts[0]
        else:
            frames[kind] = pd.concat(parts, ignore_index=True)
    return frames
