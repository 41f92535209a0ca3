"""The frame loop's counters and recent times, and the fps and latency figures the status shows from them."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: seconds of history for the fps and latency figures
STATS_WINDOW_S = 3.0


def _rate(times: deque[float], now: float) -> float:
    """Events per second over the last `STATS_WINDOW_S` seconds (0.0 with fewer than two)."""
    recent = [t for t in times if now - t <= STATS_WINDOW_S]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    return (len(recent) - 1) / span if span > 0 else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


@dataclass
class FrameStats:
    """Monotonic times of captured, finished and sent frames, latencies, stage times and counters.

    Written by the runtime's threads under the runtime's lock; a `snapshot` taken under it gives the `figures`
    outside it (the output thread takes that lock every tick).
    """

    captured: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    sent: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    finished: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))
    segment_ms: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    translate_ms: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    frames_out: int = 0
    dropped: int = 0
    repeated: int = 0

    def snapshot(self) -> FrameStats:
        """A copy (the deques copied in C: microseconds) to compute `figures` from without the runtime's lock."""
        return FrameStats(
            captured=self.captured.copy(),
            sent=self.sent.copy(),
            finished=self.finished.copy(),
            latency_ms=self.latency_ms.copy(),
            segment_ms=self.segment_ms.copy(),
            translate_ms=self.translate_ms.copy(),
            frames_out=self.frames_out,
            dropped=self.dropped,
            repeated=self.repeated,
        )

    def figures(self, now: float) -> dict[str, Any]:
        """The `vcam.status.Status` fields these counters give, at monotonic time `now`."""
        latency = list(self.latency_ms)
        return {
            "fps_in": round(_rate(self.captured, now), 2),
            "fps_out": round(_rate(self.sent, now), 2),
            "fps_model": round(_rate(self.finished, now), 2),
            "latency_ms_p50": round(_percentile(latency, 0.5), 1),
            "latency_ms_p95": round(_percentile(latency, 0.95), 1),
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "repeated": self.repeated,
            "segment_ms": round(statistics.median(self.segment_ms), 2) if self.segment_ms else 0.0,
            "translate_ms": round(statistics.median(self.translate_ms), 2) if self.translate_ms else 0.0,
        }
