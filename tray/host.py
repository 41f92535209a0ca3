"""Is there a system tray to show the icon in? On Linux an icon needs a tray host: a StatusNotifier watcher
on the session bus (KDE, XFCE, GNOME with the AppIndicator extension: the AppIndicator backend) or an XEmbed
tray on the X display (the selection owner of `_NET_SYSTEM_TRAY_S{screen}`: the gtk and xorg backends, and
AppIndicator's fallback). Stock GNOME has neither: the icon never appears, so the tray and `vcam doctor`
say what to install (`tray_host_problem`, defined once here).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: the StatusNotifierItem hosts' well-known name on the session bus
WATCHER_NAME = "org.kde.StatusNotifierWatcher"
#: how long a D-Bus query may take
QUERY_TIMEOUT_S = 5.0

#: what to do about a missing tray host
TRAY_HOST_FIX = (
    'GNOME: install and enable the "AppIndicator and KStatusNotifierItem Support" extension (Debian/Ubuntu: '
    "`sudo apt install gnome-shell-extension-appindicator`, then log out and back in); other desktops: add a "
    "system tray (notification area) to the panel"
)
NO_HOST = "no StatusNotifier host on the session bus and no XEmbed tray on the display"
TRAY_HOST_HELP = (
    f"no system tray to show the icon in ({NO_HOST}). {TRAY_HOST_FIX}. The camera keeps running meanwhile; "
    "`vcam doctor` checks this"
)


@dataclass(frozen=True)
class TrayHost:
    """What was found: a StatusNotifier watcher on the session bus, an XEmbed tray on the X display (each
    None when it could not be asked: no bus, no display, no tool)."""

    watcher: bool | None
    xembed: bool | None

    @property
    def missing(self) -> bool:
        """True when asking found no host (never when nothing could be asked)."""
        asked = self.watcher is not None or self.xembed is not None
        return asked and not self.watcher and not self.xembed

    def describe(self) -> str:
        if self.watcher:
            return "a StatusNotifier host on the session bus"
        if self.xembed:
            return "an XEmbed system tray on the display"
        if self.missing:
            return NO_HOST
        return "cannot tell: no session bus and no X display to ask (the tray needs a desktop session)"


def status_notifier_watcher_present(timeout: float = QUERY_TIMEOUT_S) -> bool | None:
    """Whether the session bus has a StatusNotifier watcher; None when that cannot be asked (no bus, no tool)."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return None
    if shutil.which("dbus-send") is not None:
        command = [
            "dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner", f"string:{WATCHER_NAME}",
        ]  # fmt: skip
        answers = {"boolean true": True, "boolean false": False}
    elif shutil.which("gdbus") is not None:
        command = [
            "gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus",
            "--method", "org.freedesktop.DBus.NameHasOwner", WATCHER_NAME,
        ]  # fmt: skip
        answers = {"(true,)": True, "(false,)": False}
    else:
        log.debug("neither dbus-send nor gdbus is installed: cannot ask the session bus")
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.debug("asking the session bus failed: %s", error)
        return None
    for answer, present in answers.items():
        if answer in result.stdout:
            return present
    log.debug("unexpected answer from the session bus (exit %d): %s", result.returncode, result.stderr.strip())
    return None


def xembed_tray_present() -> bool | None:
    """Whether the X display has an XEmbed system tray; None without an X display or python-xlib."""
    if not os.environ.get("DISPLAY"):
        return None
    try:
        import Xlib.display
        import Xlib.X
    except ImportError:
        log.debug("python-xlib is not installed: cannot look for an XEmbed tray")
        return None
    try:
        display = Xlib.display.Display()
    except Exception as error:  # Xlib raises its own errors for an unreachable display
        log.debug("cannot open the X display: %s", error)
        return None
    try:
        atom = display.intern_atom(f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}")
        owner = display.get_selection_owner(atom)
        return bool(getattr(owner, "id", owner) != Xlib.X.NONE)
    finally:
        display.close()


def find_tray_host(platform: str | None = None) -> TrayHost | None:
    """Ask the session bus and the X display for a tray host; None on macOS and Windows (always there)."""
    if (platform if platform is not None else sys.platform) in ("darwin", "win32"):
        return None
    watcher = status_notifier_watcher_present()
    return TrayHost(watcher, None if watcher else xembed_tray_present())


def tray_host_problem(platform: str | None = None) -> str | None:
    """What to install when a tray icon cannot appear; None when a host is there or it cannot be told."""
    host = find_tray_host(platform)
    if host is None or not host.missing:
        return None
    return TRAY_HOST_HELP
