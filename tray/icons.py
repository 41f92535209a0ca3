"""The tray icon's images, one per state: a camera glyph on a coloured tile with a badge, drawn with PIL.

Each state has its own tile colour and badge shape, so the state reads at a glance even in a
monochrome or tiny tray; images are drawn once per (state, size) and cached.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

    from vcam.status import Status

#: icon states, in the order the tray prefers them when several apply
ICON_STATES = ("error", "paused", "loading", "warming_up", "running")

#: tile colour (RGB) per icon state
TILE_COLOURS: dict[str, tuple[int, int, int]] = {
    "running": (46, 160, 67),  # green
    "warming_up": (219, 150, 20),  # amber
    "loading": (45, 110, 200),  # blue
    "paused": (110, 110, 110),  # grey
    "error": (200, 40, 40),  # red
}

WHITE = (255, 255, 255, 255)


def icon_state(status: Status, runtime_failed: bool) -> str:
    """The icon state for a runtime status; `runtime_failed` is True when the runtime died or could not start."""
    if runtime_failed or status.state in ("error", "stopped"):
        return "error"
    if status.state == "paused":
        return "paused"
    if status.state == "loading_style" or status.styles_loading:
        return "loading"
    if status.state == "running":
        return "running"
    return "warming_up"  # starting, warming_up, reconnecting


@functools.lru_cache(maxsize=32)
def icon_image(state: str, size: int = 64) -> Image.Image:
    """The RGBA icon for `state` (one of ICON_STATES), `size` x `size` pixels; cached, do not modify it."""
    if state not in TILE_COLOURS:
        raise ValueError(f"unknown icon state {state!r}: expected one of {', '.join(ICON_STATES)}")
    if size < 16:
        raise ValueError(f"icon size {size} is too small: use at least 16 pixels")
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 64.0  # all coordinates below are on a 64 x 64 grid

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * s, y0 * s, x1 * s, y1 * s)

    draw.rounded_rectangle(box(2, 2, 62, 62), radius=12 * s, fill=(*TILE_COLOURS[state], 255))
    # the camera: a body, a lens and the viewfinder wedge
    draw.rounded_rectangle(box(9, 20, 40, 44), radius=4 * s, fill=WHITE)
    draw.polygon([(40 * s, 28 * s), (52 * s, 20 * s), (52 * s, 44 * s), (40 * s, 36 * s)], fill=WHITE)
    draw.ellipse(box(18, 25, 31, 38), fill=(*TILE_COLOURS[state], 255))
    _draw_badge(draw, state, s)
    return image


def _draw_badge(draw: ImageDraw.ImageDraw, state: str, s: float) -> None:
    """Draw the state's badge in the lower right corner: a white disc with the state's symbol."""
    colour = (*TILE_COLOURS[state], 255)
    if state == "running":
        draw.ellipse((44 * s, 44 * s, 60 * s, 60 * s), fill=WHITE)
        draw.ellipse((48 * s, 48 * s, 56 * s, 56 * s), fill=colour)  # a "live" dot
        return
    draw.ellipse((40 * s, 40 * s, 62 * s, 62 * s), fill=WHITE)
    if state == "paused":  # two bars
        draw.rectangle((45 * s, 45 * s, 49 * s, 57 * s), fill=colour)
        draw.rectangle((53 * s, 45 * s, 57 * s, 57 * s), fill=colour)
    elif state == "error":  # an exclamation mark
        draw.rectangle((49 * s, 44 * s, 53 * s, 54 * s), fill=colour)
        draw.rectangle((49 * s, 56 * s, 53 * s, 59 * s), fill=colour)
    elif state == "loading":  # a down arrow (a style being loaded)
        draw.rectangle((49 * s, 44 * s, 53 * s, 51 * s), fill=colour)
        draw.polygon([(45 * s, 51 * s), (57 * s, 51 * s), (51 * s, 58 * s)], fill=colour)
    else:  # warming_up: an hourglass
        draw.polygon([(45 * s, 45 * s), (57 * s, 45 * s), (51 * s, 51 * s)], fill=colour)
        draw.polygon([(45 * s, 57 * s), (57 * s, 57 * s), (51 * s, 51 * s)], fill=colour)
