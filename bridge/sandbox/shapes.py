"""Exchange's objects as property lists in Exchange's order, built from the organisation's entries.

Get-Mailbox (the whole set of a real Exchange 2016 capture), Get-CASMailbox,
Get-MobileDevice, Get-MobileDeviceStatistics and Get-OrganizationConfig (the corpus's
Exchange 2019 export). Values Exchange computes that the organisation does not model
are the defaults of a fresh mailbox or organisation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.sandbox.entries import DeviceEntry, MailboxEntry
from bridge.sandbox.exchange_types import Prop
from bridge.sandbox.seed_data import (
    _SERVER_TZ,
    DOMAIN,
    DOMAIN_CONTROLLER,
    EMPTY_GUID,
    ORGANIZATION,
)


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


_AUDIT_ADMIN = ["Update", "Move", "MoveToDeletedItems", "SoftDelete", "HardDelete",
                "FolderBind", "SendAs", "SendOnBehalf", "Create"]
_AUDIT_DELEGATE = ["Update", "SoftDelete", "HardDelete", "SendAs", "Create"]
_ADDRESS_LISTS = ["\\Mailboxes(VLV)", "\\All Mailboxes(VLV)", "\\All Recipients(VLV)",
                  "\\Default Global Address List", "\\All Users"]
#: the Default e-mail address policy's well-known id, and this organisation's policy
_POLICIES = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"policy.{DOMAIN}")),
             "{26491cfc-9e50-4857-861b-0cb8df22b5d7}"]
_EXCHANGE_2019_CU14 = "Version 15.2 (Build 1544.4)"  # AdminDisplayVersion (unverified build)
_GB = 1 << 30
_NIL = ("S", None)


def _nil(*names: str) -> list[Prop]:
    return [(name, *_NIL) for name in names]


def _empty(kind: str, *names: str) -> list[Prop]:
    return [(name, f"MV:{kind}", []) for name in names]


def mailbox_props(mb: MailboxEntry) -> list[Prop]:
    """Get-Mailbox's properties for one mailbox: every property of a real Exchange 2016
    capture, in its order (IsValid right after Identity, no AdminDisplayName)."""
    room = mb.kind == "room"
    shared = mb.kind == "shared"
    email_addresses = [f"SMTP:{mb.smtp}", f"smtp:{mb.alias}@contoso.mail.onmicrosoft.com"]
    if mb.kind == "user":
        email_addresses.append(f"X500:/o={ORGANIZATION}/ou=Exchange Administrative Group "
                               f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={mb.alias}")
    identity = mb.identity
    quota = mb.prohibit_send_quota
    database_guid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{mb.database}.{DOMAIN}")
    return [
        ("Database", "S", mb.database),
        *_nil("MailboxProvisioningConstraint", "MailboxRegion", "MailboxRegionLastUpdateTime"),
        ("MessageCopyForSentAsEnabled", "B", False),
        ("MessageCopyForSendOnBehalfEnabled", "B", False),
        ("MailboxProvisioningPreferences", "MV:ProvisioningPreferences", []),
        ("UseDatabaseRetentionDefaults", "B", True),
        ("RetainDeletedItemsUntilBackup", "B", False),
        ("DeliverToMailboxAndForward", "B", False),
        ("IsExcludedFromServingHierarchy", "B", False),
        ("IsHierarchyReady", "B", True),
        ("IsHierarchySyncEnabled", "B", True),
        ("HasSnackyAppData", "B", False),
        ("LitigationHoldEnabled", "B", False),
        ("SingleItemRecoveryEnabled", "B", False),
        ("RetentionHoldEnabled", "B", False),
        *_nil("EndDateForRetentionHold", "StartDateForRetentionHold"),
        ("RetentionComment", "S", ""),
        ("RetentionUrl", "S", ""),
        *_nil("LitigationHoldDate"),
        ("LitigationHoldOwner", "S", ""),
        ("ElcProcessingDisabled", "B", False),
        ("ComplianceTagHoldApplied", "B", False),
        ("WasInactiveMailbox", "B", False),
        ("DelayHoldApplied", "B", False),
        *_nil("InactiveMailboxRetireTime", "OrphanSoftDeleteTrackingTime"),
        ("LitigationHoldDuration", "UNLIMITED", None),
        *_nil("ManagedFolderMailboxPolicy", "RetentionPolicy", "AddressBookPolicy"),
        ("CalendarRepairDisabled", "B", False),
        ("ExchangeGuid", "G", mb.exchange_guid),
        *_nil("MailboxContainerGuid", "UnifiedMailbox"),
        ("MailboxLocations", "MV:MailboxLocations",
         [f"1;{mb.exchange_guid};Primary;{DOMAIN};{database_guid}"]),
        ("AggregatedMailboxGuids", "MV:GuidCollection", []),
        ("ExchangeSecurityDescriptor", "S", "System.Security.AccessControl.RawSecurityDescriptor"),
        ("ExchangeUserAccountControl", "S", "None"),
        ("AdminDisplayVersion", "S", _EXCHANGE_2019_CU14),
        ("MessageTrackingReadStatusEnabled", "B", True),
        ("ExternalOofOptions", "S", "External"),
        *_nil("ForwardingAddress", "ForwardingSmtpAddress"),
        ("RetainDeletedItemsFor", "S", "14.00:00:00"),
        ("IsMailboxEnabled", "B", True),
        ("Languages", "MV:CultureInfoCollection", []),
        *_nil("OfflineAddressBook"),
        ("ProhibitSendQuota", "SIZE", quota),
        ("ProhibitSendReceiveQuota", "SIZE", None if quota is None else quota * 11 // 10),
        ("RecoverableItemsQuota", "SIZE", 30 * _GB),
        ("RecoverableItemsWarningQuota", "SIZE", 20 * _GB),
        ("CalendarLoggingQuota", "SIZE", 6 * _GB),
        ("DowngradeHighPriorityMessagesEnabled", "B", False),
        ("ProtocolSettings", "MV:StringCollection", []),
        ("RecipientLimits", "UNLIMITED", None),
        ("ImListMigrationCompleted", "B", False),
        *_nil("SiloName"),
        ("IsResource", "B", room),
        ("IsLinked", "B", False),
        ("IsShared", "B", shared),
        ("IsRootPublicFolderMailbox", "B", False),
        ("LinkedMasterAccount", "S", ""),
        ("ResetPasswordOnNextLogon", "B", False),
        *_nil("ResourceCapacity"),
        ("ResourceCustom", "MV:StringCollection", []),
        ("ResourceType", "S", "Room" if room else None),
        *_nil("RoomMailboxAccountEnabled"),
        ("SamAccountName", "S", mb.sam),
        *_nil("SCLDeleteThreshold", "SCLDeleteEnabled", "SCLRejectThreshold", "SCLRejectEnabled",
              "SCLQuarantineThreshold", "SCLQuarantineEnabled", "SCLJunkThreshold",
              "SCLJunkEnabled"),
        ("AntispamBypassEnabled", "B", False),
        ("ServerLegacyDN", "S", f"/o={ORGANIZATION}/ou=Exchange Administrative Group "
         f"(FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn={mb.server}"),
        ("ServerName", "S", mb.server.lower()),
        ("UseDatabaseQuotaDefaults", "B", quota is None),
        ("IssueWarningQuota", "SIZE", None if quota is None else quota * 9 // 10),
        ("RulesQuota", "SIZE", 256 << 10),
        ("Office", "S", mb.office),
        ("UserPrincipalName", "S", mb.upn),
        ("UMEnabled", "B", False),
        *_nil("MaxSafeSenders", "MaxBlockedSenders", "NetID", "ReconciliationId"),
        ("WindowsLiveID", "S", ""),
        ("MicrosoftOnlineServicesID", "S", ""),
        *_nil("ThrottlingPolicy"),
        ("RoleAssignmentPolicy", "S", "Default Role Assignment Policy"),
        *_nil("DefaultPublicFolderMailbox", "EffectivePublicFolderMailbox"),
        ("SharingPolicy", "S", "Default Sharing Policy"),
        *_nil("RemoteAccountPolicy", "MailboxPlan", "ArchiveDatabase"),
        ("ArchiveGuid", "G", EMPTY_GUID),
        ("ArchiveName", "MV:StringCollection", []),
        ("JournalArchiveAddress", "S", ""),
        ("ArchiveQuota", "SIZE", 100 * _GB),
        ("ArchiveWarningQuota", "SIZE", 90 * _GB),
        *_nil("ArchiveDomain"),
        ("ArchiveStatus", "S", "None"),
        ("ArchiveState", "S", "None"),
        ("AutoExpandingArchiveEnabled", "B", False),
        ("DisabledMailboxLocations", "B", False),
        ("RemoteRecipientType", "S", "None"),
        *_nil("DisabledArchiveDatabase"),
        ("DisabledArchiveGuid", "G", EMPTY_GUID),
        *_nil("QueryBaseDN"),
        ("QueryBaseDNRestrictionEnabled", "B", False),
        *_nil("MailboxMoveTargetMDB", "MailboxMoveSourceMDB"),
        ("MailboxMoveFlags", "S", "None"),
        ("MailboxMoveRemoteHostName", "S", ""),
        ("MailboxMoveBatchName", "S", ""),
        ("MailboxMoveStatus", "S", "None"),
        ("MailboxRelease", "S", ""),
        ("ArchiveRelease", "S", ""),
        ("IsPersonToPersonTextMessagingEnabled", "B", False),
        ("IsMachineToPersonTextMessagingEnabled", "B", True),
        *_empty("ByteArrayCollection", "UserSMimeCertificate", "UserCertificate"),
        ("CalendarVersionStoreDisabled", "B", False),
        ("ImmutableId", "S", ""),
        ("PersistedCapabilities", "MV:CapabilityCollection", []),
        *_nil("SKUAssigned"),
        ("AuditEnabled", "B", False),
        ("AuditLogAgeLimit", "S", "90.00:00:00"),
        ("AuditAdmin", "MV:AuditOperations", _AUDIT_ADMIN),
        ("AuditDelegate", "MV:AuditOperations", _AUDIT_DELEGATE),
        ("AuditOwner", "MV:AuditOperations", []),
        ("WhenMailboxCreated", "DTL", _local(mb.when_created)),
        ("SourceAnchor", "S", ""),
        *_nil("UsageLocation"),
        ("IsSoftDeletedByRemove", "B", False),
        ("IsSoftDeletedByDisable", "B", False),
        ("IsInactiveMailbox", "B", False),
        ("IncludeInGarbageCollection", "B", False),
        *_nil("WhenSoftDeleted"),
        ("InPlaceHolds", "MV:StringCollection", []),
        ("GeneratedOfflineAddressBooks", "MV:ADObjectIdCollection", []),
        ("AccountDisabled", "B", shared or room),  # their AD accounts are disabled
        *_nil("StsRefreshTokensValidFrom", "DataEncryptionPolicy"),
        ("DisableThrottling", "B", False),
        ("Extensions", "MV:StringCollection", []),
        ("HasPicture", "B", False),
        ("HasSpokenName", "B", False),
        ("IsDirSynced", "B", False),
        *_empty("ADObjectIdCollection", "AcceptMessagesOnlyFrom",
                "AcceptMessagesOnlyFromDLMembers", "AcceptMessagesOnlyFromSendersOrMembers"),
        ("AddressListMembership", "MV:ADObjectIdCollection", _ADDRESS_LISTS),
        ("AdministrativeUnits", "MV:ADObjectIdCollection", []),
        ("Alias", "S", mb.alias),
        *_nil("ArbitrationMailbox"),
        ("BypassModerationFromSendersOrMembers", "MV:ADObjectIdCollection", []),
        ("OrganizationalUnit", "S", mb.ou),
        # sorted as text, as Exchange lists them: 1, 10..15, 2..9
        *[(f"CustomAttribute{n}", "S", "") for n in sorted(range(1, 16), key=str)],
        *_empty("StringCollection", *(f"ExtensionCustomAttribute{n}" for n in range(1, 6))),
        ("DisplayName", "S", mb.display_name),
        ("EmailAddresses", "MV:ProxyAddressCollection", email_addresses),
        ("GrantSendOnBehalfTo", "MV:ADObjectIdCollection", []),
        ("ExternalDirectoryObjectId", "S", ""),
        ("HiddenFromAddressListsEnabled", "B", False),
        *_nil("LastExchangeChangedTime"),
        ("LegacyExchangeDN", "S", f"/o={ORGANIZATION}/ou=Exchange Administrative Group "
         f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={mb.guid.replace('-', '')[:32]}-{mb.alias}"),
        ("MaxSendSize", "SIZE", mb.max_send_size),
        ("MaxReceiveSize", "SIZE", None),
        ("ModeratedBy", "MV:ADObjectIdCollection", []),
        ("ModerationEnabled", "B", False),
        ("PoliciesIncluded", "MV:StringCollection", _POLICIES),
        ("PoliciesExcluded", "MV:StringCollection", []),
        ("EmailAddressPolicyEnabled", "B", True),
        ("PrimarySmtpAddress", "S", mb.smtp),
        ("RecipientType", "S", "UserMailbox"),
        ("RecipientTypeDetails", "S", mb.recipient_type_details),
        *_empty("ADObjectIdCollection", "RejectMessagesFrom", "RejectMessagesFromDLMembers",
                "RejectMessagesFromSendersOrMembers"),
        ("RequireSenderAuthenticationEnabled", "B", False),
        ("SimpleDisplayName", "S", ""),
        ("SendModerationNotifications", "S", "Always"),
        ("UMDtmfMap", "MV:StringCollection", []),
        ("WindowsEmailAddress", "S", mb.smtp),
        *_nil("MailTip"),
        ("MailTipTranslations", "MV:StringCollection", []),
        ("Identity", "S", identity),
        ("IsValid", "B", True),
        ("ExchangeVersion", "S", "0.20 (15.0.0.0)"),
        ("Name", "S", mb.name),
        ("DistinguishedName", "S", mb.distinguished_name),
        ("Guid", "G", mb.guid),
        ("ObjectCategory", "S", f"{DOMAIN}/Configuration/Schema/Person"),
        ("ObjectClass", "MV:StringCollection", ["top", "person", "organizationalPerson", "user"]),
        ("WhenChanged", "DTL", _local(mb.when_changed)),
        ("WhenCreated", "DTL", _local(mb.when_created)),
        ("WhenChangedUTC", "DTZ", mb.when_changed),
        ("WhenCreatedUTC", "DTZ", mb.when_created),
        ("OrganizationId", "S", ""),
        ("Id", "S", identity),
        ("OriginatingServer", "S", DOMAIN_CONTROLLER),
        ("ObjectState", "S", "Unchanged"),
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


def masked_phone_number(number: str | None) -> str | None:
    """DevicePhoneNumber as Get-MobileDeviceStatistics shows it: every character but the
    last 4 becomes ``*`` (the server masks it)."""
    if not number:
        return number
    return "*" * max(0, len(number) - 4) + number[-4:]


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
        ("DevicePhoneNumber", "S", masked_phone_number(device.phone)),
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


#: each object shape's property builder and ToString
SHAPES: dict[str, tuple[Callable[[Any], list[Prop]], Callable[[Any], str]]] = {
    "Mailbox": (mailbox_props, lambda mb: mb.name),
    "CASMailbox": (cas_mailbox_props, lambda mb: mb.name),
    "MobileDevice": (mobile_device_props, lambda device: device.name),
    "MobileDeviceConfiguration": (
        device_statistics_props,
        lambda device: "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
    ),
}
