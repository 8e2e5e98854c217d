"""One mailbox and one device partnership as the sandbox organisation holds them."""

from __future__ import annotations

from datetime import datetime

from bridge.sandbox.seed_data import _canonical_escape, _dn_escape, _format_guid


class MailboxEntry:
    """One mailbox as the organisation holds it (mutable by :meth:`Organisation.advance`)."""

    __slots__ = (
        "index", "name", "display_name", "alias", "smtp", "upn", "sam", "guid_bits",
        "exchange_guid_bits", "kind", "ou", "office", "database", "server", "when_created",
        "when_changed", "prohibit_send_quota", "max_send_size", "devices", "wire",
    )
    name: str  # the CN (Name); unique in the organisation
    display_name: str
    alias: str
    smtp: str
    upn: str
    sam: str
    guid_bits: int  # 128 random bits, formatted on demand (start-up speed)
    exchange_guid_bits: int
    kind: str  # user | shared | room
    ou: str  # canonical OU path, e.g. contoso.com/Staff/London
    office: str
    database: str
    server: str
    when_created: datetime
    when_changed: datetime
    prohibit_send_quota: int | None  # bytes; None = database defaults (Unlimited)
    max_send_size: int | None

    def __init__(self, index: int) -> None:
        self.index = index
        self.devices: list[DeviceEntry] = []
        # cached serialized CLIXML per object shape; cleared when the entry changes
        self.wire: dict[str, str] = {}

    @property
    def identity(self) -> str:
        return f"{self.ou}/{_canonical_escape(self.name)}"

    @property
    def guid(self) -> str:
        return _format_guid(self.guid_bits)

    @property
    def exchange_guid(self) -> str:
        return _format_guid(self.exchange_guid_bits)

    @property
    def distinguished_name(self) -> str:
        parts = self.ou.split("/")[1:]
        ous = ",".join(f"OU={_dn_escape(part)}" for part in reversed(parts))
        return f"CN={_dn_escape(self.name)},{ous},DC=contoso,DC=com"

    @property
    def recipient_type_details(self) -> str:
        return {"user": "UserMailbox", "shared": "SharedMailbox", "room": "RoomMailbox"}[self.kind]


class DeviceEntry:
    """One device partnership under one mailbox."""

    __slots__ = (
        "mailbox", "kind", "device_id", "device_type", "model", "friendly_name", "os",
        "os_language", "user_agent", "imei", "phone", "operator", "client_type",
        "sync_technology", "client_version", "first_sync", "last_success", "last_attempt",
        "last_policy_update",
        "heartbeat", "access_state", "access_reason", "status", "guid_bits", "folders",
        "name", "when_changed", "wipe_sent", "wipe_requested", "wipe_ack", "wipe_requestor",
        "wire",
    )
    kind: str  # outlook_native | outlook_rest | ios_mail | samsung_eas | gmail_eas | windows_mail
    device_id: str
    device_type: str
    model: str
    friendly_name: str | None
    os: str
    os_language: str
    user_agent: str
    imei: str | None
    phone: str | None
    operator: str | None
    client_type: str  # what the server reports: EAS (on-premises), or as sync_technology
    sync_technology: str  # what the device uses: EAS | REST | Outlook | UniversalOutlook
    client_version: str
    first_sync: datetime
    last_success: datetime | None  # None: never synced
    last_attempt: datetime
    last_policy_update: datetime
    heartbeat: int | None
    access_state: str
    access_reason: str
    status: str
    guid_bits: int
    folders: int
    name: str  # the AD object name, e.g. iPhone§Appl..., REST§Outlook§<id>
    when_changed: datetime

    def __init__(self, mailbox: MailboxEntry) -> None:
        self.mailbox = mailbox
        self.wire: dict[str, str] = {}
        self.wipe_sent: datetime | None = None
        self.wipe_requested: datetime | None = None
        self.wipe_ack: datetime | None = None
        self.wipe_requestor: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.mailbox.identity}/ExchangeActiveSyncDevices/{self.name}"

    @property
    def guid(self) -> str:
        return _format_guid(self.guid_bits)

    @property
    def distinguished_name(self) -> str:
        return (
            f"CN={_dn_escape(self.name)},CN=ExchangeActiveSyncDevices,"
            f"{self.mailbox.distinguished_name}"
        )
