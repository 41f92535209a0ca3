"""Process helpers for tests of what a killed process leaves behind."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """The id of a process that has exited (and was reaped): what a killed writer's temporary file names."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
