"""Person segmentation with the real bundled model: masks on the demo figure and a drawn silhouette,
compositing per mode, temporal steadiness, alignment with a delayed translator, and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from vcam.errors import ConfigError, MissingDependencyError, UserError
from vcam.segment import SEGMENT_MODES, DelayLine, SegmentationStage, check_mode
from vcam.segment.segmenter import BUNDLED_MODEL_PATH, SEGMENT_EXTRA_HINT

pytest.importorskip("mediapipe", reason="the segment extra (mediapipe) is not installed")

WIDTH, HEIGHT = 640, 360


def draw_silhouette(
    width: int, height: int, center_x: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A head-and-shoulders figure (face, hair, eyes, mouth, shirt) in front of a textured wall.

    Returns the RGB image [h, w, 3] uint8 and the figure's ground truth [h, w] bool.
    """
    rng = np.random.default_rng(seed)
    cx = width // 2 if center_x is None else center_x
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = (96, 140, 186)
    noise = rng.normal(0.0, 6.0, (height, width, 1))
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    cv2.rectangle(image, (0, int(0.72 * height)), (width, height), (120, 100, 80), -1)
    cv2.rectangle(
        image, (int(0.05 * width), int(0.1 * height)), (int(0.2 * width), int(0.45 * height)), (230, 230, 210), -1
    )
    figure = np.zeros((height, width), dtype=np.uint8)
    head_c, head_axes = (cx, int(0.38 * height)), (int(0.11 * height), int(0.15 * height))
    cv2.ellipse(figure, head_c, head_axes, 0, 0, 360, 255, -1)
    cv2.rectangle(
        figure, (cx - int(0.05 * height), int(0.5 * height)), (cx + int(0.05 * height), int(0.62 * height)), 255, -1
    )
    cv2.ellipse(figure, (cx, height), (int(0.34 * height), int(0.42 * height)), 0, 180, 360, 255, -1)
    hair = np.zeros_like(figure)
    cv2.ellipse(hair, (cx, int(0.27 * height)), (int(0.115 * height), int(0.08 * height)), 0, 180, 360, 255, -1)
    inside = (figure > 0) | (hair > 0)
    image[inside & (np.arange(height)[:, None] >= int(0.58 * height))] = (40, 70, 150)  # shirt
    image[inside & (np.arange(height)[:, None] < int(0.58 * height))] = (222, 178, 146)  # skin
    image[hair > 0] = (60, 40, 30)
    for side in (-1, 1):
        cv2.circle(
            image, (cx + side * int(0.04 * height), int(0.36 * height)), max(1, int(0.012 * height)), (40, 30, 30), -1
        )
    cv2.ellipse(
        image, (cx, int(0.45 * height)), (int(0.04 * height), int(0.015 * height)), 0, 0, 180, (150, 60, 60), -1
    )
    return image, inside


def inner_and_outer(truth: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels at least `margin` px inside the figure, and at least `margin` px outside it."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), dtype=np.uint8)
    # the frame's border counts as outside: a figure cut by the frame edge is not "far inside" there
    inner = cv2.erode(truth.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    outer = cv2.dilate(truth.astype(np.uint8), kernel) == 0
    return inner, outer


def assert_from_layer(out: np.ndarray, layer: np.ndarray, region: np.ndarray) -> None:
    """In `region`, `out` is `layer`: 99% of the pixels within 3 levels, all within 20 (the model's own
    confidence dips a little at places such as the neck)."""
    difference = np.abs(out[region].astype(np.int32) - layer[region].astype(np.int32)).max(axis=-1)
    assert float((difference <= 3).mean()) >= 0.99, float((difference <= 3).mean())
    assert int(difference.max()) <= 20, int(difference.max())


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float(((mask > 0.5) & truth).sum() / ((mask > 0.5) | truth).sum())


@pytest.fixture
def stage() -> Iterator[SegmentationStage]:
    segmentation = SegmentationStage("person")
    yield segmentation
    segmentation.close()


def test_real_model_sees_the_demo_figure(stage: SegmentationStage) -> None:
    demo = pytest.importorskip("vcam.sources.demo")
    for seed, index in ((0, 0), (1, 45), (2, 90)):
        image = demo.render_demo_frame(index, WIDTH, HEIGHT, seed)
        truth = demo.demo_person_mask(index, WIDTH, HEIGHT, seed)
        stage.reset()  # a new scene: start the temporal smoothing afresh
        mask = stage.mask(image, timestamp=index / 30)
        assert mask is not None and mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.float32
        inner, outer = inner_and_outer(truth, margin=12)
        assert float(mask[inner].mean()) > 0.95, (seed, index)
        assert float(np.percentile(mask[inner], 2)) > 0.7, (seed, index)
        assert float(mask[outer].mean()) < 0.03, (seed, index)
        assert float(np.percentile(mask[outer], 99)) < 0.3, (seed, index)
        assert iou(mask, truth) > 0.95, (seed, index)


def test_real_model_sees_a_drawn_silhouette(stage: SegmentationStage) -> None:
    for center_x in (WIDTH // 2, WIDTH // 3):
        image, truth = draw_silhouette(WIDTH, HEIGHT, center_x)
        stage.reset()
        mask = stage.mask(image, timestamp=center_x / 30)
        assert mask is not None
        inner, outer = inner_and_outer(truth, margin=12)
        assert float(mask[inner].mean()) > 0.9
        assert float(mask[outer].mean()) < 0.05
        assert iou(mask, truth) > 0.9


def test_guided_refinement_beats_plain_upsampling_on_the_figure() -> None:
    image, truth = draw_silhouette(1280, 720)
    scores = {}
    for refine in (False, True):
        segmentation = SegmentationStage("blur", refine=refine)
        mask = segmentation.mask(image, timestamp=0.0)
        segmentation.close()
        assert mask is not None
        scores[refine] = iou(mask, truth)
    assert scores[True] > scores[False], scores


def test_feathered_edge_is_soft_and_monotone(stage: SegmentationStage) -> None:
    image, truth = draw_silhouette(WIDTH, HEIGHT)
    mask = stage.mask(image, timestamp=0.0)
    assert mask is not None
    black = np.zeros_like(image)
    white = np.full_like(image, 255)
    out = stage.composite(black, white, mask)  # person mode: the "styled" white person over black
    for row_y in (int(0.8 * HEIGHT), int(0.9 * HEIGHT), int(0.38 * HEIGHT)):
        columns = np.flatnonzero(truth[row_y])
        edge = int(columns[0])  # the figure's left edge on this row
        segment = slice(edge - 25, edge + 25)
        profile = mask[row_y, segment]
        assert profile[0] < 0.05 and profile[-1] > 0.95
        assert (np.diff(profile) >= -0.01).all(), profile.round(3)
        soft = int(((profile > 0.05) & (profile < 0.95)).sum())
        assert 2 <= soft <= 30, soft  # feathered over a few pixels, not a hard step, not a smear
        values = out[row_y, segment, 0].astype(np.int32)
        assert (np.diff(values) >= -3).all(), values


@pytest.mark.parametrize("mode", ["person", "background", "blur", "replace"])
def test_composite_takes_each_layer_where_expected(mode: str, tmp_path: Path) -> None:
    background_path = tmp_path / "beach.png"
    background_bgr = np.zeros((200, 300, 3), dtype=np.uint8)
    background_bgr[:] = (0, 200, 255)  # orange in BGR
    cv2.imwrite(str(background_path), background_bgr)
    segmentation = SegmentationStage(mode, background_image=background_path)
    try:
        original, truth = draw_silhouette(WIDTH, HEIGHT)
        translated = 255 - original  # a stand-in "style": the negative
        mask = segmentation.mask(original, timestamp=0.0)
        assert mask is not None
        out = segmentation.composite(original, translated, mask)
    finally:
        segmentation.close()
    assert out.shape == original.shape and out.dtype == np.uint8
    inner, outer = inner_and_outer(truth, margin=15)
    blurred = cv2.GaussianBlur(original, (0, 0), 8)
    orange = np.array([255, 200, 0], dtype=np.int32)
    expected_inside = {"person": translated, "background": original, "blur": original, "replace": translated}[mode]
    assert_from_layer(out, expected_inside, inner)
    outside = out[outer].astype(np.int32)
    if mode == "person":
        assert_from_layer(out, original, outer)
    elif mode == "background":
        assert_from_layer(out, translated, outer)
    elif mode == "blur":
        # the wall's pixel noise is gone outside the person, and the colours are those of the blurred frame
        def detail(image: np.ndarray) -> float:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F))[outer].mean())

        assert detail(out) < 0.3 * detail(original), (detail(out), detail(original))
        assert np.abs(outside.mean(axis=0) - blurred[outer].mean(axis=0)).max() < 4
    else:
        assert_from_layer(out, np.broadcast_to(orange.astype(np.uint8), out.shape), outer)


def test_replace_with_the_real_person_needs_no_translation(tmp_path: Path) -> None:
    background_path = tmp_path / "bg.png"
    cv2.imwrite(str(background_path), np.full((90, 160, 3), 80, dtype=np.uint8))
    segmentation = SegmentationStage("replace", background_image=background_path, replace_styled=False)
    try:
        assert not segmentation.needs_translation
        original, truth = draw_silhouette(WIDTH, HEIGHT)
        mask = segmentation.mask(original, timestamp=0.0)
        out = segmentation.composite(original, None, mask)
        inner, outer = inner_and_outer(truth, margin=15)
        assert_from_layer(out, original, inner)
        assert_from_layer(out, np.full_like(original, 80), outer)
    finally:
        segmentation.close()


def test_modes_needs_translation_and_off() -> None:
    segmentation = SegmentationStage("off")
    try:
        assert segmentation.mode == "off" and segmentation.needs_translation
        image, _ = draw_silhouette(160, 90)
        assert segmentation.mask(image, 0.0) is None and segmentation.last_ms == 0.0
        styled = 255 - image
        assert segmentation.composite(image, styled, None) is styled
        assert segmentation.composite(image, None, None) is image
        expected = {"off": True, "person": True, "background": True, "blur": False}
        for mode, needs in expected.items():
            segmentation.set_mode(mode.upper())
            assert segmentation.mode == mode and segmentation.needs_translation is needs
        assert segmentation.mask(image, 1.0) is not None and segmentation.last_ms > 0.0
    finally:
        segmentation.close()
    assert SEGMENT_MODES == ("off", "person", "background", "blur", "replace")
    assert check_mode(" Blur ") == "blur"


def test_static_scene_mask_is_steady() -> None:
    """Camera noise on a still figure: the smoothed mask barely changes, less than the unsmoothed one."""
    base, truth = draw_silhouette(WIDTH, HEIGHT)
    rng = np.random.default_rng(3)
    frames = [np.clip(base + rng.normal(0.0, 6.0, base.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    changes: dict[str, list[float]] = {}
    peaks: dict[str, list[float]] = {}
    for name, smooth in (("raw", False), ("smoothed", True)):
        segmentation = SegmentationStage("blur", smooth=smooth)
        previous = None
        for index, frame in enumerate(frames):
            mask = segmentation.mask(frame, timestamp=index / 30)
            assert mask is not None
            if previous is not None and index >= 4:
                change = np.abs(mask - previous)
                changes.setdefault(name, []).append(float(change.mean()))
                peaks.setdefault(name, []).append(float(np.percentile(change, 99.9)))
            previous = mask
        segmentation.close()
    assert max(changes["smoothed"]) < 2e-3, changes["smoothed"]
    assert max(peaks["smoothed"]) < 0.08, peaks["smoothed"]
    assert np.mean(changes["smoothed"]) < np.mean(changes["raw"]), (changes, peaks)


class DelayedNegative:
    """A translator stand-in that is `delay` calls late: call i returns the negative of input i - delay."""

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self._inputs: deque[np.ndarray] = deque()

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self._inputs.append(image)
        if len(self._inputs) <= self.delay:
            return None
        return 255 - self._inputs.popleft()

    @property
    def latency_frames(self) -> int:
        return self.delay


@pytest.mark.parametrize("delay", [0, 2])
def test_composite_uses_the_mask_of_the_translated_input(delay: int) -> None:
    """A figure moving 20 px a frame: the styled person lands exactly on the mask of its own input frame."""
    segmentation = SegmentationStage("person")
    translator = DelayedNegative(delay)
    line = DelayLine(capacity=delay + 1)
    misaligned_errors = []
    try:
        for index in range(8):
            frame, _ = draw_silhouette(WIDTH, HEIGHT, center_x=180 + 20 * index, seed=index)
            mask = segmentation.mask(frame, timestamp=index / 30)
            styled = translator(frame)
            line.push(frame, mask)
            if styled is None:
                assert index < delay
                continue
            entry = line.get(translator.latency_frames)
            assert entry is not None and entry.index == index - delay
            out = segmentation.composite(entry.image, styled, entry.mask)
            _, truth = draw_silhouette(WIDTH, HEIGHT, center_x=180 + 20 * (index - delay), seed=index - delay)
            inner, outer = inner_and_outer(truth, margin=15)
            assert_from_layer(out, 255 - entry.image, inner)
            assert_from_layer(out, entry.image, outer)
            wrong = segmentation.composite(entry.image, styled, mask)  # the newest frame's mask instead
            misaligned_errors.append(float(np.abs(wrong.astype(np.int32) - out.astype(np.int32)).max()))
    finally:
        segmentation.close()
    if delay > 0:
        assert min(misaligned_errors) > 100  # the wrong mask visibly cuts the person: the test can tell
    else:
        assert max(misaligned_errors) == 0


def test_missing_model_file_is_a_user_error_naming_the_path() -> None:
    with pytest.raises(ConfigError, match=r"\[segment\] model: no such file: '/nonexistent/selfie.tflite'"):
        SegmentationStage("blur", model_path="/nonexistent/selfie.tflite")


def test_unreadable_model_file_is_a_user_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"this is not a tflite model")
    with pytest.raises(ConfigError, match="cannot load .*bogus.tflite"):
        SegmentationStage("blur", model_path=bogus)


def test_bad_mode_and_missing_background_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown segmentation mode 'sparkle'; use one of: off, person"):
        SegmentationStage("sparkle")
    with pytest.raises(ConfigError, match="background_image is empty"):
        SegmentationStage("replace")
    with pytest.raises(ConfigError, match="no such file: '/nonexistent/bg.jpg'"):
        SegmentationStage("replace", background_image="/nonexistent/bg.jpg")
    segmentation = SegmentationStage("blur")
    try:
        with pytest.raises(ConfigError, match="background_image is empty"):
            segmentation.set_mode("replace")
        assert segmentation.mode == "blur"  # a failed switch keeps the current mode
    finally:
        segmentation.close()
    with pytest.raises(ConfigError, match="blur_strength"):
        SegmentationStage("blur", blur_strength=-1)


def test_missing_mediapipe_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "mediapipe" or name.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'live2diff-vcam\[segment\]'") as raised:
        SegmentationStage("blur")
    assert isinstance(raised.value, UserError)
    assert SEGMENT_EXTRA_HINT in str(raised.value)
    segmentation = SegmentationStage("off")  # no segmentation: mediapipe is never needed
    with pytest.raises(MissingDependencyError):
        segmentation.set_mode("person")
    assert segmentation.mode == "off"


def test_importing_the_package_does_not_import_mediapipe_or_cv2() -> None:
    code = "import sys, vcam.segment; print(sorted(m for m in ('mediapipe', 'cv2') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_bundled_model_and_licence_are_in_the_package() -> None:
    assert BUNDLED_MODEL_PATH.is_file()
    licence = BUNDLED_MODEL_PATH.parent / "LICENSE-mediapipe-models.txt"
    text = licence.read_text()
    assert "Apache License" in text and "Version 2.0" in text
    import hashlib

    digest = hashlib.sha256(BUNDLED_MODEL_PATH.read_bytes()).hexdigest()
    assert digest in text


def _run_cli_without_mediapipe(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """`vcam ARGS` in a fresh interpreter where `import mediapipe` fails, as if the extra were not installed."""
    code = f"import sys; sys.modules['mediapipe'] = None\nfrom vcam.cli import main\nsys.exit(main({args!r}))\n"
    env = {**os.environ, "VCAM_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_cli_segment_without_mediapipe_exits_2_and_plain_run_works(tmp_path: Path) -> None:
    pytest.importorskip("vcam.commands.run")
    base = ["run", "--source", "demo", "--size", "320x180", "--frames", "3", "--sink", "null"]
    plain = _run_cli_without_mediapipe(base, tmp_path)
    assert plain.returncode == 0, plain.stderr
    segmented = _run_cli_without_mediapipe([*base, "--segment", "blur"], tmp_path)
    assert segmented.returncode == 2, segmented.stderr
    assert "pip install 'live2diff-vcam[segment]'" in segmented.stderr


def test_cli_missing_model_file_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("vcam.commands.run")
    config = tmp_path / "config.toml"
    config.write_text('[segment]\nmodel = "/nonexistent/model.tflite"\n')
    args = ["run", "--source", "demo", "--size", "320x180", "--segment", "blur", "--frames", "3", "--sink", "null"]
    env = {**os.environ, "VCAM_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "vcam", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "[segment] model: no such file: '/nonexistent/model.tflite'" in result.stderr


def test_benchmark_reports_every_mode() -> None:
    pytest.importorskip("vcam.commands.common")
    import argparse

    from vcam.bench import segment as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    result = bench.run(parser.parse_args(["--size", "320x180", "--frames", "3", "--warmup", "1"]))
    assert result["size"] == "320x180" and result["model"] == BUNDLED_MODEL_PATH.name
    assert set(result["modes"]) == set(SEGMENT_MODES)
    for mode in ("person", "background", "blur", "replace"):
        assert result["modes"][mode]["mask_ms"] > 0.0 and result["modes"][mode]["composite_ms"] > 0.0
    assert result["modes"]["off"]["mask_ms"] == 0.0
    assert result["upsampling"]["guided"]["iou_mean"] > 0.9
