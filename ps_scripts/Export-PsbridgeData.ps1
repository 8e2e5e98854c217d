<#
.SYNOPSIS
    Exports mailboxes and mobile device statistics to CLIXML files that psbridge reads offline.

.DESCRIPTION
    Run this in an Exchange Management Shell (Exchange Server) or in PowerShell after
    Connect-ExchangeOnline (Exchange Online). It writes three files into -OutputFolder:

        Mailboxes.xml               Get-Mailbox (or Get-EXOMailbox) output, via Export-Clixml
        MobileDeviceStatistics.xml  Get-MobileDeviceStatistics (or Get-EXOMobileDeviceStatistics)
                                    output for every mailbox, via Export-Clixml
        psbridge-manifest.json      when, who, which organisation, module version, counts, and
                                    the mailboxes whose devices could not be read

    Copy the folder to the machine that runs psbridge and build the report there:

        psbridge mobile --from-clixml <folder> -o report.xlsx

    Mailboxes are always read with -ResultSize Unlimited, so the export is never cut at 1000.
    A mailbox whose devices cannot be read is recorded in the manifest's "errors" list and the
    export carries on with the next mailbox.

    The EXO cmdlets (Get-EXOMailbox, Get-EXOMobileDeviceStatistics) are used when the
    ExchangeOnlineManagement module is connected; the classic cmdlets otherwise.

.PARAMETER OutputFolder
    Folder to write the three files into. Created when missing. Existing files are replaced.

.PARAMETER RecipientTypeDetails
    Which mailboxes to export. Default: UserMailbox, SharedMailbox, RoomMailbox.

.PARAMETER OutlookOnly
    Keep only Outlook for iOS and Android devices (DeviceModel 'Outlook for iOS and Android').
    By default every device partnership is exported and psbridge filters when it reports.

.PARAMETER CmdletSet
    Auto (default): EXO cmdlets when connected to Exchange Online, classic cmdlets otherwise.
    Exo or Classic force one set.

.EXAMPLE
    .\Export-PsbridgeData.ps1 -OutputFolder C:\Temp\psbridge-export

    Exports user, shared and room mailboxes and all their devices.

.EXAMPLE
    .\Export-PsbridgeData.ps1 -OutputFolder .\export -RecipientTypeDetails UserMailbox -OutlookOnly

    Exports user mailboxes and their Outlook for iOS and Android devices only.

.NOTES
    Needs read access to mailboxes and mobile devices (for example the View-Only Organization
    Management role group). It never changes anything in Exchange.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidateNotNullOrEmpty()]
    [string] $OutputFolder,

    [ValidateSet('UserMailbox', 'SharedMailbox', 'RoomMailbox', 'EquipmentMailbox')]
    [string[]] $RecipientTypeDetails = @('UserMailbox', 'SharedMailbox', 'RoomMailbox'),

    [switch] $OutlookOnly,

    [ValidateSet('Auto', 'Exo', 'Classic')]
    [string] $CmdletSet = 'Auto'
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$outlookDeviceModel = 'Outlook for iOS and Android'
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
    throw ('A mailbox without {0}.' -f ($Name -join ' or '))
}

function Test-PsbridgeExoConnection {
    <#
    .SYNOPSIS
        True when the ExchangeOnlineManagement module is loaded and has a live connection.
    #>
    [CmdletBinding()]
    [OutputType([bool])]
    param()

    if ($null -eq (Get-Command -Name 'Get-EXOMailbox' -ErrorAction SilentlyContinue)) {
        return $false
    }
    if ($null -eq (Get-Command -Name 'Get-ConnectionInformation' -ErrorAction SilentlyContinue)) {
        return $false
    }
    # Read State defensively: strict mode stops on a property an older module lacks.
    $connections = @(Get-ConnectionInformation -ErrorAction SilentlyContinue | Where-Object {
            $state = $_.PSObject.Properties['State']
            $null -ne $state -and [string] $state.Value -eq 'Connected'
        })
    return ($connections.Count -gt 0)
}

switch ($CmdletSet) {
    'Exo' { $useExo = $true }
    'Classic' { $useExo = $false }
    default { $useExo = Test-PsbridgeExoConnection }
}

if ($useExo) {
    $mailboxCmdlet = 'Get-EXOMailbox'
    $deviceCmdlet = 'Get-EXOMobileDeviceStatistics'
}
else {
    $mailboxCmdlet = 'Get-Mailbox'
    $deviceCmdlet = 'Get-MobileDeviceStatistics'
}
foreach ($cmdletName in @($mailboxCmdlet, $deviceCmdlet)) {
    if ($null -eq (Get-Command -Name $cmdletName -ErrorAction SilentlyContinue)) {
        # -f binds tighter than +, so the message is joined first.
        $message = '{0} is not available. Run this script in an Exchange Management Shell, or ' +
            'after Connect-ExchangeOnline, with a role that can read mailboxes and mobile devices.'
        throw ($message -f $cmdletName)
    }
}

$null = New-Item -ItemType Directory -Path $OutputFolder -Force
$folder = (Resolve-Path -LiteralPath $OutputFolder).ProviderPath
$mailboxesPath = Join-Path -Path $folder -ChildPath 'Mailboxes.xml'
$devicesPath = Join-Path -Path $folder -ChildPath 'MobileDeviceStatistics.xml'
$manifestPath = Join-Path -Path $folder -ChildPath 'psbridge-manifest.json'
$started = (Get-Date).ToUniversalTime()

# Mailboxes: one call, never cut at the default 1000.
$mailboxParameters = @{
    RecipientTypeDetails = $RecipientTypeDetails
    ResultSize           = 'Unlimited'
}
if ($useExo) {
    # Get-EXOMailbox returns a minimal property set unless asked for more.
    $mailboxParameters['Properties'] = @('ExchangeGuid', 'WhenCreated')
}
Write-Progress -Activity 'psbridge export' -Status ('Reading mailboxes with {0}' -f $mailboxCmdlet)
$mailboxes = [System.Collections.Generic.List[object]]::new()
foreach ($mailbox in @(& $mailboxCmdlet @mailboxParameters)) {
    $mailboxes.Add($mailbox)
}
$mailboxes | Export-Clixml -LiteralPath $mailboxesPath -Encoding Unicode

# Devices: one call per mailbox; a failure is recorded and the export goes on.
$errors = [System.Collections.Generic.List[object]]::new()
$counts = @{ Devices = 0; Done = 0 }
$total = $mailboxes.Count
$mailboxes | ForEach-Object {
    $mailbox = $_
    if ($useExo) {
        # Exchange Online: by ExternalDirectoryObjectId, which -Mailbox accepts (no Identity
        # in Get-EXOMailbox's default set); recorded by UserPrincipalName, for the join
        $query = Get-PsbridgeMailboxKey -Mailbox $mailbox `
            -Name 'ExternalDirectoryObjectId', 'UserPrincipalName'
        $identity = Get-PsbridgeMailboxKey -Mailbox $mailbox `
            -Name 'UserPrincipalName', 'ExternalDirectoryObjectId'
    }
    else {
        $identity = Get-PsbridgeMailboxKey -Mailbox $mailbox -Name 'Identity'
        $query = $identity
    }
    $counts.Done++
    if ((($counts.Done - 1) % $progressEvery) -eq 0 -or $counts.Done -eq $total) {
        Write-Progress -Activity 'psbridge export' `
            -Status ('Mobile devices: mailbox {0} of {1}' -f $counts.Done, $total) `
            -CurrentOperation $identity `
            -PercentComplete ([int] (100 * $counts.Done / [math]::Max($total, 1)))
    }
    try {
        $statistics = @(& $deviceCmdlet -Mailbox $query -ErrorAction Stop)
    }
    catch {
        $errors.Add([ordered]@{
                Mailbox  = $identity
                Category = [string] $_.CategoryInfo.Category
                Message  = $_.Exception.Message
                When     = (Get-Date).ToUniversalTime().ToString('o')
            })
        return
    }
    foreach ($device in $statistics) {
        if ($OutlookOnly -and [string] $device.DeviceModel -ne $outlookDeviceModel) {
            continue
        }
        $counts.Devices++
        # Which mailbox this device was read for: the report joins on it.
        Add-Member -InputObject $device -NotePropertyName 'QueriedMailbox' `
            -NotePropertyValue $identity -Force -PassThru
    }
} | Export-Clixml -LiteralPath $devicesPath -Encoding Unicode
Write-Progress -Activity 'psbridge export' -Completed

$organization = ''
try {
    $organization = [string] (Get-OrganizationConfig -ErrorAction Stop).Name
}
catch {
    Write-Warning ('Organisation name not read: {0}' -f $_.Exception.Message)
}
$moduleVersion = ''
$mailboxCommand = Get-Command -Name $mailboxCmdlet
if ($null -ne $mailboxCommand.Module) {
    $moduleVersion = [string] $mailboxCommand.Module.Version
}
if ($useExo) {
    $exoModule = Get-Module -Name 'ExchangeOnlineManagement' | Select-Object -First 1
    if ($null -ne $exoModule) {
        $moduleVersion = [string] $exoModule.Version
    }
}

$manifest = [ordered]@{
    created            = $started.ToString('o')
    finished           = (Get-Date).ToUniversalTime().ToString('o')
    user               = '{0}\{1}' -f [Environment]::UserDomainName, [Environment]::UserName
    computer           = [Environment]::MachineName
    organization       = $organization
    source             = 'Export-PsbridgeData.ps1'
    cmdlets            = @($mailboxCmdlet, $deviceCmdlet)
    module_version     = $moduleVersion
    powershell_version = [string] $PSVersionTable.PSVersion
    recipient_types    = @($RecipientTypeDetails)
    all_devices        = (-not $OutlookOnly)
    counts             = [ordered]@{
        mailboxes = $mailboxes.Count
        devices   = $counts.Devices
        errors    = $errors.Count
    }
    errors             = @($errors)
}
# UTF-8 without a byte order mark, the same from Windows PowerShell 5.1 and PowerShell 7.
$json = ConvertTo-Json -InputObject $manifest -Depth 5
[System.IO.File]::WriteAllText($manifestPath, $json, [System.Text.UTF8Encoding]::new($false))

Write-Verbose ('Wrote {0}, {1} and {2}' -f $mailboxesPath, $devicesPath, $manifestPath)
if ($errors.Count -gt 0) {
    Write-Warning ('{0} mailbox(es) could not be read; they are listed in {1}.' -f
        $errors.Count, $manifestPath)
}
[pscustomobject]@{
    Folder    = $folder
    Mailboxes = $mailboxes.Count
    Devices   = $counts.Devices
    Errors    = $errors.Count
}
