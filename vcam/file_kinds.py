"""What a path is, in words, for errors about a path that should be a regular file or a folder."""

from __future__ import annotations

import stat
from pathlib import Path


def file_kind(path: Path) -> str:
    """'a file', 'a folder', 'a FIFO (named pipe)', 'a socket', 'a device', or 'missing' (follows symlinks)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def why_not_a_file(path: Path) -> str | None:
    """None for a regular file; else what is wrong ('not found', 'is a folder, not a file', ...)."""
    kind = file_kind(path)
    if kind == "a file":
        return None
    if kind == "missing":
        return "not found"
    if kind == "unreadable":
        return "cannot be read"
    return f"is {kind}, not a file"
