"""Exchange Online's JSON for the sandbox's organisation objects (the REST endpoint's shapes).

The same :class:`~bridge.sandbox.organisation.Organisation` the on-premises sandbox serves,
seen as Exchange Online shows it, after a capture of ``Get-Mailbox`` through
``/adminapi/beta/<tenant>/InvokeCommand`` (public, 2024; see ../shared/EXO_REST.md):

- companion keys beside a property: Guid ``P@data.type: System.Guid`` and
  ``P@odata.type: #Guid``; dates ``P@data.type: System.DateTime``; Int32
  ``P@data.type: System.Int32`` only; collections ``P@odata.type: #Collection(String)``;
  a null value has no companion;
- dates with seven fraction digits: server-local ones ``2022-09-21T08:07:47.0000000+00:00``
  (Exchange Online's servers run on UTC), UTC ones ``...0000000Z``;
- sizes as display text ``35 MB (36,700,160 bytes)``, TimeSpan ``90.00:00:00``;
- identities: a mailbox's Identity is its Name; a device's is
  ``<mailbox name>\\ExchangeActiveSyncDevices\\<device object name>``; DistinguishedName and
  OrganizationalUnit under ``OU=Microsoft Exchange Hosted Organizations``;
  ExternalDirectoryObjectId a stable GUID per mailbox (its Entra object id).

Unverified: UInt32's companions (written like Int32, ``System.UInt32``), the
OrganizationalUnit of a device's UserDisplayName, and the forest name (EURPR07A013 here).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from bridge.sandbox.exchange_types import Prop, format_size
from bridge.sandbox.organisation import DeviceEntry, MailboxEntry, Organisation

FOREST = "EURPR07A013.PROD.OUTLOOK.COM"
DOMAIN_CONTROLLER = "AM0PR07A13DC001.EURPR07A013.PROD.OUTLOOK.COM"
HOSTED = "Microsoft Exchange Hosted Organizations"
_ID_NAMESPACE = uuid.UUID("5f0b6c5e-8f7d-4c8e-9b1a-0e3f3d6a2c11")



def format_exo_datetime(value: datetime, utc: bool) -> str:
    """``2022-09-21T08:07:47.0000000+00:00`` (``utc``: ``...Z``), always seven digits."""
    value = value.astimezone(UTC)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}0"
            + ("Z" if utc else "+00:00"))


def to_json_object(props: list[Prop]) -> dict[str, Any]:
    """One object as the REST endpoint writes it: properties with their companion keys."""
    result: dict[str, Any] = {}
    for name, kind, value in props:
        if kind == "S" or kind == "B":
            result[name] = value
        elif kind == "SIZE":
            result[name] = format_size(value)
        elif kind[0] == "M":  # MV:<collection>
            result[name + "@odata.type"] = "#Collection(String)"
            result[name] = list(value)
        elif value is None:
            result[name] = None
        elif kind == "G":
            result[name + "@data.type"] = "System.Guid"
            result[name + "@odata.type"] = "#Guid"
            result[name] = value
        elif kind == "DTZ" or kind == "DTL":
            result[name + "@data.type"] = "System.DateTime"
            result[name] = format_exo_datetime(value, kind == "DTZ")
        else:  # I32, U32 (unverified: UInt32 written like Int32)
            result[name + "@data.type"] = "System.Int32" if kind == "I32" else "System.UInt32"
            result[name] = value
    return result


class ExoNames:
    """Exchange Online's names for one organisation's objects, and the way back."""

    def __init__(self, organisation: Organisation, tenant_domain: str) -> None:
        self.organisation = organisation
        self.tenant_domain = tenant_domain
        self.organizational_unit = f"{FOREST.lower()}/{HOSTED}/{tenant_domain}"
        self._generation = -1
        self._mailboxes: dict[str, MailboxEntry] = {}
        self._devices: dict[str, DeviceEntry] = {}

    def external_directory_object_id(self, mailbox: MailboxEntry) -> str:
        """The mailbox's Entra object id: stable for the organisation's seed and mailbox."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self.organisation.seed}:{mailbox.guid}"))

    def mailbox_identity(self, mailbox: MailboxEntry) -> str:
        return mailbox.name

    def device_identity(self, device: DeviceEntry) -> str:
        return f"{device.mailbox.name}\\ExchangeActiveSyncDevices\\{device.name}"

    def distinguished_name(self, mailbox: MailboxEntry) -> str:
        forest = ",".join(f"DC={part}" for part in FOREST.split("."))
        name = mailbox.name.replace("\\", "\\\\").replace(",", "\\,")
        return f"CN={name},OU={self.tenant_domain},OU={HOSTED},{forest}"

    def on_premises_identity(self, identity: str) -> str | None:
        """The on-premises identity (what ExchangeCmdlets resolves) of an Exchange Online
        mailbox or device identity or ExternalDirectoryObjectId; None when it is none."""
        self._index()
        key = identity.strip().lower()
        mailbox = self._mailboxes.get(key)
        if mailbox is not None:
            return mailbox.identity
        device = self._devices.get(key)
        return device.identity if device is not None else None

    def _index(self) -> None:
        if self._generation == self.organisation.generation:
            return
        self._mailboxes, self._devices = {}, {}
        for mailbox in self.organisation.mailbox_entries:
            self._mailboxes[self.external_directory_object_id(mailbox)] = mailbox
            self._mailboxes[mailbox.name.lower()] = mailbox
            for device in mailbox.devices:
                self._devices[self.device_identity(device).lower()] = device
        self._generation = self.organisation.generation

    # ---- property lists ------------------------------------------------------------

    def props(self, shape: str, entry: MailboxEntry | DeviceEntry, base: list[Prop]) -> list[Prop]:
        """``base`` (the on-premises property list of ``entry`` as ``shape``) with Exchange
        Online's identities, directory names and ExternalDirectoryObjectId."""
        if isinstance(entry, MailboxEntry):
            identity = self.mailbox_identity(entry)
            overrides: dict[str, Any] = {
                "Identity": identity, "Id": identity,
                "DistinguishedName": self.distinguished_name(entry),
                "OrganizationalUnit": self.organizational_unit,
                "OriginatingServer": DOMAIN_CONTROLLER,
                "ObjectCategory": f"{FOREST}/Configuration/Schema/Person",
            }
            extra: list[Prop] = [
                ("ExternalDirectoryObjectId", "S", self.external_directory_object_id(entry)),
            ]
            if shape == "Mailbox":
                extra.append(("ExchangeObjectId", "G", entry.guid))
                extra.append(("OrganizationalUnitRoot", "S", self.tenant_domain))
        else:
            identity = self.device_identity(entry)
            mailbox_dn = self.distinguished_name(entry.mailbox)
            overrides = {
                "Identity": identity, "Id": identity,
                "DistinguishedName":
                    f"CN={entry.name},CN=ExchangeActiveSyncDevices,{mailbox_dn}",
                "UserDisplayName": f"{self.organizational_unit}/{entry.mailbox.name}",
                "OriginatingServer": DOMAIN_CONTROLLER,
                "ObjectCategory": f"{FOREST}/Configuration/Schema/ms-Exch-Active-Sync-Device",
            }
            extra = []
        result = [
            (name, kind, overrides[name] if name in overrides else value)
            for name, kind, value in base
        ]
        position = next(
            (index for index, (name, _, _) in enumerate(result) if name == "Identity"),
            len(result))
        return result[:position] + extra + result[position:]


__all__ = ["ExoNames", "format_exo_datetime", "to_json_object"]
