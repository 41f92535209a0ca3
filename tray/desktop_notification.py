"""A desktop notification without the icon (the icon may be invisible, or its backend has none): notify-send,
else `gdbus` calling the freedesktop Notifications service; only where a session bus runs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

#: how long the notification stays up, and how long sending it may take
EXPIRE_MS = 15000
SEND_TIMEOUT_S = 5.0


def send_desktop_notification(title: str, message: str) -> bool:
    """Show `message` under `title`; False (logged) when no notification service could be reached."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return False  # without a bus the tools would start one of their own
    if shutil.which("notify-send") is not None:
        command = ["notify-send", f"--expire-time={EXPIRE_MS}", title, message]
    elif shutil.which("gdbus") is not None:
        command = [
            "gdbus", "call", "--session", "--dest", "org.freedesktop.Notifications",
            "--object-path", "/org/freedesktop/Notifications", "--method", "org.freedesktop.Notifications.Notify",
            title, "0", "", title, message, "[]", "{}", str(EXPIRE_MS),
        ]  # fmt: skip
    else:
        log.debug("neither notify-send nor gdbus is installed: no desktop notification")
        return False
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SEND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.debug("the desktop notification failed: %s", error)
        return False
    if result.returncode != 0:
        log.debug("the desktop notification failed (exit %d): %s", result.returncode, result.stderr.strip())
        return False
    return True
