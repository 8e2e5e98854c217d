"""Excel workbooks: the only package that writes .xlsx.

``write_tables`` (convert) uses openpyxl's write-only mode; the mobile device report
(``write_report``) and its history sheets use XlsxWriter's constant-memory mode, the
faster of the two for a formatted 100,000-row workbook (benchmarks/report.py).

Excel has no time zones, so zoned datetimes are written as naive UTC with a
``yyyy-mm-dd hh:mm`` number format: real dates that sort and filter, never text.

Modules: ``tables`` (the generic table writer), ``report`` and ``summary`` (the report's
sheets), ``history_sheets`` (Changes and Trend), ``streaming`` (the fast row streaming,
the only module relying on XlsxWriter's internals), ``styles`` and ``cells`` (shared).
"""

from __future__ import annotations

from bridge.workbook import streaming
from bridge.workbook.cells import DATE_FORMAT, EXCEL_MAX_ROWS, MAX_CELL_TEXT
from bridge.workbook.history_sheets import (
    write_changes_sheet,
    write_history_sheets,
    write_history_workbook,
    write_trend_sheet,
)
from bridge.workbook.report import RunDetails, redact_command_line, write_report
from bridge.workbook.streaming import _HistoryRows, _SheetRows
from bridge.workbook.tables import MAX_COLUMN_WIDTH, MAX_SHEET_NAME, sheet_names, write_tables

__all__ = [
    "DATE_FORMAT", "EXCEL_MAX_ROWS", "MAX_CELL_TEXT", "MAX_COLUMN_WIDTH", "MAX_SHEET_NAME",
    "RunDetails", "_HistoryRows", "_SheetRows", "redact_command_line", "sheet_names",
    "streaming", "write_changes_sheet", "write_history_sheets", "write_history_workbook",
    "write_report", "write_tables", "write_trend_sheet",
]
