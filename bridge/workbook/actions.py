"""The Summary's lead: what admins must act on (EAS clients below 16.1, the cleanup script)."""

from __future__ import annotations

from typing import Any

from bridge import eas
from bridge.frames import Report
from bridge.workbook.styles import _Grid, _Styles


def action_figures(report: Report, styles: _Styles) -> list[tuple[str, float | int, Any]]:
    """Key figures of what admins must act on: EAS below 16.1, the cleanup script."""
    rows: list[tuple[str, float | int, Any]] = []
    if report.eas_figures is not None:
        rows.append((f"EAS clients below {eas.MINIMUM_TEXT}", report.eas_figures.below_minimum,
                     styles.figure))
    if report.cleanup_plan is not None:
        rows.append(("Partnerships in the cleanup script", report.cleanup_plan.count,
                     styles.figure))
    return rows


def put_eas_section(grid: _Grid, row: int, report: Report, styles: _Styles) -> int:
    """Under the key figures: the one line saying the scope hides EAS devices, or the EAS
    clients below 16.1 by ClientVersion and DeviceModel. Returns the next free row."""
    note = report.eas_scope_note
    if note is not None:
        grid.put(row, 0, note, styles.note)
        return row + 2
    figures = report.eas_figures
    if figures is None:
        return row + 1
    row += 1
    grid.put(row, 0, f"EAS below {eas.MINIMUM_TEXT}: {figures.wording}", styles.section)
    grid.put(row, 1, None, styles.section)
    grid.put(row, 2, None, styles.section)
    row += 1
    grid.put(row, 0, "ClientVersion · DeviceModel", styles.head)
    grid.put(row, 1, "Devices", styles.head_number)
    grid.put(row, 2, "Share", styles.head_number)
    for version, model, devices in figures.by_version_model.itertuples(index=False, name=None):
        row += 1
        grid.put(row, 0, f"EAS {version} · {model}", styles.cell)
        grid.put(row, 1, int(devices), styles.count)
        grid.put(row, 2, int(devices) / figures.eas_devices, styles.share)
    row += 1
    if figures.below_minimum:
        grid.put(row, 0, f"Share: of the {figures.eas_devices:,} EAS devices in the report.",
                 styles.note)
    else:
        grid.put(row, 0, f"None of the {figures.eas_devices:,} EAS devices.", styles.note)
    return row + 2
