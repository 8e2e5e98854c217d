"""Offline input: Export-Clixml files told apart by the type names inside
(load_exports), their manifest, and the organisation's name."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from bridge.errors import InputError
from bridge.frames.columns import DEVICE_SCHEMA, MAILBOX_SCHEMA


def return_memory_promptly() -> None:
    """Have Arrow give freed memory back to the system at once.

    Arrow's default allocator (mimalloc) keeps freed pages for reuse, so every temporary
    column of a large report stays in the process's peak memory (about 640 MB for
    100,000 mailboxes against 515 MB). jemalloc, in Arrow's Linux and macOS wheels,
    returns them. Left alone when ARROW_DEFAULT_MEMORY_POOL is set, or without jemalloc
    (Windows).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # (pyarrow.ArrowNotImplementedError is one)
        pass


# -- offline exports ------------------------------------------------------------------------

#: The manifest Export-PsbridgeData.ps1 and `psbridge sandbox export` write beside the files.
MANIFEST_NAME = "psbridge-manifest.json"
# Type names (most derived first) tell the exports apart, whatever the files are called:
# Get-Mailbox (and Get-EXOMailbox) vs Get-MobileDeviceStatistics (and its EXO twin).
_TYPE_NAME = re.compile(rb"<T>(?:Deserialized\.)?([A-Za-z0-9_.`+\[\], =-]+?)</T>")
_MAILBOX_TYPES = re.compile(r"^Microsoft\.Exchange\.[\w.]*\.(?:Exo)?Mailbox$")
_DEVICE_TYPES = re.compile(
    r"^Microsoft\.Exchange\.[\w.]*\.(?:MobileDeviceConfiguration|(?:Exo)?MobileDeviceStatistics)$")
_HEAD_BYTES = 1 << 16
_PROPERTY_NAME = re.compile(rb'<[A-Za-z0-9]+ N="([A-Za-z0-9_]+)"')
#: properties only Get-MobileDeviceStatistics objects carry together, and Get-Mailbox ones
_DEVICE_PROPERTIES = {b"LastSuccessSync", b"DeviceUserAgent", b"ClientType"}
_MAILBOX_PROPERTIES = {b"PrimarySmtpAddress", b"RecipientTypeDetails", b"ExchangeGuid"}


@dataclass
class OfflineExport:
    """Rows read from Export-Clixml files, and what their manifest says (if any)."""

    mailboxes: list[dict[str, object]] | pd.DataFrame = field(default_factory=list)
    devices: list[dict[str, object]] | pd.DataFrame = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)
    mailbox_files: list[Path] = field(default_factory=list)
    device_files: list[Path] = field(default_factory=list)

    @property
    def created(self) -> datetime | None:
        """When the export was taken (the manifest's ``created``), for DaysSinceLastSync."""
        value = self.manifest.get("created")
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @property
    def device_identities(self) -> Iterator[object]:
        """The devices' Identity values, whether the devices are rows or a frame."""
        if isinstance(self.devices, pd.DataFrame):
            return iter(self.devices["Identity"] if "Identity" in self.devices.columns else ())
        return (device.get("Identity") for device in self.devices)

    @property
    def organisation(self) -> str | None:
        value = self.manifest.get("organization") or self.manifest.get("organisation")
        return value if isinstance(value, str) and value.strip() else None


def export_kind(path: Path) -> str | None:
    """"mailboxes", "devices" or None, from the first object's type names in the file."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16-le" if head.startswith(b"\xff\xfe") else "utf-16-be"
        head = head[2:len(head) - len(head) % 2].decode(codec, "replace").encode("utf-8")
    for match in _TYPE_NAME.finditer(head):
        name = match.group(1).decode("ascii", "replace")
        if _DEVICE_TYPES.match(name):
            return "devices"
        if _MAILBOX_TYPES.match(name):
            return "mailboxes"
    # The type names Exchange Online's REST-backed cmdlets give are not known (nothing
    # public shows them): the first object's properties tell the file apart instead.
    names = set(_PROPERTY_NAME.findall(head[:_HEAD_BYTES]))
    if _DEVICE_PROPERTIES <= names:
        return "devices"
    if _MAILBOX_PROPERTIES <= names:
        return "mailboxes"
    return None


def _export_files(sources: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.iterdir()
                           if p.is_file() and p.suffix.lower() in (".xml", ".clixml"))
            if not found:
                raise InputError(f"no .xml files in {source}.")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise InputError(f"{source} does not exist.")
    return files


def _manifest(folders: Iterable[Path]) -> dict[str, object]:
    for folder in dict.fromkeys(folders):
        path = folder / MANIFEST_NAME
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {path}: {exc}") from exc
            return loaded if isinstance(loaded, dict) else {}
    return {}


def load_exports(sources: Sequence[Path]) -> OfflineExport:
    """Read Get-Mailbox and Get-MobileDeviceStatistics Export-Clixml files (or folders).

    Files are told apart by the type names inside, not by their names; other CLIXML
    files are an error, so a wrong file is never silently ignored (one without any object
    stands for an empty device export). Error rows and the
    organisation come from the folder's psbridge-manifest.json when there is one.
    """
    from bridge import clixml

    export = OfflineExport()
    files = _export_files(sources)
    empty_files: list[Path] = []
    for path in files:
        kind = export_kind(path)
        if kind == "mailboxes":
            export.mailbox_files.append(path)
        elif kind == "devices":
            export.device_files.append(path)
        elif next(clixml.iter_records(path), None) is None:
            # no object at all (a malformed file raises here, with line and column):
            # Export-Clixml of an organisation without a single mobile device
            empty_files.append(path)
        else:
            raise InputError(
                f"{path} is neither a Get-Mailbox nor a Get-MobileDeviceStatistics export "
                "(no Mailbox or MobileDeviceConfiguration objects in it).")
    if not export.mailbox_files:
        raise InputError("no Get-Mailbox export among the files given: export both "
                         "Get-Mailbox and Get-MobileDeviceStatistics (ps_scripts/"
                         "Export-PsbridgeData.ps1).")
    if not export.device_files and empty_files:
        export.device_files.append(empty_files[0])
    if not export.device_files:
        raise InputError("no Get-MobileDeviceStatistics export among the files given: export "
                         "both Get-Mailbox and Get-MobileDeviceStatistics (ps_scripts/"
                         "Export-PsbridgeData.ps1).")
    # only the properties the report uses, each file in its own process (bridge.clixml)
    read = clixml.read_export({"mailboxes": export.mailbox_files, "devices": export.device_files},
                              {"mailboxes": MAILBOX_SCHEMA, "devices": DEVICE_SCHEMA})
    export.mailboxes, export.devices = read["mailboxes"], read["devices"]
    export.manifest = _manifest(path.parent for path in files)
    errors = export.manifest.get("errors")
    if isinstance(errors, list):
        export.errors = [error for error in errors if isinstance(error, dict)]
    return export


def organisation_name(mailboxes: pd.DataFrame, fallback: str) -> str:
    """The organisation a report is about: the domain its mailbox identities start with."""
    identities = mailboxes["Identity"].dropna()
    if len(identities):
        domain = str(identities.iloc[0]).replace("\\", "/").split("/", 1)[0]
        if "." in domain and "/" in str(identities.iloc[0]):
            return domain
    return fallback
