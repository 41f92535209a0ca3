"""`StageTimes`: seconds a pipeline spends per stage (encode, depth, unet, decode), for `vcam bench` and the status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

STAGES = ("encode", "depth", "unet", "decode")


@dataclass
class StageTimes:
    """Seconds spent per stage since the last `clear()`.

    A stage timed on a CUDA stream (what a pipeline on CUDA does) is device time: CUDA events recorded on that
    stream around the body, read once they have completed, so timing adds no host sync inside a frame (one would
    also serialise the encode overlap's two streams). A stage timed without a stream is wall time, CUDA work
    synchronised before the clock is read.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    calls: int = 0
    _events: list[tuple[str, Any, Any]] = field(default_factory=list)  # (stage, start, end) not read yet

    def clear(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = 0
        self._events = []

    def per_call_ms(self) -> dict[str, float]:
        self._read_events(wait=True)
        count = max(self.calls, 1)
        return {stage: 1000.0 * value / count for stage, value in self.seconds.items()}

    @contextmanager
    def timed(self, stage: str, device: torch.device, stream: torch.cuda.Stream | None = None) -> Iterator[None]:
        """Add the time the body takes to `stage`: wall time (waiting for `device`'s queued CUDA work first), or
        with `stream`, the device time between two events recorded on it (no synchronisation)."""
        import torch

        if stream is not None:
            self._read_events(wait=False)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(stream)
                self._events.append((stage, start, end))
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds[stage] += time.perf_counter() - started

    def _read_events(self, wait: bool) -> None:
        """Add the completed events' times (all of them when `wait`, blocking until they complete)."""
        waiting = []
        for stage, start, end in self._events:
            if wait:
                end.synchronize()
            elif not end.query():
                waiting.append((stage, start, end))
                continue
            self.seconds[stage] += start.elapsed_time(end) / 1000.0
        self._events = waiting
