"""The mobile device report workbook: write_report, its Devices, Users without devices,
Errors and Run sheets (the Summary sheet is summary.py's), and what the Run sheet says."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from xlsxwriter.utility import xl_col_to_name

from bridge import eas
from bridge.frames import NEVER, REST_PROTOCOL, Report
from bridge.history import HistoryView
from bridge.workbook.cells import EXCEL_MAX_ROWS, _fitted_width, _kind
from bridge.workbook.history_sheets import write_history_sheets
from bridge.workbook.streaming import (
    _SheetRows,
    streamed_workbook,
)
from bridge.workbook.styles import _Grid
from bridge.workbook.summary import _SummaryWriter

# --- mobile device report (owner: report) ---
# write_report renders a frames.Report: XlsxWriter (constant-memory mode) writes the
# workbook's structure (Summary, charts, formats, tables, conditional formats, Run) and the
# table sheets' data rows are streamed into its package afterwards (_SheetRows). Measured
# by benchmarks/report.py for 100,000 devices: about 0.2x the time and 0.3x the memory of
# pandas' plain to_excel; openpyxl's write-only mode, and XlsxWriter's own per-cell path,
# missed the time target. Constant-memory sheets are written top to bottom: small sheets
# collect their cells in a _Grid first.

_DEVICE_PRINT_COLUMNS = 14
_SECRET_OPTION = re.compile(
    r"pass(word)?|secret|token|credential|api[-_]?key|private", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@", re.IGNORECASE)


@dataclass(frozen=True)
class RunDetails:
    """What the Run sheet says about how the report was made (no secrets here)."""

    command_line: str
    organisation: str
    server: str
    endpoint: str
    source: str
    strategy: str
    started: datetime
    finished: datetime
    version: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """The run's duration."""
        return max(0.0, (self.finished - self.started).total_seconds())


def redact_command_line(argv: Sequence[str]) -> str:
    """The command line for the Run sheet, with any secret-looking value replaced by ****.

    psbridge never takes a password on the command line, but a user may still type one
    (``--password x``, ``-p Password=x``, ``https://user:x@host``).
    """
    words: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            words.append("****")
            hide_next = False
            continue
        name, equals, _value = word.partition("=")
        if _SECRET_OPTION.search(name):
            if equals:
                words.append(f"{name}=****")
            else:
                words.append(word)
                hide_next = word.startswith("-")
            continue
        words.append(_URL_PASSWORD.sub(r"\g<scheme>:****@", word))
    return " ".join(shlex.quote(word) for word in words)


class _ReportWriter(_SummaryWriter):
    """Writes one report workbook; sheets in the order leadership reads them."""

    # -- table sheets ----------------------------------------------------------------------

    def table_sheets(
        self,
        names: Sequence[str],
        frame: pd.DataFrame,
        table_name: str,
        highlight: bool = False,
        print_columns: int = 0,
    ) -> None:
        """``frame`` as Excel tables, ``rows_per_sheet`` rows per sheet, one sheet per name.

        XlsxWriter writes each sheet with its header row, table, widths and formats; the
        data rows are streamed into the package afterwards (see :class:`_SheetRows`).
        """
        styles = self.styles
        headers = [str(column) for column in frame.columns]
        kinds = [_kind(frame[name]) for name in frame.columns]
        widths = [
            _fitted_width(header, frame[header], kind)
            for header, kind in zip(headers, kinds, strict=True)
        ]
        formats = [styles.date if kind == "date" else None for kind in kinds]
        never_col = headers.index("LastSync") if "LastSync" in headers else -1
        for part, name in enumerate(names):
            start = part * self.rows_per_sheet
            stop = min(len(frame), start + self.rows_per_sheet)
            sheet = self.book.add_worksheet(name)
            sheet.freeze_panes(1, 0)
            sheet.set_landscape()
            sheet.fit_to_pages(1, 0)
            sheet.repeat_rows(0)
            for index, width in enumerate(widths):
                sheet.set_column(index, index, width, formats[index])
            suffix = "" if part == 0 else str(part + 1)
            data = _SheetRows(frame.iloc[start:stop], kinds, never_col,
                              self.book.xf_index(styles.date),
                              self.book.xf_index(styles.never)) if stop > start else None
            self.book.stream_table(sheet, headers, table_name + suffix, formats, styles.head,
                                   rows=stop - start, data=data)
            if print_columns:
                sheet.print_area(0, 0, max(1, stop - start), min(print_columns, len(headers)) - 1)
            if highlight and stop > start:
                self._highlight(sheet, headers, stop - start)

    def _highlight(self, sheet: Any, headers: list[str], rows: int) -> None:
        """REST rows on amber, stale and never-synced rows in dark red."""
        last = xl_col_to_name(len(headers) - 1)
        area = f"A2:{last}{rows + 1}"
        if "SyncProtocol" in headers:
            protocol = xl_col_to_name(headers.index("SyncProtocol"))
            sheet.conditional_format(
                area,
                {
                    "type": "formula",
                    "criteria": f'=${protocol}2="{REST_PROTOCOL}"',
                    "format": self.styles.rest_row,
                },
            )
        if eas.FLAG_COLUMN in headers:  # EAS clients below 16.1, amber like REST rows
            flag = xl_col_to_name(headers.index(eas.FLAG_COLUMN))
            sheet.conditional_format(
                area,
                {"type": "formula", "criteria": f"=${flag}2=TRUE",
                 "format": self.styles.rest_row},
            )
        if "LastSync" in headers and "DaysSinceLastSync" in headers:
            last_sync = xl_col_to_name(headers.index("LastSync"))
            days = xl_col_to_name(headers.index("DaysSinceLastSync"))
            stale = self.report.options.stale_after
            sheet.conditional_format(
                area,
                {
                    "type": "formula",
                    "criteria": f'=OR(${last_sync}2="{NEVER}",${days}2>{stale})',
                    "format": self.styles.stale_row,
                },
            )

    # -- Run -------------------------------------------------------------------------------

    def run_sheet(self) -> None:
        report, run, styles = self.report, self.run, self.styles
        sheet = self.book.add_worksheet("Run")
        sheet.hide_gridlines(2)
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        sheet.set_column(0, 0, 40)
        sheet.set_column(1, 1, 90)
        grid = _Grid()
        grid.put(0, 0, "How this report was made", styles.title)
        figures = report.figures
        lines: list[tuple[str, object, Any]] = [
            ("Command line", run.command_line, styles.wrap),
            ("Organisation", run.organisation, styles.wrap),
            ("Server", run.server, styles.wrap),
            ("Endpoint", run.endpoint, styles.wrap),
            ("Source", run.source, styles.wrap),
            ("Strategy", run.strategy, styles.wrap),
        ]
        lines += [
            (f"Filter: {name}", value, styles.wrap)
            for name, value in report.options.describe().items()
        ]
        lines += [
            ("Started (UTC)", run.started, styles.date),
            ("Finished (UTC)", run.finished, styles.date),
            ("Duration", f"{run.seconds:.1f} s", styles.wrap),
            ("Days since last sync counted from (UTC)", report.run_started, styles.date),
            ("Mailboxes checked", figures.mailboxes_checked, styles.text),
            ("Devices in the report", figures.devices, styles.text),
            ("Users without devices", figures.users_without_devices, styles.text),
            ("Errors", figures.errors, styles.text),
            ("Devices under no mailbox in scope", figures.unmatched_devices, styles.text),
        ]
        lines += [(name, value, styles.wrap) for name, value in run.extra.items()]
        lines.append(("psbridge version", run.version, styles.wrap))
        for index, note in enumerate(self.notes):
            lines.append(("Note" if index == 0 else "", note, styles.wrap))
        for row, (label, value, value_format) in enumerate(lines, 2):
            grid.put(row, 0, label, styles.label)
            grid.put(row, 1, value, value_format)
        grid.write(sheet)


def write_report(
    path: Path | str,
    report: Report,
    run_info: RunDetails,
    *,
    history: HistoryView | None = None,
    rows_per_sheet: int = EXCEL_MAX_ROWS - 1,
) -> None:
    """Write the mobile device report workbook atomically.

    Sheets: Summary, Devices (split when over Excel's row limit), Users without
    devices, Errors (only when some), Run, then Changes and Trend when ``history`` is
    given. A workbook open in Excel gives an OutputError naming the file.
    """
    properties = {"title": "Mobile device report", "creator": "psbridge",
                  "comments": f"psbridge {run_info.version}"}
    with streamed_workbook(path, properties) as book:
        writer = _ReportWriter(book, report, run_info, rows_per_sheet)
        writer.summary()
        # printed (and rendered to PDF): the columns up to DeviceAccessState
        columns = list(writer.devices.columns)
        writer.table_sheets(
            writer.device_sheets,
            writer.devices,
            "Devices",
            highlight=True,
            print_columns=(columns.index("DeviceAccessState") + 1
                           if "DeviceAccessState" in columns else _DEVICE_PRINT_COLUMNS),
        )
        users = report.users_without_devices
        parts = max(1, -(-len(users) // rows_per_sheet))
        names = ["Users without devices"] + [
            f"Users without devices ({n})" for n in range(2, parts + 1)
        ]
        writer.table_sheets(names, users, "UsersWithoutDevices")
        if len(report.errors):
            writer.table_sheets(["Errors"], report.errors, "Errors")
        writer.run_sheet()
        if history is not None:
            # --- history hook: Changes and Trend (functions in the history block) ---
            # ``book`` is an XlsxWriter Workbook in constant-memory mode: write each
            # sheet's rows top to bottom (_Grid helps), tables via book.stream_table.
            write_history_sheets(book, history)
