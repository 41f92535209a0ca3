"""Clicks on pystray's xorg icon: its window asks X for exposure and structure events only, so its
ButtonPress handler (a left click runs the menu's default item: "Pause camera") never runs. Asking for
button presses too makes a click pause and resume the camera, as the README promises."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def receive_clicks(icon: Any) -> bool:
    """Add ButtonPress to the event mask of the xorg icon's window (call before `icon.run()`, in the thread
    that built it); False (logged) when this pystray has no such window."""
    import Xlib.X

    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    if window is None or display is None:  # another pystray version: the click stays unsupported
        log.warning("this pystray's xorg icon has no window to receive clicks: use `vcam` to pause the camera")
        return False
    window.change_attributes(event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask)
    display.flush()
    return True
