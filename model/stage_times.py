"""`StageTimes`: seconds a pipeline spends per stage (encode, depth, unet, decode), for `vcam bench` and the status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

STAGES = ("encode", "depth", "unet", "decode")


@dataclass
class StageTimes:
    """Seconds spent per stage since the last `clear()` (CUDA work is synchronised before reading the clock)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    calls: int = 0

    def clear(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = 0

    def per_call_ms(self) -> dict[str, float]:
        count = max(self.calls, 1)
        return {stage: 1000.0 * value / count for stage, value in self.seconds.items()}

    @contextmanager
    def timed(self, stage: str, device: torch.device) -> Iterator[None]:
        """Add the time the body takes to `stage` (waiting for `device`'s queued CUDA work first)."""
        import torch

        start = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds[stage] += time.perf_counter() - start
