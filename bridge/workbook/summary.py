"""The report's first sheet: key figures, the breakdown tables and their charts."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from bridge.frames import Report
from bridge.workbook.actions import action_figures, put_eas_section
from bridge.workbook.cells import EXCEL_MAX_ROWS
from bridge.workbook.styles import _Grid, _protocol_colors, _Styles

if TYPE_CHECKING:
    from bridge.workbook.report import RunDetails


class _SummaryWriter:
    """The part of _ReportWriter that writes the Summary sheet and its charts."""

    def __init__(self, book: Any, report: Report, run: RunDetails, rows_per_sheet: int) -> None:
        self.book = book
        self.report = report
        self.run = run
        self.rows_per_sheet = rows_per_sheet
        self.styles = _Styles(book)
        self.devices = report.devices_sheet()
        parts = max(1, -(-len(self.devices) // rows_per_sheet))
        self.device_sheets = ["Devices"] + [f"Devices ({n})" for n in range(2, parts + 1)]
        self.notes = list(report.notes)
        if parts > 1:
            self.notes.append(
                f"The {len(self.devices):,} devices are split over {parts} sheets "
                f"({', '.join(self.device_sheets)}): an Excel sheet holds "
                f"{EXCEL_MAX_ROWS:,} rows."
            )

    # -- Summary ---------------------------------------------------------------------------

    def summary(self) -> None:
        report, run, styles = self.report, self.run, self.styles
        figures = report.figures
        sheet = self.book.add_worksheet("Summary")
        sheet.hide_gridlines(2)
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        sheet.set_paper(9)
        sheet.set_column(0, 0, 38)
        sheet.set_column(1, 1, 13)
        sheet.set_column(2, 2, 9)
        sheet.set_column(3, 3, 3)
        sheet.set_column(4, 12, 9.5)
        grid = _Grid()
        options = report.options
        what = "Outlook for iOS and Android" if not options.all_devices else "All mobile devices"
        grid.put(0, 0, f"Mobile device report: {what}", styles.title)
        grid.put(
            1,
            0,
            f"{run.organisation}  ·  server {run.server}  ·  run "
            f"{run.started.astimezone(UTC):%Y-%m-%d %H:%M} UTC  ·  "
            f"{', '.join(options.recipient_types)}",
            styles.subtitle,
        )
        as_of = report.run_started.astimezone(UTC)
        if abs((as_of - run.started.astimezone(UTC)).total_seconds()) > 3600:
            grid.put(
                2,
                0,
                f"Days since the last sync are counted from {as_of:%Y-%m-%d %H:%M} "
                "UTC, not from when this report was made.",
                styles.subtitle,
            )
        grid.put(4, 0, "Key figures", styles.section)
        grid.put(4, 1, None, styles.section)
        grid.put(4, 2, None, styles.section)
        stale_label = f"Stale (no sync for over {options.stale_after} days)"
        rows: list[tuple[str, float | int, Any]] = [
            ("Mailboxes checked", figures.mailboxes_checked, styles.figure),
            ("Users with devices", figures.users_with_devices, styles.figure),
            ("Users without devices", figures.users_without_devices, styles.figure),
            ("Devices", figures.devices, styles.figure),
            ("On Outlook native sync", figures.native_share, styles.figure_share),
            ("Still on REST (legacy)", figures.rest, styles.figure),
            (stale_label, figures.stale, styles.figure),
            ("Never synced", figures.never_synced, styles.figure),
        ]
        rows += action_figures(report, styles)
        if figures.errors:
            rows.append(
                ("Mailboxes or commands that failed (see Errors)", figures.errors, styles.figure)
            )
        row = 5
        for label, value, value_format in rows:
            grid.put(row, 0, label, styles.figure_label)
            grid.put(row, 1, value, value_format)
            grid.put(row, 2, None, styles.figure_label)
            row += 1
        row = put_eas_section(grid, row, report, styles)
        tables = [
            ("By sync protocol", report.by_protocol),
            ("By platform and OS version", report.by_platform),
            ("By last successful sync", report.by_stale),
            ("By access state", report.by_access_state),
        ]
        anchors: dict[str, tuple[int, int]] = {}
        for title, table in tables:
            grid.put(row, 0, title, styles.section)
            grid.put(row, 1, None, styles.section)
            grid.put(row, 2, None, styles.section)
            row += 1
            grid.put(row, 0, str(table.columns[0]), styles.head)
            grid.put(row, 1, "Devices", styles.head_number)
            grid.put(row, 2, "Share", styles.head_number)
            first = row + 1
            for label, devices, share in table.itertuples(index=False, name=None):
                row += 1
                grid.put(row, 0, label, styles.cell)
                grid.put(row, 1, int(devices), styles.count)
                grid.put(row, 2, float(share), styles.share)
            if not len(table):
                row += 1
                grid.put(row, 0, "(no devices)", styles.note)
            anchors[title] = (first, row)
            row += 2
        notes_row = row
        for note in self.notes:
            grid.put(row, 0, note, styles.note)
            row += 1
        if self.notes:
            grid.put(notes_row - 1, 0, "Notes", styles.label)
        grid.put(
            row + 1,
            0,
            "Devices, users without devices and how this report was made: "
            "see the other sheets. All times are UTC.",
            styles.note,
        )
        grid.write(sheet)
        self._charts(sheet, anchors)

    def _charts(self, sheet: Any, anchors: dict[str, tuple[int, int]]) -> None:
        first, last = anchors["By sync protocol"]
        if last >= first and self.report.figures.devices:
            pie = self.book.add_chart({"type": "doughnut"})
            pie.add_series(
                {
                    "name": "Devices by sync protocol",
                    "categories": ["Summary", first, 0, last, 0],
                    "values": ["Summary", first, 1, last, 1],
                    "data_labels": {"percentage": True, "leader_lines": True},
                    "points": [
                        {"fill": {"color": color}}
                        for color in _protocol_colors(
                            self.report.by_protocol["SyncProtocol"].tolist()
                        )
                    ],
                }
            )
            pie.set_title(
                {
                    "name": "Devices by sync protocol",
                    "name_font": {"size": 12, "bold": True, "color": "#1F3864"},
                }
            )
            pie.set_legend({"position": "right", "font": {"size": 10}})
            pie.set_hole_size(50)
            pie.set_size({"width": 540, "height": 300})
            pie.set_chartarea({"border": {"none": True}})
            sheet.insert_chart(4, 4, pie, {"x_offset": 5, "y_offset": 0})
        first, last = anchors["By platform and OS version"]
        if last >= first and self.report.figures.devices:
            bar = self.book.add_chart({"type": "bar"})
            bar.add_series(
                {
                    "name": "Devices",
                    "categories": ["Summary", first, 0, last, 0],
                    "values": ["Summary", first, 1, last, 1],
                    "fill": {"color": "#4472C4"},
                    "gap": 60,
                    "data_labels": {"value": True, "num_format": "#,##0"},
                }
            )
            bar.set_title(
                {
                    "name": "Devices by platform and OS version",
                    "name_font": {"size": 12, "bold": True, "color": "#1F3864"},
                }
            )
            bar.set_legend({"none": True})
            bar.set_y_axis({"reverse": True, "major_tick_mark": "none", "crossing": "max"})
            bar.set_x_axis(
                {
                    "major_gridlines": {"visible": True, "line": {"color": "#E7E6E6"}},
                    "num_format": "#,##0",
                }
            )
            bar.set_size({"width": 620, "height": 330})
            bar.set_chartarea({"border": {"none": True}})
            sheet.insert_chart(21, 4, bar, {"x_offset": 5, "y_offset": 0})
