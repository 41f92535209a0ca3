"""Classic looks made with OpenCV filters: useful before any weights are downloaded, and the
fallback when a diffusion style cannot load. Each runs in real time on a CPU with latency 0.

Each look is a pure function `look(image, state=None)`. Called without a state it is stateless; the
`ClassicTranslator` keeps one `LookState` per stream so that the look's decisions are stable over time:

- the input is averaged over time where it only changes by sensor noise, and taken as is where it moves
  (`stabilise`: a motion-adaptive running mean), so flat areas stop shimmering without ghosting;
- colour quantisation keeps a pixel's level until its value leaves that level's band by a margin
  (hysteresis), so a value near a level boundary does not flip between two levels every frame;
- ink lines switch on and off with hysteresis on their strength;
- the thermal look's histogram equalisation curve is averaged over time.

Every output value is computed in a wide type and clipped to 0..255 before the cast to uint8: no
channel can wrap around (a bright input never comes out dark).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcam.translators.base import Translator

#: name -> (title, description)
CLASSIC_STYLES: dict[str, tuple[str, str]] = {
    "cartoon": ("Cartoon", "flat colours with bold ink edges"),
    "sketch": ("Pencil sketch", "graphite pencil on paper"),
    "posterize": ("Posterize", "a few flat colour levels, screen-print look"),
    "thermal": ("Thermal", "false-colour heat camera"),
}

#: a per-pixel change (0..255, largest channel) up to this is treated as sensor noise
NOISE_LEVEL = 8.0
#: a change this large or more is motion: the new value is taken as is
MOTION_LEVEL = 40.0
#: how much of a new frame a still pixel takes (the running mean's weight)
STILL_WEIGHT = 0.15
#: how far (0..255) a value must leave its quantisation band before its level changes
QUANT_MARGIN = 8.0
#: ink hysteresis: a pixel darker than its neighbourhood by more than INK_OFFSET + INK_MARGIN turns ink on,
#: by less than INK_OFFSET - INK_MARGIN turns it off; in between it keeps what it was
INK_OFFSET = 4.0
INK_MARGIN = 2.0
#: how much of a new frame's equalisation curve the thermal look takes
CURVE_WEIGHT = 0.1

#: the optical flow that moves the state along with the picture is computed at most this many rows high
FLOW_HEIGHT = 180
#: images smaller than this (either side) are treated as still (DIS needs 12 pixels or more)
MIN_FLOW_SIZE = 16

CARTOON_STEP = 40  # six levels per channel
POSTERIZE_LEVELS = 4


@dataclass
class LookState:
    """What a classic look remembers between frames of one stream (all None on a fresh stream)."""

    stable: np.ndarray | None = None  # [h, w, 3] float32, the motion-adaptive running mean of the input
    levels: np.ndarray | None = None  # [h, w, 3] int16, the quantisation level kept per pixel
    ink: np.ndarray | None = None  # [h, w] bool, where ink lines were drawn
    curve: np.ndarray | None = None  # [256] float32, the thermal look's equalisation curve
    gray: np.ndarray | None = None  # [fh, fw] uint8, the previous input's gray image at the flow's size
    flow: Any = None  # OpenCV's DIS optical flow, made on first use

    def reset(self) -> None:
        self.stable = self.levels = self.ink = self.curve = self.gray = None

    def follow_motion(self, image: np.ndarray) -> None:
        """Move what is kept per pixel along the optical flow from the previous input to `image`.

        The state then sits where its content is in the new frame, so a moving camera does not drag
        stale levels and lines across the picture. The flow is computed on a gray image at most
        FLOW_HEIGHT rows high and scaled up.
        """
        import cv2

        height, width = image.shape[:2]
        scale = min(1.0, FLOW_HEIGHT / height)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        previous, self.gray = self.gray, gray
        if previous is None or previous.shape != gray.shape or self.stable is None:
            return
        if min(gray.shape) < MIN_FLOW_SIZE:  # too small for a flow estimate: treat it as still
            return
        if self.flow is None:
            self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
        flow = self.flow.calc(gray, previous, None)  # [fh, fw, 2]: gray(x) ~ previous(x + flow(x))
        if scale < 1:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) / np.float32(scale)
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]  # [h, w] each
        if self.stable.shape[:2] == (height, width):
            self.stable = cv2.remap(self.stable, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.levels is not None and self.levels.shape[:2] == (height, width):
            self.levels = cv2.remap(self.levels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        if self.ink is not None and self.ink.shape == (height, width):
            ink = cv2.remap(self.ink.view(np.uint8), map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
            self.ink = ink.astype(bool)


def stabilise(image: np.ndarray, state: LookState | None) -> np.ndarray:
    """The input averaged over time where it only changes by noise, as is where it moves: [h, w, 3] float32."""
    import cv2

    current = image.astype(np.float32)  # [h, w, 3]
    if state is None:
        return current
    state.follow_motion(image)
    previous = state.stable
    if previous is None or previous.shape != current.shape:
        state.reset()
        state.stable = current
        return current
    step = cv2.subtract(current, previous)  # [h, w, 3]
    change = cv2.cvtColor(cv2.absdiff(current, previous), cv2.COLOR_RGB2GRAY)  # [h, w]
    motion = (change - NOISE_LEVEL) * ((1.0 - STILL_WEIGHT) / (MOTION_LEVEL - NOISE_LEVEL)) + STILL_WEIGHT
    weight = np.clip(motion, STILL_WEIGHT, 1.0).astype(np.float32)  # [h, w] in [STILL_WEIGHT, 1]
    stable = cv2.add(previous, cv2.multiply(step, cv2.merge([weight, weight, weight])))
    state.stable = stable
    return stable


def quantise(values: np.ndarray, step: int, state: LookState | None) -> np.ndarray:
    """Each value (0..255) to the middle of its `step`-wide band, clipped to 255, with hysteresis: uint8, same shape.

    With a state, a pixel keeps its previous level while its value stays within QUANT_MARGIN of that level's
    band, else takes the nearest level whose widened band holds the value.
    """
    levels = (values / np.float32(step)).astype(np.int16)  # values >= 0: truncation is the floor
    if state is not None:
        previous = state.levels
        if previous is not None and previous.shape == levels.shape:
            lowest = ((values - QUANT_MARGIN) / np.float32(step)).astype(np.int16)
            highest = ((values + QUANT_MARGIN) / np.float32(step)).astype(np.int16)
            levels = np.clip(previous, lowest, highest)
        state.levels = levels
    return np.minimum(levels * np.int16(step) + np.int16(step // 2), 255).astype(np.uint8)


def ink_lines(gray: np.ndarray, state: LookState | None, block: int = 9) -> np.ndarray:
    """Where a pixel is darker than its `block`-wide neighbourhood mean (an adaptive threshold): [h, w] bool."""
    import cv2

    values = gray.astype(np.float32)
    darkness = cv2.blur(values, (block, block), borderType=cv2.BORDER_REPLICATE) - values  # [h, w]
    if state is None or state.ink is None or state.ink.shape != darkness.shape:
        ink = darkness > INK_OFFSET
    else:
        ink = np.where(state.ink, darkness > INK_OFFSET - INK_MARGIN, darkness > INK_OFFSET + INK_MARGIN)
    if state is not None:
        state.ink = ink
    return ink


def _work_scale(image: np.ndarray, target_height: int = 360) -> float:
    return min(1.0, target_height / image.shape[0])


def cartoon(image: np.ndarray, state: LookState | None = None) -> np.ndarray:
    """Edge-preserving smoothing + colour quantisation + adaptive-threshold ink lines."""
    import cv2

    height, width = image.shape[:2]
    scale = _work_scale(image)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    stable = stabilise(small, state)  # [h, w, 3] float32
    smooth = cv2.bilateralFilter(stable, d=7, sigmaColor=60, sigmaSpace=7)  # [h, w, 3] float32
    flat = quantise(smooth, CARTOON_STEP, state)  # [h, w, 3] uint8, six levels per channel
    gray = cv2.cvtColor(cv2.convertScaleAbs(stable), cv2.COLOR_RGB2GRAY)
    gray = cv2.medianBlur(gray, 5)
    ink = ink_lines(gray, state)  # [h, w] bool
    out = np.where(ink[:, :, None], np.uint8(0), flat)
    if scale < 1:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


def sketch(image: np.ndarray, state: LookState | None = None) -> np.ndarray:
    """Colour dodge of the gray image by its blurred inverse: a pencil drawing."""
    import cv2

    stable = stabilise(image, state)  # [h, w, 3] float32
    gray = cv2.cvtColor(stable, cv2.COLOR_RGB2GRAY)  # [h, w] float32
    blur = cv2.GaussianBlur(255.0 - gray, (0, 0), sigmaX=max(2.0, image.shape[0] / 80))
    drawing = np.clip(gray * 256.0 / np.maximum(255.0 - blur, 1.0), 0.0, 255.0)  # [h, w]
    paper = np.array([250, 246, 236], dtype=np.float32) / 255.0  # warm paper tint
    out = drawing[:, :, None] * paper  # [h, w, 3]
    return np.ascontiguousarray(cv2.convertScaleAbs(out))


def posterize(image: np.ndarray, state: LookState | None = None, levels: int = POSTERIZE_LEVELS) -> np.ndarray:
    """Quantise each channel to `levels` values after a light blur."""
    import cv2

    stable = stabilise(image, state)
    smooth = cv2.GaussianBlur(stable, (5, 5), 0)  # [h, w, 3] float32
    return np.ascontiguousarray(quantise(smooth, 256 // levels, state))


def equalisation_curve(gray: np.ndarray) -> np.ndarray:
    """Histogram equalisation as a [256] float32 curve (the identity for a flat image)."""
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(histogram)
    first = cdf[np.flatnonzero(histogram)[0]]
    if cdf[-1] == first:  # one grey level only: nothing to spread
        return np.arange(256, dtype=np.float32)
    return (np.clip((cdf - first) / (cdf[-1] - first), 0.0, 1.0) * 255.0).astype(np.float32)


def thermal(image: np.ndarray, state: LookState | None = None) -> np.ndarray:
    """Equalised luminance through the INFERNO colour map."""
    import cv2

    stable = stabilise(image, state)
    gray = cv2.cvtColor(cv2.convertScaleAbs(stable), cv2.COLOR_RGB2GRAY)
    curve = equalisation_curve(gray)
    if state is not None:
        if state.curve is not None:
            curve = state.curve + CURVE_WEIGHT * (curve - state.curve)
        state.curve = curve
    equalised = np.clip(curve + 0.5, 0, 255).astype(np.uint8)[gray]  # [h, w]
    bgr = cv2.applyColorMap(equalised, cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


Look = Callable[[np.ndarray, LookState | None], np.ndarray]

FILTERS: dict[str, Look] = {
    "cartoon": cartoon,
    "sketch": sketch,
    "posterize": posterize,
    "thermal": thermal,
}


class ClassicTranslator(Translator):
    """One of the OpenCV looks in `CLASSIC_STYLES`, temporally stable over one stream (see `reset`)."""

    def __init__(self, name: str) -> None:
        if name not in FILTERS:
            raise ValueError(f"unknown classic style {name!r}: choose one of {', '.join(FILTERS)}")
        self.name = name
        self._filter = FILTERS[name]
        self.state = LookState()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._filter(image, self.state)

    def reset(self) -> None:
        """Forget the stream (a style switch, a pause, a reconnect): the next frame starts anew."""
        self.state.reset()
