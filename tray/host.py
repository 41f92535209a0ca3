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

log = logging.getLogger(__name__)

#: the StatusNotifierItem hosts' well-known name on the session bus
WATCHER_NAME = "org.kde.StatusNotifierWatcher"
#: how long a D-Bus query may take
QUERY_TIMEOUT_S = 5.0

TRAY_HOST_HELP = (
    "no system tray to show the icon in (no StatusNotifier host on the session bus, no XEmbed tray on the "
    'display). GNOME: install and enable the "AppIndicator and KStatusNotifierItem Support" extension '
    "(Debian/Ubuntu: `sudo apt install gnome-shell-extension-appindicator`, then log out and back in); other "
    "desktops: add a system tray (notification area) to the panel. The camera keeps running meanwhile; "
    "`vcam doctor` checks this"
)


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


def tray_host_problem(platform: str | None = None) -> str | None:
    """What to install when a tray icon cannot appear; None when a host is there or it cannot be told."""
    if (platform if platform is not None else sys.platform) in ("darwin", "win32"):
        return None  # the menu bar and the notification area are always there
    watcher = status_notifier_watcher_present()
    if watcher:
        return None
    xembed = xembed_tray_present()
    if xembed:
        return None
    if watcher is None and xembed is None:
        log.debug("cannot tell whether a tray host runs (no session bus and no X display to ask)")
        return None
    return TRAY_HOST_HELP
