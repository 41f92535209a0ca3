"""One tray per user: a second lock holder is refused with the first one's pid; a dead holder never blocks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from vcam.tray.single_instance import LOCK_FILE_NAME, AlreadyRunning, SingleInstanceLock, default_lock_path

HOLDER = """
import sys
from pathlib import Path
from vcam.tray.single_instance import SingleInstanceLock
lock = SingleInstanceLock(Path(sys.argv[1]))
lock.acquire()
print("LOCKED", flush=True)
sys.stdin.read()
"""


@contextmanager
def lock_held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that holds the lock until the context ends (then it exits, releasing it)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "LOCKED"
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)


def test_default_lock_lives_in_the_runtime_dir(private_home: Path) -> None:
    assert default_lock_path() == private_home / "run" / LOCK_FILE_NAME
    assert (private_home / "run").is_dir()


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    path = tmp_path / "tray.lock"
    with lock_held_by_another_process(path) as child:
        with pytest.raises(AlreadyRunning, match=rf"already running \(pid {child.pid}\)") as caught:
            SingleInstanceLock(path).acquire()
        assert caught.value.pid == child.pid
    with SingleInstanceLock(path) as lock:  # the holder exited: the lock is free again
        assert lock.held
        assert path.read_text(encoding="ascii").strip() == str(os.getpid())
    assert not lock.held


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "tray.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(dead.stdout, encoding="ascii")  # the pid of a process that is gone
    lock = SingleInstanceLock(path)
    lock.acquire()
    assert lock.held
    assert path.read_text(encoding="ascii").strip() == str(os.getpid())
    lock.release()
    lock.release()  # idempotent
    assert path.read_text(encoding="ascii") == ""


def test_run_tray_says_another_tray_is_running_and_returns_0(
    private_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vcam.tray.app import run_tray

    with lock_held_by_another_process(default_lock_path()) as child, caplog.at_level(logging.WARNING):
        assert run_tray() == 0
    assert f"vcam tray is already running (pid {child.pid})" in caplog.text


def test_second_vcam_tray_exits_0_with_the_message(private_home: Path) -> None:
    env = {**os.environ, "VCAM_HOME": str(private_home), "DISPLAY": ""}
    with lock_held_by_another_process(default_lock_path()) as child:
        second = subprocess.run(
            [sys.executable, "-m", "vcam", "tray"], env=env, capture_output=True, text=True, timeout=60
        )
    assert second.returncode == 0, second.stderr
    assert f"vcam tray is already running (pid {child.pid})" in second.stderr
