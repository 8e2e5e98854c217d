"""Drawing the sandbox organisation from its seed: mailboxes, names, devices, sync times,
and (over time) how it changes: the parts of Organisation that use the random draws."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bridge.sandbox.entries import DeviceEntry, MailboxEntry
from bridge.sandbox.seed_data import (
    _ACCENTED_FIRST,
    _ACCENTED_LAST,
    _DATABASES,
    _IOS_BUILDS,
    _IPAD_MODELS,
    _IPHONE_MODELS,
    _KIND_TABLE,
    _LANGUAGES,
    _LATIN_FIRST,
    _LATIN_LAST,
    _NON_LATIN,
    _OFFICES,
    _OPERATORS,
    _PIXEL_MODELS,
    _ROOM_NAMES,
    _SAMSUNG_MODELS,
    _SERIAL_CHARS,
    _SHARED_NAMES,
    _WINDOWS_TABLE,
    DOMAIN,
    SERVERS,
    _android_os,
    _ascii,
    _ios_os,
    _pick,
    _rr,
    _unique,
)


def _object_name(online: bool, device: DeviceEntry, online_name: str) -> str:
    """The partnership's AD name: Exchange Online's ``REST§Outlook§<id>``-style names
    with the knob, else the on-premises ``DeviceType§DeviceId``."""
    return online_name if online else f"{device.device_type}§{device.device_id}"


class _Generation:
    """Creating the organisation (a part of Organisation, which sets these attributes)."""

    online_client_types: bool
    reference_time: datetime
    seed: int
    generation: int
    _mailboxes: list[MailboxEntry]
    _records: Any

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
            self._set_client_type(device, "Outlook" if kind == "outlook_native" else "REST")
            device.client_version = "1.0"
            prefix = "REST§Outlook" if kind == "outlook_rest" else "Outlook§Outlook"
            online_name = f"{prefix}§{device.device_id}"
            device.name = _object_name(self.online_client_types, device, online_name)
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
            self._set_client_type(device, "EAS")
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
            self._set_client_type(device, "EAS")
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
            self._set_client_type(device, "EAS")
            device.client_version = "16.1"
            device.name = f"{device.device_type}§{device.device_id}"
        else:  # windows_mail: Windows Mail/Calendar (UniversalOutlook, "Hx")
            device.device_id = f"{rng.getrandbits(128):032X}"
            device.device_type = "Outlook"
            device.model = "Windows Mail"
            device.os = f"Windows {_pick(rng, *_WINDOWS_TABLE)}"
            device.user_agent = "Outlook-WindowsMail/16005.14326.22342.0"
            self._set_client_type(device, "UniversalOutlook")
            device.client_version = "1.0"
            online_name = f"Hx§Outlook§{device.device_id}"
            device.name = _object_name(self.online_client_types, device, online_name)
        self._set_sync_times(rng, device, now, fresh)
        return device

    def _set_client_type(self, device: DeviceEntry, technology: str) -> None:
        device.sync_technology = technology
        # On-premises code knows EAS and MOWA only; REST, Outlook and UniversalOutlook are
        # Exchange Online's (unverified on-premises): reported only with the knob.
        device.client_type = technology if self.online_client_types else "EAS"

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
        if device.last_success is None and device.sync_technology in ("Outlook", "REST"):
            device.last_attempt = device.first_sync


class _Ageing(_Generation):
    """Moving the organisation forward in time (a part of Organisation)."""

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
            if device.sync_technology == "REST" and chance(0.25):
                # moved to the native Microsoft sync technology
                self._set_client_type(device, "Outlook")
            elif device.sync_technology == "Outlook" and chance(0.005):
                self._set_client_type(device, "REST")
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
