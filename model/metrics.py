"""Temporal-stability metrics of a translated video: warp error and frame-to-frame differences.

Warp error (Lai et al. 2018, "Learning Blind Video Temporal Consistency", eq. 8): the optical flow between
consecutive *input* frames (OpenCV's DIS) warps output t-1 onto output t; the mean squared difference
(RGB in [0, 1]) over the pixels that are not occluded is averaged over the video. Occlusions are found by
forward-backward consistency (Sundaram et al. 2010): a pixel whose backward flow is not undone by the
forward flow at the point it maps to is masked out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))


def _sample(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image(x + flow(x)), bilinear, border-replicated. image [H, W, C] float32, flow [H, W, 2]."""
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class FlowEstimator:
    """Dense optical flow between RGB frames with OpenCV's DIS (medium preset)."""

    def __init__(self) -> None:
        import cv2

        self._dis: Any = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Flow f with source(x) ~ target(x + f(x)): [H, W, 2] float32."""
        return self._dis.calc(_gray(source), _gray(target), None)


def occlusion_mask(flow_back: np.ndarray, flow_forward: np.ndarray) -> np.ndarray:
    """True where frame t's pixel is visible in frame t-1 (forward-backward consistency).

    flow_back maps t -> t-1, flow_forward maps t-1 -> t; both [H, W, 2]. Returns [H, W] bool.
    """
    forward_at_target = _sample(flow_forward.astype(np.float32), flow_back)  # [H, W, 2]
    round_trip = flow_back + forward_at_target  # ~0 where consistent
    magnitude = (flow_back**2).sum(-1) + (forward_at_target**2).sum(-1)
    return (round_trip**2).sum(-1) < 0.01 * magnitude + 0.5


def warp_error(previous_output: np.ndarray, output: np.ndarray, flow_back: np.ndarray, visible: np.ndarray) -> float:
    """Mean squared RGB difference in [0, 1] between output t and output t-1 warped onto t, over visible pixels."""
    warped = _sample(previous_output.astype(np.float32) / 255.0, flow_back)  # [H, W, 3]
    squared = ((output.astype(np.float32) / 255.0 - warped) ** 2).sum(-1)  # [H, W]
    count = int(visible.sum())
    return float(squared[visible].sum() / count) if count else 0.0


@dataclass
class VideoMetrics:
    """Accumulates the metrics over a video, one (input, output) pair at a time."""

    flow: FlowEstimator = field(default_factory=FlowEstimator)
    warp_errors: list[float] = field(default_factory=list)
    input_warp_errors: list[float] = field(default_factory=list)
    input_diffs: list[float] = field(default_factory=list)
    output_diffs: list[float] = field(default_factory=list)
    visible_fractions: list[float] = field(default_factory=list)
    frames: int = 0
    _previous: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, input_image: np.ndarray, output_image: np.ndarray) -> None:
        """Add frame t: the input and its translation, both [H, W, 3] uint8 RGB of the same size."""
        if input_image.shape != output_image.shape:
            raise ValueError(f"input {input_image.shape} and output {output_image.shape} differ in size")
        self.frames += 1
        if self._previous is not None:
            previous_input, previous_output = self._previous
            flow_back = self.flow(input_image, previous_input)  # t -> t-1
            flow_forward = self.flow(previous_input, input_image)  # t-1 -> t
            visible = occlusion_mask(flow_back, flow_forward)
            self.visible_fractions.append(float(visible.mean()))
            self.warp_errors.append(warp_error(previous_output, output_image, flow_back, visible))
            self.input_warp_errors.append(warp_error(previous_input, input_image, flow_back, visible))
            self.input_diffs.append(_mean_abs_diff(previous_input, input_image))
            self.output_diffs.append(_mean_abs_diff(previous_output, output_image))
        self._previous = (input_image, output_image)

    def summary(self) -> dict[str, Any]:
        """Averages over the video (JSON-ready); pair metrics are null for fewer than 2 frames."""
        return {
            "frames": self.frames,
            "warp_error": _mean(self.warp_errors),
            "input_warp_error": _mean(self.input_warp_errors),
            "output_frame_diff": _mean(self.output_diffs),
            "input_frame_diff": _mean(self.input_diffs),
            "visible_fraction": _mean(self.visible_fractions),
        }


def _mean_abs_diff(first: np.ndarray, second: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in [0, 1]."""
    return float(np.abs(first.astype(np.float32) - second.astype(np.float32)).mean() / 255.0)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# --- the StreamV2V-style variant -------------------------------------------------------------------------
# StreamV2V's tools/warp_error.py (and StreamDiffusionV2, which reuses it) reports a mean absolute error on the
# 0-255 scale: the occlusion mask comes from its forward-flow consistency check (norms, alpha 0.01, beta 0.5,
# computed on frame t-1's grid and applied as it is to frame t), the warp is OpenCV's uint8 remap with zero
# padding, and the difference is taken on uint8 arrays, so where the later frame is brighter than the warped
# earlier one by d the pixel counts 256 - d instead of d. The functions below reproduce that formula; the flow
# they get is OpenCV's DIS, not RAFT, so the numbers are of the same kind, not the same.


def streamv2v_occlusion(flow_forward: np.ndarray, flow_back: np.ndarray) -> np.ndarray:
    """True where StreamV2V's forward-backward check calls a pixel occluded; [H, W] bool.

    flow_forward maps t-1 -> t, flow_back t -> t-1, both [H, W, 2]. Occluded: |G(x) + F(x + G(x))| >
    0.01 (|G(x)| + |F(x)|) + 0.5, with F sampled bilinearly and zero outside the frame (UnFlow's constants).
    """
    import cv2

    height, width = flow_forward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow_forward[..., 0].astype(np.float32)
    map_y = grid_y + flow_forward[..., 1].astype(np.float32)
    back_at_target = cv2.remap(
        flow_back.astype(np.float32), map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )  # [H, W, 2]
    mismatch = np.linalg.norm(flow_forward + back_at_target, axis=-1)  # [H, W]
    magnitude = np.linalg.norm(flow_forward, axis=-1) + np.linalg.norm(flow_back, axis=-1)  # [H, W]
    return np.asarray(mismatch > 0.01 * magnitude + 0.5)


def streamv2v_warp_error(
    previous_output: np.ndarray, output: np.ndarray, flow_back: np.ndarray, occluded: np.ndarray
) -> float:
    """Mean over non-occluded pixels and channels of (warp(output t-1) - output t) mod 256, uint8 RGB; 0-255.

    The warp samples output t-1 at x + flow_back(x) (bilinear, uint8, zero outside the frame).
    """
    import cv2

    height, width = flow_back.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow_back[..., 0].astype(np.float32)
    map_y = grid_y + flow_back[..., 1].astype(np.float32)
    warped = cv2.remap(
        np.ascontiguousarray(previous_output, dtype=np.uint8),
        map_x,
        map_y,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )  # [H, W, 3] uint8
    wrapped = warped - np.asarray(output, dtype=np.uint8)  # [H, W, 3] uint8: negative differences wrap to 256 - d
    visible = ~occluded
    return float(wrapped[visible].mean()) if visible.any() else 0.0
