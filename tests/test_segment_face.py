"""Keeping the face: the bundled BlazeFace detector on the demo figure and a real photo, the face mask (feather,
hold, smoothing), the blend at a strength, and that a late translator's output gets its own input's face."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vcam.cli import main
from vcam.errors import ConfigError
from vcam.segment import DelayLine, SegmentationStage
from vcam.segment.face import (
    BUNDLED_FACE_MODEL_PATH,
    FACE_HOLD_FRAMES,
    FaceBox,
    FaceDetector,
    FaceMasker,
    face_mask,
)
from vcam.segment.stage import check_face_strength
from vcam.sources.demo import person_box, render_demo_frame

pytest.importorskip("mediapipe", reason="the segment extra (mediapipe) is not installed")

WIDTH, HEIGHT = 640, 360
WHITE = 255


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    face_detector = FaceDetector()
    yield face_detector  # type: ignore[misc]
    face_detector.close()


def centre(box: FaceBox) -> tuple[float, float]:
    return box.x + box.width / 2, box.y + box.height / 2


def test_the_detector_finds_the_astronauts_face(detector: FaceDetector) -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) is not installed")
    photo = np.ascontiguousarray(data.astronaut())  # [512, 512, 3]: Eileen Collins, face near (225, 130)
    faces = detector(photo)
    assert len(faces) == 1 and faces[0].score > 0.8
    x, y = centre(faces[0])
    assert 190 < x < 260 and 95 < y < 170 and 60 < faces[0].width < 140
    # scaled: the detector sees a copy at most 640 wide, and the box comes back in the frame's pixels
    import cv2

    big = cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    (large,) = detector(big)
    assert abs(centre(large)[0] - 2 * x) < 12 and abs(centre(large)[1] - 2 * y) < 12


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1280, 720)])
def test_the_detector_finds_the_demo_figures_face(detector: FaceDetector, width: int, height: int) -> None:
    found = 0
    for index in range(0, 60, 3):
        faces = detector(render_demo_frame(index, width, height))
        x0, y0, x1, y1 = person_box(index, width, height)
        for face in faces:  # every face found is the figure's, in the upper part of it
            x, y = centre(face)
            assert x0 < x < x1 and y0 < y < y0 + 0.45 * (y1 - y0), (index, face)
        found += bool(faces)
    assert found >= 15  # BlazeFace scores the drawn face 0.5-0.8; a blink can drop a frame (the masker holds)


def test_face_mask_is_a_feathered_ellipse_around_the_box() -> None:
    box = FaceBox(100, 60, 80, 80)
    mask = face_mask([box], 320, 240)
    assert mask.dtype == np.float32 and mask.shape == (240, 320)
    assert mask[100, 140] > 0.99  # the face's centre
    assert mask[5, 5] == 0.0 and mask[230, 310] == 0.0  # far away
    row = mask[100, 140:]
    assert np.all(np.diff(row) <= 1e-6) and 0.0 < row[55] < 1.0  # falls off smoothly, no hard edge
    two = face_mask([box, FaceBox(220, 60, 60, 60)], 320, 240)
    assert two[100, 140] > 0.99 and two[85, 250] > 0.99


def test_the_masker_holds_a_face_through_a_few_missed_detections() -> None:
    box = FaceBox(280, 120, 80, 80)
    misses_from = 10
    calls = 0

    def detect(image: np.ndarray) -> list[FaceBox]:
        nonlocal calls
        calls += 1
        return [box] if calls <= misses_from else []

    masker = FaceMasker(detect)
    frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    weights = [float(masker(frame)[160, 320]) for _ in range(misses_from + FACE_HOLD_FRAMES + 3)]
    assert min(weights[: misses_from + FACE_HOLD_FRAMES]) > 0.95  # found, then held
    assert weights[-1] < 0.05  # gone once the hold is over
    masker.reset()
    assert masker.faces == []


def test_the_masker_smooths_a_jittering_box_like_the_person_mask() -> None:
    rng = np.random.default_rng(0)
    boxes = [FaceBox(280 + rng.uniform(-6, 6), 120 + rng.uniform(-6, 6), 80, 80) for _ in range(30)]

    def changes(smooth: bool) -> float:
        queue = iter(boxes)
        masker = FaceMasker(lambda image: [next(queue)], smooth=smooth)
        frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        masks = [masker(frame) for _ in boxes]
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(masks[10:], masks[11:], strict=False)]))

    assert changes(smooth=True) < 0.6 * changes(smooth=False)


@pytest.mark.parametrize("strength", [0.0, 0.4, 1.0])
def test_the_face_is_mixed_back_at_the_strength(strength: float) -> None:
    box = FaceBox(280, 100, 80, 80)
    stage = SegmentationStage("person", face_strength=strength, face_detector=lambda image: [box], smooth=False)
    try:
        original = render_demo_frame(0, WIDTH, HEIGHT)
        styled = np.full_like(original, WHITE)
        everywhere = np.ones((HEIGHT, WIDTH), dtype=np.float32)  # the whole frame is "person"
        out = stage.composite(original, styled, everywhere)
        cx, cy = 320, 134  # the ellipse's centre: the box's, lifted a little
        expected = strength * original[cy, cx].astype(float) + (1 - strength) * WHITE
        assert np.all(np.abs(out[cy, cx].astype(float) - expected) <= 2.0)
        assert np.array_equal(out[10, 10], styled[10, 10])  # outside the face: the styled image
        if strength == 0.0:
            assert np.array_equal(out, styled)
    finally:
        stage.close()


def test_a_late_translators_output_gets_the_face_of_its_own_input() -> None:
    """Each input has its face elsewhere; a translator 2 frames late must get the face box of its own input."""

    def frame_with_face(index: int) -> np.ndarray:
        image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        x = 100 + 120 * index
        image[120:200, x : x + 80] = (200, 150, 120)  # the "face": a skin-coloured square
        return image

    def detect(image: np.ndarray) -> list[FaceBox]:
        columns = np.flatnonzero(image[160, :, 0] == 200)
        return [FaceBox(float(columns[0]), 120.0, 80.0, 80.0)]

    stage = SegmentationStage("person", face_strength=1.0, face_detector=detect, smooth=False)
    line = DelayLine(capacity=3)
    latency = 2
    everywhere = np.ones((HEIGHT, WIDTH), dtype=np.float32)
    try:
        for index in range(4):
            line.push(frame_with_face(index), everywhere)
            entry = line.get(latency)
            if entry is None:
                continue
            styled = np.full((HEIGHT, WIDTH, 3), WHITE, dtype=np.uint8)  # the translation of input index-2
            out = stage.composite(entry.image, styled, entry.mask)
            own_x = 100 + 120 * (index - latency) + 40
            newest_x = 100 + 120 * index + 40
            assert tuple(out[155, own_x]) == (200, 150, 120)  # the face of the frame this output was made from
            assert tuple(out[155, newest_x]) == (WHITE, WHITE, WHITE)  # not the newest frame's
    finally:
        stage.close()


def test_face_strength_is_validated_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_face_strength(0) == 0.0 and check_face_strength(0.5) == 0.5
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match=r"\[segment\] face_strength = .* is not allowed: a number from 0"):
            check_face_strength(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="face_strength = 2"):
        SegmentationStage("off", face_strength=2)
    code = main(["run", "--source", "demo", "--sink", "null", "--frames", "2", "--face-strength", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "face_strength = 1.5 is not allowed" in err and "Traceback" not in err


def test_the_bundled_face_model_matches_its_recorded_provenance() -> None:
    licence = (BUNDLED_FACE_MODEL_PATH.parent / "LICENSE-mediapipe-models.txt").read_text(encoding="utf-8")
    digest = hashlib.sha256(Path(BUNDLED_FACE_MODEL_PATH).read_bytes()).hexdigest()
    assert f"{digest}  face_detection_short_range.tflite" in licence
    assert "Apache License" in licence and "mediapipe==0.10.21" in licence
