"""The output's right of way: background model work pauses around each frame the output sends.

A style's load and warmup run in their own thread (`vcam.style_switch.StyleLoads`) at a lower CPU priority, and
torch releases the GIL inside its kernels; but between two kernels the loading thread takes the GIL back, thousands
of times a second. At real size on 2 cores the output thread, woken on time for its frame, then lost the GIL race
again and again (and sometimes the GIL was held by the loading thread while the scheduler had it off the CPU, its
priority being lower): 75-190 ms output gaps while a style warmed up.

So the output thread says when its next frame is due (`OutputGate.expect`), and background work runs its torch calls
through `giving_way`: before each call it asks `give_way()`, which waits, without the GIL, from `MARGIN_S` before
the frame is due until the output has sent it and announced the next one. The output then competes for the GIL only
with the frame loop's own threads. A stalled output holds background work at most `LONGEST_WAIT_S` per frame.
Work that times itself (the profile's measurement of a new style) leaves out its waits: `seconds_given_way()`.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vcam.clock import SYSTEM_CLOCK, Clock

#: seconds before a frame is due from which background work waits for the output to send it
MARGIN_S = 0.004
#: the longest background work waits for one frame (the output stalled, or stopped without saying so)
LONGEST_WAIT_S = 0.1
#: how often a waiting thread looks at the due time again (when the output could not take the lock to wake it)
RECHECK_S = 0.01

_given_way = threading.local()  # .seconds: how long the thread has waited in `give_way`, on the gates' clocks


def seconds_given_way() -> float:
    """How long the calling thread has waited in `OutputGate.give_way` so far (seconds on the gate's clock)."""
    seconds: float = getattr(_given_way, "seconds", 0.0)
    return seconds


class OutputGate:
    """When the output's next frame is due, and a wait for background work around it (see the module's text)."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, margin_s: float = MARGIN_S, longest_wait_s: float = LONGEST_WAIT_S
    ) -> None:
        """`clock`: the output's (the due times are on its scale)."""
        self.margin_s = margin_s
        self.longest_wait_s = longest_wait_s
        self._clock = clock
        self._due = math.inf  # no frame expected: nothing waits
        self._timed_out = math.inf  # a due time background work already waited its longest for
        self._changed = threading.Condition()
        self.waits = 0  # how many times background work gave way

    def expect(self, due: float) -> None:
        """The output thread: my next frame is due at `due` (the clock's time; the previous one was sent). It never
        waits for the gate's lock: a waiting thread at a lower priority may hold it while off the CPU; the waiters
        it cannot wake then see the new time within `RECHECK_S`."""
        self._due = due
        if self._changed.acquire(blocking=False):
            try:
                self._changed.notify_all()
            finally:
                self._changed.release()

    def open(self) -> None:
        """The output thread: no frame is expected (it stopped, or has not started): nothing waits."""
        self.expect(math.inf)

    def give_way(self) -> None:
        """Background work: return at once unless a frame is due within `margin_s`; then wait until the output has
        sent it (it announces the next), at most `longest_wait_s`."""
        due, started = self._due, self._clock.now()
        if due == self._timed_out or started < due - self.margin_s:
            return
        deadline = time.monotonic() + self.longest_wait_s
        with self._changed:
            self.waits += 1
            while self._due == due:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._timed_out = due
                    break
                self._changed.wait(min(left, RECHECK_S))
        _given_way.seconds = seconds_given_way() + self._clock.now() - started


@functools.cache
def _give_way_mode() -> type[Any]:
    """The torch function mode that calls `give_way()` before each torch call of its thread (torch imported
    lazily: the class is made on first use)."""
    from torch.overrides import TorchFunctionMode

    class GiveWayMode(TorchFunctionMode):
        def __init__(self, gate: OutputGate) -> None:
            super().__init__()
            self.gate = gate

        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
        ) -> Any:
            self.gate.give_way()
            return func(*args, **(kwargs or {}))

    return GiveWayMode


@contextmanager
def giving_way(gate: OutputGate) -> Iterator[None]:
    """Every torch call of the calling thread gives way to the output first (`OutputGate.give_way`); torch's modes
    are per thread, so the frame loop's own torch calls are untouched. Without torch imported it does nothing (the
    runtime imports the model stack before its output starts; work that imports torch later is not gated)."""
    if "torch" not in sys.modules:
        yield
        return
    with _give_way_mode()(gate):
        yield
