"""The mobile device report as pandas frames: typed columns, the join, derived columns.

Rows come from bridge.clixml (files) or bridge.exchange (live) with Exchange's property
names; this module gives them a declared schema (a property an older Exchange lacks
becomes an empty column, never a crash), joins each device to its mailbox through the
device's identity (never through a display name), derives what leadership asks about
(platform, OS version, sync protocol, days since the last sync, staleness) and applies
the report's filters. :func:`build_report` is the one entry point; the workbook and the
CSV/Parquet/JSON writers only render its :class:`Report`.

Modules: ``columns`` (schemas, sheet columns, protocol names), ``typed`` (typed frames),
``derived`` (derived columns, the join), ``options`` (ReportOptions), ``report`` (Figures,
Report, build_report), ``exports`` (load_exports: Export-Clixml files as input).
"""

from __future__ import annotations

from bridge.frames.columns import (
    DEFAULT_STALE_THRESHOLDS,
    DEVICE_SCHEMA,
    DEVICE_SHEET_COLUMNS,
    ERROR_COLUMNS,
    IDENTIFIER_COLUMNS,
    MAILBOX_SCHEMA,
    NATIVE_PROTOCOL,
    NEVER,
    OUTLOOK_MOBILE_MODEL,
    REST_PROTOCOL,
    SYNC_PROTOCOLS,
    UNKNOWN,
    USERS_WITHOUT_DEVICES_COLUMNS,
    Kind,
)
from bridge.frames.derived import (
    days_since,
    match_devices,
    split_os,
    stale_buckets,
    sync_protocol,
)
from bridge.frames.exports import (
    MANIFEST_NAME,
    OfflineExport,
    export_kind,
    load_exports,
    organisation_name,
    return_memory_promptly,
)
from bridge.frames.options import (
    ReportOptions,
)
from bridge.frames.report import (
    Figures,
    Report,
    build_report,
)
from bridge.frames.typed import (
    device_frame,
    error_frame,
    mailbox_frame,
    typed_frame,
)

__all__ = [
    "DEFAULT_STALE_THRESHOLDS",
    "DEVICE_SCHEMA",
    "DEVICE_SHEET_COLUMNS",
    "ERROR_COLUMNS",
    "Figures",
    "IDENTIFIER_COLUMNS",
    "Kind",
    "MAILBOX_SCHEMA",
    "MANIFEST_NAME",
    "NATIVE_PROTOCOL",
    "NEVER",
    "OUTLOOK_MOBILE_MODEL",
    "OfflineExport",
    "REST_PROTOCOL",
    "Report",
    "ReportOptions",
    "SYNC_PROTOCOLS",
    "UNKNOWN",
    "USERS_WITHOUT_DEVICES_COLUMNS",
    "build_report",
    "days_since",
    "device_frame",
    "error_frame",
    "export_kind",
    "load_exports",
    "mailbox_frame",
    "match_devices",
    "organisation_name",
    "split_os",
    "stale_buckets",
    "sync_protocol",
    "typed_frame",
    "return_memory_promptly",
]
