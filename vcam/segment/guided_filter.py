"""Mask upsampling: the fast guided filter, and plain bilinear resizing to compare it with.

cv2.ximgproc is not part of opencv-python-headless, so the filter is written here with
`cv2.boxFilter`; it needs nothing but the core OpenCV modules.
"""

from __future__ import annotations

import numpy as np


def guided_upsample(
    guide: np.ndarray, mask: np.ndarray, radius: int = 2, eps: float = 3e-3, guide_scale: float = 0.5
) -> np.ndarray:
    """Upsample a low-res mask so its edges follow the full-res guide (He and Sun 2015, fast guided filter, Alg. 2).

    `guide` is the full-resolution HxWx3 uint8 RGB frame, `mask` a low-resolution [h, w] float32 mask
    of the same aspect; `radius` is the box radius in low-res pixels and `eps` the regularisation
    (larger = smoother, closer to a plain upsample). The filter's output is computed on the guide
    scaled by `guide_scale` and resized to the frame: at 0.5 the camera's pixel noise, which a full-size
    guide copies into the mask edge as flicker, is averaged away and the edge still lands within a pixel.
    Returns an [H, W] float32 mask clipped to [0, 1].
    """
    import cv2

    if not 0.0 < guide_scale <= 1.0:
        raise ValueError(f"guide_scale must be in (0, 1], got {guide_scale}")
    full_h, full_w = guide.shape[:2]
    low_h, low_w = mask.shape[:2]
    gray = cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY)  # [H, W] uint8
    out_w, out_h = max(low_w, round(full_w * guide_scale)), max(low_h, round(full_h * guide_scale))
    if (out_w, out_h) != (full_w, full_h):
        gray = cv2.resize(gray, (out_w, out_h), interpolation=cv2.INTER_AREA)
    gray_out = gray.astype(np.float32) * (1.0 / 255.0)  # [h_out, w_out]
    gray_low = cv2.resize(gray_out, (low_w, low_h), interpolation=cv2.INTER_AREA)  # [h, w]
    p = mask.astype(np.float32, copy=False)  # [h, w]
    size = (2 * radius + 1, 2 * radius + 1)
    mean_i = cv2.boxFilter(gray_low, -1, size)  # [h, w]
    mean_p = cv2.boxFilter(p, -1, size)
    corr_ip = cv2.boxFilter(gray_low * p, -1, size)
    corr_ii = cv2.boxFilter(gray_low * gray_low, -1, size)
    var_i = corr_ii - mean_i * mean_i
    cov_ip = corr_ip - mean_i * mean_p
    a = cov_ip / (var_i + eps)  # [h, w]
    b = mean_p - a * mean_i
    mean_a = cv2.boxFilter(a, -1, size)
    mean_b = cv2.boxFilter(b, -1, size)
    a_out = cv2.resize(mean_a, (out_w, out_h), interpolation=cv2.INTER_LINEAR)  # [h_out, w_out]
    b_out = cv2.resize(mean_b, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    out = cv2.multiply(a_out, gray_out)
    cv2.add(out, b_out, dst=out)
    np.clip(out, 0.0, 1.0, out=out)
    if (out_w, out_h) != (full_w, full_h):
        out = cv2.resize(out, (full_w, full_h), interpolation=cv2.INTER_LINEAR)  # [H, W]
    return out


def bilinear_upsample(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a low-res [h, w] float32 mask to [height, width] with bilinear interpolation."""
    import cv2

    return cv2.resize(mask.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)
