"""Compositing: blend two layers through a mask, blur a background, load a background image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcam.errors import ConfigError


def blend(front: np.ndarray, back: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """front * mask + back * (1 - mask): HxWx3 uint8 layers, [h, w] float32 mask in [0, 1] -> HxWx3 uint8."""
    import cv2

    if front.shape != back.shape:
        raise ValueError(f"layers differ in shape: {front.shape} != {back.shape}")
    if mask.shape != front.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != frame shape {front.shape[:2]}")
    weight = mask.astype(np.float32, copy=False)  # [h, w]
    return cv2.blendLinear(front, back, weight, 1.0 - weight)  # [h, w, 3] uint8


def blur_image(image: np.ndarray, strength: int) -> np.ndarray:
    """A strongly blurred copy of `image` (HxWx3 uint8): a Gaussian of about `strength` pixels at full size.

    The blur runs at a quarter of the size and is scaled back up, which looks the same for a
    background blur and costs a fraction of a full-size kernel.
    """
    import cv2

    if strength <= 0:
        return image.copy()
    height, width = image.shape[:2]
    scale = 4
    small = cv2.resize(image, (max(1, width // scale), max(1, height // scale)), interpolation=cv2.INTER_AREA)
    sigma = max(0.5, strength / (3.0 * scale))
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, or raise ConfigError naming the path."""
    import cv2

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"[segment] background_image: no such file: {str(path)!r} (point it at a .png or .jpg image)"
        )
    bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(
            f"[segment] background_image: cannot read {str(path)!r} as an image (use a .png or .jpg file)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
