"""Segmentation's pure parts, no model needed: blending, blur, background fitting, guided upsampling,
temporal smoothing and the delay line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vcam.errors import ConfigError
from vcam.imaging import fit_cover
from vcam.segment.compose import blend, blur_image, load_image
from vcam.segment.delay import DelayLine
from vcam.segment.guided_filter import bilinear_upsample, guided_upsample
from vcam.segment.smoothing import MaskSmoother


def test_blend_takes_front_where_mask_is_one_and_back_where_zero() -> None:
    rng = np.random.default_rng(0)
    front = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    back = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=np.float32)
    mask[:, :30] = 1.0
    mask[:, 30] = 0.5
    out = blend(front, back, mask)
    assert out.dtype == np.uint8 and out.shape == front.shape
    np.testing.assert_array_equal(out[:, :30], front[:, :30])
    np.testing.assert_array_equal(out[:, 31:], back[:, 31:])
    half = (front[:, 30].astype(np.float32) + back[:, 30].astype(np.float32)) / 2
    assert np.abs(out[:, 30].astype(np.float32) - half).max() <= 1.0


def test_blend_rejects_mismatched_shapes() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        blend(image, image, np.zeros((10, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="layers differ"):
        blend(image, np.zeros((10, 11, 3), dtype=np.uint8), np.zeros((10, 10), dtype=np.float32))


def test_blur_image_smooths_noise_and_keeps_mean() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    blurred = blur_image(image, 35)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    assert blurred.astype(np.float32).std() < 0.25 * image.astype(np.float32).std()
    assert abs(float(blurred.mean()) - float(image.mean())) < 3.0
    np.testing.assert_array_equal(blur_image(image, 0), image)


def test_fit_cover_covers_and_crops_the_centre() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, :50] = (255, 0, 0)  # left half red, right half blue
    image[:, 50:] = (0, 0, 255)
    fitted = fit_cover(image, 160, 90)
    assert fitted.shape == (90, 160, 3) and fitted.flags.c_contiguous
    assert tuple(fitted[45, 10]) == (255, 0, 0) and tuple(fitted[45, 150]) == (0, 0, 255)
    tall = fit_cover(image, 50, 200)
    assert tall.shape == (200, 50, 3)


def test_load_image_reads_rgb_and_names_a_bad_path(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "bg.png"  # type: ignore[operator]
    bgr = np.zeros((8, 8, 3), dtype=np.uint8)
    bgr[:, :, 2] = 255  # red in BGR order
    cv2.imwrite(str(path), bgr)
    rgb = load_image(path)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    with pytest.raises(ConfigError, match="no such file: '/nonexistent/bg.png'"):
        load_image("/nonexistent/bg.png")
    not_image = tmp_path / "notes.png"  # type: ignore[operator]
    not_image.write_text("not an image")
    with pytest.raises(ConfigError, match="cannot read"):
        load_image(not_image)


def _step_scene(width: int, height: int, edge_x: int) -> np.ndarray:
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    image[:, edge_x:] = 220
    return image


def test_guided_upsample_puts_the_edge_where_the_image_edge_is() -> None:
    width, height, edge_x = 320, 180, 163
    guide = _step_scene(width, height, edge_x)
    truth = np.zeros((height, width), dtype=np.float32)
    truth[:, edge_x:] = 1.0
    low = cv2.resize(truth, (80, 45), interpolation=cv2.INTER_AREA)  # the model's blurry low-res view
    low = cv2.GaussianBlur(low, (0, 0), 1.0)
    plain = bilinear_upsample(low, width, height)
    plain_error = float(np.abs(plain - truth).mean())
    for guide_scale in (1.0, 0.5):
        guided = guided_upsample(guide, low, guide_scale=guide_scale)
        assert guided.shape == (height, width) and guided.dtype == np.float32
        assert guided.min() >= 0.0 and guided.max() <= 1.0
        crossing = int(np.argmax(guided[height // 2] >= 0.5))  # first column at or above one half
        assert abs(crossing - edge_x) <= 1, (guide_scale, crossing)
        row = guided[height // 2]
        assert (np.diff(row) >= -0.01).all()  # a step in the image gives a monotone edge in the mask
    full_scale_error = float(np.abs(guided_upsample(guide, low, guide_scale=1.0) - truth).mean())
    assert full_scale_error < 0.8 * plain_error, (full_scale_error, plain_error)
    with pytest.raises(ValueError, match="guide_scale"):
        guided_upsample(guide, low, guide_scale=0.0)


def test_mask_smoother_steadies_flicker_and_follows_motion() -> None:
    rng = np.random.default_rng(2)
    base = np.zeros((36, 64), dtype=np.float32)
    base[:, 32:] = 1.0
    smoother = MaskSmoother()
    raw_changes, smooth_changes = [], []
    previous_raw, previous_smooth = None, None
    for _ in range(30):
        raw = np.clip(base + rng.normal(0.0, 0.05, base.shape).astype(np.float32), 0.0, 1.0)
        smooth = smoother(raw)
        if previous_raw is not None and previous_smooth is not None:
            raw_changes.append(np.abs(raw - previous_raw).mean())
            smooth_changes.append(np.abs(smooth - previous_smooth).mean())
        previous_raw, previous_smooth = raw, smooth
    assert np.mean(smooth_changes[10:]) < 0.5 * np.mean(raw_changes[10:])
    moved = np.zeros_like(base)
    moved[:, 16:] = 1.0  # the person stepped 16 px to the left
    after = smoother(moved)
    assert after[:, 16:32].min() > 0.9  # a full change passes at once: no trailing ghost
    smoother.reset()
    np.testing.assert_array_equal(smoother(base), base)


def test_mask_smoother_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        MaskSmoother(min_rate=0.0)
    with pytest.raises(ValueError, match="motion_scale"):
        MaskSmoother(motion_scale=-1.0)


def test_delay_line_returns_the_entry_k_pushes_ago() -> None:
    line = DelayLine(capacity=3)
    assert line.get(0) is None
    images = [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(5)]
    for i, image in enumerate(images):
        line.push(image, np.full((2, 2), i / 10, dtype=np.float32))
    assert len(line) == 3
    for k in range(3):
        entry = line.get(k)
        assert entry is not None
        assert entry.index == 4 - k and int(entry.image[0, 0, 0]) == 4 - k
        assert entry.mask is not None and float(entry.mask[0, 0]) == pytest.approx((4 - k) / 10)
    with pytest.raises(ValueError, match="capacity 3"):
        line.get(3)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        line.get(-1)
    line.resize(5)
    assert line.capacity == 5 and line.get(2) is not None and line.get(3) is None
    line.clear()
    assert len(line) == 0 and line.get(0) is None
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        DelayLine(capacity=0)
