"""An offline export's files -> one frame per kind, read in parallel processes.

One pass through the XML is single-threaded, and the offline report's two exports
(Get-Mailbox and Get-MobileDeviceStatistics) are each hundreds of megabytes to gigabytes
in a large organisation. With ``columns`` given, each file is cut at top-level objects
into parts (``_columnar.split_points``) and the parts are read by the columnar reader in
worker processes, so both cores work on the largest file; a file that reader is not sure
of is read whole by ``read_clixml`` instead (regular-expression scan, then lxml). Parts
come back as frames (Arrow-backed strings pickle compactly) and are put together in
file order.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import pandas as pd

Columns = Collection[str] | None

#: About how many bytes of a file one worker reads at a time (a part).
PART_BYTES = 32 << 20


def _dates_in_microseconds(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            # the unit frames gets from rows (pandas' for Python datetimes), so a report
            # is the same whichever way its rows came
            frame[name] = frame[name].dt.as_unit("us")
    return frame


def _read_file(path: Path, columns: Columns) -> pd.DataFrame:
    from bridge.clixml import read_clixml  # the package itself imports this module

    return _dates_in_microseconds(read_clixml(path, columns=columns))


def _read_part(path: Path, columns: Collection[str], start: int, stop: int | None
               ) -> pd.DataFrame | None:
    """One part of a file by the columnar reader; None when that reader is not sure."""
    from bridge.clixml._columnar import read_part
    from bridge.clixml._convert import Converter, Reread

    try:
        frame = read_part(path, Converter(columns=columns), start, stop)
    except (Reread, OSError, UnicodeDecodeError, ValueError):
        return None  # the whole file is read again, and any error reported from there
    return _dates_in_microseconds(frame)


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with everything imported; it is safe only
    # without other threads, and only where the platform has it (not Windows)
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _parts(path: Path, columns: Columns, workers: int) -> list[tuple[int, int | None]]:
    """[(start, stop)] byte ranges of a file to read apart ([(0, None)]: whole)."""
    from bridge.clixml._columnar import split_points
    from bridge.clixml._scan import usable

    if columns is None or not usable(frozenset(name.casefold() for name in columns)):
        return [(0, None)]
    try:
        size = path.stat().st_size
        pieces = math.ceil(size / PART_BYTES) if workers > 1 else 1
        points = split_points(path, pieces) if pieces > 1 else []
    except OSError:
        return [(0, None)]  # read_clixml says what is wrong with it
    starts: list[int] = [0, *points]
    stops: list[int | None] = [*points, None]
    return list(zip(starts, stops, strict=True))


def concat(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Frames of one kind, one after the other: a column all missing in one part (or
    not in it) takes the type the column has in the others."""
    if len(parts) == 1:
        return parts[0]
    names: list[str] = []
    for part in parts:
        names += [name for name in part.columns if name not in names]
    dtypes = {}
    for name in names:
        present = [part[name].dtype for part in parts
                   if name in part.columns and part[name].notna().any()]
        if present and all(dtype == present[0] for dtype in present):
            dtypes[name] = present[0]
    aligned = []
    for part in parts:
        part = part.reindex(columns=names)
        for name, dtype in dtypes.items():
            if part[name].dtype != dtype:
                part[name] = part[name].astype(dtype)
        aligned.append(part)
    return pd.concat(aligned, ignore_index=True)


def read_export(
    files: Mapping[str, Sequence[Path]],
    columns: Mapping[str, Columns] | None = None,
    *,
    processes: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Read the CLIXML files of each kind into one frame per kind (rows in file order).

    ``files`` maps a kind ("mailboxes") to its files; ``columns`` maps a kind to the
    properties to keep (any case; the others are skipped unconverted), None for all.
    Files (and, with ``columns``, parts of large files) are read in up to ``processes``
    worker processes (default: one per CPU); ``processes=1`` reads them in this process,
    one after the other. A kind without files gets an empty frame. Dates are
    datetime64[us, UTC].
    """
    columns = columns or {}
    jobs = [(kind, index, Path(path)) for kind, paths in files.items()
            for index, path in enumerate(paths)]
    workers = max(1, processes or os.cpu_count() or 1)
    read: dict[tuple[str, int], pd.DataFrame] = {}
    if workers == 1 or not jobs:
        for kind, index, path in jobs:
            read[kind, index] = _serial(path, columns.get(kind))
    else:
        _parallel(jobs, columns, workers, read)
    frames: dict[str, pd.DataFrame] = {}
    for kind, paths in files.items():
        parts = [read[kind, index] for index in range(len(paths))]
        frames[kind] = concat(parts) if parts else pd.DataFrame(index=pd.RangeIndex(0))
    return frames


def _serial(path: Path, columns: Columns) -> pd.DataFrame:
    if columns is not None and _parts(path, columns, 1) == [(0, None)]:
        frame = _read_part(path, columns, 0, None)
        if frame is not None:
            return frame
    return _read_file(path, columns)


def _parallel(jobs: list[tuple[str, int, Path]], columns: Mapping[str, Columns],
              workers: int, read: dict[tuple[str, int], pd.DataFrame]) -> None:
    """Each file's parts in the pool, largest first; a file whose parts the columnar
    reader was not sure of is read whole, in the pool too."""
    tasks: list[tuple[int, tuple[str, int], int, int | None]] = []
    plans: dict[tuple[str, int], list[tuple[int, int | None]]] = {}
    for kind, index, path in jobs:
        plan = _parts(path, columns.get(kind), workers)
        plans[kind, index] = plan
        size = _size(path)
        for start, stop in plan:
            tasks.append(((stop if stop is not None else size) - start, (kind, index),
                          start, stop))
    paths = {(kind, index): path for kind, index, path in jobs}
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                             mp_context=_context()) as pool:
        futures: dict[tuple[tuple[str, int], int], Future[pd.DataFrame | None]] = {}
        for _cost, key, start, stop in sorted(tasks, key=lambda task: -task[0]):
            wanted = columns.get(key[0])
            if wanted is None:
                futures[key, start] = pool.submit(_read_file, paths[key], None)
            else:
                futures[key, start] = pool.submit(_read_part, paths[key], wanted, start, stop)
        whole: dict[tuple[str, int], Future[pd.DataFrame]] = {}
        parts: dict[tuple[str, int], list[pd.DataFrame]] = {}
        # in the order given, so the first bad file is the one reported
        for kind, index, path in jobs:
            key = (kind, index)
            found = [futures[key, start].result() for start, _stop in plans[key]]
            if any(part is None for part in found):
                whole[key] = pool.submit(_read_file, path, columns.get(kind))
            else:
                parts[key] = [part for part in found if part is not None]
        for kind, index, _path in jobs:
            key = (kind, index)
            read[key] = whole[key].result() if key in whole else concat(parts[key])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # read_clixml says what is wrong with it
