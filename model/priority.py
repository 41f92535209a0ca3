"""The CPU priority of background model work: a style's load and warmup, a new prompt's warmup.

On a CPU such work keeps every core busy for seconds to minutes. At the priority of the frame loop's threads,
the output, capture and status threads (or the thread holding a lock or the GIL they wait for) queue behind it:
150-170 ms output gaps while a real-size style warmed up on 2 cores. So it runs `BACKGROUND_NICE` levels lower
(Linux nice values are per thread, and a thread's new threads, torch's OpenMP workers among them, inherit its
value); the frame loop's threads keep the process's priority.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

#: nice levels below the process's at which background model work runs (Linux)
BACKGROUND_NICE = 10


def lower_thread_priority(steps: int = BACKGROUND_NICE) -> None:
    """Run the calling thread, and the threads it starts from now on, `steps` nice levels lower (up to 19), for
    good: an unprivileged thread cannot raise it back, so call it only in a thread made for the work. Linux only:
    elsewhere it does nothing."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + steps))
    except OSError as error:  # a sandbox that forbids it: the work runs at the normal priority
        log.debug("could not lower a background thread's priority: %s", error)
