"""The report's columns: Exchange properties it reads and their kinds, the sheet's columns,
sync protocol names, and the patterns that read device identities and OS strings."""

from __future__ import annotations

from typing import Literal

from bridge import cleanup, eas

#: DeviceModel of Outlook for iOS and Android: the classic report's device filter.
OUTLOOK_MOBILE_MODEL = "Outlook for iOS and Android"
#: StaleBucket edges in days since the last successful sync (configurable per report).
DEFAULT_STALE_THRESHOLDS = (30, 90, 365)
NEVER = "Never"
UNKNOWN = "Unknown"

Kind = Literal["text", "datetime", "int", "bool", "list", "size"]

#: Get-Mailbox properties the report reads, with their kind.
MAILBOX_SCHEMA: dict[str, Kind] = {
    "Identity": "text",
    "Name": "text",
    "DisplayName": "text",
    "Alias": "text",
    "PrimarySmtpAddress": "text",
    "UserPrincipalName": "text",
    "RecipientTypeDetails": "text",
    "Guid": "text",
    "ExchangeGuid": "text",
    "DistinguishedName": "text",
    "WhenCreated": "datetime",
}

#: Get-MobileDeviceStatistics properties the report reads, with their kind
#: (plus QueriedMailbox, which bridge.exchange adds when it queried per mailbox).
DEVICE_SCHEMA: dict[str, Kind] = {
    "Identity": "text",
    "DistinguishedName": "text",
    "QueriedMailbox": "text",
    "Guid": "text",
    "DeviceId": "text",
    "DeviceType": "text",
    "DeviceModel": "text",
    "DeviceFriendlyName": "text",
    "DeviceOS": "text",
    "DeviceOSLanguage": "text",
    "DeviceUserAgent": "text",
    "DeviceImei": "text",
    "DevicePhoneNumber": "text",
    "DeviceMobileOperator": "text",
    "ClientType": "text",
    "ClientVersion": "text",
    "FirstSyncTime": "datetime",
    "LastSuccessSync": "datetime",
    "LastSyncAttemptTime": "datetime",
    "LastPolicyUpdateTime": "datetime",
    "DeviceAccessState": "text",
    "DeviceAccessStateReason": "text",
    "DevicePolicyApplicationStatus": "text",
    "Status": "text",
    "IsRemoteWipeSupported": "bool",
    "NumberOfFoldersSynced": "int",
}

#: Columns that identify a person's phone: left out unless asked for.
IDENTIFIER_COLUMNS = ("DeviceImei", "DevicePhoneNumber")

#: ClientType -> the SyncProtocol leadership reads; other values are kept as they are.
SYNC_PROTOCOLS = {
    "REST": "REST (legacy)",
    "OUTLOOK": "Outlook (native sync)",
    "EAS": "Exchange ActiveSync",
}
REST_PROTOCOL = SYNC_PROTOCOLS["REST"]
NATIVE_PROTOCOL = SYNC_PROTOCOLS["OUTLOOK"]

#: Columns of the Devices sheet (and of --format csv/parquet/json), classic ones first.
DEVICE_SHEET_COLUMNS: dict[str, str] = {
    # sheet column: column of Report.devices
    "User": "User",
    "Device": "Device",
    "OS": "DeviceOS",
    "SyncType": "ClientType",
    "LastSync": "LastSuccessSync",
    "PrimarySmtpAddress": "PrimarySmtpAddress",
    "UserPrincipalName": "UserPrincipalName",
    "DeviceModel": "DeviceModel",
    "DeviceType": "DeviceType",
    "ClientVersion": "ClientVersion",
    eas.VERSION_COLUMN: eas.VERSION_COLUMN,  # only when the scope includes EAS devices
    eas.FLAG_COLUMN: eas.FLAG_COLUMN,
    "FirstSync": "FirstSyncTime",
    "DaysSinceLastSync": "DaysSinceLastSync",
    "StaleBucket": "StaleBucket",
    cleanup.COLUMN: cleanup.COLUMN,  # only with a cleanup script
    "DeviceAccessState": "DeviceAccessState",
    "SyncProtocol": "SyncProtocol",
    "Platform": "Platform",
    "OSVersion": "OSVersion",
    "DeviceAccessStateReason": "DeviceAccessStateReason",
    "LastSyncAttempt": "LastSyncAttemptTime",
    "DeviceUserAgent": "DeviceUserAgent",
    "DeviceId": "DeviceId",
    "DeviceImei": "DeviceImei",
    "DevicePhoneNumber": "DevicePhoneNumber",
    "RecipientTypeDetails": "RecipientTypeDetails",
}

USERS_WITHOUT_DEVICES_COLUMNS = ["User", "PrimarySmtpAddress", "UserPrincipalName",
                                 "RecipientTypeDetails"]
ERROR_COLUMNS = ["Mailbox", "Command", "Category", "Message", "When"]

# "<mailbox>/ExchangeActiveSyncDevices/<device>" on-premises, "\" in Exchange Online.
_DEVICE_PARENT_TAIL = r"(?i)[\\/]ExchangeActiveSyncDevices[\\/].*$"
# "CN=<device>,CN=ExchangeActiveSyncDevices,<mailbox DN>"
_DEVICE_CONTAINER_DN = r"(?i)^.*?,CN=ExchangeActiveSyncDevices,"
# "iOS 17.5.1 21F90", "Android 14.0", "Windows 10.0.19045": platform, then a version.
_OS_PATTERN = r"^\s*(?P<platform>.*?)\s*(?P<version>\d+(?:\.\d+)*)?(?:\s+\S+)*\s*$"
_PLATFORM_NAMES = {"ios": "iOS", "ipados": "iPadOS", "android": "Android",
                   "windows": "Windows", "macos": "macOS", "os x": "macOS"}
