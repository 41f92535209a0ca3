"""Tray icon images: one distinct, cached image per state; the state follows the runtime's status."""

from __future__ import annotations

import numpy as np
import pytest
from vcam.tray.icons import ICON_STATES, TILE_COLOURS, icon_image, icon_state

from vcam.status import Status


def test_every_state_has_a_distinct_image() -> None:
    images = {state: np.asarray(icon_image(state, 32)) for state in ICON_STATES}
    for state, pixels in images.items():
        assert pixels.shape == (32, 32, 4)
        assert pixels[0, 0, 3] == 0  # transparent corner (rounded tile)
        assert tuple(pixels[6, 16, :3]) == TILE_COLOURS[state]  # the tile's colour above the camera
    states = list(images)
    for i, first in enumerate(states):
        for second in states[i + 1 :]:
            assert not np.array_equal(images[first], images[second]), (first, second)


def test_badges_differ_even_in_grey() -> None:
    # white where the badge's disc is, dark where its symbol is: compare the symbols' shapes
    grey = {state: np.asarray(icon_image(state, 64).convert("L"))[40:, 40:] > 200 for state in ICON_STATES}
    shapes = [grey[state].tobytes() for state in ICON_STATES]
    assert len(set(shapes)) == len(ICON_STATES)


def test_images_are_cached_per_state_and_size() -> None:
    assert icon_image("running") is icon_image("running")
    assert icon_image("running", 32) is not icon_image("running", 64)
    assert icon_image("running", 48).size == (48, 48)


def test_bad_state_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown icon state 'sleeping'"):
        icon_image("sleeping")
    with pytest.raises(ValueError, match="icon size 8"):
        icon_image("running", 8)


@pytest.mark.parametrize(
    ("status", "failed", "expected"),
    [
        (Status(state="running"), False, "running"),
        (Status(state="starting"), False, "warming_up"),
        (Status(state="warming_up"), False, "warming_up"),
        (Status(state="reconnecting"), False, "warming_up"),
        (Status(state="loading_style"), False, "loading"),
        (Status(state="running", styles_loading=("anime",)), False, "loading"),
        (Status(state="paused", styles_loading=("anime",)), False, "paused"),
        (Status(state="error"), False, "error"),
        (Status(state="stopped"), False, "error"),
        (Status(state="running"), True, "error"),
    ],
)
def test_icon_state_follows_the_status(status: Status, failed: bool, expected: str) -> None:
    assert icon_state(status, failed) == expected
