<#
.SYNOPSIS
    Install Live2Diff Camera on Windows: Python check, a virtual environment, the torch build for
    the GPU found, the app, a Start-menu shortcut to the tray, the virtual camera, autostart.

.DESCRIPTION
    Run from the source folder in PowerShell (no administrator rights needed, except for the
    Unity Capture registration, which asks for them):
        powershell -ExecutionPolicy Bypass -File installers\windows\install.ps1 [-Autostart]

    The virtual camera: OBS Studio 26+ brings "OBS Virtual Camera", which the app uses when found.
    Without OBS, the script offers to download Unity Capture (a DirectShow virtual camera) and
    register it as "Live2Diff Camera"; it asks before doing so.

.PARAMETER Venv
    The virtual environment folder (default: .venv in the source folder).
.PARAMETER Torch
    auto | cpu | cuda (default auto: cuda when nvidia-smi finds an NVIDIA GPU, else cpu).
.PARAMETER CudaIndex
    The PyTorch wheel index for CUDA builds (PyPI's Windows wheels are CPU-only).
.PARAMETER Autostart
    Start the tray at login.
.PARAMETER CameraName
    The name Unity Capture registers (default "Live2Diff Camera").
.PARAMETER Yes
    Answer yes to the Unity Capture question (unattended installs).
.PARAMETER DryRun
    Print what it would do; change nothing.
.PARAMETER Uninstall
    Remove the Start-menu shortcut and autostart (the venv and the virtual camera stay).
#>
[CmdletBinding()]
param(
    [string]$Venv = '',
    [ValidateSet('auto', 'cpu', 'cuda')]
    [string]$Torch = 'auto',
    [string]$CudaIndex = 'https://download.pytorch.org/whl/cu128',
    [switch]$Autostart,
    [string]$CameraName = 'Live2Diff Camera',
    [switch]$Yes,
    [switch]$DryRun,
    [switch]$Uninstall
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Root = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path
if (-not $Venv) { $Venv = Join-Path $Root '.venv' }
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$VenvVcam = Join-Path $Venv 'Scripts\vcam.exe'
$ShortcutPath = Join-Path ([Environment]::GetFolderPath('Programs')) 'Live2Diff Camera.lnk'
$UnityCaptureUrl = 'https://github.com/schellingb/UnityCapture/archive/refs/heads/master.zip'
$UnityCaptureDir = Join-Path $env:LOCALAPPDATA 'live2diff-vcam\UnityCapture'
# DirectShow's "video input device" category: every registered camera filter has a FriendlyName here.
$VideoInputCategory = 'Registry::HKEY_CLASSES_ROOT\CLSID\{860BB310-5D01-11D0-BD3B-00A0C911CE86}\Instance'

function Write-Step([string]$Message) { Write-Host "==> $Message" }

function Format-Command([string]$File, [string[]]$Arguments) {
    $parts = @($File) + $Arguments | ForEach-Object { if ($_ -match '[\s"]') { "'$_'" } else { $_ } }
    return '+ ' + ($parts -join ' ')
}

# Run a native program and return its exit code and standard output (stderr dropped). Windows
# PowerShell 5.1 turns a native program's stderr into terminating errors under 'Stop', so run it under 'Continue'.
function Invoke-Native([string]$File, [string[]]$Arguments, [switch]$Quiet) {
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        if ($Quiet) { $output = & $File @Arguments 2>$null } else { & $File @Arguments | Out-Host; $output = $null }
        return [pscustomobject]@{ Code = $LASTEXITCODE; Output = $output }
    } finally {
        $ErrorActionPreference = $previous
    }
}

# Run a program that changes the system; with -DryRun only print it. Stops on a non-zero exit code.
function Invoke-Step([string]$File, [string[]]$Arguments) {
    Write-Host (Format-Command $File $Arguments)
    if ($DryRun) { return }
    $result = Invoke-Native $File $Arguments
    if ($result.Code -ne 0) {
        throw "'$File $($Arguments -join ' ')' failed with exit code $($result.Code)"
    }
}

function Find-Python {
    # The py launcher knows every installed Python; try the newest supported first.
    $launcher = Get-Command py -ErrorAction SilentlyContinue
    if ($launcher) {
        foreach ($version in @('3.12', '3.11', '3.10', '3.13')) {
            $probe = Invoke-Native $launcher.Source @("-$version", '-c', 'import sys; print(sys.executable)') -Quiet
            if ($probe.Code -eq 0 -and $probe.Output) { return ([string]$probe.Output).Trim() }
        }
    }
    # The Microsoft Store alias (WindowsApps\python.exe) only opens the Store: skip it.
    $python = Get-Command python -ErrorAction SilentlyContinue
    if ($python -and $python.Source -notlike '*WindowsApps*') {
        $probe = Invoke-Native $python.Source @('-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)') -Quiet
        if ($probe.Code -eq 0) { return $python.Source }
    }
    throw ('Python 3.10 or newer was not found. Install it from python.org (tick "Add python.exe to PATH") ' +
        'or with: winget install Python.Python.3.12 ; then run this script again.')
}

function Get-TorchKind {
    if ($Torch -ne 'auto') { return $Torch }
    $smi = Get-Command nvidia-smi -ErrorAction SilentlyContinue
    if ($smi -and (Invoke-Native $smi.Source @('-L') -Quiet).Code -eq 0) { return 'cuda' }
    return 'cpu'
}

function Get-VirtualCameraNames {
    if (-not (Test-Path $VideoInputCategory)) { return @() }
    return @(Get-ChildItem $VideoInputCategory | ForEach-Object {
            (Get-ItemProperty -Path $_.PSPath -Name FriendlyName -ErrorAction SilentlyContinue).FriendlyName
        } | Where-Object { $_ })
}

function Install-UnityCapture {
    $answer = 'y'
    if (-not $Yes) {
        $answer = Read-Host ("No virtual camera found. Download Unity Capture (open source, from GitHub) and " +
            "register it as '$CameraName'? This asks for administrator rights once. [y/N]")
    }
    if ($answer -notmatch '^(y|yes)$') {
        Write-Step 'skipped: install OBS Studio (obsproject.com) for its virtual camera, or run this script again'
        return
    }
    $zip = Join-Path $env:TEMP 'UnityCapture.zip'
    Write-Host "+ download $UnityCaptureUrl -> $UnityCaptureDir"
    if (-not $DryRun) {
        Invoke-WebRequest -Uri $UnityCaptureUrl -OutFile $zip -UseBasicParsing
        Expand-Archive -Path $zip -DestinationPath $UnityCaptureDir -Force
        Remove-Item $zip
    }
    $installDir = Join-Path $UnityCaptureDir 'UnityCapture-master\Install'
    foreach ($bits in @('64', '32')) {
        $dll = Join-Path $installDir "UnityCaptureFilter$bits.dll"
        $system = if ($bits -eq '64') { 'System32' } else { 'SysWOW64' }
        $regsvr = Join-Path $env:windir "$system\regsvr32.exe"
        $arguments = @('/s', "`"/i:UnityCaptureName=$CameraName`"", "`"$dll`"")
        Write-Host (Format-Command $regsvr $arguments)
        if (-not $DryRun) {
            $process = Start-Process -FilePath $regsvr -ArgumentList $arguments -Verb RunAs -Wait -PassThru
            if ($process.ExitCode -ne 0) {
                throw "registering $dll failed (exit code $($process.ExitCode)); run this script again and accept the administrator prompt"
            }
        }
    }
    Write-Step "registered Unity Capture as '$CameraName'"
}

function New-StartMenuShortcut {
    $gui = Join-Path $Venv 'Scripts\vcam-tray.exe'
    if (Test-Path $gui) {
        $target = $gui; $arguments = ''
    } else {
        $target = Join-Path $Venv 'Scripts\pythonw.exe'; $arguments = '-m vcam tray'
    }
    Write-Host "+ shortcut $ShortcutPath -> $target $arguments"
    if ($DryRun) { return }
    $shell = New-Object -ComObject WScript.Shell
    $shortcut = $shell.CreateShortcut($ShortcutPath)
    $shortcut.TargetPath = $target
    $shortcut.Arguments = $arguments
    $shortcut.WorkingDirectory = $Root
    $shortcut.Description = 'Live2Diff Camera: a virtual camera that restyles your webcam live'
    $shortcut.Save()
}

if ($DryRun) { Write-Step 'dry run: nothing is changed' }

if ($Uninstall) {
    if (Test-Path $ShortcutPath) {
        Write-Host "+ remove $ShortcutPath"
        if (-not $DryRun) { Remove-Item $ShortcutPath }
    }
    if (Test-Path $VenvVcam) { Invoke-Step $VenvVcam @('tray', '--autostart', 'off') }
    Write-Step "the virtual environment stays: remove it with: Remove-Item -Recurse -Force '$Venv'"
    exit 0
}

# 1. Python and the virtual environment.
$python = Find-Python
Write-Step "Python: $python"
if (-not (Test-Path $VenvPython)) {
    Invoke-Step $python @('-m', 'venv', $Venv)
}
Invoke-Step $VenvPython @('-m', 'pip', 'install', '--quiet', '--upgrade', 'pip')

# 2. Torch for the GPU found, before the app, so the app's lower bound never pulls a second build.
$kind = Get-TorchKind
$hasTorch = $false
if (Test-Path $VenvPython) {
    $hasTorch = ((Invoke-Native $VenvPython @('-c', 'import torch') -Quiet).Code -eq 0)
}
if ($hasTorch) {
    Write-Step 'torch is already installed'
} elseif ($kind -eq 'cuda') {
    Write-Step 'installing torch (CUDA)'
    Invoke-Step $VenvPython @('-m', 'pip', 'install', 'torch', '--index-url', $CudaIndex)
} else {
    Write-Step 'installing torch (CPU; no NVIDIA GPU found)'
    Invoke-Step $VenvPython @('-m', 'pip', 'install', 'torch')
}

# 3. The app.
$extras = 'segment,tray'
if ($kind -eq 'cuda') { $extras += ',cuda' }
Invoke-Step $VenvPython @('-m', 'pip', 'install', '--quiet', '-e', "$Root[$extras]")

# 4. Start-menu shortcut and autostart.
New-StartMenuShortcut
if ($Autostart) { Invoke-Step $VenvVcam @('tray', '--autostart', 'on') }

# 5. The virtual camera.
$cameras = Get-VirtualCameraNames
if ($cameras -contains 'OBS Virtual Camera') {
    Write-Step 'found OBS Virtual Camera: the app sends to it (keep OBS''s own virtual camera stopped)'
} elseif ($cameras -contains $CameraName -or $cameras -contains 'Unity Video Capture') {
    Write-Step 'found Unity Capture: the app sends to it'
} else {
    Install-UnityCapture
}

# 6. What is still missing, with the command that fixes each piece.
if (-not $DryRun) {
    Invoke-Native $VenvVcam @('doctor') | Out-Null
    Write-Step "done: start 'Live2Diff Camera' from the Start menu, or run: $VenvVcam tray"
} else {
    Write-Step 'dry run finished'
}
