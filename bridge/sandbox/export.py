"""Export-Clixml files of a sandbox organisation, as an admin's export would be on disk.

What is emulated: ps_scripts/Export-PsbridgeData.ps1 run in an Exchange Management Shell
against the organisation, i.e.
``Get-Mailbox -RecipientTypeDetails UserMailbox,SharedMailbox,RoomMailbox -ResultSize
Unlimited | Export-Clixml Mailboxes.xml -Encoding Unicode`` and, per mailbox,
``Get-MobileDeviceStatistics -Mailbox <Identity>`` (with the script's ``QueriedMailbox``
note property) ``| Export-Clixml MobileDeviceStatistics.xml``, plus its
``psbridge-manifest.json``.

The Exchange Management Shell is always a remote session (implicit remoting to
``/PowerShell``), so the objects it exports are deserialized: type names carry
``Deserialized.``, complex values are the strings Exchange's endpoint sent (sizes such as
``50 GB (53,687,091,200 bytes)``, ADObjectIds as canonical names, enums as names), and
each object carries the session's ``RunspaceId`` note property. (Objects made in a local
snap-in session would instead hold sizes and ids as nested objects with a ToString; the
real corpus in ../shared/corpus has those.) Exchange also sends a binary
``SerializationData`` member that is not reproduced: no reader uses it.

Files are UTF-16 LE with a BOM and CRLF line ends, indented as PowerShell writes them, with
RefId/TNRef numbered across the whole document.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bridge.errors import OutputError
from bridge.sandbox.exchange_types import RefScope, escape, serialize_object
from bridge.sandbox.organisation import (
    DeviceEntry,
    MailboxEntry,
    Organisation,
    device_statistics_props,
    mailbox_props,
)

MAILBOXES_FILE = "Mailboxes.xml"
DEVICES_FILE = "MobileDeviceStatistics.xml"
MANIFEST_FILE = "psbridge-manifest.json"
RECIPIENT_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox")
_ROOT_OPEN = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_organisation` wrote."""

    folder: Path
    mailboxes: int
    devices: int

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return (self.folder / MAILBOXES_FILE, self.folder / DEVICES_FILE,
                self.folder / MANIFEST_FILE)


def export_organisation(org: Organisation, folder: Path | str) -> ExportSummary:
    """Write Mailboxes.xml, MobileDeviceStatistics.xml and psbridge-manifest.json to
    ``folder`` (created when missing; existing files replaced atomically)."""
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the export folder {target}: {exc.strerror}") from exc
    runspace_id = _runspace_id(org)
    mailboxes = [mb for mb in org.mailbox_entries if mb.recipient_type_details in RECIPIENT_TYPES]
    _write_clixml(target / MAILBOXES_FILE, _mailbox_elements(mailboxes, runspace_id))
    device_count = [0]
    _write_clixml(target / DEVICES_FILE, _device_elements(mailboxes, runspace_id, device_count))
    manifest = _manifest(org, len(mailboxes), device_count[0])
    _write_atomic(target / MANIFEST_FILE, lambda out: out.write(
        json.dumps(manifest, indent=4, ensure_ascii=False).encode("utf-8")))
    return ExportSummary(target, len(mailboxes), device_count[0])


def _runspace_id(org: Organisation) -> str:
    value = f"{random.Random(f'runspace:{org.seed}:{org.generation}').getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-4{value[13:16]}-a{value[17:20]}-{value[20:]}"


def _with_note_properties(element: str, notes: list[str]) -> str:
    """Insert the object's note properties (``<MS>``) before its closing tag."""
    body = element[: -len("\r\n  </Obj>")]
    members = "\r\n".join(["    <MS>", *(f"      {note}" for note in notes), "    </MS>"])
    return f"{body}\r\n{members}\r\n  </Obj>"


def _mailbox_elements(mailboxes: list[MailboxEntry], runspace_id: str) -> Iterator[str]:
    scope = RefScope()
    for mailbox in mailboxes:
        element = serialize_object(
            "Mailbox", mailbox.name, mailbox_props(mailbox), scope, deserialized=True, indent=1)
        yield _with_note_properties(element, [f'<G N="RunspaceId">{runspace_id}</G>'])


def _device_elements(
    mailboxes: list[MailboxEntry], runspace_id: str, count: list[int]
) -> Iterator[str]:
    scope = RefScope()
    for mailbox in mailboxes:
        queried = escape(mailbox.identity)
        device: DeviceEntry
        for device in mailbox.devices:
            element = serialize_object(
                "MobileDeviceConfiguration",
                "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
                device_statistics_props(device), scope, deserialized=True, indent=1)
            count[0] += 1
            yield _with_note_properties(element, [
                f'<G N="RunspaceId">{runspace_id}</G>',
                f'<S N="QueriedMailbox">{queried}</S>',
            ])


def _write_clixml(path: Path, elements: Iterator[str]) -> None:
    def write(out: IO[bytes]) -> None:
        out.write(b"\xff\xfe")
        out.write((_ROOT_OPEN).encode("utf-16-le"))
        wrote_any = False
        for element in elements:
            out.write(("\r\n" + element).encode("utf-16-le"))
            wrote_any = True
        if wrote_any:
            out.write("\r\n</Objs>".encode("utf-16-le"))
        else:  # PowerShell writes an empty export as a self-closing root
            out.seek(0)
            out.truncate()
            out.write(b"\xff\xfe" + _ROOT_OPEN.replace(">", " />", 1).encode("utf-16-le"))

    _write_atomic(path, write)


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same folder, renamed into place on success."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w+b") as out:
            write(out)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; an export is a normal file
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, PermissionError):
            raise OutputError(f"cannot write {path}: permission denied (is it open in another "
                              "program?)") from exc
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _manifest(org: Organisation, mailboxes: int, devices: int) -> dict[str, object]:
    # "created"/"finished" are the organisation's reference time, not the wall clock, so
    # the same seed gives byte-identical exports (and a report's staleness matches the data)
    created = org.reference_time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    return {
        "created": created,
        "finished": created,
        "user": "CONTOSO\\exadmin",
        "computer": "EXCH01",
        "organization": org.organization,
        "source": "psbridge sandbox export"
        + (" with Exchange Online's ClientTypes" if org.online_client_types else ""),
        "cmdlets": ["Get-Mailbox", "Get-MobileDeviceStatistics"],
        "module_version": "1.0",  # an Exchange Management Shell's implicit-remoting module
        "powershell_version": "5.1.17763.6414",
        "recipient_types": list(RECIPIENT_TYPES),
        "all_devices": True,
        "counts": {"mailboxes": mailboxes, "devices": devices, "errors": 0},
        "errors": [],
        "sandbox": {"seed": org.seed, "mailboxes": org.size, "generation": org.generation,
                    "online_client_types": org.online_client_types},
    }
