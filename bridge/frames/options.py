"""ReportOptions: what the report includes (devices, recipient types, stale filter) and how
it judges staleness."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.frames.columns import DEFAULT_STALE_THRESHOLDS, NEVER, OUTLOOK_MOBILE_MODEL

#: the most days a threshold may have: a century, past any partnership's age
MAX_DAYS = 36_500


@dataclass(frozen=True)
class ReportOptions:
    """What the report includes and how it judges staleness.

    The default is the classic report: user mailboxes, Outlook for iOS and Android.
    ``stale_days`` keeps only devices not synced for at least that many days (or
    never); ``stale_thresholds`` are the StaleBucket edges, the first one also the
    line past which a device counts as stale.
    """

    all_devices: bool = False
    recipient_types: tuple[str, ...] = ("UserMailbox",)
    device_model: str = OUTLOOK_MOBILE_MODEL
    stale_days: int | None = None
    stale_thresholds: tuple[int, ...] = DEFAULT_STALE_THRESHOLDS
    include_identifiers: bool = False
    cleanup_days: int | None = None  # mark what a cleanup script would remove (None: no script)

    def __post_init__(self) -> None:
        thresholds = self.stale_thresholds
        if not thresholds or any(not 1 <= t <= MAX_DAYS for t in thresholds) or list(
            thresholds
        ) != sorted(set(thresholds)):
            raise ValueError(
                f"stale thresholds must be increasing whole days from 1 to {MAX_DAYS}")
        if self.stale_days is not None and not 0 <= self.stale_days <= MAX_DAYS:
            raise ValueError(f"stale days must be from 0 to {MAX_DAYS}")
        if self.cleanup_days is not None and not 0 <= self.cleanup_days <= MAX_DAYS:
            raise ValueError(f"cleanup days must be from 0 to {MAX_DAYS}")
        if not self.recipient_types:
            raise ValueError("at least one recipient type is needed")

    @property
    def stale_after(self) -> int:
        """Days without a successful sync after which a device counts as stale."""
        return self.stale_thresholds[0]

    @property
    def bucket_labels(self) -> list[str]:
        """StaleBucket labels in order, freshest first, then Never."""
        edges = self.stale_thresholds
        labels = [f"0-{edges[0]} days"]
        labels += [f"{low + 1}-{high} days" for low, high in zip(edges, edges[1:], strict=False)]
        labels += [f"Over {edges[-1]} days", NEVER]
        return labels

    def describe(self) -> dict[str, str]:
        """The filters in words, for the Run sheet."""
        return {
            "Devices": "all devices" if self.all_devices else f"DeviceModel {self.device_model}",
            "Recipient types": ", ".join(self.recipient_types),
            "Stale filter": (f"only devices not synced for {self.stale_days}+ days or never"
                             if self.stale_days is not None else "none"),
            "Stale buckets (days)": ", ".join(str(t) for t in self.stale_thresholds),
            "Identifiers (IMEI, phone number)": (
                "included" if self.include_identifiers else "left out"),
            **({} if self.cleanup_days is None else {"Cleanup script": (
                f"removes partnerships without a successful sync for {self.cleanup_days}+ "
                f"days, or never synced and set up {self.cleanup_days}+ days ago")}),
        }
