"""``psbridge convert``: Export-Clixml files into one workbook, or one CSV/Parquet/JSON table.

Every input is read before anything is written, and the output is replaced atomically,
so a bad input or a locked output leaves the previous output as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bridge import clixml, workbook
from bridge.errors import InputError, OutputError
from bridge.output import FRAME_FORMATS, check_writable, write_frame

EXCEL_MAX_ROWS = 1_048_576  # rows in an Excel sheet, the header included
#: Output types ``convert`` writes, by extension.
OUTPUT_TYPES = (".xlsx", *FRAME_FORMATS)
#: With several inputs and one table (.csv/.parquet/.json), rows say where they came from.
SOURCE_COLUMN = "Source"
#: ... under this name when the objects have a Source property of their own (Get-Command,
#: Get-MessageTrackingLog), which must not be overwritten
SOURCE_FILE_COLUMN = "SourceFile"
_LABEL = "\0source"  # the label's key until the frame shows which name is free


@dataclass(frozen=True)
class ConvertedTable:
    """One input file: how many rows it gave, and its sheet name in a workbook."""

    source: Path
    rows: int
    sheet: str | None


def _check_paths(inputs: Sequence[Path], output: Path) -> None:
    if output.suffix.lower() not in OUTPUT_TYPES:
        raise OutputError(
            f"cannot write {output}: unknown output type '{output.suffix}'; "
            "use .xlsx, .csv, .parquet or .json."
        )
    check_writable(output)  # before reading every input
    for source in inputs:
        if source.is_dir():
            raise InputError(f"{source}: is a folder, not a CLIXML file")
        if not source.is_file():
            raise InputError(f"{source}: no such file")


def _labels(sources: Sequence[Path]) -> list[str]:
    """File names, or the paths as given when two inputs share a name."""
    names = [source.name for source in sources]
    return names if len(set(names)) == len(names) else [str(source) for source in sources]


def _with_source(sources: Sequence[Path], labels: Sequence[str]) -> Iterator[clixml.Record]:
    for source, label in zip(sources, labels, strict=True):
        for record in clixml.iter_records(source):
            yield {_LABEL: label, **record}


def convert(inputs: Sequence[Path], output: Path) -> list[ConvertedTable]:
    """Convert CLIXML files to ``output`` (.xlsx: one sheet per input, named from the file;
    .csv/.parquet/.json: one table, with a ``Source`` column first when there are several
    inputs, ``SourceFile`` if the objects have a Source of their own). Returns what each
    input gave."""
    if not inputs:
        raise InputError("no input files given")
    _check_paths(inputs, output)
    if output.suffix.lower() == ".xlsx":
        names = workbook.sheet_names(source.stem for source in inputs)
        tables = {
            name: clixml.read_clixml(source) for name, source in zip(names, inputs, strict=True)
        }
        for source, frame in zip(inputs, tables.values(), strict=True):
            if len(frame) >= EXCEL_MAX_ROWS:
                raise OutputError(
                    f"cannot write {output}: {source} has {len(frame):,} rows and an Excel "
                    f"sheet holds {EXCEL_MAX_ROWS - 1:,} below its header; "
                    "write .csv or .parquet instead."
                )
        workbook.write_tables(output, tables)
        return [
            ConvertedTable(source, len(frame), name)
            for source, (name, frame) in zip(inputs, tables.items(), strict=True)
        ]
    if len(inputs) == 1:
        frame = clixml.read_clixml(inputs[0])
        write_frame(output, frame)
        return [ConvertedTable(inputs[0], len(frame), None)]
    labels = _labels(inputs)
    frame = clixml.records_to_frame(_with_source(inputs, labels))
    column = SOURCE_FILE_COLUMN if SOURCE_COLUMN in frame.columns else SOURCE_COLUMN
    frame = frame.rename(columns={_LABEL: column})
    write_frame(output, frame)
    counts = frame[column].value_counts() if len(frame) else pd.Series(dtype=int)
    return [
        ConvertedTable(source, int(counts.get(label, 0)), None)
        for source, label in zip(inputs, labels, strict=True)
    ]
