"""The installers: shellcheck, a PowerShell syntax check, the Linux driver script's plans and runs against
fake system tools in a temporary root, and the desktop-entry writer against a temporary home."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vcam import desktop_entry

ROOT = Path(__file__).resolve().parent.parent
INSTALLERS = ROOT / "installers"
DRIVER_SCRIPT = INSTALLERS / "linux" / "setup-virtual-camera.sh"
LINUX_INSTALL = INSTALLERS / "linux" / "install.sh"
MACOS_INSTALL = INSTALLERS / "macos" / "install.sh"
WINDOWS_INSTALL = INSTALLERS / "windows" / "install.ps1"
KERNEL = "6.1.0-test-amd64"

# Real tools the scripts may use; everything else on PATH is a fake written by the test.
REAL_TOOLS = ("bash", "sh", "cat", "cut", "dirname", "mkdir", "grep", "sed", "rm", "printf", "env")

FAKE_UNAME = f"""#!/bin/sh
case "$1" in -r) echo {KERNEL} ;; -m) echo "${{FAKE_ARCH:-x86_64}}" ;; *) echo "${{FAKE_OS:-Linux}}" ;; esac
"""
FAKE_ID = '#!/bin/sh\necho "${FAKE_UID:-0}"\n'
# Logs every call; `modprobe v4l2loopback ...` fakes a loaded module under $VCAM_SYSROOT, `-r` unloads it.
FAKE_MODPROBE = """#!/bin/sh
echo "modprobe $*" >> "$FAKE_LOG"
module="$VCAM_SYSROOT/sys/module/v4l2loopback"
if [ "$1" = "-r" ]; then rm -rf "$module"; exit 0; fi
mkdir -p "$module/parameters"
for arg in "$@"; do
  case "$arg" in
    exclusive_caps=1) echo "Y,N,N,N" > "$module/parameters/exclusive_caps" ;;
    exclusive_caps=0) echo "N,N,N,N" > "$module/parameters/exclusive_caps" ;;
    video_nr=*) echo "${arg#video_nr=},-1,-1,-1" > "$module/parameters/video_nr" ;;
  esac
done
"""


def _logging_fake(name: str, exit_code: int = 0, output: str = "") -> str:
    echo = f"printf '%s\\n' '{output}'\n" if output else ""
    return f'#!/bin/sh\necho "{name} $*" >> "$FAKE_LOG"\n{echo}exit {exit_code}\n'


def make_bin(folder: Path, fakes: dict[str, str]) -> Path:
    """A PATH folder with the real basic tools linked in and the given fake programs."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in REAL_TOOLS:
        real = shutil.which(tool)
        if real and not (folder / tool).exists():
            (folder / tool).symlink_to(real)
    for name, text in {"uname": FAKE_UNAME, "id": FAKE_ID, **fakes}.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def apt_fakes(installed: bool = False) -> dict[str, str]:
    return {
        "apt-get": _logging_fake("apt-get"),
        "dpkg-query": _logging_fake("dpkg-query", 0 if installed else 1, "install ok installed" if installed else ""),
        "modinfo": _logging_fake("modinfo", 0 if installed else 1),
        "modprobe": FAKE_MODPROBE,
    }


def run_script(
    script: Path, args: list[str], bin_dir: Path, sysroot: Path, log: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": str(bin_dir),
        "VCAM_SYSROOT": str(sysroot),
        "FAKE_LOG": str(log),
        "HOME": str(sysroot / "home"),
        **env,
    }
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=environment, timeout=60, check=False
    )


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    sysroot = tmp_path / "root"
    sysroot.mkdir()
    return {"sysroot": sysroot, "log": tmp_path / "calls.log", "bin": tmp_path / "bin"}


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# --- static checks ---------------------------------------------------------------------------------


def test_every_shell_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(INSTALLERS.rglob("*.sh"))
    assert DRIVER_SCRIPT in scripts and LINUX_INSTALL in scripts and MACOS_INSTALL in scripts
    result = subprocess.run(
        [shellcheck, "-x", "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=INSTALLERS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_are_executable_and_parse() -> None:
    for script in sorted(INSTALLERS.rglob("*.sh")):
        sourced_library = script == INSTALLERS / "lib.sh"
        assert sourced_library or os.access(script, os.X_OK), f"{script} is not executable"
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def _powershell_tokens_balanced(text: str) -> str | None:
    """None if (), {}, [] pair up outside strings and comments, else what is wrong (a small PowerShell scanner)."""
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[tuple[str, int]] = []
    i, line = 0, 1
    while i < len(text):
        char = text[i]
        if char == "\n":
            line += 1
        if text.startswith("<#", i):
            end = text.find("#>", i)
            if end < 0:
                return f"line {line}: unclosed <# comment"
            line += text.count("\n", i, end)
            i = end + 2
            continue
        if char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if text.startswith(('@"', "@'"), i):
            quote = text[i + 1]
            end = text.find("\n" + quote + "@", i)
            if end < 0:
                return f"line {line}: unclosed here-string"
            line += text.count("\n", i, end)
            i = end + 3
            continue
        if char in "'\"":
            j = i + 1
            while j < len(text):
                if char == '"' and text[j] == "`":
                    j += 2
                    continue
                if text[j] == char:
                    if j + 1 < len(text) and text[j + 1] == char:  # doubled quote inside the string
                        j += 2
                        continue
                    break
                j += 1
            if j >= len(text):
                return f"line {line}: unclosed {char} string"
            line += text.count("\n", i, j)
            i = j + 1
            continue
        if char in "({[":
            stack.append((char, line))
        elif char in ")}]":
            if not stack or stack[-1][0] != pairs[char]:
                return f"line {line}: unexpected {char!r}"
            stack.pop()
        i += 1
    if stack:
        return f"line {stack[-1][1]}: {stack[-1][0]!r} never closed"
    return None


def test_powershell_scanner_finds_unbalanced_code() -> None:
    assert _powershell_tokens_balanced("if ($a) { Write-Host 'x}' }") is None
    assert _powershell_tokens_balanced('Write-Host "a `" ( b"') is None
    assert _powershell_tokens_balanced("if ($a) { Write-Host 'x' ") is not None
    assert _powershell_tokens_balanced("$x = @(1, 2]") is not None


def test_windows_installer_is_well_formed() -> None:
    text = WINDOWS_INSTALL.read_text(encoding="utf-8")
    problem = _powershell_tokens_balanced(text)
    assert problem is None, f"install.ps1: {problem}"
    params = re.search(r"param\((.*?)\n\)", text, re.S)
    assert params is not None
    for name in re.findall(r"\$(\w+)", params.group(1)):
        assert f".PARAMETER {name}" in text, f"parameter -{name} is not documented in the help block"
    for needed in (
        "Set-StrictMode",
        "$ErrorActionPreference = 'Stop'",
        "nvidia-smi",
        "OBS Virtual Camera",
        "UnityCaptureName",
        "CreateShortcut",
        "--autostart",
        "Read-Host",
    ):
        assert needed in text, f"install.ps1 lacks {needed!r}"


def test_windows_installer_parses_in_powershell() -> None:
    pwsh = shutil.which("pwsh") or shutil.which("powershell")
    if pwsh is None:
        pytest.skip("PowerShell (pwsh) is not installed here: no Debian package or PyPI wheel provides it")
    command = (
        "$errors = $null; [System.Management.Automation.Language.Parser]::ParseFile("
        f"'{WINDOWS_INSTALL}', [ref]$null, [ref]$errors) | Out-Null; "
        "if ($errors.Count) { $errors | ForEach-Object { Write-Output $_.ToString() }; exit 1 }"
    )
    result = subprocess.run([pwsh, "-NoProfile", "-Command", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    analyzer = subprocess.run(
        [pwsh, "-NoProfile", "-Command", "Get-Module -ListAvailable PSScriptAnalyzer"], capture_output=True, text=True
    )
    if "PSScriptAnalyzer" in analyzer.stdout:
        check = (
            f"$r = Invoke-ScriptAnalyzer -Path '{WINDOWS_INSTALL}' -Severity Error; "
            "$r | Format-List; if ($r) { exit 1 }"
        )
        result = subprocess.run([pwsh, "-NoProfile", "-Command", check], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr


# --- the Linux driver script -------------------------------------------------------------------------


def test_dry_run_plans_apt_install_and_modprobe_with_exclusive_caps(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "+ apt-get update" in out
    assert f"+ apt-get install -y v4l2loopback-dkms v4l2loopback-utils linux-headers-{KERNEL}" in out
    assert "+ modprobe v4l2loopback devices=1 video_nr=10 'card_label=Live2Diff Camera' exclusive_caps=1" in out
    assert f"would write {box['sysroot']}/etc/modprobe.d/live2diff-vcam.conf" in out
    assert 'options v4l2loopback devices=1 video_nr=10 card_label="Live2Diff Camera" exclusive_caps=1' in out
    assert f"would write {box['sysroot']}/etc/modules-load.d/live2diff-vcam.conf" in out
    # a dry run changes nothing: no file written, no package manager or modprobe called
    assert _files_under(box["sysroot"]) == []
    assert not [call for call in _calls(box["log"]) if call.split()[0] in ("apt-get", "modprobe")]


def test_dry_run_without_exclusive_caps(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run", "--no-exclusive-caps"], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    assert (
        "+ modprobe v4l2loopback devices=1 video_nr=10 'card_label=Live2Diff Camera' exclusive_caps=0" in result.stdout
    )
    assert 'card_label="Live2Diff Camera" exclusive_caps=0' in result.stdout
    assert "exclusive_caps=1" not in result.stdout.replace("drop --no-exclusive-caps", "")
    assert "Zoom snap" in result.stdout


def test_dry_run_custom_device_number_and_label(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    args = ["--dry-run", "--video-nr", "42", "--label", "My Style Cam"]
    result = run_script(DRIVER_SCRIPT, args, bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    assert "video_nr=42 'card_label=My Style Cam'" in result.stdout


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        ("dnf", "+ dnf install -y akmod-v4l2loopback v4l2loopback kernel-devel-" + KERNEL),
        ("pacman", "+ pacman -S --needed --noconfirm v4l2loopback-dkms v4l2loopback-utils linux-headers"),
    ],
)
def test_dry_run_detects_the_package_manager(box: dict[str, Path], fake: str, expected: str) -> None:
    bin_dir = make_bin(box["bin"], {fake: _logging_fake(fake, 1), "modprobe": FAKE_MODPROBE})
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "apt-get" not in result.stdout


def test_distro_override_and_unknown_distro(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run", "--distro", "pacman"], bin_dir, box["sysroot"], box["log"])
    assert "+ pacman -S" in result.stdout and "apt-get install" not in result.stdout
    bad = run_script(DRIVER_SCRIPT, ["--dry-run", "--distro", "zypper"], bin_dir, box["sysroot"], box["log"])
    assert bad.returncode == 2 and "'zypper'" in bad.stderr


def test_no_package_manager_says_what_to_do(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], {"modprobe": FAKE_MODPROBE})
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 2
    assert "no apt-get, dnf or pacman" in result.stderr and "--distro" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video-nr", "abc"], "'abc'"),
        (["--video-nr", "300"], "'300'"),
        (["--label", 'a"b'], "double quotes"),
        (["--bogus"], "unknown option '--bogus'"),
    ],
)
def test_bad_options_are_refused(box: dict[str, Path], args: list[str], message: str) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run", *args], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 2
    assert message in result.stderr


def test_dry_run_is_idempotent_when_everything_is_in_place(box: dict[str, Path]) -> None:
    sysroot = box["sysroot"]
    (sysroot / "etc/modprobe.d").mkdir(parents=True)
    (sysroot / "etc/modules-load.d").mkdir(parents=True)
    (sysroot / "etc/modprobe.d/live2diff-vcam.conf").write_text(
        'options v4l2loopback devices=1 video_nr=10 card_label="Live2Diff Camera" exclusive_caps=1\n'
    )
    (sysroot / "etc/modules-load.d/live2diff-vcam.conf").write_text("v4l2loopback\n")
    params = sysroot / "sys/module/v4l2loopback/parameters"
    params.mkdir(parents=True)
    (params / "exclusive_caps").write_text("Y,N,N,N\n")
    (params / "video_nr").write_text("10,-1,-1,-1\n")
    bin_dir = make_bin(box["bin"], apt_fakes(installed=True))
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, sysroot, box["log"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "already installed" in out
    assert "live2diff-vcam.conf is up to date" in out
    assert "already loaded with video_nr=10 exclusive_caps=1" in out
    assert "+ " not in out  # nothing to run

    # the same machine, asked for exclusive_caps=0: rewrite the options and reload the module
    result = run_script(DRIVER_SCRIPT, ["--dry-run", "--no-exclusive-caps"], bin_dir, sysroot, box["log"])
    assert "+ modprobe -r v4l2loopback" in result.stdout
    assert "exclusive_caps=0" in result.stdout
    assert (params / "exclusive_caps").read_text() == "Y,N,N,N\n"


def test_dry_run_warns_about_other_v4l2loopback_options(box: dict[str, Path]) -> None:
    other = box["sysroot"] / "etc/modprobe.d/obs.conf"
    other.parent.mkdir(parents=True)
    other.write_text("options v4l2loopback exclusive_caps=1 card_label=OBS\n")
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert f"{other} also sets v4l2loopback options" in result.stderr


def test_secure_boot_enabled_tells_how_to_enroll_the_key(box: dict[str, Path]) -> None:
    mokutil = """#!/bin/sh
case "$1" in
  --sb-state) echo "SecureBoot enabled" ;;
  --test-key) echo "$2 is not enrolled" ;;
esac
"""
    bin_dir = make_bin(box["bin"], {**apt_fakes(), "mokutil": mokutil})
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    assert "Secure Boot is enabled" in result.stdout
    assert "sudo mokutil --import /var/lib/dkms/mok.pub" in result.stdout
    assert "Enroll MOK" in result.stdout


def test_secure_boot_with_an_enrolled_key_is_fine(box: dict[str, Path]) -> None:
    mokutil = """#!/bin/sh
case "$1" in
  --sb-state) echo "SecureBoot enabled" ;;
  --test-key) echo "$2 is already enrolled" ;;
esac
"""
    key = box["sysroot"] / "var/lib/dkms/mok.pub"
    key.parent.mkdir(parents=True)
    key.write_text("key")
    bin_dir = make_bin(box["bin"], {**apt_fakes(), "mokutil": mokutil})
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert "the module signing key /var/lib/dkms/mok.pub is enrolled" in result.stdout
    assert "mokutil --import" not in result.stdout


def test_secure_boot_disabled(box: dict[str, Path]) -> None:
    mokutil = '#!/bin/sh\necho "SecureBoot disabled"\n'
    bin_dir = make_bin(box["bin"], {**apt_fakes(), "mokutil": mokutil})
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert "Secure Boot is disabled" in result.stdout


def test_uninstall_dry_run(box: dict[str, Path]) -> None:
    sysroot = box["sysroot"]
    conf = sysroot / "etc/modprobe.d/live2diff-vcam.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("options v4l2loopback\n")
    (sysroot / "sys/module/v4l2loopback").mkdir(parents=True)
    bin_dir = make_bin(box["bin"], apt_fakes(installed=True))
    result = run_script(DRIVER_SCRIPT, ["--dry-run", "--uninstall"], bin_dir, sysroot, box["log"])
    assert result.returncode == 0, result.stderr
    assert f"+ rm -f {conf}" in result.stdout
    assert "modules-load.d/live2diff-vcam.conf is already gone" in result.stdout
    assert "+ modprobe -r v4l2loopback" in result.stdout
    assert "apt-get remove v4l2loopback-dkms" in result.stdout
    assert conf.exists() and (sysroot / "sys/module/v4l2loopback").is_dir()
    assert not [call for call in _calls(box["log"]) if call.startswith(("modprobe", "apt-get"))]


def test_real_run_needs_root(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, [], bin_dir, box["sysroot"], box["log"], FAKE_UID="1000")
    assert result.returncode == 2
    assert "needs root" in result.stderr and "sudo" in result.stderr
    assert _files_under(box["sysroot"]) == [] and _calls(box["log"]) == []


def test_real_run_in_a_temporary_root_is_idempotent(box: dict[str, Path]) -> None:
    """With fake apt-get/modprobe and VCAM_SYSROOT, a real run writes the files and loads; a second changes nothing."""
    sysroot = box["sysroot"]
    bin_dir = make_bin(box["bin"], apt_fakes())
    first = run_script(DRIVER_SCRIPT, [], bin_dir, sysroot, box["log"])
    assert first.returncode == 0, first.stderr
    conf = sysroot / "etc/modprobe.d/live2diff-vcam.conf"
    assert conf.read_text() == (
        'options v4l2loopback devices=1 video_nr=10 card_label="Live2Diff Camera" exclusive_caps=1\n'
    )
    assert (sysroot / "etc/modules-load.d/live2diff-vcam.conf").read_text() == "v4l2loopback\n"
    calls = _calls(box["log"])
    assert "apt-get update" in calls
    assert f"apt-get install -y v4l2loopback-dkms v4l2loopback-utils linux-headers-{KERNEL}" in calls
    assert "modprobe v4l2loopback devices=1 video_nr=10 card_label=Live2Diff Camera exclusive_caps=1" in calls
    assert 'done: pick "Live2Diff Camera"' in first.stdout

    box["log"].unlink()
    bin_dir = make_bin(box["bin"], apt_fakes(installed=True))
    second = run_script(DRIVER_SCRIPT, [], bin_dir, sysroot, box["log"])
    assert second.returncode == 0, second.stderr
    assert "already loaded" in second.stdout and "is up to date" in second.stdout
    assert not [call for call in _calls(box["log"]) if call.startswith(("modprobe", "apt-get"))]

    uninstall = run_script(DRIVER_SCRIPT, ["--uninstall"], bin_dir, sysroot, box["log"])
    assert uninstall.returncode == 0, uninstall.stderr
    assert not conf.exists() and not (sysroot / "sys/module/v4l2loopback").exists()


def test_secure_boot_key_rejection_is_explained(box: dict[str, Path]) -> None:
    modprobe = (
        "#!/bin/sh\n"
        "echo \"modprobe: ERROR: could not insert 'v4l2loopback': Key was rejected by service\" >&2\n"
        "exit 1\n"
    )
    mokutil = '#!/bin/sh\ncase "$1" in --sb-state) echo "SecureBoot enabled" ;; *) echo "not enrolled" ;; esac\n'
    fakes = {**apt_fakes(installed=True), "modprobe": modprobe, "mokutil": mokutil}
    bin_dir = make_bin(box["bin"], fakes)
    result = run_script(DRIVER_SCRIPT, [], bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 1
    assert "Key was rejected" in result.stderr
    assert "sudo mokutil --import" in result.stderr


# --- the app installers -------------------------------------------------------------------------------


def test_linux_app_installer_dry_run(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    args = ["--dry-run", "--autostart", "--no-exclusive-caps", "--venv", "/opt/vcam-venv"]
    result = run_script(LINUX_INSTALL, args, bin_dir, box["sysroot"], box["log"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "+ apt-get install -y python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1" in out
    assert f"+ {INSTALLERS}/install.sh --venv /opt/vcam-venv --torch auto" in out
    assert "+ /opt/vcam-venv/bin/python -m vcam.desktop_entry install --exec /opt/vcam-venv/bin/vcam tray" in out
    assert "+ /opt/vcam-venv/bin/vcam tray --autostart on" in out
    assert "'card_label=Live2Diff Camera' exclusive_caps=0" in out  # the driver script's own dry run
    # one consistent way on: install.sh runs as the user and calls the driver set-up with sudo
    assert "(as root)" not in out and "as root (sudo)" not in out
    assert "dry run of the driver set-up finished (install.sh runs it with sudo)" in out
    assert out.rstrip().endswith(
        "again without --dry-run, as yourself (not as root): it asks for sudo for the driver and system packages"
    )
    assert _files_under(box["sysroot"]) == []
    assert not [call for call in _calls(box["log"]) if call.startswith(("modprobe", "apt-get"))]


def test_linux_app_installer_uninstall_dry_run(box: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "vcam"):
        (venv / "bin" / name).write_text("#!/bin/sh\nexit 0\n")
        (venv / "bin" / name).chmod(0o755)
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(
        LINUX_INSTALL, ["--dry-run", "--uninstall", "--venv", str(venv)], bin_dir, box["sysroot"], box["log"]
    )
    assert result.returncode == 0, result.stderr
    assert f"+ {venv}/bin/python -m vcam.desktop_entry remove" in result.stdout
    assert f"+ {venv}/bin/vcam tray --autostart off" in result.stdout
    assert "removing the Live2Diff Camera driver set-up" in result.stdout


def test_macos_installer_dry_run(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], {})
    result = run_script(
        MACOS_INSTALL, ["--dry-run", "--autostart", "--venv", "/tmp/v"], bin_dir, box["sysroot"], box["log"]
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"+ {INSTALLERS}/install.sh --venv /tmp/v --torch mps" in out
    assert "+ /tmp/v/bin/vcam tray --autostart on" in out
    assert "OBS Studio 30 or newer" in out and "Start Virtual Camera" in out and "Camera Extensions" in out


def test_macos_installer_refuses_intel_macs(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], {})
    result = run_script(MACOS_INSTALL, ["--dry-run"], bin_dir, box["sysroot"], box["log"], FAKE_OS="Darwin")
    assert result.returncode == 2
    assert "Intel CPU (x86_64)" in result.stderr


# --- the desktop entry ------------------------------------------------------------------------------------


def test_exec_arguments_are_quoted_by_the_spec() -> None:
    assert desktop_entry.quote_exec_arg("/usr/bin/vcam") == "/usr/bin/vcam"
    assert desktop_entry.quote_exec_arg("/home/a b/vcam") == '"/home/a b/vcam"'
    assert desktop_entry.quote_exec_arg('say "hi" $HOME') == '"say \\"hi\\" \\$HOME"'
    assert desktop_entry.quote_exec_arg("100%") == "100%%"
    assert desktop_entry.quote_exec_arg("") == '""'
    # a backslash: escaped for the quoting rule, then again for the string rule -> four
    assert desktop_entry.exec_line(["C:\\x y"]) == '"C:\\\\\\\\x y"'


def test_render_menu_and_autostart_entries() -> None:
    menu = desktop_entry.render_desktop_entry("Live2Diff Camera", ["/opt/my venv/bin/vcam", "tray"])
    lines = menu.splitlines()
    assert lines[0] == "[Desktop Entry]"
    assert "Type=Application" in lines and "Terminal=false" in lines
    assert 'Exec="/opt/my venv/bin/vcam" tray' in lines
    assert "Icon=camera-video" in lines
    assert any(line.startswith("Categories=") for line in lines)
    assert not any(line.startswith("X-GNOME-Autostart") for line in lines)
    auto = desktop_entry.render_desktop_entry("Live2Diff Camera", "/opt/vcam tray", autostart=True)
    assert "X-GNOME-Autostart-enabled=true" in auto.splitlines() and "Exec=/opt/vcam tray" in auto.splitlines()
    with pytest.raises(ValueError, match="exec_cmd"):
        desktop_entry.render_desktop_entry("x", [])
    with pytest.raises(ValueError, match="name"):
        desktop_entry.render_desktop_entry("two\nlines", ["/bin/true"])


def test_desktop_entry_install_and_remove_in_a_temporary_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = desktop_entry.install_desktop_entry(["/opt/venv/bin/vcam", "tray"], home=home)
    assert path == home / ".local/share/applications/live2diff-vcam.desktop"
    text = path.read_text()
    assert "Exec=/opt/venv/bin/vcam tray" in text and "Name=Live2Diff Camera" in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert desktop_entry.write_desktop_file(path, text) is False  # unchanged: nothing written
    assert desktop_entry.remove_desktop_entry(home=home) is True
    assert not path.exists()
    assert desktop_entry.remove_desktop_entry(home=home) is False


def test_desktop_entry_honours_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert desktop_entry.desktop_entry_path() == tmp_path / "data/applications/live2diff-vcam.desktop"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert desktop_entry.desktop_entry_path() == tmp_path / "h/.local/share/applications/live2diff-vcam.desktop"


def test_desktop_entry_module_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    install = subprocess.run(
        [sys.executable, "-m", "vcam.desktop_entry", "install", "--home", str(home), "--exec", "/x/vcam", "tray"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert install.returncode == 0, install.stderr
    path = home / ".local/share/applications/live2diff-vcam.desktop"
    assert "Exec=/x/vcam tray" in path.read_text()
    remove = subprocess.run(
        [sys.executable, "-m", "vcam.desktop_entry", "remove", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remove.returncode == 0 and "removed" in remove.stdout
    assert not path.exists()


@pytest.mark.parametrize(
    "script", ["linux/install.sh", "linux/setup-virtual-camera.sh", "macos/install.sh", "install.sh"]
)
def test_help_prints_the_header_comment_and_no_code(script: str) -> None:
    path = INSTALLERS / script
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    header = []
    for line in path.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line[2:] if line.startswith("# ") else line[1:])
    assert result.stdout.splitlines() == header
    assert "set -euo pipefail" not in result.stdout and len(header) > 3


def test_the_driver_scripts_own_dry_run_says_to_run_it_as_root(box: dict[str, Path]) -> None:
    bin_dir = make_bin(box["bin"], apt_fakes())
    result = run_script(DRIVER_SCRIPT, ["--dry-run"], bin_dir, box["sysroot"], box["log"])
    assert "dry run finished: run it again without --dry-run, as root (sudo), to do it" in result.stdout
