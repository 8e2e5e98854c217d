"""A synthetic Exchange organisation generated from a seed and a size: the sandbox's ground truth.

Determinism: the same ``(mailboxes, seed)`` gives the same organisation byte for byte,
whatever the wall clock says. Every date is placed relative to ``reference_time``, a
fixed instant derived from the seed (``REFERENCE_BASE`` plus a few seed-chosen hours),
so stale-device buckets are stable; pass ``reference_time=`` to anchor the organisation
at another instant (e.g. "now" for a live-looking demo). ``advance(days, seed)`` moves
``reference_time`` forward and mutates the organisation, again deterministically.

What it holds, as a mid-sized on-premises Exchange 2019 organisation would: user, shared
and room mailboxes; 0..4 device partnerships per user (Outlook for iOS and Android on
REST and on the native Outlook sync, iOS Mail and Android EAS clients, Windows Mail);
never-synced and stale devices; Allowed/Blocked/Quarantined ones; a few DeviceIds
partnered under two mailboxes (a user's phone also syncing a shared mailbox); display
names with accents, apostrophes, commas and non-Latin scripts.

Devices sit under their mailbox as in Exchange: Identity
``contoso.com/Staff/London/Jane Doe/ExchangeActiveSyncDevices/iPhone§ApplF17XK2...``.

Unverified against a real server (no public capture shows them), chosen to be plausible:
the object name of Outlook devices on the native sync (``Outlook§Outlook§<id>``; REST ones
are ``REST§Outlook§<id>`` as seen in Exchange Online), and Windows Mail's DeviceModel
("Windows Mail"), user agent and ClientType ("UniversalOutlook", after the cmdlets'
-UniversalOutlook switch; its object name ``Hx§Outlook§<id>`` is as seen online). A
partnership keeps its object name when its ClientType changes.
"""

from __future__ import annotations

import functools
import random
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from bridge.sandbox.exchange_types import Prop, to_record

if TYPE_CHECKING:
    import pandas as pd

REFERENCE_BASE = datetime(2025, 6, 16, 7, 0, tzinfo=UTC)
"""Reference "now" of seed 0; other seeds add up to 10 hours (see Organisation)."""

DOMAIN = "contoso.com"
ORGANIZATION = "Contoso"
DOMAIN_CONTROLLER = "DC01.contoso.com"
SERVERS = ("EXCH01", "EXCH02")
SERVER_OFFSET = timedelta(hours=1)  # the servers' local time (WhenCreated etc. carry it)
_SERVER_TZ = timezone(SERVER_OFFSET)
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

_OFFICES = ("London", "Paris", "Berlin", "Madrid", "New York", "Singapore", "Tokyo", "Dubai")
_DATABASES = tuple(f"DB{n:02d}" for n in range(1, 9))

# (first, last) pools per script; non-Latin entries carry an ASCII form for the alias
_LATIN_FIRST = (
    "James", "Olivia", "Liam", "Emma", "Noah", "Ava", "William", "Sophia", "Lucas", "Mia",
    "Henry", "Amelia", "Oliver", "Harper", "Ethan", "Grace", "Daniel", "Chloe", "Samuel",
    "Ella", "David", "Sarah", "Michael", "Laura", "Thomas", "Anna", "Peter", "Claire",
)
_ACCENTED_FIRST = (
    "José", "Zoë", "Søren", "François", "Jürgen", "Łukasz", "Renée", "Björn", "Inés",
    "Chloé", "Ana María", "Hélène", "Jörg", "Ángel", "Małgorzata", "Çağla", "Nuño",
)
_LATIN_LAST = (
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Evans", "Walker", "Wright", "Green",
    "Hall", "Clarke", "Lewis", "Hughes", "Turner", "Baker", "Morris", "Cooper", "Ward",
    "O'Brien", "O'Neill", "D'Souza", "D'Angelo", "O'Connor", "Mac an tSaoi",
)
_ACCENTED_LAST = (
    "Müller", "Núñez", "Østergaard", "Dvořák", "Lefèvre", "García", "Schröder", "Jönsson",
    "Wiśniewska", "Çelik", "Gonçalves", "Ibáñez", "Håkansson", "Fernández-Peña",
)
# (display name, given name ascii, surname ascii, family-name-first)
_NON_LATIN = (
    ("王伟", "wei", "wang"), ("李娜", "na", "li"), ("张敏", "min", "zhang"),
    ("佐藤 花子", "hanako", "sato"), ("鈴木 一郎", "ichiro", "suzuki"),
    ("김민준", "minjun", "kim"), ("이서연", "seoyeon", "lee"),
    ("Дмитрий Иванов", "dmitry", "ivanov"), ("Ольга Смирнова", "olga", "smirnova"),
    ("Ελένη Παπαδοπούλου", "eleni", "papadopoulou"), ("Νίκος Γεωργίου", "nikos", "georgiou"),
    ("محمد الأحمد", "mohammed", "alahmad"), ("فاطمة الزهراء", "fatima", "alzahraa"),
    ("प्रिया शर्मा", "priya", "sharma"), ("יעל כהן", "yael", "cohen"),
)
_SHARED_NAMES = (
    "Finance Team", "Accounts Payable", "Service Desk", "HR Recruitment", "Marketing Events",
    "Sales, EMEA", "Réception", "Press Office", "Payroll", "Legal Contracts", "Facilities",
    "Customer Care", "IT Security", "Travel Desk",
)
_ROOM_NAMES = (
    "Board Room", "Conf Room 3.14", "Training Room", "Salle de réunion Mont-Blanc",
    "Huddle 2A", "会議室 5F", "Sala Goya", "Studio", "Meeting Room Thames",
)

# iOS builds as Exchange reports them ("iOS <version> <build>"), weighted to mid-2025
_IOS_BUILDS = (
    ("18.5", "22F76", 30), ("18.4.1", "22E252", 18), ("18.3.2", "22D82", 8),
    ("17.6.1", "21G93", 14), ("17.5.1", "21F90", 10), ("16.7.10", "20H350", 7),
    ("16.7.8", "20H343", 4), ("15.8.3", "19H386", 3),
)
_ANDROID_VERSIONS = (("15", 30), ("14", 38), ("13", 18), ("12", 9), ("11", 5))
_WINDOWS_BUILDS = (("10.0.26100", 25), ("10.0.22631", 45), ("10.0.19045", 30))
_IPHONE_MODELS = (
    ("iPhone17C1", "iPhone 16 Pro"), ("iPhone16C2", "iPhone 15 Pro Max"),
    ("iPhone15C4", "iPhone 15"), ("iPhone14C7", "iPhone 14"), ("iPhone14C2", "iPhone 13 Pro"),
    ("iPhone13C2", "iPhone 12"), ("iPhone12C8", "iPhone SE"),
)
_IPAD_MODELS = (("iPad13C1", "iPad Air"), ("iPad14C5", "iPad Pro"))
_SAMSUNG_MODELS = ("SM-S928B", "SM-S921B", "SM-S911B", "SM-A546B", "SM-A536B", "SM-G991B")
_PIXEL_MODELS = ("Pixel 9", "Pixel 8 Pro", "Pixel 8a", "Pixel 7")
_OPERATORS = ("Vodafone UK", "EE", "Orange F", "Telekom.de", "Movistar", "Verizon", "SingTel", "")
_SERIAL_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_LANGUAGES = ("en-GB", "en-US", "fr-FR", "de-DE", "es-ES", "ja-JP", "ar-AE")

# device kinds: (kind, weight)
_KINDS = (
    ("outlook_native", 31), ("outlook_rest", 14), ("ios_mail", 28), ("samsung_eas", 11),
    ("gmail_eas", 5), ("windows_mail", 11),
)


def _weighted(table: tuple[tuple[Any, ...], ...]) -> tuple[list[tuple[Any, ...]], list[int]]:
    items = [entry[:-1] if len(entry) > 2 else entry[0] for entry in table]
    weights, total = [], 0
    for entry in table:
        total += entry[-1]
        weights.append(total)
    return items, weights


def _unique(base: str, separator: str, used: dict[str, int]) -> str:
    """``base``, or ``base<sep>N`` with the next free N (counted per base: O(1) per name)."""
    candidate, number = base, used.get(base, 0)
    while candidate in used:
        number += 1
        candidate = f"{base}{separator}{number + 1}"
    used[base] = number
    used.setdefault(candidate, 0)
    return candidate


_TRANSLITERATE = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "ß": "ss",
                                "đ": "d", "ı": "i", "'": ""})


@functools.lru_cache(maxsize=4096)
def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == "-")


def _canonical_escape(name: str) -> str:
    return name.replace("/", "\\/")


def _dn_escape(name: str) -> str:
    for char in ("\\", ",", "+", '"', "<", ">", ";", "="):
        name = name.replace(char, "\\" + char)
    return name


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
        "client_version", "first_sync", "last_success", "last_attempt", "last_policy_update",
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
    client_type: str  # EAS | REST | Outlook | UniversalOutlook
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


class Organisation:
    """A deterministic synthetic organisation; see the module docstring.

    Attributes: ``reference_time`` (its "now", tz-aware), ``seed``, ``size``, ``domain``,
    ``organization`` (the name a report shows), ``domain_controller``, ``generation``
    (how many times :meth:`advance` ran). Ground truth: :attr:`mailboxes`,
    :attr:`devices`, :meth:`mailbox_frame`, :meth:`device_frame`.
    """

    def __init__(
        self, mailboxes: int = 200, seed: int = 1, reference_time: datetime | None = None
    ) -> None:
        if mailboxes < 0:
            raise ValueError("mailboxes must be >= 0")
        if reference_time is not None and reference_time.utcoffset() is None:
            raise ValueError("reference_time must be timezone-aware")
        self.size = mailboxes
        self.seed = seed
        self.domain = DOMAIN
        self.organization = ORGANIZATION
        self.domain_controller = DOMAIN_CONTROLLER
        self.generation = 0  # bumped by advance()
        rng = random.Random(seed)
        offset = timedelta(minutes=_rr(rng, 0, 600))
        self.reference_time = reference_time or (REFERENCE_BASE + offset)
        self._mailboxes: list[MailboxEntry] = []
        self._records: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        self._generate(rng, mailboxes)

    def __repr__(self) -> str:
        return (f"Organisation(mailboxes={self.size}, seed={self.seed}, "
                f"reference_time={self.reference_time.isoformat()}, "
                f"generation={self.generation})")

    # ---- ground truth -------------------------------------------------------------------

    @property
    def mailbox_entries(self) -> list[MailboxEntry]:
        """The mailboxes in creation order (Get-Mailbox's order)."""
        return self._mailboxes

    def iter_devices(self) -> Iterator[DeviceEntry]:
        """Every device partnership, mailbox by mailbox (Get-MobileDevice's order)."""
        for mailbox in self._mailboxes:
            yield from mailbox.devices

    @property
    def mailboxes(self) -> list[dict[str, Any]]:
        """Get-Mailbox records (plain values: sizes in bytes, Unlimited None)."""
        return self._build_records()[0]

    @property
    def devices(self) -> list[dict[str, Any]]:
        """Get-MobileDeviceStatistics records, each with one extra key ``MailboxIdentity``
        (the mailbox the partnership is under; not an Exchange property)."""
        return self._build_records()[1]

    def _build_records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._records is None:
            mailbox_records = [to_record(mailbox_props(mb)) for mb in self._mailboxes]
            device_records = []
            for device in self.iter_devices():
                record = to_record(device_statistics_props(device))
                record["MailboxIdentity"] = device.mailbox.identity
                device_records.append(record)
            self._records = (mailbox_records, device_records)
        return self._records

    def mailbox_frame(self) -> pd.DataFrame:
        """The mailbox records as a DataFrame (one row per mailbox), typed by the same rule
        as frames read from CLIXML (dates datetime64[UTC], exact Int64 sizes)."""
        from bridge.clixml import records_to_frame  # late: pandas is not needed to serve

        return records_to_frame(self.mailboxes)

    def device_frame(self) -> pd.DataFrame:
        """The device records as a DataFrame (one row per partnership), typed likewise."""
        from bridge.clixml import records_to_frame

        return records_to_frame(self.devices)

    # ---- ageing -------------------------------------------------------------------------

    def advance(self, days: int, seed: int) -> None:
        """Move ``reference_time`` forward ``days`` and mutate the organisation as time would.

        Deterministic: the same organisation advanced by the same calls ends up identical.
        Over the period, most active devices keep syncing, some go stale; admins remove
        some partnerships (stale ones more often) and release some quarantined devices;
        users add devices; Outlook for iOS and Android devices move from REST to the
        native Outlook sync (and a few back); iOS and Android get upgraded; some users'
        display names change (Name and Identity stay, as in Exchange).
        """
        if days < 0:
            raise ValueError("days must be >= 0")
        rng = random.Random(f"advance:{self.seed}:{self.generation}:{days}:{seed}")
        before = self.reference_time
        now = before + timedelta(days=days)
        self.reference_time = now
        self.generation += 1
        self._records = None
        scale = days / 30

        def chance(per_month: float) -> bool:
            return rng.random() < min(1.0, per_month * scale)

        for mailbox in self._mailboxes:
            if mailbox.kind == "user" and chance(0.01) and self._rename(rng, mailbox, now):
                mailbox.wire.clear()
            kept = []
            for device in mailbox.devices:
                stale = device.last_success is None or before - device.last_success > timedelta(
                    days=90)
                if chance(0.12 if stale else 0.015):
                    continue  # partnership removed (Remove-MobileDevice or the user)
                self._age_device(rng, device, before, now, chance)
                kept.append(device)
            if mailbox.kind == "user" and len(kept) < 4 and chance(0.05):
                kept.append(self._new_device(rng, mailbox, now, fresh=True))
                kept[-1].first_sync = max(kept[-1].first_sync, before)
                kept[-1].last_policy_update = kept[-1].first_sync + timedelta(seconds=20)
            if len(kept) != len(mailbox.devices):
                mailbox.wire.clear()  # Get-CASMailbox's HasActiveSyncDevicePartnership
            mailbox.devices = kept

    def _rename(self, rng: random.Random, mailbox: MailboxEntry, now: datetime) -> bool:
        display = mailbox.display_name
        pool = _LATIN_LAST if rng.random() < 0.7 else _ACCENTED_LAST
        new_last = pool[_rr(rng, len(pool))]
        if ", " in display:
            renamed = f"{new_last}, {display.split(', ', 1)[1]}"
        elif " " in display:
            renamed = f"{display.split(' ', 1)[0]} {new_last}"
        else:
            return False  # a single-token (e.g. CJK) name: leave it
        if renamed == display:
            return False
        mailbox.display_name = renamed
        mailbox.when_changed = now - timedelta(seconds=_rr(rng, 86400))
        return True

    def _age_device(
        self,
        rng: random.Random,
        device: DeviceEntry,
        before: datetime,
        now: datetime,
        chance: Callable[[float], bool],
    ) -> None:
        changed = False
        if device.access_state == "Quarantined" and chance(0.3):
            device.access_state, device.access_reason = "Allowed", "Individual"
            device.last_success = before  # synced right after the release
            changed = True
        active = device.last_success is not None and before - device.last_success < timedelta(
            days=14)
        if device.access_state == "Allowed" and active:
            if chance(0.04):  # the user stopped using it: it goes stale from here
                assert device.last_success is not None
                device.last_success += (now - device.last_success) * rng.uniform(0.0, 0.5)
            else:
                device.last_success = now - timedelta(seconds=_rr(rng, 60, 2 * 86400))
            device.last_attempt = device.last_success + timedelta(seconds=_rr(rng, 0, 300))
            device.folders = max(device.folders, 3)
            changed = True
            if device.client_type == "REST" and chance(0.25):
                device.client_type = "Outlook"  # moved to the native Microsoft sync technology
            elif device.client_type == "Outlook" and chance(0.005):
                device.client_type = "REST"
            if device.os.startswith("iOS ") and chance(0.3):
                position = next(i for i, entry in enumerate(_IOS_BUILDS)
                                if device.os == f"iOS {entry[0]} {entry[1]}")
                if position > 0:
                    version, build, _ = _IOS_BUILDS[_rr(rng, max(0, position - 2), position)]
                    device.os = f"iOS {version} {build}"
                    if device.kind == "ios_mail":
                        device.user_agent = f"iOS/{version} ({build}) dataaccessd/1.0"
            elif device.os.startswith("Android ") and chance(0.08):
                android = int(device.os.split(" ")[1])
                if android < 15:
                    device.os = f"Android {android + 1}"
        if changed:
            device.when_changed = now.replace(microsecond=0) - timedelta(seconds=_rr(rng, 3600))
            device.wire.clear()

    # ---- generation ---------------------------------------------------------------------

    def _generate(self, rng: random.Random, count: int) -> None:
        kinds = ["user"] * count
        shared = max(1, count * 8 // 100) if count >= 10 else 0
        rooms = max(1, count * 4 // 100) if count >= 10 else 0
        for offset in range(shared + rooms):
            kinds[count - 1 - offset] = "shared" if offset < shared else "room"
        used_names: dict[str, int] = {}
        used_aliases: dict[str, int] = {}
        now = self.reference_time
        for index, kind in enumerate(kinds):
            mailbox = MailboxEntry(index)
            mailbox.kind = kind
            self._name_mailbox(rng, mailbox, used_names, used_aliases)
            mailbox.guid_bits = rng.getrandbits(128)
            mailbox.exchange_guid_bits = rng.getrandbits(128)
            mailbox.database = _DATABASES[_rr(rng, len(_DATABASES))]
            mailbox.server = SERVERS[_rr(rng, len(SERVERS))]
            age_days = _rr(rng, 30, 3650)
            mailbox.when_created = (
                now - timedelta(days=age_days, seconds=_rr(rng, 86400))
            ).replace(microsecond=0)
            mailbox.when_changed = (
                now - timedelta(days=_rr(rng, 0, min(age_days, 400)),
                                seconds=_rr(rng, 86400))
            ).replace(microsecond=0)
            quota_roll = rng.random()
            mailbox.prohibit_send_quota = (
                None if quota_roll < 0.6 else (50 << 30 if quota_roll < 0.9 else 100 << 30)
            )
            mailbox.max_send_size = None if rng.random() < 0.7 else 35 << 20
            self._mailboxes.append(mailbox)
        users = [mb for mb in self._mailboxes if mb.kind == "user"]
        for mailbox in users:
            roll = rng.random()
            count_devices = 0 if roll < 0.2 else 1 if roll < 0.6 else 2 if roll < 0.88 else (
                3 if roll < 0.97 else 4
            )
            for _ in range(count_devices):
                mailbox.devices.append(self._new_device(rng, mailbox, now))
        # the same phone also partnered with a shared mailbox (one DeviceId, two mailboxes)
        shared_boxes = [mb for mb in self._mailboxes if mb.kind == "shared"]
        if shared_boxes:
            phones = [d for mb in users for d in mb.devices if d.kind == "ios_mail"]
            for n, device in enumerate(phones[: max(1, len(shared_boxes) // 2)]):
                target = shared_boxes[n % len(shared_boxes)]
                twin = self._new_device(rng, target, now, kind="ios_mail")
                for attr in ("device_id", "device_type", "model", "friendly_name", "os",
                             "os_language", "user_agent", "imei", "phone", "operator",
                             "client_version"):
                    setattr(twin, attr, getattr(device, attr))
                twin.name = f"{twin.device_type}§{twin.device_id}"
                target.devices.append(twin)
        # a partnership cannot predate its mailbox: such mailboxes were created earlier
        # (adjusted after the draws, so every other value stays as drawn)
        for mailbox in self._mailboxes:
            if mailbox.devices:
                earliest = min(device.first_sync for device in mailbox.devices)
                if mailbox.when_created > earliest:
                    mailbox.when_created = (
                        earliest - timedelta(days=1 + mailbox.index % 45, hours=mailbox.index % 9)
                    ).replace(microsecond=0)

    def _name_mailbox(
        self,
        rng: random.Random,
        mailbox: MailboxEntry,
        used_names: dict[str, int],
        used_aliases: dict[str, int],
    ) -> None:
        office = _OFFICES[_rr(rng, len(_OFFICES))]
        mailbox.office = office
        if mailbox.kind == "user":
            roll = rng.random()
            if roll < 0.12:
                display, given, surname = _NON_LATIN[_rr(rng, len(_NON_LATIN))]
                name = display
            else:
                first_pool = _ACCENTED_FIRST if roll < 0.3 else _LATIN_FIRST
                last_pool = _ACCENTED_LAST if rng.random() < 0.3 else _LATIN_LAST
                first = first_pool[_rr(rng, len(first_pool))]
                last = last_pool[_rr(rng, len(last_pool))]
                given, surname = _ascii(first), _ascii(last)
                # some sites use "Last, First" display names (the comma case)
                display = f"{last}, {first}" if rng.random() < 0.15 else f"{first} {last}"
                name = f"{first} {last}"
            base_alias = f"{given}.{surname}"
            mailbox.ou = f"{DOMAIN}/Staff/{office}"
        elif mailbox.kind == "shared":
            display = _SHARED_NAMES[_rr(rng, len(_SHARED_NAMES))]
            if rng.random() < 0.5:
                display = f"{display} {office}"
            name = display
            base_alias = _ascii(display.replace(" ", "."))
            mailbox.ou = f"{DOMAIN}/Resources/Shared"
        else:
            display = f"{_ROOM_NAMES[_rr(rng, len(_ROOM_NAMES))]} ({office})"
            name = display
            base_alias = "room." + _ascii(display.replace(" ", "."))
            mailbox.ou = f"{DOMAIN}/Resources/Rooms"
        base_alias = base_alias.strip(".")[:60] or "mailbox"
        alias = _unique(base_alias, "", used_aliases)
        unique_name = _unique(name, " ", used_names)
        if unique_name != name and display == name:
            display = unique_name
        mailbox.name = unique_name
        mailbox.display_name = display
        mailbox.alias = alias
        mailbox.smtp = f"{alias}@{DOMAIN}"
        mailbox.upn = mailbox.smtp
        mailbox.sam = alias[:20]

    def _new_device(
        self,
        rng: random.Random,
        mailbox: MailboxEntry,
        now: datetime,
        kind: str | None = None,
        fresh: bool = False,
    ) -> DeviceEntry:
        device = DeviceEntry(mailbox)
        if kind is None:
            kind = _pick(rng, *_KIND_TABLE)
        device.kind = kind
        device.guid_bits = rng.getrandbits(128)
        device.os_language = _LANGUAGES[_rr(rng, len(_LANGUAGES))]
        device.imei = None
        device.phone = None
        device.operator = None
        device.heartbeat = None
        device.friendly_name = None
        if kind in ("outlook_native", "outlook_rest"):
            device.device_id = f"{rng.getrandbits(128):032x}"
            device.device_type = "Outlook"
            device.model = "Outlook for iOS and Android"
            device.user_agent = "Outlook-iOS-Android/1.0"
            device.os = _ios_os(rng) if rng.random() < 0.62 else _android_os(rng)
            device.client_type = "Outlook" if kind == "outlook_native" else "REST"
            device.client_version = "1.0"
            prefix = "REST§Outlook" if kind == "outlook_rest" else "Outlook§Outlook"
            device.name = f"{prefix}§{device.device_id}"
        elif kind == "ios_mail":
            ipad = rng.random() < 0.12
            model, friendly = (_IPAD_MODELS if ipad else _IPHONE_MODELS)[
                _rr(rng, len(_IPAD_MODELS if ipad else _IPHONE_MODELS))
            ]
            device.device_id = "Appl" + "".join(rng.choices(_SERIAL_CHARS, k=11))
            device.device_type = "iPad" if ipad else "iPhone"
            device.model = model
            device.friendly_name = friendly
            device.os = _ios_os(rng)
            version, build = device.os.split(" ")[1:3]
            device.user_agent = f"iOS/{version} ({build}) dataaccessd/1.0"
            device.client_type = "EAS"
            device.client_version = "16.1"
            device.heartbeat = rng.choice((470, 900, 1680))
            if not ipad:
                device.imei = "35" + f"{_rr(rng, 10**13):013d}"
                device.phone = "+44 7" + f"{_rr(rng, 10**9):09d}"
                device.operator = _OPERATORS[_rr(rng, len(_OPERATORS))]
            device.name = f"{device.device_type}§{device.device_id}"
        elif kind == "samsung_eas":
            model = _SAMSUNG_MODELS[_rr(rng, len(_SAMSUNG_MODELS))]
            device.device_id = f"SEC{rng.getrandbits(52):013X}"
            device.device_type = "SAMSUNG" + model.replace("-", "")
            device.model = model
            device.friendly_name = model
            device.os = _android_os(rng)
            device.user_agent = f"SAMSUNG-{model}/101.{_rr(rng, 140000, 150000)}"
            device.client_type = "EAS"
            device.client_version = "16.1" if rng.random() < 0.7 else "14.1"
            device.heartbeat = rng.choice((480, 960, 1680))
            device.imei = "35" + f"{_rr(rng, 10**13):013d}"
            device.operator = _OPERATORS[_rr(rng, len(_OPERATORS))]
            device.name = f"{device.device_type}§{device.device_id}"
        elif kind == "gmail_eas":
            model = _PIXEL_MODELS[_rr(rng, len(_PIXEL_MODELS))]
            device.device_id = f"androidc{rng.getrandbits(40):d}"[:20]
            device.device_type = "Android"
            device.model = model
            device.friendly_name = model
            device.os = _android_os(rng)
            device.user_agent = "Android-Mail/2025.05.11.754016539.Release"
            device.client_type = "EAS"
            device.client_version = "16.1"
            device.name = f"{device.device_type}§{device.device_id}"
        else:  # windows_mail: Windows Mail/Calendar (UniversalOutlook, "Hx")
            device.device_id = f"{rng.getrandbits(128):032X}"
            device.device_type = "Outlook"
            device.model = "Windows Mail"
            device.os = f"Windows {_pick(rng, *_WINDOWS_TABLE)}"
            device.user_agent = "Outlook-WindowsMail/16005.14326.22342.0"
            device.client_type = "UniversalOutlook"
            device.client_version = "1.0"
            device.name = f"Hx§Outlook§{device.device_id}"
        self._set_sync_times(rng, device, now, fresh)
        return device

    def _set_sync_times(
        self, rng: random.Random, device: DeviceEntry, now: datetime, fresh: bool
    ) -> None:
        roll = rng.random()
        if fresh:
            first = now - timedelta(seconds=_rr(rng, 3600, 5 * 86400))
        else:
            first = now - timedelta(days=_rr(rng, 1, 1100), seconds=_rr(rng, 86400))
        device.first_sync = first.replace(microsecond=_rr(rng, 1_000_000))
        access = rng.random()
        if access < 0.92:
            device.access_state, device.access_reason = "Allowed", (
                "Global" if access < 0.8 else "Individual" if access < 0.88 else "Policy"
            )
        elif access < 0.96:
            device.access_state, device.access_reason = "Quarantined", "Global"
        else:
            device.access_state, device.access_reason = "Blocked", (
                "Individual" if access < 0.98 else "DeviceRule"
            )
        if device.access_state != "Allowed" or roll < 0.04:
            device.last_success = None  # never synced
        else:
            age = _sync_age(rng, now - device.first_sync)
            device.last_success = max(device.first_sync, now - age)
        device.status = "DeviceBlocked" if device.access_state == "Blocked" else "DeviceOk"
        attempt_base = device.last_success or device.first_sync
        device.last_attempt = min(now, attempt_base + timedelta(seconds=_rr(rng, 0, 600)))
        device.last_policy_update = device.first_sync + timedelta(seconds=_rr(rng, 5, 60))
        device.folders = _rr(rng, 3, 40) if device.last_success else 0
        device.when_changed = device.last_policy_update.replace(microsecond=0)
        if device.last_success is None and device.client_type in ("Outlook", "REST"):
            device.last_attempt = device.first_sync


def _sync_age(rng: random.Random, available: timedelta) -> timedelta:
    """How long ago a device last synced: most within hours, a tail of stale partnerships."""
    bucket = rng.random()
    if bucket < 0.66:
        age = timedelta(seconds=_rr(rng, 60, 2 * 86400))
    elif bucket < 0.80:
        age = timedelta(days=rng.uniform(2, 30))
    elif bucket < 0.89:
        age = timedelta(days=rng.uniform(30, 90))
    elif bucket < 0.96:
        age = timedelta(days=rng.uniform(90, 365))
    else:
        age = timedelta(days=rng.uniform(365, 1000))
    if age >= available:  # a young partnership: it synced some time after its first sync
        age = available * rng.uniform(0.0, 0.9)
    return age


def _rr(rng: random.Random, start: int, stop: int | None = None) -> int:
    """randrange without its argument checks (generation calls it millions of times)."""
    if stop is None:
        return int(rng.random() * start)
    return start + int(rng.random() * (stop - start))


def _pick(rng: random.Random, items: list[Any], cumulative: list[int]) -> Any:
    target = rng.random() * cumulative[-1]
    for item, bound in zip(items, cumulative, strict=True):
        if target < bound:
            return item
    return items[-1]


_KIND_TABLE = _weighted(_KINDS)
_IOS_TABLE = _weighted(_IOS_BUILDS)
_ANDROID_TABLE = _weighted(_ANDROID_VERSIONS)
_WINDOWS_TABLE = _weighted(_WINDOWS_BUILDS)


def _ios_os(rng: random.Random) -> str:
    version, build = _pick(rng, *_IOS_TABLE)
    return f"iOS {version} {build}"


def _android_os(rng: random.Random) -> str:
    return f"Android {_pick(rng, *_ANDROID_TABLE)}"


def _format_guid(bits: int) -> str:
    value = f"{bits:032x}"
    # a version-4 shaped Guid, as New-Guid would give
    value = value[:12] + "4" + value[13:16] + "89ab"[int(value[16], 16) % 4] + value[17:]
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _local(value: datetime) -> datetime:
    return value.astimezone(_SERVER_TZ)


# ---- property lists, in the order Exchange declares them ---------------------------------


def _ad_object_tail(changed: datetime, created: datetime, identity: str) -> list[Prop]:
    """The properties every ADObject ends with (ADObject, ADRawEntry, ConfigurableObject)."""
    return [
        ("WhenChanged", "DTL", _local(changed)),
        ("WhenCreated", "DTL", _local(created)),
        ("WhenChangedUTC", "DTZ", changed),
        ("WhenCreatedUTC", "DTZ", created),
        ("OrganizationId", "S", ""),
        ("Id", "S", identity),
        ("OriginatingServer", "S", DOMAIN_CONTROLLER),
        ("IsValid", "B", True),
        ("ObjectState", "S", "Unchanged"),
    ]


def mailbox_props(mb: MailboxEntry) -> list[Prop]:
    """Get-Mailbox's properties for one mailbox (a realistic subset, Exchange's order)."""
    room = mb.kind == "room"
    email_addresses = [f"SMTP:{mb.smtp}", f"smtp:{mb.alias}@contoso.mail.onmicrosoft.com"]
    if mb.kind == "user":
        email_addresses.append(f"X500:/o={ORGANIZATION}/ou=Exchange Administrative Group "
                               f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={mb.alias}")
    identity = mb.identity
    return [
        ("Database", "S", mb.database),
        ("UseDatabaseRetentionDefaults", "B", True),
        ("RetainDeletedItemsFor", "S", "14.00:00:00"),
        ("UseDatabaseQuotaDefaults", "B", mb.prohibit_send_quota is None),
        ("IssueWarningQuota", "SIZE", None if mb.prohibit_send_quota is None
         else mb.prohibit_send_quota * 9 // 10),
        ("ProhibitSendQuota", "SIZE", mb.prohibit_send_quota),
        ("ProhibitSendReceiveQuota", "SIZE", None if mb.prohibit_send_quota is None
         else mb.prohibit_send_quota * 11 // 10),
        ("ArchiveGuid", "G", EMPTY_GUID),
        ("ArchiveStatus", "S", "None"),
        ("LitigationHoldEnabled", "B", False),
        ("ServerName", "S", mb.server.lower()),
        ("ExchangeGuid", "G", mb.exchange_guid),
        ("IsMailboxEnabled", "B", True),
        ("ResourceType", "S", "Room" if room else None),
        ("IsShared", "B", mb.kind == "shared"),
        ("IsResource", "B", room),
        ("Office", "S", mb.office),
        ("UserPrincipalName", "S", mb.upn),
        ("SamAccountName", "S", mb.sam),
        ("WhenMailboxCreated", "DTL", _local(mb.when_created)),
        ("Extensions", "MV:StringCollection", []),
        ("HasPicture", "B", False),
        ("HasSpokenName", "B", False),
        ("Alias", "S", mb.alias),
        ("CustomAttribute1", "S", ""),
        ("DisplayName", "S", mb.display_name),
        ("EmailAddresses", "MV:ProxyAddressCollection", email_addresses),
        ("HiddenFromAddressListsEnabled", "B", False),
        ("LegacyExchangeDN", "S", f"/o={ORGANIZATION}/ou=Exchange Administrative Group "
         f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={mb.guid.replace('-', '')[:32]}-{mb.alias}"),
        ("MaxSendSize", "SIZE", mb.max_send_size),
        ("MaxReceiveSize", "SIZE", None),
        ("PrimarySmtpAddress", "S", mb.smtp),
        ("RecipientType", "S", "UserMailbox"),
        ("RecipientTypeDetails", "S", mb.recipient_type_details),
        ("WindowsEmailAddress", "S", mb.smtp),
        ("OrganizationalUnit", "S", mb.ou),
        ("AdminDisplayName", "S", None),
        ("ExchangeVersion", "S", "0.20 (15.0.0.0)"),
        ("Name", "S", mb.name),
        ("DistinguishedName", "S", mb.distinguished_name),
        ("Identity", "S", identity),
        ("Guid", "G", mb.guid),
        ("ObjectCategory", "S", f"{DOMAIN}/Configuration/Schema/Person"),
        ("ObjectClass", "MV:StringCollection", ["top", "person", "organizationalPerson", "user"]),
        *_ad_object_tail(mb.when_changed, mb.when_created, identity),
    ]


def cas_mailbox_props(mb: MailboxEntry) -> list[Prop]:
    """Get-CASMailbox's properties for one mailbox."""
    identity = mb.identity
    return [
        ("EmailAddresses", "MV:ProxyAddressCollection", [f"SMTP:{mb.smtp}"]),
        ("LegacyExchangeDN", "S", f"/o={ORGANIZATION}/ou=Exchange Administrative Group "
         f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={mb.guid.replace('-', '')[:32]}-{mb.alias}"),
        ("LinkedMasterAccount", "S", None),
        ("PrimarySmtpAddress", "S", mb.smtp),
        ("SamAccountName", "S", mb.sam),
        ("ServerLegacyDN", "S", f"/o={ORGANIZATION}/ou=Exchange Administrative Group "
         f"(FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn={mb.server}"),
        ("ServerName", "S", mb.server.lower()),
        ("DisplayName", "S", mb.display_name),
        ("ActiveSyncAllowedDeviceIDs", "MV:StringCollection", []),
        ("ActiveSyncBlockedDeviceIDs", "MV:StringCollection", []),
        ("ActiveSyncMailboxPolicy", "S", "Default"),
        ("ActiveSyncMailboxPolicyIsDefaulted", "B", True),
        ("ActiveSyncDebugLogging", "B", False),
        ("ActiveSyncEnabled", "B", mb.kind != "room"),
        ("HasActiveSyncDevicePartnership", "B", bool(mb.devices)),
        ("OwaMailboxPolicy", "S", None),
        ("OWAEnabled", "B", True),
        ("OWAforDevicesEnabled", "B", True),
        ("EwsEnabled", "B", None),
        ("MAPIEnabled", "B", True),
        ("PopEnabled", "B", False),
        ("ImapEnabled", "B", False),
        ("Name", "S", mb.name),
        ("DistinguishedName", "S", mb.distinguished_name),
        ("Identity", "S", identity),
        ("Guid", "G", mb.guid),
        *_ad_object_tail(mb.when_changed, mb.when_created, identity),
    ]


def device_statistics_props(device: DeviceEntry) -> list[Prop]:
    """Get-MobileDeviceStatistics (MobileDeviceConfiguration) properties, declaration order."""
    return [
        ("FirstSyncTime", "DTZ", device.first_sync),
        ("LastPolicyUpdateTime", "DTZ", device.last_policy_update),
        ("LastSyncAttemptTime", "DTZ", device.last_attempt),
        ("LastSuccessSync", "DTZ", device.last_success),
        ("DeviceType", "S", device.device_type),
        ("DeviceID", "S", device.device_id),
        ("DeviceUserAgent", "S", device.user_agent),
        ("DeviceWipeSentTime", "DTZ", device.wipe_sent),
        ("DeviceWipeRequestTime", "DTZ", device.wipe_requested),
        ("DeviceWipeAckTime", "DTZ", device.wipe_ack),
        ("LastPingHeartbeat", "U32", device.heartbeat),
        ("RecoveryPassword", "S", "********"),
        ("DeviceModel", "S", device.model),
        ("DeviceImei", "S", device.imei),
        ("DeviceFriendlyName", "S", device.friendly_name),
        ("DeviceOS", "S", device.os),
        ("DeviceOSLanguage", "S", device.os_language),
        ("DevicePhoneNumber", "S", device.phone),
        ("MailboxLogReport", "S", None),
        ("DeviceEnableOutboundSMS", "B", False),
        ("DeviceMobileOperator", "S", device.operator),
        ("Identity", "S", device.identity),
        ("Guid", "G", device.guid),
        ("IsRemoteWipeSupported", "B", device.client_type == "EAS"),
        ("Status", "S", device.status),
        ("StatusNote", "S", None),
        ("DeviceAccessState", "S", device.access_state),
        ("DeviceAccessStateReason", "S", device.access_reason),
        ("DeviceAccessControlRule", "S", None),
        ("DevicePolicyApplied", "S", "Default"),
        ("DevicePolicyApplicationStatus", "S",
         "AppliedInFull" if device.last_success else "Unknown"),
        ("LastDeviceWipeRequestor", "S", device.wipe_requestor),
        ("ClientVersion", "S", device.client_version),
        ("NumberOfFoldersSynced", "I32", device.folders),
        ("SyncStateUpgradeTime", "DTZ", None),
        ("ClientType", "S", device.client_type),
        ("AccountOnlyDeviceWipeSentTime", "DTZ", None),
        ("AccountOnlyDeviceWipeRequestTime", "DTZ", None),
        ("AccountOnlyDeviceWipeAckTime", "DTZ", None),
        ("LastAccountOnlyDeviceWipeRequestor", "S", None),
        ("IsValid", "B", True),
        ("ObjectState", "S", "Unchanged"),
    ]


def mobile_device_props(device: DeviceEntry) -> list[Prop]:
    """Get-MobileDevice (MobileDevice) properties."""
    identity = device.identity
    created = device.first_sync.replace(microsecond=0)
    return [
        ("FriendlyName", "S", device.friendly_name),
        ("DeviceId", "S", device.device_id),
        ("DeviceImei", "S", device.imei),
        ("DeviceMobileOperator", "S", device.operator),
        ("DeviceOS", "S", device.os),
        ("DeviceOSLanguage", "S", device.os_language),
        ("DeviceTelephoneNumber", "S", device.phone),
        ("DeviceType", "S", device.device_type),
        ("DeviceUserAgent", "S", device.user_agent),
        ("DeviceModel", "S", device.model),
        ("FirstSyncTime", "DTZ", device.first_sync),
        ("UserDisplayName", "S", device.mailbox.identity),
        ("DeviceAccessState", "S", device.access_state),
        ("DeviceAccessStateReason", "S", device.access_reason),
        ("DeviceAccessControlRule", "S", None),
        ("ClientVersion", "S", device.client_version),
        ("ClientType", "S", device.client_type),
        ("IsManaged", "B", False),
        ("IsCompliant", "B", False),
        ("IsDisabled", "B", False),
        ("AdminDisplayName", "S", None),
        ("ExchangeVersion", "S", "0.10 (14.0.100.0)"),
        ("Name", "S", device.name),
        ("DistinguishedName", "S", device.distinguished_name),
        ("Identity", "S", identity),
        ("Guid", "G", device.guid),
        ("ObjectCategory", "S", f"{DOMAIN}/Configuration/Schema/ms-Exch-Active-Sync-Device"),
        ("ObjectClass", "MV:StringCollection", ["top", "msExchActiveSyncDevice"]),
        *_ad_object_tail(device.when_changed, created, identity),
    ]


__all__ = [
    "DeviceEntry",
    "MailboxEntry",
    "Organisation",
    "REFERENCE_BASE",
    "cas_mailbox_props",
    "device_statistics_props",
    "mailbox_props",
    "mobile_device_props",
]
