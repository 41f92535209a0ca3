"""Start the tray at login, per OS: an XDG autostart entry, a macOS LaunchAgent, or the Windows Run key.

- Linux (and other XDG desktops): `~/.config/autostart/live2diff-vcam.desktop`, rendered by
  `vcam.desktop_entry.render_desktop_entry(..., autostart=True)`.
- macOS: `~/Library/LaunchAgents/org.live2diff-vcam.tray.plist` with RunAtLoad.
- Windows: the value "Live2Diff Camera" under HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run.

Every function takes `home` and `platform` (defaults: the user's home and `sys.platform`) so each
flavour can be written and removed in a temporary home on any OS; the Windows flavour takes a
`registry` (anything with get/set/delete, `WinregRunKey()` by default) for the same reason.
"""

from __future__ import annotations

import importlib
import logging
import os
import plistlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LAUNCH_AGENT_LABEL = "org.live2diff-vcam.tray"
RUN_KEY_PATH = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE_NAME = "Live2Diff Camera"


class RunKeyRegistry(Protocol):
    """The Windows Run key, reduced to what autostart needs (string values by name)."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


def _winreg() -> Any:
    """The `winreg` module (Windows only; typed Any so type checks pass on every OS)."""
    return importlib.import_module("winreg")


class WinregRunKey:
    """HKCU\\...\\CurrentVersion\\Run through `winreg` (Windows only)."""

    def get(self, name: str) -> str | None:
        winreg = _winreg()
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, winreg.KEY_READ) as key:
                value, _kind = winreg.QueryValueEx(key, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, name: str, value: str) -> None:
        winreg = _winreg()
        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, winreg.KEY_SET_VALUE) as key:
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)

    def delete(self, name: str) -> None:
        winreg = _winreg()
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, name)
        except FileNotFoundError:
            return


def _flavour(platform: str | None) -> str:
    """ "windows", "macos" or "xdg" for a `sys.platform`-style name."""
    name = platform if platform is not None else sys.platform
    if name.startswith("win"):
        return "windows"
    if name == "darwin":
        return "macos"
    return "xdg"


def default_command(platform: str | None = None) -> list[str]:
    """The command that starts the tray from the Python environment running this.

    Windows prefers the `vcam-tray` GUI launcher (no console window), then `pythonw -m vcam tray`;
    elsewhere the `vcam` script beside the interpreter, then `python -m vcam tray`.
    """
    scripts = Path(sys.executable).parent
    if _flavour(platform) == "windows":
        launcher = scripts / "vcam-tray.exe"
        if launcher.exists():
            return [str(launcher)]
        pythonw = scripts / "pythonw.exe"
        return [str(pythonw if pythonw.exists() else Path(sys.executable)), "-m", "vcam", "tray"]
    script = scripts / "vcam"
    if script.exists():
        return [str(script), "tray"]
    return [sys.executable, "-m", "vcam", "tray"]


def autostart_path(home: Path | None = None, platform: str | None = None) -> Path | None:
    """The file that makes the tray start at login (None on Windows, where it is a registry value).

    With `home` None on XDG systems, $XDG_CONFIG_HOME (when set and absolute) replaces ~/.config.
    """
    flavour = _flavour(platform)
    if flavour == "windows":
        return None
    if flavour == "macos":
        return (home or Path.home()) / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
    from vcam.desktop_entry import DESKTOP_FILE_NAME

    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    if home is None and config_home and Path(config_home).is_absolute():
        return Path(config_home) / "autostart" / DESKTOP_FILE_NAME
    return (home or Path.home()) / ".config" / "autostart" / DESKTOP_FILE_NAME


def _launch_agent(command: Sequence[str]) -> bytes:
    plist = {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": False,
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML)


def enable_autostart(
    home: Path | None = None,
    platform: str | None = None,
    command: list[str] | None = None,
    registry: RunKeyRegistry | None = None,
) -> str:
    """Make the tray start at login; returns where it was written (a path, or the registry value). Idempotent."""
    command = command if command is not None else default_command(platform)
    if not command or not command[0]:
        raise ValueError(f"the autostart command must start with the program to run, got {command!r}")
    flavour = _flavour(platform)
    if flavour == "windows":
        run_key = registry if registry is not None else WinregRunKey()
        run_key.set(RUN_VALUE_NAME, subprocess.list2cmdline(command))
        where = f"HKCU\\{RUN_KEY_PATH}\\{RUN_VALUE_NAME}"
    else:
        path = autostart_path(home, platform)
        if path is None:
            raise ValueError(f"no autostart file on platform {platform!r}")
        if flavour == "macos":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_launch_agent(command))
        else:
            from vcam.desktop_entry import APP_TITLE, render_desktop_entry, write_desktop_file

            write_desktop_file(path, render_desktop_entry(APP_TITLE, command, autostart=True))
        where = str(path)
    log.info("start at login: on (%s)", where)
    return where


def disable_autostart(
    home: Path | None = None, platform: str | None = None, registry: RunKeyRegistry | None = None
) -> bool:
    """Stop the tray from starting at login; returns whether it was on."""
    was_on = is_autostart_enabled(home, platform, registry)
    if _flavour(platform) == "windows":
        run_key = registry if registry is not None else WinregRunKey()
        run_key.delete(RUN_VALUE_NAME)
    else:
        path = autostart_path(home, platform)
        if path is not None:
            path.unlink(missing_ok=True)
    log.info("start at login: off")
    return was_on


def is_autostart_enabled(
    home: Path | None = None, platform: str | None = None, registry: RunKeyRegistry | None = None
) -> bool:
    """Whether the tray starts at login (an XDG entry marked Hidden=true counts as off)."""
    flavour = _flavour(platform)
    if flavour == "windows":
        run_key = registry if registry is not None else WinregRunKey()
        return bool(run_key.get(RUN_VALUE_NAME))
    path = autostart_path(home, platform)
    if path is None or not path.is_file():
        return False
    if flavour == "xdg":
        lines = {line.strip().lower() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()}
        return "hidden=true" not in lines and "x-gnome-autostart-enabled=false" not in lines
    return True
