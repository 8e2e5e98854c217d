"""A sandbox organisation whose devices have known EAS versions and ages (tests of issue 15)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bridge.sandbox.organisation import DeviceEntry, Organisation

OUTLOOK = "Outlook for iOS and Android"
# Names PowerShell must keep literal: quotes of every kind, $, backquote, non-ASCII.
TRICKY_NAMES = (
    "Zoë O'Brien",
    "Pay $env:USERNAME `$(Remove-Item x)",
    "Renée \u2018Quoted\u2019 \u201aLow\u201b Müller",
    "王伟 ''",
)


@dataclass(frozen=True)
class Spec:
    """One device: what it runs, and how many days ago it last synced / was set up."""

    client_type: str
    client_version: str
    model: str
    last_sync_days: float | None  # None: never synced
    first_sync_days: float
    flagged: bool  # EAS below 16.1
    removed: bool  # by a cleanup script at 30 days


SPECS = (
    Spec("EAS", "14.1", "SM-G991B", 2, 700, True, False),
    Spec("EAS", "16.0", "Pixel 8", 45, 500, True, True),
    Spec("EAS", "16.1", "iPhone15C4", 1, 300, False, False),
    Spec("EAS", "12.1", "SM-A536B", None, 40, True, True),
    Spec("EAS", "14.1", "SM-G991B", 29.5, 600, True, False),
    Spec("REST", "1.0", OUTLOOK, 400, 900, False, True),
    Spec("Outlook", "1.0", OUTLOOK, None, 3, False, False),
    Spec("EAS", "14.1", OUTLOOK, 1, 200, False, False),  # a stray ClientType: never flagged
    Spec("EAS", "", "iPad14C5", 5, 100, False, False),  # no version: unknown, not flagged
    Spec("EAS", "16.1", "SM-S911B", 30.05, 800, False, True),
    Spec("Outlook", "1.0", OUTLOOK, 0.5, 30, False, False),
)


def known_organisation() -> tuple[Organisation, list[DeviceEntry]]:
    """Organisation(20, seed 1) whose user devices are exactly SPECS, one per mailbox, on
    mailboxes renamed to TRICKY_NAMES first. Returns it and the devices in SPECS order."""
    org = Organisation(mailboxes=20, seed=1)
    pool = list(org.iter_devices())
    users = [m for m in org.mailbox_entries if m.kind == "user"]
    for mailbox in org.mailbox_entries:
        mailbox.devices = []
        mailbox.wire.clear()
    for mailbox, name in zip(users, TRICKY_NAMES, strict=False):
        mailbox.name = mailbox.display_name = name
    now = org.reference_time
    devices = []
    for spec, device, mailbox in zip(SPECS, pool, users, strict=False):
        device.mailbox = mailbox
        device.client_type, device.client_version = spec.client_type, spec.client_version
        device.model, device.friendly_name = spec.model, None
        device.access_state, device.access_reason = "Allowed", "Global"
        device.first_sync = now - timedelta(days=spec.first_sync_days)
        device.last_success = (None if spec.last_sync_days is None
                               else now - timedelta(days=spec.last_sync_days))
        device.last_attempt = device.last_success or device.first_sync
        device.wire.clear()
        mailbox.devices.append(device)
        devices.append(device)
    assert len(devices) == len(SPECS)
    return org, devices
