"""The built-in demo source: a deterministic room with a swaying person-like figure, no hardware needed.

Frame n is a pure function of (n, seed, width, height, fps): the background (wall, window, shelf with
books, picture, plant, noise texture) and the figure's sprites (head with hair, face, eyes that blink;
neck, shoulders and torso in a shirt) are drawn once per (width, height, seed); each frame copies the
background, moves a ball across it and pastes the figure at its offset for that frame. The figure's
ground truth mask (`demo_person_mask`) lets segmentation tests score a real model on these frames.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.errors import SourceError
from vcam.frame import Frame
from vcam.sources.base import Source
from vcam.sources.pacing import FramePacer

logger = logging.getLogger(__name__)

#: the frame rate the figure's motion is defined at when no fps is given
DEMO_DEFAULT_FPS = 30.0
#: the smallest frame the demo scene can draw
DEMO_MIN_SIZE = 32

SKIN_TONES: tuple[tuple[int, int, int], ...] = ((224, 172, 138), (198, 140, 104), (160, 110, 80), (236, 192, 160))
SHIRT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (46, 84, 140),
    (150, 42, 52),
    (38, 108, 78),
    (92, 62, 120),
    (28, 118, 138),
)
HAIR_COLOURS: tuple[tuple[int, int, int], ...] = ((40, 28, 22), (22, 20, 20), (96, 62, 34))


@dataclass(frozen=True)
class _Sprite:
    """An RGB patch, its mask and where its top-left corner sits (in frame pixels) at rest."""

    image: np.ndarray  # [h, w, 3] uint8 RGB
    mask: np.ndarray  # [h, w] bool
    x: int
    y: int


@dataclass(frozen=True)
class _Scene:
    background: np.ndarray  # [H, W, 3] uint8 RGB
    body: _Sprite
    head_open: _Sprite
    head_blink: _Sprite
    ball: _Sprite
    phase: float  # seconds added to the motion clock (seed-dependent)


@dataclass(frozen=True)
class _Pose:
    """Where the sprites go in frame n (pixel offsets from their rest position)."""

    body_dx: int
    body_dy: int
    head_dx: int
    head_dy: int
    blink: bool
    ball_x: int
    ball_y: int


def _check_size(width: int, height: int) -> None:
    if width < DEMO_MIN_SIZE or height < DEMO_MIN_SIZE:
        raise SourceError(
            f"demo source size {width}x{height} is too small: width and height must be >= {DEMO_MIN_SIZE}"
        )


def _draw_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A room: wall gradient with texture, a window, a shelf of books, a picture and a plant."""
    import cv2

    h, w = height, width
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]  # [h, 1, 1]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]  # [1, w, 1]
    wall_top = np.array([214, 200, 178], dtype=np.float32) * rng.uniform(0.9, 1.05) + rng.uniform(-8, 8, 3).astype(
        np.float32
    )
    wall_bottom = wall_top * 0.78
    image = wall_top * (1.0 - ys) + wall_bottom * ys  # [h, w, 3]
    image = image * (1.0 - 0.12 * (xs - 0.5) ** 2 * 4)  # vignette towards the sides
    coarse_small = rng.normal(0.0, 1.0, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
    coarse = np.asarray(cv2.resize(coarse_small, (w, h), interpolation=cv2.INTER_CUBIC), dtype=np.float32)  # [h, w]
    fine = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)  # [h, w]
    image = image + (4.0 * coarse + 3.0 * fine)[:, :, None]
    canvas = np.clip(image, 0, 255).astype(np.uint8)

    # floor strip
    floor_y = int(0.9 * h)
    canvas[floor_y:] = (
        np.array([120, 92, 66], dtype=np.float32) * (0.9 + 0.1 * rng.random((h - floor_y, w, 1)))
    ).astype(np.uint8)
    # window on the left: frame, sky gradient, cross bars
    wx0, wy0, wx1, wy1 = int(0.05 * w), int(0.12 * h), int(0.27 * w), int(0.55 * h)
    sky = np.linspace(0.0, 1.0, wy1 - wy0, dtype=np.float32)[:, None, None]
    canvas[wy0:wy1, wx0:wx1] = (np.array([150, 196, 236]) * (1 - sky) + np.array([226, 238, 246]) * sky).astype(
        np.uint8
    )
    bar = max(2, h // 90)
    cv2.rectangle(canvas, (wx0, wy0), (wx1, wy1), (244, 244, 240), 2 * bar)
    cv2.line(canvas, ((wx0 + wx1) // 2, wy0), ((wx0 + wx1) // 2, wy1), (244, 244, 240), bar)
    cv2.line(canvas, (wx0, (wy0 + wy1) // 2), (wx1, (wy0 + wy1) // 2), (244, 244, 240), bar)
    # shelf on the right with books
    sx0, sx1 = int(0.72 * w), int(0.97 * w)
    for shelf_y in (int(0.3 * h), int(0.56 * h), int(0.82 * h)):
        x = sx0 + 2
        while x < sx1 - 4:
            book_w = int(rng.integers(max(3, w // 110), max(5, w // 45)))
            book_h = int(rng.integers(int(0.1 * h), int(0.2 * h)))
            colour = tuple(int(c) for c in rng.integers(40, 220, 3))
            cv2.rectangle(canvas, (x, shelf_y - book_h), (min(x + book_w, sx1 - 2), shelf_y), colour, -1)
            cv2.line(canvas, (x, shelf_y - book_h), (x, shelf_y), (30, 24, 20), 1)
            x += book_w + int(rng.integers(0, 3))
        cv2.rectangle(canvas, (sx0 - 4, shelf_y), (sx1 + 4, shelf_y + max(3, h // 60)), (110, 72, 40), -1)
    cv2.rectangle(canvas, (sx0 - 6, int(0.08 * h)), (sx0 - 2, int(0.9 * h)), (96, 62, 34), -1)
    # picture above the head's left
    px0, py0, px1, py1 = int(0.33 * w), int(0.06 * h), int(0.43 * w), int(0.22 * h)
    cv2.rectangle(canvas, (px0, py0), (px1, py1), (60, 44, 30), -1)
    inner = canvas[py0 + 4 : py1 - 4, px0 + 4 : px1 - 4]
    iy = np.linspace(0, 1, inner.shape[0], dtype=np.float32)[:, None, None]
    inner[:] = (np.array([240, 170, 90]) * (1 - iy) + np.array([70, 120, 90]) * iy).astype(np.uint8)
    # plant in the bottom left corner
    pot_x, pot_y = int(0.12 * w), int(0.9 * h)
    for k in range(7):
        angle = -math.pi / 2 + (k - 3) * 0.35
        tip = (int(pot_x + math.cos(angle) * 0.22 * h), int(pot_y - 0.05 * h + math.sin(angle) * 0.25 * h))
        mid = ((pot_x + tip[0]) // 2, (pot_y - int(0.05 * h) + tip[1]) // 2)
        axes = (max(2, int(0.13 * h)), max(1, int(0.025 * h)))
        angle_deg = math.degrees(math.atan2(tip[1] - pot_y, tip[0] - pot_x))
        cv2.ellipse(canvas, mid, axes, angle_deg, 0, 360, (46 + 10 * k, 120 + 8 * k, 52), -1)
    cv2.rectangle(
        canvas, (pot_x - int(0.05 * h), pot_y - int(0.07 * h)), (pot_x + int(0.05 * h), pot_y), (170, 84, 52), -1
    )
    return canvas


def _shade(image: np.ndarray, mask: np.ndarray, cx: float, cy: float, ax: float, ay: float, depth: float) -> None:
    """Darken `image` inside `mask` towards the rim of the ellipse (cx, cy, ax, ay): a rounded look."""
    h, w = mask.shape
    ys = (np.arange(h, dtype=np.float32)[:, None] - cy) / ay  # [h, 1]
    xs = (np.arange(w, dtype=np.float32)[None, :] - cx) / ax  # [1, w]
    factor = 1.0 - depth * np.clip(xs**2 + ys**2, 0.0, 1.0)  # [h, w]
    shaded = image.astype(np.float32) * factor[:, :, None]
    np.copyto(image, shaded.astype(np.uint8), where=mask[:, :, None])


def _draw_head(
    height: int, skin: tuple[int, int, int], hair: tuple[int, int, int], blink: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Head sprite: hair, ears, shaded face, eyes (open or closed), brows, nose and mouth."""
    import cv2

    u = height / 100.0  # one unit = 1% of the frame height
    sw, sh = int(30 * u) + 2, int(36 * u) + 2
    image = np.zeros((sh, sw, 3), dtype=np.uint8)
    mask = np.zeros((sh, sw), dtype=np.uint8)
    cx = sw // 2

    def ellipse(
        canvas: np.ndarray, center: tuple[float, float], axes: tuple[float, float], colour: Sequence[float] | float
    ) -> None:
        cv2.ellipse(
            canvas,
            (int(center[0]), int(center[1])),
            (max(1, int(axes[0])), max(1, int(axes[1]))),
            0,
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )

    face_c = (cx, 19.5 * u)
    face_axes = (10.0 * u, 13.0 * u)
    # hair behind and above the face
    ellipse(image, (cx, 16.0 * u), (11.8 * u, 13.5 * u), hair)
    ellipse(mask, (cx, 16.0 * u), (11.8 * u, 13.5 * u), 255)
    # ears
    for side in (-1, 1):
        ellipse(image, (cx + side * 9.8 * u, 20.0 * u), (1.8 * u, 3.0 * u), tuple(int(c * 0.9) for c in skin))
        ellipse(mask, (cx + side * 9.8 * u, 20.0 * u), (1.8 * u, 3.0 * u), 255)
    face_mask = np.zeros((sh, sw), dtype=np.uint8)
    ellipse(face_mask, face_c, face_axes, 255)
    image[face_mask > 127] = skin
    mask = np.maximum(mask, face_mask)
    _shade(image, face_mask > 127, face_c[0], face_c[1] - 2 * u, face_axes[0] * 1.15, face_axes[1] * 1.2, 0.35)
    # fringe: hair over the forehead
    cv2.ellipse(image, (cx, int(9.0 * u)), (int(10.5 * u), int(4.5 * u)), 0, 0, 360, hair, -1, cv2.LINE_AA)
    # eyes, brows
    eye_y = 18.5 * u
    for side in (-1, 1):
        ex = cx + side * 4.0 * u
        if blink:
            cv2.line(
                image, (int(ex - 2 * u), int(eye_y)), (int(ex + 2 * u), int(eye_y)), (70, 40, 30), max(1, int(0.5 * u))
            )
        else:
            ellipse(image, (ex, eye_y), (2.2 * u, 1.2 * u), (246, 244, 240))
            ellipse(image, (ex, eye_y), (1.0 * u, 1.0 * u), (70, 46, 30))
            ellipse(image, (ex, eye_y), (0.45 * u, 0.45 * u), (10, 10, 10))
        brow_y = int(eye_y - 3.0 * u)
        cv2.line(
            image, (int(ex - 2.4 * u), brow_y + int(0.4 * u)), (int(ex + 2.4 * u), brow_y), hair, max(1, int(0.8 * u))
        )
    # nose: a shadow line and nostrils
    nose_colour = tuple(int(c * 0.78) for c in skin)
    cv2.line(image, (cx, int(19.5 * u)), (cx - int(0.6 * u), int(23.5 * u)), nose_colour, max(1, int(0.5 * u)))
    ellipse(image, (cx, 24.0 * u), (1.6 * u, 0.7 * u), nose_colour)
    # mouth
    cv2.ellipse(
        image,
        (cx, int(27.0 * u)),
        (int(3.2 * u), int(1.4 * u)),
        0,
        10,
        170,
        (150, 60, 60),
        max(1, int(0.7 * u)),
        cv2.LINE_AA,
    )
    return image, mask > 127


def _draw_body(height: int, skin: tuple[int, int, int], shirt: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Body sprite: neck, rounded shoulders, torso and arms, reaching below the frame's bottom edge."""
    import cv2

    u = height / 100.0
    sw, sh = int(66 * u) + 2, int(66 * u) + 2
    image = np.zeros((sh, sw, 3), dtype=np.uint8)
    mask = np.zeros((sh, sw), dtype=np.uint8)
    cx = sw // 2
    neck_colour = tuple(int(c * 0.86) for c in skin)
    # neck (top of the sprite sits under the chin)
    cv2.rectangle(image, (int(cx - 4.6 * u), 0), (int(cx + 4.6 * u), int(12 * u)), neck_colour, -1)
    cv2.rectangle(mask, (int(cx - 4.6 * u), 0), (int(cx + 4.6 * u), int(12 * u)), 255, -1)
    # torso: shoulders as an ellipse, then a trapezoid down past the bottom
    torso = np.zeros((sh, sw), dtype=np.uint8)
    cv2.ellipse(torso, (cx, int(16 * u)), (int(26 * u), int(10 * u)), 0, 180, 360, 255, -1, cv2.LINE_AA)
    points = np.array(
        [[cx - 26 * u, 16 * u], [cx + 26 * u, 16 * u], [cx + 30 * u, sh], [cx - 30 * u, sh]], dtype=np.int32
    )
    cv2.fillPoly(torso, [points], 255, cv2.LINE_AA)
    torso_mask = torso > 127
    image[torso_mask] = shirt
    _shade(image, torso_mask, cx, 36 * u, 34 * u, 60 * u, 0.45)
    # arms: darker sleeves along the sides
    sleeve = tuple(int(c * 0.72) for c in shirt)
    for side in (-1, 1):
        x_out = cx + side * 27 * u
        arm = np.array(
            [[x_out, 20 * u], [x_out - side * 6 * u, 20 * u], [x_out - side * 4 * u, sh], [x_out + side * 3 * u, sh]],
            dtype=np.int32,
        )
        cv2.fillPoly(image, [arm], sleeve, cv2.LINE_AA)
    # collar: a V of skin and a seam
    v_neck = np.array([[cx - 5 * u, 6 * u], [cx + 5 * u, 6 * u], [cx, 15 * u]], dtype=np.int32)
    cv2.fillPoly(image, [v_neck], neck_colour, cv2.LINE_AA)
    cv2.polylines(image, [v_neck[[0, 2, 1]]], False, tuple(int(c * 0.6) for c in shirt), max(1, int(0.6 * u)))
    mask = np.maximum(mask, torso)
    return image, mask > 127


def _draw_ball(height: int) -> tuple[np.ndarray, np.ndarray]:
    """A small shaded orange ball that drifts across the background."""
    import cv2

    radius = max(3, int(0.045 * height))
    size = 2 * radius + 1
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.circle(mask, (radius, radius), radius, 255, -1, cv2.LINE_AA)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:] = (236, 120, 40)
    ball_mask = mask > 127
    _shade(image, ball_mask, radius * 0.7, radius * 0.7, radius * 1.6, radius * 1.6, 0.6)
    return image, ball_mask


@functools.lru_cache(maxsize=4)
def _scene(width: int, height: int, seed: int) -> _Scene:
    """Everything that does not move, drawn once per (width, height, seed)."""
    _check_size(width, height)
    rng = np.random.default_rng(seed)
    background = _draw_background(width, height, rng)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    shirt = SHIRT_COLOURS[int(rng.integers(len(SHIRT_COLOURS)))]
    hair = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
    u = height / 100.0
    head_image, head_mask = _draw_head(height, skin, hair, blink=False)
    blink_image, _ = _draw_head(height, skin, hair, blink=True)
    body_image, body_mask = _draw_body(height, skin, shirt)
    ball_image, ball_mask = _draw_ball(height)
    head_x = width // 2 - head_image.shape[1] // 2
    head_y = int(20 * u)  # face centre at about 40% of the height
    body_x = width // 2 - body_image.shape[1] // 2
    body_y = head_y + int(30 * u)  # neck starts under the chin
    for image in (background, head_image, blink_image, body_image, ball_image):
        image.setflags(write=False)
    return _Scene(
        background=background,
        body=_Sprite(body_image, body_mask, body_x, body_y),
        head_open=_Sprite(head_image, head_mask, head_x, head_y),
        head_blink=_Sprite(blink_image, head_mask, head_x, head_y),
        ball=_Sprite(ball_image, ball_mask, 0, int(0.08 * height)),
        phase=float(rng.uniform(0.0, 60.0)),
    )


def _pose(index: int, width: int, height: int, fps: float, phase: float) -> _Pose:
    """Smooth sway of body and head, a blink every few seconds, the ball on a slow Lissajous path."""
    if index < 0:
        raise ValueError(f"demo frame index must be >= 0, got {index}")
    t = index / fps + phase
    tau = 2.0 * math.pi
    body_dx = 0.06 * width * math.sin(tau * t / 7.0) + 0.012 * width * math.sin(tau * t / 2.3)
    body_dy = 0.012 * height * math.sin(tau * t / 3.1)
    head_dx = 0.012 * height * math.sin(tau * t / 1.9)
    head_dy = 0.008 * height * math.sin(tau * t / 2.7 + 1.0)
    blink = (t % 4.3) < 0.15
    ball_x = (0.5 + 0.45 * math.sin(tau * t / 5.3)) * width
    ball_y = 0.08 * height + 0.15 * height * (0.5 + 0.5 * math.sin(tau * t / 3.7))
    return _Pose(
        body_dx=round(body_dx),
        body_dy=round(body_dy),
        head_dx=round(body_dx + head_dx),
        head_dy=round(body_dy + head_dy),
        blink=blink,
        ball_x=round(ball_x),
        ball_y=round(ball_y),
    )


def _paste(canvas: np.ndarray, image: np.ndarray | None, mask: np.ndarray, x: int, y: int) -> None:
    """Copy the masked sprite (or True where `image` is None) into `canvas` at (x, y), clipped."""
    h, w = mask.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x0 >= x1 or y0 >= y1:
        return
    sub_mask = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    if image is None:
        canvas[y0:y1, x0:x1] |= sub_mask
    else:
        np.copyto(canvas[y0:y1, x0:x1], image[y0 - y : y1 - y, x0 - x : x1 - x], where=sub_mask[:, :, None])


def render_demo_frame(index: int, width: int, height: int, seed: int = 0, fps: float = DEMO_DEFAULT_FPS) -> np.ndarray:
    """Frame `index` of the demo scene: a new [height, width, 3] uint8 RGB array, the same for the same inputs."""
    scene = _scene(width, height, seed)
    pose = _pose(index, width, height, fps, scene.phase)
    frame = scene.background.copy()  # [h, w, 3]
    ball = scene.ball
    _paste(frame, ball.image, ball.mask, pose.ball_x - ball.mask.shape[1] // 2, pose.ball_y)
    body = scene.body
    _paste(frame, body.image, body.mask, body.x + pose.body_dx, body.y + pose.body_dy)
    head = scene.head_blink if pose.blink else scene.head_open
    _paste(frame, head.image, head.mask, head.x + pose.head_dx, head.y + pose.head_dy)
    return frame


def demo_person_mask(index: int, width: int, height: int, seed: int = 0, fps: float = DEMO_DEFAULT_FPS) -> np.ndarray:
    """Ground truth for frame `index`: a [height, width] bool array, True on the figure."""
    scene = _scene(width, height, seed)
    pose = _pose(index, width, height, fps, scene.phase)
    mask = np.zeros((height, width), dtype=bool)
    _paste(mask, None, scene.body.mask, scene.body.x + pose.body_dx, scene.body.y + pose.body_dy)
    _paste(mask, None, scene.head_open.mask, scene.head_open.x + pose.head_dx, scene.head_open.y + pose.head_dy)
    return mask


def person_box(
    index: int, width: int, height: int, seed: int = 0, fps: float = DEMO_DEFAULT_FPS
) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), exclusive ends, of the figure in frame `index`."""
    mask = demo_person_mask(index, width, height, seed, fps)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class DemoSource(Source):
    """The demo scene as a source: paced at `fps` in real time unless `realtime=False`.

    Frames are due and stamped on `clock` (the system's monotonic clock unless a test injects one).
    """

    def __init__(
        self, width: int, height: int, fps: float, seed: int = 0, realtime: bool = True, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        _check_size(width, height)
        if not fps > 0:
            raise SourceError(f"demo source fps must be > 0, got {fps}")
        self._size = (width, height)
        self._fps = float(fps)
        self.seed = seed
        self.realtime = realtime
        self._index = 0
        self._clock = clock
        self._pacer = FramePacer(self._fps, clock)
        self._opened = False
        self.description = f"demo scene (seed {seed}) {width}x{height} @ {self._fps:g} fps"

    def open(self) -> None:
        _scene(*self._size, self.seed)  # draw the still parts now, not in the first read()
        self._index = 0
        self._pacer.start()
        self._opened = True
        logger.info("opened %s", self.description)

    def read(self) -> Frame:
        if not self._opened:
            raise RuntimeError("DemoSource.read() called before open() (or after close())")
        index = self._index
        if self.realtime:
            self._pacer.wait(index)
        image = render_demo_frame(index, *self._size, self.seed, self._fps)
        self._index += 1
        return Frame(image=image, timestamp=self._clock.now(), index=index)

    def close(self) -> None:
        self._opened = False
