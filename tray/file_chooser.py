"""Ask the user for an image file: zenity (GNOME) or kdialog (KDE) in a child process, else GTK's own
dialog when the tray's GTK main loop runs (the gtk and AppIndicator backends); None when there is none.

Each chooser blocks the calling thread (never the icon's loop) until the user picks a file or cancels.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: the image files the chooser offers
IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp")

#: a chooser: shows `title`, returns the chosen file or None when the user cancelled
FileChooser = Callable[[str], Path | None]


def chooser_command(title: str) -> list[str] | None:
    """The command line of the first installed dialog program (zenity, then kdialog), or None."""
    patterns = " ".join(IMAGE_PATTERNS)
    if shutil.which("zenity") is not None:
        return ["zenity", "--file-selection", f"--title={title}", f"--file-filter=Images | {patterns}"]
    if shutil.which("kdialog") is not None:
        return ["kdialog", "--title", title, "--getopenfilename", str(Path.home()), f"{patterns}|Images"]
    return None


def _run_dialog_program(command: list[str]) -> Path | None:
    log.debug("asking for an image: %s", command[0])
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    chosen = result.stdout.strip()
    if result.returncode != 0 or not chosen:  # 1: cancelled (both programs)
        log.debug("%s: no file chosen (exit %d) %s", command[0], result.returncode, result.stderr.strip())
        return None
    return Path(chosen)


def _choose_with_gtk(title: str) -> Path | None:
    """GTK's dialog, shown from the GTK main loop the tray's icon runs (this thread waits for the answer)."""
    import gi

    gi.require_version("Gtk", "3.0")
    from gi.repository import GLib, Gtk

    answer: list[Path | None] = [None]
    done = threading.Event()

    def show() -> bool:
        try:
            dialog = Gtk.FileChooserDialog(title=title, action=Gtk.FileChooserAction.OPEN)
            dialog.add_buttons(Gtk.STOCK_CANCEL, Gtk.ResponseType.CANCEL, Gtk.STOCK_OPEN, Gtk.ResponseType.OK)
            images = Gtk.FileFilter()
            images.set_name("Images")
            for pattern in IMAGE_PATTERNS:
                images.add_pattern(pattern)
            dialog.add_filter(images)
            if dialog.run() == Gtk.ResponseType.OK and dialog.get_filename():
                answer[0] = Path(dialog.get_filename())
            dialog.destroy()
        finally:
            done.set()
        return False  # run once

    GLib.idle_add(show)
    done.wait()
    return answer[0]


def find_file_chooser(gtk_loop_runs: bool) -> FileChooser | None:
    """The chooser to use: a dialog program when one is installed, else GTK's dialog when `gtk_loop_runs`."""
    if chooser_command("") is not None:
        return lambda title: _run_dialog_program(chooser_command(title) or [])
    if gtk_loop_runs:
        return _choose_with_gtk
    return None
