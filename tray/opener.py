"""Open a folder, a file or a URL with the desktop's default application (browser, file manager, editor)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from vcam.errors import UserError

log = logging.getLogger(__name__)


def open_url(url: str) -> None:
    """Open `url` in the default browser."""
    import webbrowser

    if not webbrowser.open(url):
        raise UserError(f"no web browser could open {url}: open it by hand")


def open_path(path: Path) -> None:
    """Open a folder or file with the desktop's default application."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if sys.platform == "win32":
        os.startfile(str(path))  # type: ignore[attr-defined,unused-ignore]
        return
    program = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(program) is None:
        raise UserError(
            f"cannot open {path}: `{program}` is not installed (Debian/Ubuntu: sudo apt install xdg-utils)"
        )
    log.debug("%s %s", program, path)
    subprocess.Popen([program, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
