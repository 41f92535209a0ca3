"""One tray per user: an exclusive lock on a file in the runtime dir, held for the process's lifetime.

The operating system drops the lock when the process ends, however it ends, so a lock file left
behind by a dead process never blocks the next start. `fcntl.flock` on POSIX, `msvcrt.locking`
on Windows. The holder writes its pid into the file, so a second start can name it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

log = logging.getLogger(__name__)

LOCK_FILE_NAME = "tray.lock"


class AlreadyRunning(Exception):
    """Another process holds the lock; `pid` is its process id when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"vcam tray is already running{holder}: use its icon in the system tray, or quit it first")


def default_lock_path() -> Path:
    """`<runtime dir>/tray.lock`; a per-user temp folder when the runtime dir cannot be created."""
    from vcam.paths import runtime_dir

    folder = runtime_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        user = os.environ.get("USER") or os.environ.get("USERNAME") or "user"
        fallback = Path(tempfile.gettempdir()) / f"live2diff-vcam-{user}"
        log.info("cannot create the runtime dir %s (%s); locking in %s", folder, error.strerror, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        folder = fallback
    return folder / LOCK_FILE_NAME


class SingleInstanceLock:
    """An exclusive, non-blocking lock on `path`; `acquire()` raises AlreadyRunning when another process has it.

    Use as a context manager (`with SingleInstanceLock(): ...`) or call acquire()/release().
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_lock_path()
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 (held open for the process's life)
        try:
            _lock(handle)
        except OSError:
            handle.close()
            raise AlreadyRunning(self.path, read_pid(self.path)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        log.debug("holding the tray lock %s", self.path)

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            _unlock(handle)
        except OSError as error:
            log.debug("unlocking %s: %s", self.path, error)
        finally:
            handle.close()

    def __enter__(self) -> SingleInstanceLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def read_pid(path: Path) -> int | None:
    """The pid written in a lock file (None when empty, unreadable or locked against reading)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


if sys.platform == "win32":

    def _lock(handle: IO[str]) -> None:
        import msvcrt

        handle.seek(0)
        # lock a byte far past the pid, so other processes can still read the pid
        os.lseek(handle.fileno(), 1024, os.SEEK_SET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle: IO[str]) -> None:
        import msvcrt

        os.lseek(handle.fileno(), 1024, os.SEEK_SET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:

    def _lock(handle: IO[str]) -> None:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle: IO[str]) -> None:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
