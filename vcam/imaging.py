"""Small image helpers shared by the runtime and the segmentation stage: cover-fit an image to a size, draw slates."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def fit_cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale `image` to cover width x height and crop the centre (no bars, no distortion)."""
    import cv2

    in_height, in_width = image.shape[:2]
    if (in_width, in_height) == (width, height):
        return image
    scale = max(width / in_width, height / in_height)
    scaled_w, scaled_h = max(width, round(in_width * scale)), max(height, round(in_height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (scaled_w, scaled_h), interpolation=interpolation)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


@lru_cache(maxsize=16)
def slate(width: int, height: int, title: str, subtitle: str = "") -> np.ndarray:
    """A still card with a title and a subtitle (camera lost, paused, starting). Read-only, cached."""
    import cv2

    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([28, 32, 44], np.float32), np.array([12, 14, 20], np.float32)
    card = np.broadcast_to(top * (1 - rows) + bottom * rows, (height, width, 3)).astype(np.uint8).copy()
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.5, width / 1280 * 1.4)
    for text, y, size, colour in (
        (title, 0.47, scale, (235, 238, 245)),
        (subtitle, 0.58, scale * 0.55, (150, 158, 175)),
    ):
        if not text:
            continue
        thickness = max(1, round(size * 2))
        (text_w, _), _ = cv2.getTextSize(text, font, size, thickness)
        origin = ((width - text_w) // 2, int(height * y))
        cv2.putText(card, text, origin, font, size, colour, thickness, cv2.LINE_AA)
    card.setflags(write=False)
    return card
