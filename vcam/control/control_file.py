"""The control file: where a run's control API listens and its token, for the local clients that are not the
preview page (the tray's supervisor, scripts).

One JSON file per run, readable by its owner only (0600), in the user's runtime folder:
`control-PID.json` by default, or the path given with `vcam run --control-file PATH` (a supervisor names the
file of the child it starts, so it never has to guess). It holds {"pid", "url", "token"}; the token is never
on a command line. It is written once the API listens and removed when the run ends; a file left by a run
that was killed names a process that is gone, and is replaced by the next run that wants its path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vcam.errors import ControlError
from vcam.paths import runtime_dir

log = logging.getLogger(__name__)

#: the file's keys
FIELDS = ("pid", "url", "token")


@dataclass(frozen=True)
class ControlEndpoint:
    """Where one run's control API listens: `url` is the server's root (the API is under `url + "api/"`)."""

    pid: int
    url: str
    token: str

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "url": self.url, "token": self.token})


def default_control_file(pid: int | None = None) -> Path:
    """`control-PID.json` in the user's runtime folder (this process's pid by default)."""
    return runtime_dir() / f"control-{os.getpid() if pid is None else pid}.json"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_control_file(path: Path) -> ControlEndpoint:
    """The endpoint a control file names; ControlError saying what is wrong when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ControlError(f"no control file at {path}: is `vcam run` running (with this --control-file)?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ControlError(f"cannot read the control file {path}: {error}") from error
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("pid"), int)
        or not isinstance(data.get("url"), str)
        or not isinstance(data.get("token"), str)
    ):
        raise ControlError(f"{path} is not a vcam control file (it needs {', '.join(FIELDS)})")
    return ControlEndpoint(pid=data["pid"], url=data["url"], token=data["token"])


def check_control_file(path: Path) -> None:
    """Refuse to replace a file that is not a stale control file: never overwrite a user's file unasked."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise ControlError(f"--control-file {path} exists and is not a regular file: give another path")
    try:
        endpoint = read_control_file(path)
    except ControlError:
        raise ControlError(
            f"--control-file {path} exists and is not a vcam control file: give another path (it is left as is)"
        ) from None
    if endpoint.pid != os.getpid() and process_alive(endpoint.pid):
        raise ControlError(f"--control-file {path} belongs to a running vcam (pid {endpoint.pid}): give another path")
    log.debug("replacing the stale control file %s of pid %d", path, endpoint.pid)


def write_control_file(path: Path, endpoint: ControlEndpoint) -> None:
    """Write `endpoint` to `path`, readable by its owner only (0600), atomically (a reader never sees half)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_control_file(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        descriptor = os.open(temporary, flags, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(endpoint.to_json())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ControlError(f"cannot write the control file {path}: {error.strerror or error}") from error


def remove_control_file(path: Path, endpoint: ControlEndpoint) -> None:
    """Remove `path` if it still holds `endpoint` (another run may have taken the path since)."""
    try:
        if read_control_file(path).token == endpoint.token:
            path.unlink()
    except (ControlError, OSError) as error:
        log.debug("control file %s not removed: %s", path, error)
