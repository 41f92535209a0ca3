"""Temporal smoothing of segmentation masks: a per-pixel EMA whose rate rises with the change.

Small frame-to-frame changes (the model's edge flicker on a still person) are averaged away with
a slow rate; large changes (the person moved) pass almost at once, so the mask never trails the
person. It is the idea of the One Euro filter (Casiez et al. 2012, eq. 4-5: cutoff grows with speed)
applied per pixel with the change itself as the speed.
"""

from __future__ import annotations

import numpy as np


class MaskSmoother:
    """Motion-aware exponential moving average over a stream of [h, w] float32 masks.

    `min_rate` is the EMA rate for tiny changes (lower = steadier edges), `motion_scale` how fast
    the rate grows with the change: rate = clip(min_rate + motion_scale * |new - previous|, min_rate, 1).
    """

    def __init__(self, min_rate: float = 0.25, motion_scale: float = 2.5) -> None:
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate}")
        if motion_scale < 0.0:
            raise ValueError(f"motion_scale must be >= 0, got {motion_scale}")
        self.min_rate = min_rate
        self.motion_scale = motion_scale
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous masks; the next mask passes unchanged."""
        self._state = None

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """Smooth `mask` ([h, w] float32) with the masks before it; returns a new [h, w] float32 array."""
        mask = mask.astype(np.float32, copy=False)
        if self._state is None or self._state.shape != mask.shape:
            self._state = mask.copy()
            return self._state.copy()
        change = mask - self._state  # [h, w]
        rate = np.abs(change)
        rate *= self.motion_scale
        rate += self.min_rate
        np.clip(rate, self.min_rate, 1.0, out=rate)
        self._state += rate * change
        return self._state.copy()
