"""What the mobile report must print for a sandbox organisation, computed from its ground truth."""

from __future__ import annotations

from bridge.eas import parse_version
from bridge.frames import OUTLOOK_MOBILE_MODEL
from bridge.sandbox.organisation import DeviceEntry, MailboxEntry, Organisation


def classic_users(org: Organisation) -> list[MailboxEntry]:
    """The user mailboxes the classic report checks."""
    return [m for m in org.mailbox_entries if m.kind == "user"]


def outlook_devices(org: Organisation) -> list[DeviceEntry]:
    """Their Outlook for iOS and Android partnerships."""
    return [d for m in classic_users(org) for d in m.devices if d.model == OUTLOOK_MOBILE_MODEL]


def figure_lines(org: Organisation, *, all_devices: bool = False) -> list[str]:
    """The key-figure lines `mobile` and `demo` print after 'Report written to ...': of the
    classic report, or with ``all_devices`` of every device (which adds EAS below 16.1)."""
    users = classic_users(org)
    devices = [d for m in users for d in m.devices] if all_devices else outlook_devices(org)
    owners = {d.mailbox.identity for d in devices}
    stale = sum(d.last_success is not None
                and (org.reference_time - d.last_success).total_seconds() // 86_400 > 30
                for d in devices)
    native = sum(d.client_type == "Outlook" for d in devices) / len(devices)
    lines = [
        f"  Mailboxes checked       {len(users):>8,}",
        f"  Users with devices      {len(owners):>8,}",
        f"  Users without devices   {len(users) - len(owners):>8,}",
        f"  Devices                 {len(devices):>8,}",
        f"  On Outlook native sync  {native:>8.1%}",
        f"  Still on REST (legacy)  {sum(d.client_type == 'REST' for d in devices):>8,}",
        f"  Stale (over 30 days)    {stale:>8,}",
        f"  Never synced            {sum(d.last_success is None for d in devices):>8,}",
    ]
    if all_devices:
        old_eas = sum(d.client_type == "EAS" and d.model != OUTLOOK_MOBILE_MODEL
                      and (parse_version(d.client_version) or (99,)) < (16, 1)
                      for d in devices)
        lines.append(f"  EAS below 16.1          {old_eas:>8,}")
    return lines
