"""The history sheets, Changes and Trend, from a bridge.history.HistoryView."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bridge import eas
from bridge.history import CHANGE_KINDS, EAS_BELOW, HistoryView
from bridge.workbook.cells import _cell_kind, _cells, _fitted_width
from bridge.workbook.streaming import (
    StreamedBook,
    _HistoryRows,
    streamed_workbook,
)
from bridge.workbook.styles import _protocol_colors, _Styles

# --- history sheets (owner: history) ---
# "Changes" and "Trend" from a bridge.history.HistoryView, written with XlsxWriter like the
# report: write_report calls write_history_sheets(book, history) when history is not None
# (book in constant-memory mode: each sheet top to bottom); psbridge diff calls
# write_history_workbook.

_HISTORY_TITLE = "Changes since the previous run"
_CHART_ROWS = 16  # rows between the Trend sheet's charts
_TREND_CHARTS = (
    "Devices by sync protocol",
    "Devices by platform",
    "Stale and never-synced devices",
)


def _history_table(book: StreamedBook, sheet: Any, first_row: int, frame: pd.DataFrame,
                   name: str, styles: _Styles, stream: bool = False) -> None:
    """``frame`` as an Excel table (banded, autofilter) with its header on ``first_row``.

    A table by book.stream_table, below other rows. With ``stream`` the data rows
    are streamed into the package after XlsxWriter closes it (a long Changes list); else
    they are written cell by cell here, so nothing may follow the table on the sheet.
    """
    headers = [str(column) for column in frame.columns]
    kinds = [_cell_kind(frame.iloc[:, index]) for index in range(frame.shape[1])]
    for col, header in enumerate(headers):
        sheet.set_column(col, col, _fitted_width(header, frame.iloc[:, col], kinds[col]),
                         styles.date if kinds[col] == "date" else None)
    data = _HistoryRows(frame, first_row + 2, book.xf_index(styles.date)) if (
        stream and len(frame)) else None
    book.stream_table(sheet, headers, name, [None] * len(headers), styles.head,
                      rows=len(frame), first_row=first_row, data=data)
    if stream:
        return
    writers = []
    cells = [_cells(frame.iloc[:, index]) for index in range(frame.shape[1])]
    for col, (values, kind) in enumerate(cells):
        if kind == "date":
            writers.append((col, values, sheet.write_number, styles.date))
        elif kind == "number":
            writers.append((col, values, sheet.write_number, None))
        elif kind == "bool":
            writers.append((col, values, sheet.write_boolean, None))
        else:
            writers.append((col, values, sheet.write_string, None))
    for offset in range(len(frame)):
        row = first_row + 1 + offset
        for col, values, write, cell_format in writers:
            value = values[offset]
            if value is not None:
                write(row, col, value, cell_format)


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def write_changes_sheet(book: StreamedBook, history: HistoryView, styles: _Styles) -> None:
    """The Changes sheet: counts by kind, then every change, against the previous run.

    The list of changes is streamed (its rows go in after XlsxWriter closes).
    """
    sheet = book.add_worksheet("Changes")
    sheet.hide_gridlines(2)
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)  # printed: as wide as one page
    current, previous = history.current, history.previous
    sheet.write_string(0, 0, _HISTORY_TITLE, styles.title)
    if previous is None:
        sheet.write_string(
            1,
            0,
            f"{current.organisation}  ·  run {current.run_id}, {_when(current.started)}",
            styles.subtitle,
        )
        sheet.write_string(
            3,
            0,
            "Nothing to compare yet: this is the first recorded run of "
            "this organisation. The next run shows new and removed "
            "partnerships, protocol switches, devices that went stale and "
            "OS upgrades.",
            styles.note,
        )
        return
    sheet.write_string(
        1,
        0,
        f"{current.organisation}  ·  run {current.run_id} "
        f"({_when(current.started)}) compared with run {previous.run_id} "
        f"({_when(previous.started)})",
        styles.subtitle,
    )
    counts = history.change_counts
    summary = pd.DataFrame(
        {"Change": list(CHANGE_KINDS), "Devices": [counts.get(kind, 0) for kind in CHANGE_KINDS]}
    )
    sheet.write_string(3, 0, "Changes by kind", styles.section)
    _history_table(book, sheet, 4, summary, "HistoryChangeCounts", styles)
    detail_row = 4 + len(summary) + 2
    if not len(history.changes):
        sheet.write_string(
            detail_row,
            0,
            "No changes: the same partnerships, protocols, OS "
            "versions and sync states as in the previous run.",
            styles.note,
        )
        return
    sheet.write_string(detail_row, 0, "Every change", styles.section)
    # the widths of the detail table win over the small summary's
    _history_table(book, sheet, detail_row + 1, history.changes, "HistoryChanges", styles,
                   stream=True)
    sheet.freeze_panes(detail_row + 2, 0)


def write_trend_sheet(book: StreamedBook, history: HistoryView, styles: _Styles) -> None:
    """The Trend sheet: one row per run, line charts by protocol, platform and staleness."""
    sheet = book.add_worksheet("Trend")
    sheet.hide_gridlines(2)
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)  # printed: as wide as one page
    trend = history.trend
    runs = len(trend)
    sheet.write_string(0, 0, "Trend", styles.title)
    span = (
        f"{runs} runs, {_when(trend['Started'].iloc[0])} to {_when(trend['Started'].iloc[-1])}"
        if runs > 1
        else "1 run"
    )
    sheet.write_string(1, 0, f"{history.current.organisation}  ·  {span}", styles.subtitle)
    first_row = 3
    if runs < 2:
        sheet.write_string(
            3,
            0,
            "Nothing to compare yet: the trend needs at least two runs of "
            "this organisation. Run the report again later.",
            styles.note,
        )
        first_row = 5
    _history_table(book, sheet, first_row, trend, "HistoryTrend", styles)
    if runs < 2:
        return
    column = {str(name): index for index, name in enumerate(trend.columns)}
    last_row = first_row + runs
    series_of = [history.protocol_columns, history.platform_columns, ["Stale", "Never synced"]]
    titles = list(_TREND_CHARTS)
    if EAS_BELOW in trend.columns:
        titles.append(f"Exchange ActiveSync clients below {eas.MINIMUM_TEXT}")
        series_of.append([EAS_BELOW])
    colours = {
        name: colour
        for name, colour in zip(
            history.protocol_columns, _protocol_colors(history.protocol_columns), strict=True
        )
    }
    for number, (title, names) in enumerate(zip(titles, series_of, strict=True)):
        chart = book.add_chart({"type": "line"})
        for name in names:
            series: dict[str, Any] = {
                "name": [sheet.name, first_row, column[name]],
                "categories": [
                    sheet.name,
                    first_row + 1,
                    column["Started"],
                    last_row,
                    column["Started"],
                ],
                "values": [sheet.name, first_row + 1, column[name], last_row, column[name]],
                "marker": {"type": "circle", "size": 5},
            }
            if name in colours and number == 0:
                series["line"] = {"color": colours[name], "width": 2.25}
                series["marker"]["fill"] = {"color": colours[name]}
                series["marker"]["border"] = {"color": colours[name]}
            chart.add_series(series)
        chart.set_title({"name": title, "name_font": {"size": 12}})
        # one point per run, evenly spaced (a date axis would tick every day)
        chart.set_x_axis(
            {"text_axis": True, "num_format": "yyyy-mm-dd", "num_font": {"rotation": -45}}
        )
        chart.set_y_axis(
            {
                "name": "Devices",
                "min": 0,
                "num_format": "#,##0",
                "major_gridlines": {"visible": True, "line": {"color": "#D9D9D9"}},
            }
        )
        chart.set_legend({"position": "right"})
        chart.set_size({"width": 640, "height": 300})
        if number < len(_TREND_CHARTS):
            sheet.insert_chart(last_row + 2 + number * _CHART_ROWS, 0, chart)
        else:  # EAS below 16.1: beside the first chart, so the sheet prints on one page
            sheet.insert_chart(last_row + 2, 0, chart, {"x_offset": 660})


def write_history_sheets(book: StreamedBook, history: HistoryView) -> None:
    """The Changes and Trend sheets in a streamed workbook (write_report's hook); the
    list of changes is streamed in once the book is closed, as Devices is."""
    styles = _Styles(book)
    write_changes_sheet(book, history, styles)
    write_trend_sheet(book, history, styles)


def write_history_workbook(path: Path | str, history: HistoryView) -> None:
    """A workbook of just Changes and Trend (``psbridge diff``), written atomically."""
    properties = {"title": "psbridge history", "creator": "psbridge"}
    with streamed_workbook(path, properties) as book:
        write_history_sheets(book, history)
