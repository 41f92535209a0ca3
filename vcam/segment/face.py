"""Keeping the face recognisable: where the face is in a frame, as a soft mask to mix the camera back in.

`FaceDetector` runs MediaPipe Tasks' `FaceDetector` (IMAGE mode) on the bundled BlazeFace short-range model
(`models/face_detection_short_range.tflite`, Apache-2.0, see `models/LICENSE-mediapipe-models.txt`).
`FaceMasker` turns each frame's face boxes into a mask: an ellipse around each box (the box runs from the
brows to the chin; the ellipse takes in forehead and cheeks), feathered, held over a few missed detections,
smoothed over time like the person mask (`MaskSmoother`) and scaled to the frame. The segmentation stage mixes
the camera frame back over the styled one through it (`SegmentationStage(face_strength=...)`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcam.errors import UserError
from vcam.segment.segmenter import import_mediapipe, native_stderr_to_debug_log
from vcam.segment.smoothing import MaskSmoother

log = logging.getLogger(__name__)

#: the face detector shipped inside the package (BlazeFace short range, 128x128 input)
BUNDLED_FACE_MODEL_PATH = Path(__file__).resolve().parent / "models" / "face_detection_short_range.tflite"
#: MediaPipe's own default confidence for a face
MIN_FACE_CONFIDENCE = 0.5
#: frames a face is kept through missed detections (a blink, a turned head) before its mask fades
FACE_HOLD_FRAMES = 5
#: the detector sees at most this wide a copy of the frame (its model looks at 128x128 anyway)
DETECT_WIDTH = 640
#: the ellipse around a face box: half-axes in box widths / heights, and its centre's shift up in box heights
FACE_ELLIPSE_AXES = (0.62, 0.72)
FACE_ELLIPSE_LIFT = 0.08
#: the feather of the ellipse's edge (Gaussian sigma) in box widths
FACE_FEATHER = 0.12


@dataclass(frozen=True)
class FaceBox:
    """A face in a frame, in pixels of that frame: top-left corner, size, and the detector's confidence."""

    x: float
    y: float
    width: float
    height: float
    score: float = 1.0

    def scaled(self, factor: float) -> FaceBox:
        return FaceBox(self.x * factor, self.y * factor, self.width * factor, self.height * factor, self.score)


FaceDetect = Callable[[np.ndarray], list[FaceBox]]


class FaceDetector:
    """Faces in RGB frames (HxWx3 uint8), with MediaPipe's BlazeFace short-range model; `close()` frees it."""

    def __init__(self, model_path: str | Path | None = None, min_confidence: float = MIN_FACE_CONFIDENCE) -> None:
        mediapipe = import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        path = Path(model_path) if model_path else BUNDLED_FACE_MODEL_PATH
        if not path.is_file():
            raise UserError(f"the bundled face detection model is missing: {path} (reinstall live2diff-vcam)")
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_confidence,
        )
        with native_stderr_to_debug_log():
            self._detector = vision.FaceDetector.create_from_options(options)
        self._finalizer = weakref.finalize(self, self._detector.close)
        self._finalizer.atexit = False  # at exit mediapipe's executor is already shut down
        self._mediapipe = mediapipe
        self.model_path = path
        log.info("face detection model %s loaded", path)

    def __call__(self, image: np.ndarray) -> list[FaceBox]:
        """The faces of `image`, in its pixels (the detector sees a copy at most DETECT_WIDTH wide)."""
        import cv2

        height, width = image.shape[:2]
        scale = min(1.0, DETECT_WIDTH / width)
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        )
        frame = self._mediapipe.Image(image_format=self._mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(small))
        faces = []
        for detection in self._detector.detect(frame).detections:
            box = detection.bounding_box
            score = float(detection.categories[0].score) if detection.categories else 1.0
            faces.append(FaceBox(box.origin_x, box.origin_y, box.width, box.height, score).scaled(1.0 / scale))
        return faces

    def close(self) -> None:
        """Free the model; idempotent."""
        self._finalizer()


def face_mask(boxes: Sequence[FaceBox], width: int, height: int) -> np.ndarray:
    """A soft mask [height, width] float32 in [0, 1]: a feathered ellipse around each face box (their maximum)."""
    import cv2

    mask = np.zeros((height, width), dtype=np.float32)
    for box in boxes:
        layer = np.zeros((height, width), dtype=np.float32)
        centre = (round(box.x + box.width / 2), round(box.y + box.height / 2 - FACE_ELLIPSE_LIFT * box.height))
        axes = (max(1, round(FACE_ELLIPSE_AXES[0] * box.width)), max(1, round(FACE_ELLIPSE_AXES[1] * box.height)))
        cv2.ellipse(layer, centre, axes, 0.0, 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA)
        sigma = max(0.5, FACE_FEATHER * box.width)
        feathered = cv2.GaussianBlur(layer, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
        np.maximum(mask, feathered, out=mask)
    return mask


class FaceMasker:
    """Per frame, in order: the face mask of the frame (see the module docstring), [H, W] float32 in [0, 1].

    `detect` finds the faces of a frame (a `FaceDetector`, or any function with its contract). The mask is
    built on a copy `work_width` wide, smoothed over the previous frames' masks, and scaled to the frame.
    """

    def __init__(self, detect: FaceDetect, work_width: int = 320, smooth: bool = True) -> None:
        self.detect = detect
        self.work_width = work_width
        self._smoother = MaskSmoother() if smooth else MaskSmoother(min_rate=1.0, motion_scale=0.0)
        self._last_faces: list[FaceBox] = []
        self._missed = 0
        #: the faces used for the last mask (held ones included), in pixels of the frame
        self.faces: list[FaceBox] = []

    def reset(self) -> None:
        """Forget the held faces and the smoothing (a new scene)."""
        self._smoother.reset()
        self._last_faces = []
        self._missed = 0
        self.faces = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cv2

        height, width = image.shape[:2]
        faces = self.detect(image)
        if faces:
            self._last_faces, self._missed = faces, 0
        else:
            self._missed += 1
            if self._missed > FACE_HOLD_FRAMES:
                self._last_faces = []
        self.faces = list(self._last_faces)
        work_w = min(self.work_width, width)
        scale = work_w / width
        work_h = max(1, round(height * scale))
        small = face_mask([face.scaled(scale) for face in self.faces], work_w, work_h)  # [h, w]
        smoothed = self._smoother(small)
        return cv2.resize(smoothed, (width, height), interpolation=cv2.INTER_LINEAR)  # [H, W]
