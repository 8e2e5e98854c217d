<#
.SYNOPSIS
    Reads mailboxes and mobile device statistics from Exchange Online, app-only, for psbridge.

.DESCRIPTION
    psbridge runs this script on a Windows jump host (over WinRM, psbridge mobile --via jumphost)
    or in a local PowerShell 7 (psbridge mobile --via pwsh). It can also be run by hand.

    It connects to Exchange Online with an app registration and a certificate
    (Connect-ExchangeOnline -AppId -Organization with -CertificateThumbprint or
    -CertificateFilePath), reads the mailboxes (-ResultSize Unlimited) and each mailbox's mobile
    device statistics, and writes objects to the output stream, each tagged with a
    PsbridgeKind note property:

        Mailbox                 a Get-EXOMailbox object
        MobileDeviceStatistics  a Get-EXOMobileDeviceStatistics object, plus QueriedMailbox
        Error                   a mailbox whose devices could not be read (Mailbox, Category,
                                Message, When); the run carries on
        Manifest                one object at the end: organisation, module version, counts

    It always disconnects, also when something fails. Secrets arrive only as parameters.

.PARAMETER Organization
    The tenant's initial domain, for example contoso.onmicrosoft.com.

.PARAMETER AppId
    The application (client) ID of the app registration.

.PARAMETER CertificateThumbprint
    Thumbprint of the app's certificate in the current user's or the computer's store (Windows).

.PARAMETER CertificateFilePath
    Path of the app's certificate as a .pfx file.

.PARAMETER CertificatePassword
    Password of the .pfx file, when it has one (running the script by hand).

.PARAMETER CertificatePasswordVariable
    Name of an environment variable holding the .pfx password. For pwsh -File, where a
    SecureString cannot be passed on the command line: the password stays out of argv.

.PARAMETER RecipientTypeDetails
    Which mailboxes to read: UserMailbox (default), SharedMailbox, RoomMailbox, EquipmentMailbox.
    A comma-separated string is accepted too, because pwsh -File passes arguments as strings.

.PARAMETER OutlookOnly
    Keep only Outlook for iOS and Android devices. By default every device partnership is read.

.EXAMPLE
    .\Get-PsbridgeExoData.ps1 -Organization contoso.onmicrosoft.com `
        -AppId 00000000-0000-0000-0000-000000000000 `
        -CertificateThumbprint 0123456789ABCDEF0123456789ABCDEF01234567 |
        Where-Object PsbridgeKind -eq 'MobileDeviceStatistics'

.NOTES
    The app needs the Exchange.ManageAsApp API permission and a read-only Exchange role such as
    View-Only Organization Management or Global Reader. Requires the ExchangeOnlineManagement
    module (version 3 or later).
#>
[CmdletBinding(DefaultParameterSetName = 'Thumbprint')]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)+$')]
    [string] $Organization,

    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')]
    [string] $AppId,

    [Parameter(Mandatory = $true, ParameterSetName = 'Thumbprint')]
    [ValidatePattern('^[0-9A-Fa-f]{40}$')]
    [string] $CertificateThumbprint,

    [Parameter(Mandatory = $true, ParameterSetName = 'File')]
    [ValidateScript({ Test-Path -LiteralPath $_ -PathType Leaf })]
    [string] $CertificateFilePath,

    [Parameter(ParameterSetName = 'File')]
    [SecureString] $CertificatePassword,

    [Parameter(ParameterSetName = 'File')]
    [ValidatePattern('^[A-Za-z_][A-Za-z0-9_]*$')]
    [string] $CertificatePasswordVariable,

    [ValidateNotNullOrEmpty()]
    [string[]] $RecipientTypeDetails = @('UserMailbox'),

    [switch] $OutlookOnly
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

# pwsh -OutputFormat xml writes objects to stdout in the console's encoding, on Windows the OEM
# code page, which loses accented and non-Latin names: ask for UTF-8 (a no-op elsewhere).
if ($Host.Name -eq 'ConsoleHost' -and [Console]::IsOutputRedirected) {
    [Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
}

$outlookDeviceModel = 'Outlook for iOS and Android'
$knownRecipientTypes = @('UserMailbox', 'SharedMailbox', 'RoomMailbox', 'EquipmentMailbox')
$progressEvery = 25

function Get-PsbridgeMailboxKey {
    <#
    .SYNOPSIS
        The value of the first of the named properties the mailbox has and is not empty.
    .DESCRIPTION
        Get-EXOMailbox's default property set has Id, not Identity (which strict mode
        would stop on), and the type names Exchange Online returns are not documented:
        mailboxes are told apart by their properties, never by guessed type names.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)]
        [object] $Mailbox,

        [Parameter(Mandatory = $true)]
        [string[]] $Name
    )
    foreach ($propertyName in $Name) {
        $property = $Mailbox.PSObject.Properties[$propertyName]
        if ($null -ne $property -and -not [string]::IsNullOrEmpty([string] $property.Value)) {
            return [string] $property.Value
        }
    }
    throw ('A mailbox without {0}: is this Get-EXOMailbox output?' -f ($Name -join ' or '))
}

function Add-PsbridgeKind {
    <#
    .SYNOPSIS
        Tags an object with the kind psbridge sorts it by (a note property, not a type
        name: Exchange Online's type names are not known), and passes it on.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)]
        [object] $InputObject,

        [Parameter(Mandatory = $true)]
        [ValidateSet('Mailbox', 'MobileDeviceStatistics', 'Error', 'Manifest')]
        [string] $Kind
    )
    Add-Member -InputObject $InputObject -NotePropertyName 'PsbridgeKind' `
        -NotePropertyValue $Kind -Force -PassThru
}

# pwsh -File hands "UserMailbox,SharedMailbox" over as one string: split it here.
$recipientTypes = @(
    foreach ($value in $RecipientTypeDetails) {
        foreach ($part in ($value -split ',')) {
            if ($part.Trim()) { $part.Trim() }
        }
    }
)
if ($recipientTypes.Count -eq 0) {
    throw ('No recipient type given. Use one of: {0}.' -f ($knownRecipientTypes -join ', '))
}
foreach ($recipientType in $recipientTypes) {
    if ($knownRecipientTypes -notcontains $recipientType) {
        throw ("Unknown recipient type '{0}'. Use one of: {1}." -f
            $recipientType, ($knownRecipientTypes -join ', '))
    }
}

if ($null -eq (Get-Command -Name 'Connect-ExchangeOnline' -ErrorAction SilentlyContinue)) {
    throw ('The ExchangeOnlineManagement module is not installed. Install it with: ' +
        'Install-Module ExchangeOnlineManagement -Scope CurrentUser')
}

$connectParameters = @{
    AppId        = $AppId
    Organization = $Organization
    ShowBanner   = $false
}
if ($PSCmdlet.ParameterSetName -eq 'Thumbprint') {
    $connectParameters['CertificateThumbprint'] = $CertificateThumbprint
}
else {
    $connectParameters['CertificateFilePath'] = $CertificateFilePath
    if ($CertificatePasswordVariable) {
        $plainPassword = [Environment]::GetEnvironmentVariable($CertificatePasswordVariable)
        if (-not $plainPassword) {
            throw ('The environment variable {0} named by -CertificatePasswordVariable is empty.' -f
                $CertificatePasswordVariable)
        }
        $CertificatePassword = ConvertTo-SecureString -String $plainPassword -AsPlainText -Force
        $plainPassword = $null
    }
    if ($null -ne $CertificatePassword) {
        $connectParameters['CertificatePassword'] = $CertificatePassword
    }
}

$started = (Get-Date).ToUniversalTime()
$connected = $false
try {
    Write-Progress -Activity 'psbridge' -Status ('Connecting to {0}' -f $Organization)
    Connect-ExchangeOnline @connectParameters
    $connected = $true

    Write-Progress -Activity 'psbridge' -Status 'Reading mailboxes'
    $mailboxParameters = @{
        RecipientTypeDetails = $recipientTypes
        ResultSize           = 'Unlimited'
        Properties           = @('ExchangeGuid', 'WhenCreated')
    }
    # Each mailbox by ExternalDirectoryObjectId (which Get-EXOMobileDeviceStatistics
    # -Mailbox accepts) and by UserPrincipalName (what the report joins devices on).
    $mailboxKeys = [System.Collections.Generic.List[object]]::new()
    Get-EXOMailbox @mailboxParameters | ForEach-Object {
        $mailboxKeys.Add([pscustomobject]@{
                Query = Get-PsbridgeMailboxKey -Mailbox $_ `
                    -Name 'ExternalDirectoryObjectId', 'UserPrincipalName'
                Name  = Get-PsbridgeMailboxKey -Mailbox $_ `
                    -Name 'UserPrincipalName', 'ExternalDirectoryObjectId'
            })
        Add-PsbridgeKind -InputObject $_ -Kind 'Mailbox'
    }

    $counts = @{ Devices = 0; Errors = 0; Done = 0 }
    $total = $mailboxKeys.Count
    foreach ($mailboxKey in $mailboxKeys) {
        $identity = $mailboxKey.Name
        $counts.Done++
        if ((($counts.Done - 1) % $progressEvery) -eq 0 -or $counts.Done -eq $total) {
            Write-Progress -Activity 'psbridge' `
                -Status ('Mobile devices: mailbox {0} of {1}' -f $counts.Done, $total) `
                -PercentComplete ([int] (100 * $counts.Done / [math]::Max($total, 1)))
        }
        try {
            $statistics = @(
                Get-EXOMobileDeviceStatistics -Mailbox $mailboxKey.Query -ErrorAction Stop
            )
        }
        catch {
            $counts.Errors++
            $failure = [pscustomobject]@{
                Mailbox  = $identity
                Category = [string] $_.CategoryInfo.Category
                Message  = $_.Exception.Message
                When     = (Get-Date).ToUniversalTime().ToString('o')
            }
            Add-PsbridgeKind -InputObject $failure -Kind 'Error'
            continue
        }
        foreach ($device in $statistics) {
            if ($OutlookOnly -and [string] $device.DeviceModel -ne $outlookDeviceModel) {
                continue
            }
            $counts.Devices++
            $device = Add-Member -InputObject $device -NotePropertyName 'QueriedMailbox' `
                -NotePropertyValue $identity -Force -PassThru
            Add-PsbridgeKind -InputObject $device -Kind 'MobileDeviceStatistics'
        }
    }
    Write-Progress -Activity 'psbridge' -Completed

    $exoModule = Get-Module -Name 'ExchangeOnlineManagement' | Select-Object -First 1
    $manifest = [pscustomobject]@{
        created         = $started.ToString('o')
        finished        = (Get-Date).ToUniversalTime().ToString('o')
        user            = $AppId
        computer        = [Environment]::MachineName
        organization    = $Organization
        source          = 'Get-PsbridgeExoData.ps1'
        module_version  = $(if ($null -ne $exoModule) { [string] $exoModule.Version } else { '' })
        recipient_types = ($recipientTypes -join ',')
        all_devices     = (-not $OutlookOnly)
        mailboxes       = $total
        devices         = $counts.Devices
        errors          = $counts.Errors
    }
    Add-PsbridgeKind -InputObject $manifest -Kind 'Manifest'
}
finally {
    if ($connected) {
        Disconnect-ExchangeOnline -Confirm:$false -ErrorAction SilentlyContinue
    }
}
