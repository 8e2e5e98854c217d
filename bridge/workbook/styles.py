"""The XlsxWriter report's look: cell formats (_Styles), protocol colours, and small sheets
written top to bottom (_Grid) as constant-memory mode requires."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from bridge.frames import NATIVE_PROTOCOL, REST_PROTOCOL
from bridge.workbook.cells import DATE_FORMAT, _serials, _text

_REPORT_TABLE_STYLE = "Table Style Medium 2"


class _Grid:
    """Cells of a small sheet collected in any order, written top to bottom (constant memory)."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], tuple[object, Any]] = {}

    def put(self, row: int, col: int, value: object, cell_format: Any = None) -> None:
        self.cells[(row, col)] = (value, cell_format)

    def write(self, sheet: Any) -> None:
        for (row, col), (value, cell_format) in sorted(self.cells.items()):
            if value is None:
                if cell_format is not None:
                    sheet.write_blank(row, col, None, cell_format)
            elif isinstance(value, bool):
                sheet.write_boolean(row, col, value, cell_format)
            elif isinstance(value, int | float):
                sheet.write_number(row, col, value, cell_format)
            elif isinstance(value, datetime):
                sheet.write_number(row, col, _serials(pd.Series([value]))[0], cell_format)
            else:
                sheet.write_string(row, col, _text(str(value)), cell_format)


class _Styles:
    """The report's cell formats, made once per workbook."""

    def __init__(self, book: Any) -> None:
        base = {"font_name": "Calibri", "font_size": 11, "valign": "vcenter"}
        self.date = book.add_format({**base, "num_format": DATE_FORMAT, "align": "left"})
        self.never = book.add_format({**base, "italic": True, "font_color": "#7F7F7F"})
        self.text = book.add_format({**base, "align": "left", "num_format": "#,##0"})
        self.title = book.add_format(
            {**base, "bold": True, "font_size": 18, "font_color": "#1F3864"}
        )
        self.subtitle = book.add_format({**base, "font_color": "#595959"})
        self.section = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 12,
                "font_color": "#1F3864",
                "bottom": 2,
                "bottom_color": "#4472C4",
            }
        )
        self.figure_label = book.add_format({**base, "bottom": 1, "bottom_color": "#D9D9D9"})
        self.figure = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 14,
                "align": "right",
                "num_format": "#,##0",
                "bottom": 1,
                "bottom_color": "#D9D9D9",
            }
        )
        self.figure_share = book.add_format(
            {
                **base,
                "bold": True,
                "font_size": 14,
                "align": "right",
                "num_format": "0.0%",
                "bottom": 1,
                "bottom_color": "#D9D9D9",
            }
        )
        self.head = book.add_format(
            {
                **base,
                "bold": True,
                "font_color": "#FFFFFF",
                "bg_color": "#4472C4",
                "border": 1,
                "border_color": "#4472C4",
            }
        )
        self.head_number = book.add_format(
            {
                **base,
                "bold": True,
                "font_color": "#FFFFFF",
                "bg_color": "#4472C4",
                "align": "right",
                "border": 1,
                "border_color": "#4472C4",
            }
        )
        self.cell = book.add_format({**base, "border": 1, "border_color": "#D9D9D9"})
        self.count = book.add_format(
            {**base, "num_format": "#,##0", "border": 1, "border_color": "#D9D9D9"}
        )
        self.share = book.add_format(
            {**base, "num_format": "0.0%", "border": 1, "border_color": "#D9D9D9"}
        )
        self.note = book.add_format({**base, "italic": True, "font_color": "#595959"})
        self.label = book.add_format({**base, "bold": True, "valign": "top"})
        self.wrap = book.add_format({**base, "text_wrap": True, "valign": "top"})
        self.rest_row = book.add_format({"bg_color": "#FFEB9C"})
        self.stale_row = book.add_format({"font_color": "#9C0006"})


def _protocol_colors(protocols: Sequence[str]) -> list[str]:
    """One colour per protocol that means the same thing in every report."""
    fixed = {
        NATIVE_PROTOCOL: "#2E75B6",
        REST_PROTOCOL: "#FFC000",
        "Exchange ActiveSync": "#A5A5A5",
        "Unknown": "#D9D9D9",
    }
    spare = iter(["#70AD47", "#7030A0", "#ED7D31", "#264478", "#9E480E", "#636363"] * 10)
    return [fixed.get(protocol) or next(spare) for protocol in protocols]
