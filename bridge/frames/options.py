"""ReportOptions: what the report includes (devices, recipient types, stale filter) and how
it judges staleness."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.frames.columns import DEFAULT_STALE_THRESHOLDS, NEVER, OUTLOOK_MOBILE_MODEL


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

    def __post_init__(self) -> None:
        thresholds = self.stale_thresholds
        if not thresholds or any(t < 1 for t in thresholds) or list(thresholds) != sorted(
            set(thresholds)
        ):
            raise ValueError("stale thresholds must be increasing whole days of at least 1")
        if self.stale_days is not None and self.stale_days < 0:
            raise ValueError("stale days must be 0 or more")
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
        }
