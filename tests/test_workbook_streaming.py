"""What bridge/workbook/streaming.py relies on in XlsxWriter's internals.

Each test names the private attribute or package detail it checks, so a new XlsxWriter
release that changes one fails here with a message saying which, before a report is
written wrong. The fix is in streaming.py alone (or a tighter cap in pyproject.toml).
"""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
import xlsxwriter
from xlsxwriter.utility import xl_range

from bridge.workbook.streaming import (
    _add_streamed_table,
    _inline_string,
    _sheet_part,
    _SheetRows,
    _streamed_workbook,
    _xf_index,
)


def _relied_on(holds: bool, attribute: str, why: str) -> None:
    if not holds:
        pytest.fail(
            f"XlsxWriter {xlsxwriter.__version__} changed {attribute}, which "
            f"bridge/workbook/streaming.py relies on ({why}). Adapt streaming.py, or cap "
            "xlsxwriter below this release in pyproject.toml.",
            pytrace=False,
        )


def _constant_memory_book(path: Path) -> Any:
    return xlsxwriter.Workbook(str(path), {"constant_memory": True, "tmpdir": str(path.parent)})


def _part(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as package:
        return package.read(name).decode("utf-8")


def test_a_worksheet_has_a_constant_memory_switch_that_add_table_obeys(tmp_path: Path) -> None:
    book = _constant_memory_book(tmp_path / "switch.xlsx")
    sheet = book.add_worksheet("Data")
    _relied_on(getattr(sheet, "constant_memory", None) is True, "Worksheet.constant_memory",
               "switched off for the moment add_table runs")
    with pytest.warns(UserWarning):
        refused = sheet.add_table(0, 0, 1, 1, {"columns": [{"header": "A"}, {"header": "B"}]})
    _relied_on(refused == -3, "add_table() in constant-memory mode",
               "it refuses there, hence the switch")
    sheet.constant_memory = False
    _relied_on(sheet.add_table(0, 0, 1, 1, {"columns": [{"header": "A"}, {"header": "B"}]})
               in (None, 0), "add_table() with Worksheet.constant_memory off",
               "it must then accept the table")
    book.close()


def test_a_table_is_a_dict_whose_ranges_can_be_widened(tmp_path: Path) -> None:
    path = tmp_path / "tables.xlsx"
    book = _constant_memory_book(path)
    sheet = book.add_worksheet("Data")
    sheet.constant_memory = False
    sheet.add_table(0, 0, 1, 1, {"columns": [{"header": "A"}, {"header": "B"}], "name": "T"})
    sheet.constant_memory = True
    for col, header in enumerate("AB"):  # as in-line strings, as constant memory writes them
        sheet.write_string(0, col, header)
    tables = getattr(sheet, "tables", None)
    _relied_on(isinstance(tables, list) and bool(tables) and isinstance(tables[-1], dict),
               "Worksheet.tables", "a list with a dict per table, the last one just added")
    table = tables[-1] if isinstance(tables, list) else {}
    for key in ("range", "a_range", "autofilter"):
        _relied_on(table.get(key) in ("A1:B2", "A1:B1"), f"Worksheet.tables[-1][{key!r}]",
                   "the A1 range written as the table's ref and autofilter")
    table["range"] = table["a_range"] = table["autofilter"] = xl_range(0, 0, 500, 1)
    book.close()
    written = _part(path, "xl/tables/table1.xml")
    _relied_on('ref="A1:B501"' in written and '<autoFilter ref="A1:B501"' in written,
               "how Worksheet.tables[-1]['range'/'a_range'/'autofilter'] reach table1.xml",
               "a widened range must be the one written")


def test_a_format_knows_its_style_index(tmp_path: Path) -> None:
    path = tmp_path / "styles.xlsx"
    book = _constant_memory_book(path)
    dated = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    _relied_on(callable(getattr(dated, "_get_xf_index", None)), "Format._get_xf_index()",
               'the s="..." of a streamed cell')
    index = _xf_index(dated)
    sheet = book.add_worksheet("Data")
    sheet.write_number(0, 0, 45000.5, dated)
    book.close()
    _relied_on(f'<c r="A1" s="{index}"><v>45000.5</v></c>' in _part(
        path, "xl/worksheets/sheet1.xml"), "Format._get_xf_index()",
        "the index it gives must be the one XlsxWriter writes for the format")


def test_sheet_parts_are_numbered_in_order_with_a_dimension_and_sheet_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "parts.xlsx"
    book = _constant_memory_book(path)
    sheets = [book.add_worksheet(name) for name in ("First", "Second", "Third")]
    for sheet in sheets:
        _relied_on(isinstance(getattr(sheet, "index", None), int), "Worksheet.index",
                   "a sheet's part name is sheet{index + 1}.xml")
    sheets[1].write_string(0, 0, "header")
    book.close()
    with zipfile.ZipFile(path) as package:
        names = set(package.namelist())
    for sheet in sheets:
        _relied_on(_sheet_part(sheet) in names, "the worksheet part names",
                   f"sheet {sheet.name!r} is expected at {_sheet_part(sheet)}")
    second = _part(path, _sheet_part(sheets[1]))
    _relied_on(second.count("</sheetData>") == 1 and second.count("<dimension ref=") == 1,
               "a worksheet part's <dimension> and </sheetData>",
               "rows are spliced in before </sheetData> and the dimension is rewritten")


def test_streamed_cells_are_the_xml_xlsxwriter_writes(tmp_path: Path) -> None:
    path = tmp_path / "cells.xlsx"
    book = _constant_memory_book(path)
    sheet = book.add_worksheet("Data")
    text = "  Tom & Jerry <_x0041_> "
    sheet.write_string(0, 0, text)
    book.close()
    written = re.search(r'<c r="A1"(.*?</c>)', _part(path, "xl/worksheets/sheet1.xml"))
    _relied_on(written is not None and written.group(1) == _inline_string(text),
               "constant-memory mode's in-line string cells",
               "_SheetRows writes the same XML for its cells")


def test_a_streamed_table_reads_back_whole(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "Name": [f"device {n}" for n in range(1200)],
        "Count": list(range(1200)),
        "LastSync": pd.to_datetime(["2026-11-30 10:00"] * 1199 + [None]),
    })
    target = tmp_path / "streamed.xlsx"
    with _streamed_workbook(target, {"title": "streaming"}) as (book, streams):
        sheet = book.add_worksheet("Devices")
        date = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
        never = book.add_format({"italic": True})
        headers = list(frame.columns)
        _add_streamed_table(sheet, len(frame), headers, "Devices", [None, None, date])
        streams[_sheet_part(sheet)] = _SheetRows(
            frame, ["text", "int", "date"], 2, _xf_index(date), _xf_index(never))
    workbook = openpyxl.load_workbook(target)
    devices = workbook["Devices"]
    _relied_on(devices.tables["Devices"].ref == "A1:C1201", "the widened table range",
               "the table must cover every streamed row")
    rows = list(devices.iter_rows(values_only=True))
    assert rows[0] == ("Name", "Count", "LastSync")
    assert rows[1] == ("device 0", 0, datetime(2026, 11, 30, 10, 0))
    assert rows[-1] == ("device 1199", 1199, "Never")
    assert len(rows) == 1201
    assert devices["C2"].number_format == "yyyy-mm-dd hh:mm"
