"""The unit that flows through the runtime: one RGB image with its capture time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A captured frame.

    `image` is HxWx3 uint8 RGB (C-contiguous), `timestamp` is `time.monotonic()` at capture and
    `index` counts the frames a source has produced since it was opened (0, 1, 2, ...).
    """

    image: np.ndarray  # [h, w, 3] uint8 RGB
    timestamp: float
    index: int

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def check_image(image: np.ndarray, width: int | None = None, height: int | None = None) -> None:
    """Raise ValueError unless `image` is HxWx3 uint8 (of the given size when one is given)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"unexpected frame shape: {image.shape} != (h, w, 3)")
    if image.dtype != np.uint8:
        raise ValueError(f"unexpected frame dtype: {image.dtype} != uint8")
    if width is not None and height is not None and image.shape[:2] != (height, width):
        raise ValueError(f"unexpected frame shape: {image.shape} != {(height, width, 3)}")
