"""Aligning a late translator with its input: keep the last few (frame, mask) pairs.

A translator with `latency_frames = k` returns, at call i, the translation of the input of call
i - k. The work thread pushes every input frame with its mask here and, when the translator
returns an image, composites it with `line.get(k)`: the frame and mask of that same input.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vcam.latency import FrameTiming


@dataclass(frozen=True)
class DelayedEntry:
    """One pushed input: the camera image, its mask (None when segmentation is off), its push count
    its capture time (monotonic seconds) and its `FrameTiming` (the runtime measures latency from them)."""

    image: np.ndarray  # [h, w, 3] uint8 RGB
    mask: np.ndarray | None  # [h, w] float32
    index: int  # 0 for the first push after creation or clear()
    timestamp: float = 0.0
    timing: FrameTiming | None = None


class DelayLine:
    """A bounded history of (image, mask) pairs; `get(k)` is the pair pushed k pushes ago (0 = newest)."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._entries: deque[DelayedEntry] = deque(maxlen=capacity)
        self._pushed = 0

    @property
    def capacity(self) -> int:
        return int(self._entries.maxlen or 0)

    def __len__(self) -> int:
        return len(self._entries)

    def push(
        self, image: np.ndarray, mask: np.ndarray | None, timestamp: float = 0.0, timing: FrameTiming | None = None
    ) -> None:
        """Remember one input frame and its mask (the oldest entry goes when the line is full)."""
        self._entries.append(
            DelayedEntry(image=image, mask=mask, index=self._pushed, timestamp=timestamp, timing=timing)
        )
        self._pushed += 1

    def get(self, delay: int) -> DelayedEntry | None:
        """The entry pushed `delay` pushes before the newest, or None if the line holds fewer yet."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if delay >= self.capacity:
            raise ValueError(f"delay {delay} exceeds the line's capacity {self.capacity}: call resize({delay + 1})")
        if delay >= len(self._entries):
            return None
        return self._entries[-1 - delay]

    def resize(self, capacity: int) -> None:
        """Change the capacity (e.g. a new style with another latency), keeping the newest entries."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._entries = deque(self._entries, maxlen=capacity)

    def clear(self) -> None:
        """Forget every entry (e.g. after translator.reset())."""
        self._entries.clear()
        self._pushed = 0
