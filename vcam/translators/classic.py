"""Classic looks made with OpenCV filters: useful before any weights are downloaded, and the
fallback when a diffusion style cannot load. Each is stateless (latency 0) and real-time on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vcam.translators.base import Translator

#: name -> (title, description)
CLASSIC_STYLES: dict[str, tuple[str, str]] = {
    "cartoon": ("Cartoon", "flat colours with bold ink edges"),
    "sketch": ("Pencil sketch", "graphite pencil on paper"),
    "posterize": ("Posterize", "a few flat colour levels, screen-print look"),
    "thermal": ("Thermal", "false-colour heat camera"),
}


def _work_scale(image: np.ndarray, target_height: int = 360) -> float:
    return min(1.0, target_height / image.shape[0])


def cartoon(image: np.ndarray) -> np.ndarray:
    """Edge-preserving smoothing + colour quantisation + adaptive-threshold ink lines."""
    import cv2

    height, width = image.shape[:2]
    scale = _work_scale(image)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    smooth = cv2.bilateralFilter(small, d=7, sigmaColor=60, sigmaSpace=7)
    flat = (smooth // 40) * 40 + 20  # [h, w, 3] six levels per channel
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    gray = cv2.medianBlur(gray, 5)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    out = cv2.bitwise_and(flat.astype(np.uint8), flat.astype(np.uint8), mask=edges)
    if scale < 1:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


def sketch(image: np.ndarray) -> np.ndarray:
    """Colour dodge of the gray image by its blurred inverse: a pencil drawing."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    blur = cv2.GaussianBlur(255 - gray, (0, 0), sigmaX=max(2.0, image.shape[0] / 80))
    drawing = cv2.divide(gray, 255 - blur, scale=256)
    paper = np.array([250, 246, 236], dtype=np.float32) / 255.0  # warm paper tint
    out = drawing[:, :, None].astype(np.float32) * paper
    return np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))


def posterize(image: np.ndarray, levels: int = 4) -> np.ndarray:
    """Quantise each channel to `levels` values after a light blur."""
    import cv2

    step = 256 // levels
    smooth = cv2.GaussianBlur(image, (5, 5), 0)
    return np.ascontiguousarray(((smooth // step) * step + step // 2).astype(np.uint8))


def thermal(image: np.ndarray) -> np.ndarray:
    """Luminance through the INFERNO colour map."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    bgr = cv2.applyColorMap(cv2.equalizeHist(gray), cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cartoon": cartoon,
    "sketch": sketch,
    "posterize": posterize,
    "thermal": thermal,
}


class ClassicTranslator(Translator):
    """One of the OpenCV looks in `CLASSIC_STYLES`."""

    def __init__(self, name: str) -> None:
        if name not in FILTERS:
            raise ValueError(f"unknown classic style {name!r}: choose one of {', '.join(FILTERS)}")
        self.name = name
        self._filter = FILTERS[name]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._filter(image)
