"""The demo's story: a sandbox organisation that changes week by week, deterministically.

``psbridge demo`` records the weeks before "today" in its history and then collects
today's state live, so its first workbook already has a Trend that moves and a Changes
sheet with every kind of change. The story uses only the organisation's public parts: its
:meth:`~bridge.sandbox.organisation.Organisation.advance` (a week of ordinary ageing) and
the attributes of its mailbox and device entries, on top of which it tells what admins
watch in 2026:

- Exchange ActiveSync clients below protocol 16.1: Gmail on EAS 16.0 and Samsung Email
  on 14.1 (the organisation's own) or 12.1; week by week some update to 16.1, others stop
  syncing and go stale;
- Outlook for iOS and Android moving from REST to the native sync (advance does that);
- in the last week, at least one of every change history knows: a new partnership, a
  removed one, a protocol switch, one that went stale, one reset (never synced again), one
  back in sync, an OS upgrade, an OS change (a downgrade), an EAS client moved to 16.1.

Same ``(mailboxes, seed, weeks)``, same story, whatever the wall clock says.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from bridge.sandbox.organisation import DeviceEntry, MailboxEntry, Organisation

#: Weeks of history the demo records before today's run (so weeks + 1 runs in its Trend).
STORY_WEEKS = 6
#: The EAS protocol Exchange Online requires since 1 March 2026.
CURRENT_EAS = "16.1"
_ACTIVE = timedelta(days=14)  # what advance() keeps syncing
_STALE = timedelta(days=30)  # the report's default first stale threshold
_FREEZE_AHEAD = 5  # weeks before the end at which a device stops syncing to go stale at the end


def story(mailboxes: int = 200, seed: int = 1, weeks: int = STORY_WEEKS
          ) -> Iterator[Organisation]:
    """The organisation at week 0, 1, ..., ``weeks`` (the same object, changed in between).

    Read each state before asking for the next one: the entries change in place.
    """
    if weeks < 1:
        raise ValueError("the story needs at least one week")
    # Exchange Online's ClientTypes: the story is REST -> Outlook beside the EAS clients
    org = Organisation(mailboxes=mailboxes, seed=seed, online_client_types=True)
    _older_eas_clients(org, random.Random(f"story:{seed}:start"))
    frozen: dict[int, tuple[DeviceEntry, datetime]] = {}
    yield org
    for week in range(1, weeks + 1):
        before = org.reference_time
        org.advance(7, seed=week)
        now = org.reference_time
        rng = random.Random(f"story:{seed}:{week}")
        for device, last in list(frozen.values()):
            _set_last_sync(device, last)  # stopped: advance() must not sync it again
        _eas_week(org, rng, before, now, frozen)
        if week == max(1, weeks - _FREEZE_AHEAD):
            _stop_one(org, rng, now, frozen)
        if week == weeks:
            _last_week(org, rng, before, now, frozen)
        yield org


def demo_organisation(mailboxes: int = 200, seed: int = 1, weeks: int = STORY_WEEKS
                      ) -> Organisation:
    """The story's last state: the organisation the demo serves and reports on today."""
    *_earlier, final = story(mailboxes, seed, weeks)
    return final


# -- changing entries -----------------------------------------------------------------------


def _changed(device: DeviceEntry) -> None:
    """Forget what the sandbox serialized for the device (and its mailbox's partnership flag)."""
    device.wire.clear()
    device.mailbox.wire.clear()


def _set_last_sync(device: DeviceEntry, moment: datetime | None) -> None:
    device.last_success = moment
    base = moment or device.first_sync
    device.last_attempt = max(device.last_attempt, base) if moment else base
    _changed(device)


def _user_devices(org: Organisation, test: Callable[[DeviceEntry], bool]) -> list[DeviceEntry]:
    return [device for mailbox in org.mailbox_entries if mailbox.kind == "user"
            for device in mailbox.devices if test(device)]


def _is_old_eas(device: DeviceEntry) -> bool:
    return device.client_type == "EAS" and device.client_version != CURRENT_EAS


def _active(device: DeviceEntry, now: datetime) -> bool:
    return (device.access_state == "Allowed" and device.last_success is not None
            and now - device.last_success < _ACTIVE)


# -- the weeks -------------------------------------------------------------------------------


def _older_eas_clients(org: Organisation, rng: random.Random) -> None:
    """Week 0: Gmail's EAS client still speaks 16.0 on most phones; a few Samsungs 12.1."""
    for device in org.iter_devices():
        if device.kind == "gmail_eas" and rng.random() < 0.7:
            device.client_version = "16.0"
            _changed(device)
        elif device.kind == "samsung_eas" and device.client_version == "14.1" and (
                rng.random() < 0.25):
            device.client_version = "12.1"
            _changed(device)


def _eas_week(org: Organisation, rng: random.Random, before: datetime, now: datetime,
              frozen: dict[int, tuple[DeviceEntry, datetime]]) -> None:
    """Some old EAS clients update to 16.1 (they must sync to tell), some stop syncing."""
    for device in _user_devices(org, _is_old_eas):
        if id(device) in frozen or not _active(device, now):
            continue
        roll = rng.random()
        if roll < 0.15:
            device.client_version = CURRENT_EAS
            device.when_changed = now.replace(microsecond=0) - timedelta(hours=2)
            _changed(device)
        elif roll < 0.22:  # the user gave up on it: no sync since a day into the week
            last = before + timedelta(days=1, seconds=rng.randrange(86_400))
            _set_last_sync(device, last)
            frozen[id(device)] = (device, last)


def _stop_one(org: Organisation, rng: random.Random, now: datetime,
              frozen: dict[int, tuple[DeviceEntry, datetime]]) -> None:
    """One Outlook device stops syncing now, to go stale in the last week exactly."""
    candidates = _user_devices(org, lambda d: d.client_type in ("Outlook", "REST")
                               and _active(d, now) and id(d) not in frozen)
    if candidates:
        device = candidates[rng.randrange(len(candidates))]
        last = now - timedelta(hours=12)
        _set_last_sync(device, last)
        frozen[id(device)] = (device, last)


def _last_week(org: Organisation, rng: random.Random, before: datetime, now: datetime,
               frozen: dict[int, tuple[DeviceEntry, datetime]]) -> None:
    """Make sure the last week holds one change of every kind (where the organisation has
    a candidate: a tiny one may not)."""

    def pick(test: Callable[[DeviceEntry], bool]) -> DeviceEntry | None:
        found = _user_devices(org, lambda d: id(d) not in frozen and id(d) not in touched
                              and test(d))
        if not found:
            return None
        chosen = found[rng.randrange(len(found))]
        touched.add(id(chosen))
        return chosen

    touched: set[int] = set()
    outlook = ("Outlook", "REST")
    # an old EAS client updated to 16.1
    device = pick(lambda d: _is_old_eas(d) and _active(d, now))
    if device is not None:
        device.client_version = CURRENT_EAS
        _changed(device)
    # REST -> native Outlook sync
    device = pick(lambda d: d.client_type == "REST" and _active(d, now))
    if device is not None:
        device.client_type = "Outlook"
        _changed(device)
    # the app reinstalled: the partnership has not synced since
    device = pick(lambda d: d.client_type in outlook and _active(d, now))
    if device is not None:
        device.first_sync = now - timedelta(hours=3)
        device.folders = 0
        _set_last_sync(device, None)
    # an old device picked up again
    device = pick(lambda d: d.access_state == "Allowed" and d.last_success is not None
                  and before - d.last_success > _STALE)
    if device is not None:
        _set_last_sync(device, now - timedelta(hours=5))
    # an iOS upgrade, and a phone replaced by an older one under warranty (same partnership)
    device = pick(lambda d: d.os.startswith("iOS 17.") and _active(d, now))
    if device is not None:
        device.os = "iOS 18.5 22F76"
        _changed(device)
    device = pick(lambda d: d.os in ("Android 14", "Android 15") and _active(d, now))
    if device is not None:
        device.os = f"Android {int(device.os.split()[1]) - 1}"
        _changed(device)
    # a stale partnership removed by its user
    device = pick(lambda d: d.last_success is not None and before - d.last_success > _STALE * 3)
    if device is not None:
        device.mailbox.devices.remove(device)
        device.mailbox.wire.clear()
    # a new phone: the same app on a second device of a user with room for one
    source = pick(lambda d: d.client_type == "Outlook" and len(d.mailbox.devices) < 4)
    if source is not None:
        _add_partnership(source, rng, now)


def _add_partnership(source: DeviceEntry, rng: random.Random, now: datetime) -> None:
    """A new Outlook partnership under ``source``'s mailbox, set up this week."""
    mailbox: MailboxEntry = source.mailbox
    twin = DeviceEntry(mailbox)
    for attr in DeviceEntry.__slots__:
        if attr not in ("mailbox", "wire"):
            setattr(twin, attr, getattr(source, attr))
    twin.device_id = f"{rng.getrandbits(128):032x}"
    twin.guid_bits = rng.getrandbits(128)
    twin.name = f"Outlook§Outlook§{twin.device_id}"
    twin.first_sync = now - timedelta(days=2, seconds=rng.randrange(86_400))
    twin.last_policy_update = twin.first_sync + timedelta(seconds=20)
    twin.when_changed = twin.last_policy_update.replace(microsecond=0)
    twin.last_success = now - timedelta(seconds=rng.randrange(60, 86_400))
    twin.last_attempt = twin.last_success
    mailbox.devices.append(twin)
    mailbox.wire.clear()


__all__ = ["CURRENT_EAS", "STORY_WEEKS", "demo_organisation", "story"]
