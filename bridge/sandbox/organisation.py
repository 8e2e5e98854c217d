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

ClientType: Exchange's on-premises code (2013) knows EAS and MOWA only; REST and Outlook
(the Microsoft sync technology) are documented for Exchange Online, and whether an
on-premises server ever reports them is unverified. So by default Outlook for iOS and
Android and Windows Mail report ``EAS`` (as over hybrid modern auth, where the cloud
service syncs the on-premises mailbox with ActiveSync) under object names
``DeviceType§DeviceId``. ``online_client_types=True`` reports what Exchange Online does
(REST, Outlook, UniversalOutlook), for the report's REST-to-Outlook story (the demo).
The draws are the same either way: only ClientType and those object names differ.

Unverified against a real server (no public capture shows them), chosen to be plausible:
the object name of Outlook devices on the native sync (``Outlook§Outlook§<id>``; REST ones
are ``REST§Outlook§<id>`` as seen in Exchange Online), and Windows Mail's DeviceModel
("Windows Mail"), user agent and ClientType ("UniversalOutlook", after the cmdlets'
-UniversalOutlook switch; its object name ``Hx§Outlook§<id>`` is as seen online). A
partnership keeps its object name when its ClientType changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.sandbox.entries import DeviceEntry, MailboxEntry
from bridge.sandbox.exchange_types import to_record
from bridge.sandbox.generation import _Ageing
from bridge.sandbox.seed_data import (
    DOMAIN,
    DOMAIN_CONTROLLER,
    EMPTY_GUID,
    ORGANIZATION,
    REFERENCE_BASE,
    SERVER_OFFSET,
    SERVERS,
    _rr,
)
from bridge.sandbox.shapes import (
    cas_mailbox_props,
    device_statistics_props,
    mailbox_props,
    masked_phone_number,
    mobile_device_props,
)

if TYPE_CHECKING:
    import pandas as pd


class Organisation(_Ageing):
    """A deterministic synthetic organisation; see the module docstring.

    Attributes: ``reference_time`` (its "now", tz-aware), ``seed``, ``size``, ``domain``,
    ``organization`` (the name a report shows), ``domain_controller``, ``generation``
    (how many times :meth:`advance` ran). Ground truth: :attr:`mailboxes`,
    :attr:`devices`, :meth:`mailbox_frame`, :meth:`device_frame`.
    """

    def __init__(
        self,
        mailboxes: int = 200,
        seed: int = 1,
        reference_time: datetime | None = None,
        *,
        online_client_types: bool = False,
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
        # report Exchange Online's ClientTypes (REST, Outlook): see the module docstring
        self.online_client_types = online_client_types
        rng = random.Random(seed)
        offset = timedelta(minutes=_rr(rng, 0, 600))
        self.reference_time = reference_time or (REFERENCE_BASE + offset)
        self._mailboxes: list[MailboxEntry] = []
        self._records: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        self._generate(rng, mailboxes)

    def __repr__(self) -> str:
        return (f"Organisation(mailboxes={self.size}, seed={self.seed}, "
                f"reference_time={self.reference_time.isoformat()}, "
                f"online_client_types={self.online_client_types}, "
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

__all__ = [
    "DOMAIN",
    "DOMAIN_CONTROLLER",
    "DeviceEntry",
    "EMPTY_GUID",
    "MailboxEntry",
    "ORGANIZATION",
    "Organisation",
    "REFERENCE_BASE",
    "SERVERS",
    "SERVER_OFFSET",
    "cas_mailbox_props",
    "device_statistics_props",
    "mailbox_props",
    "masked_phone_number",
    "mobile_device_props",
]
