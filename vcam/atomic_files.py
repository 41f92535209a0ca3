"""Files written whole or not at all: a temporary file beside the target, renamed over it when complete.

The temporary file is `.NAME.PID.tmp` in the target's folder (same file system, so the rename is atomic).
A process killed mid-write leaves its temporary behind; the next write to the same target removes the
temporaries of processes that are gone (`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)


def temporary_path(target: Path) -> Path:
    """The temporary file this process writes `target` through."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform without signal 0: leave its file alone
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove `target`'s temporaries left by processes that no longer run; returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.tmp")
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        try:
            entry.unlink()
        except OSError as error:
            log.debug("could not remove the stale temporary %s: %s", entry, error)
            continue
        log.info("removed %s, left by an interrupted write", entry)
        removed.append(entry)
    return removed


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def publish(temporary: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished `temporary` to `target` atomically; without `overwrite` an existing target is kept.

    Raises FileExistsError (and keeps `temporary`) when `target` exists and `overwrite` is False.
    """
    if overwrite:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)  # fails if target exists: no window where another file is clobbered
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            if target.exists() or target.is_symlink():
                raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
            os.replace(temporary, target)
        else:
            temporary.unlink()
    fsync_folder(target.parent)
