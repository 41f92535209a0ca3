"""The segmentation stage of the work thread: a person mask per frame, and the composite of the layers.

Modes:
- `off`: no mask; the translator's output (or the camera frame) passes unchanged.
- `person`: the styled person over the real background.
- `background`: the real person over the styled background.
- `blur`: the real person over a blurred background (no translator needed).
- `replace`: the person (styled when a translator runs, else real) over the user's background image.

With `face_strength` > 0 the face stays recognisable: in the modes that show the styled person (`person`,
`replace`), the camera's face region (`vcam.segment.face`) is mixed back over the styled image at that
strength before compositing. The face is found in `composite()`'s `original`, the very input frame the
styled image was made from (the work thread takes it from its `DelayLine`), so a late translator's output
gets the face box of its own input.

The mask is computed on a small copy of the frame (the model's input is 256x144 anyway), smoothed
over time there, feathered, and upsampled to the frame with a guided filter so its edges follow
the frame's edges. The work thread calls `mask()` on each camera frame and `composite()` with the
translator's output for that same frame (see `DelayLine` for translators that are frames late).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from vcam.errors import ConfigError
from vcam.imaging import fit_cover
from vcam.segment.compose import blend, blur_image, load_image
from vcam.segment.face import FaceDetect, FaceDetector, FaceMasker
from vcam.segment.guided_filter import bilinear_upsample, guided_upsample
from vcam.segment.segmenter import PersonSegmenter
from vcam.segment.smoothing import MaskSmoother

log = logging.getLogger(__name__)

#: the segmentation modes, as the config, the CLI's --segment and the control command spell them
SEGMENT_MODES = ("off", "person", "background", "blur", "replace")
#: the range of `[segment] face_strength` (0 = off: the styled face as the model made it)
FACE_STRENGTH_RANGE = (0.0, 1.0)


def check_face_strength(value: float) -> float:
    """`value` as a float when it is in FACE_STRENGTH_RANGE, else ConfigError naming it."""
    low, high = FACE_STRENGTH_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
        raise ConfigError(
            f"[segment] face_strength = {value!r} is not allowed: a number from {low:g} (off) to {high:g} "
            "(the camera's face unchanged)"
        )
    return float(value)


def check_mode(mode: str) -> str:
    """Return `mode` normalised (lower case, stripped), or raise ConfigError listing the modes."""
    normalised = str(mode).strip().lower()
    if normalised not in SEGMENT_MODES:
        raise ConfigError(
            f"[segment] mode: unknown segmentation mode {mode!r}; use one of: {', '.join(SEGMENT_MODES)}"
        )
    return normalised


class SegmentationStage:
    """Person segmentation and compositing for one stream of frames.

    `mask()` and `composite()` are called from the work thread; `set_mode()` may be called from
    another (control) thread at any time. The model loads when a mode needs it (eagerly in the
    constructor for such a mode, so a missing mediapipe or model fails at start-up).

    Args:
        mode: one of SEGMENT_MODES.
        model_path: a .tflite segmentation model; None or "" for the bundled Selfie Segmentation model.
        background_image: the image behind the person in `replace` mode (cover-fitted to the frame).
        blur_strength: about the Gaussian's size in frame pixels for `blur` mode.
        replace_styled: in `replace` mode, show the styled person (True) or the real one (False).
        work_width: width of the frame copy the model sees (the mask's resolution before upsampling).
        refine: upsample the mask with the guided filter (True) or bilinearly (False).
        feather: Gaussian sigma of the mask edge, in pixels of the work-width copy.
        smooth: smooth the mask over time (False passes each frame's mask as the model gives it).
        face_strength: how much of the camera's face is mixed back over the styled one (0 = off, 1 = all).
        face_detector: finds faces in a frame (default: the bundled BlazeFace model, loaded when first needed).
    """

    def __init__(
        self,
        mode: str,
        model_path: str | Path | None = None,
        background_image: str | Path | None = None,
        blur_strength: int = 35,
        *,
        replace_styled: bool = True,
        work_width: int = 320,
        refine: bool = True,
        feather: float = 1.0,
        smooth: bool = True,
        face_strength: float = 0.0,
        face_detector: FaceDetect | None = None,
    ) -> None:
        if blur_strength < 0:
            raise ConfigError(f"[segment] blur_strength must be >= 0, got {blur_strength}")
        if work_width < 16:
            raise ValueError(f"work_width must be >= 16, got {work_width}")
        self._model_path = model_path
        self._background_path = None if background_image is None or str(background_image) == "" else background_image
        self.blur_strength = int(blur_strength)
        self.replace_styled = replace_styled
        self.work_width = work_width
        self.refine = refine
        self.feather = feather
        self._lock = threading.RLock()
        self._segmenter: PersonSegmenter | None = None
        self._smoother = MaskSmoother() if smooth else MaskSmoother(min_rate=1.0, motion_scale=0.0)
        self._smooth = smooth
        self._face_detector = face_detector
        self._face_masker: FaceMasker | None = None
        self._face_strength = 0.0
        self._background: np.ndarray | None = None  # [h, w, 3] uint8, as read from the file
        self._background_fitted: np.ndarray | None = None  # [H, W, 3] uint8, fitted to the last frame size
        self._last_timestamp_ms = -1
        self._mode = "off"
        #: milliseconds the last mask() call took (0 when segmentation is off)
        self.last_ms = 0.0
        #: milliseconds the last composite() call took
        self.composite_ms = 0.0
        try:
            self.set_face_strength(face_strength)
            self.set_mode(mode)
        except BaseException:
            self.close()
            raise

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def needs_translation(self) -> bool:
        """False when the output never shows the translator's image (blur, replace with the real person)."""
        mode = self._mode
        if mode == "blur":
            return False
        return not (mode == "replace" and not self.replace_styled)

    def set_mode(self, mode: str) -> None:
        """Switch modes (thread-safe); loads the model or the background image first when the mode needs them.

        On error (missing mediapipe, model or image) the stage keeps its current mode.
        """
        new_mode = check_mode(mode)
        if new_mode == "replace":
            self._ensure_background()
        if new_mode != "off":
            self._ensure_segmenter()
        with self._lock:
            if new_mode != self._mode:
                log.info("segmentation mode: %s -> %s", self._mode, new_mode)
                self._smoother.reset()
            self._mode = new_mode

    @property
    def face_strength(self) -> float:
        return self._face_strength

    def set_face_strength(self, strength: float) -> None:
        """How much of the camera's face to mix back (0..1, thread-safe); loads the face detector when first > 0."""
        value = check_face_strength(strength)
        if value > 0.0 and self._face_masker is None:
            detector = self._face_detector if self._face_detector is not None else FaceDetector()
            masker = FaceMasker(detector, work_width=self.work_width, smooth=self._smooth)
            with self._lock:
                if self._face_masker is None:
                    self._face_detector, self._face_masker = detector, masker
        with self._lock:
            self._face_strength = value

    def reset(self) -> None:
        """Forget the temporal smoothing's history (a new scene: the source reconnected or changed)."""
        with self._lock:
            self._smoother.reset()
            if self._face_masker is not None:
                self._face_masker.reset()

    def _ensure_segmenter(self) -> None:
        if self._segmenter is not None:
            return
        segmenter = PersonSegmenter(self._model_path)
        with self._lock:
            if self._segmenter is None:
                self._segmenter = segmenter
                return
        segmenter.close()

    def _ensure_background(self) -> np.ndarray:
        if self._background is not None:
            return self._background
        if self._background_path is None:
            raise ConfigError(
                "[segment] background_image is empty: mode 'replace' needs an image to put behind you "
                "(pass --background IMAGE, or set [segment] background_image to a .png or .jpg file)"
            )
        image = load_image(self._background_path)
        with self._lock:
            self._background = image
            self._background_fitted = None
        return image

    def _timestamp_ms(self, timestamp: float) -> int:
        """Milliseconds for mediapipe's VIDEO mode: from `timestamp`, made strictly increasing."""
        timestamp_ms = max(int(round(timestamp * 1000.0)), self._last_timestamp_ms + 1)
        self._last_timestamp_ms = timestamp_ms
        return timestamp_ms

    def mask(self, image: np.ndarray, timestamp: float) -> np.ndarray | None:
        """The person mask of `image` (HxWx3 uint8 RGB): [h, w] float32 in [0, 1], or None when the mode is off.

        `timestamp` is the frame's capture time in seconds (monotonic). The mask is smoothed with
        the masks of the previous calls, so call this once per frame, in order.
        """
        import cv2

        with self._lock:
            if self._mode == "off" or self._segmenter is None:
                self.last_ms = 0.0
                return None
            start = time.perf_counter()
            height, width = image.shape[:2]
            work_w = min(self.work_width, width)
            work_h = max(1, round(height * work_w / width))
            small = cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA)  # [h, w, 3]
            raw = self._segmenter.segment(small, self._timestamp_ms(timestamp))  # [h, w]
            smoothed = self._smoother(raw)
            if self.feather > 0:
                smoothed = cv2.GaussianBlur(smoothed, (0, 0), sigmaX=self.feather, borderType=cv2.BORDER_REPLICATE)
            # refine: the mask's edges move onto the frame's own edges (README: +1 pt IoU on the demo figure)
            mask = guided_upsample(image, smoothed) if self.refine else bilinear_upsample(smoothed, width, height)
            self.last_ms = (time.perf_counter() - start) * 1000.0
            return mask

    def _fitted_background(self, width: int, height: int) -> np.ndarray:
        fitted = self._background_fitted
        if fitted is None or fitted.shape[:2] != (height, width):
            fitted = fit_cover(self._ensure_background(), width, height)
            self._background_fitted = fitted
        return fitted

    def composite(self, original: np.ndarray, translated: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray:
        """The output frame (HxWx3 uint8) for the current mode.

        `original` is the camera frame the mask was computed on, `translated` the translator's
        output for that same frame (None when no translation ran), `mask` the frame's mask (None
        when segmentation was off for it: the translated or original frame is returned as is).
        """
        import cv2

        start = time.perf_counter()
        height, width = original.shape[:2]
        if translated is not None and translated.shape[:2] != (height, width):
            translated = cv2.resize(translated, (width, height), interpolation=cv2.INTER_LINEAR)
        with self._lock:
            mode = self._mode
            if mode == "off" or mask is None:
                result = translated if translated is not None else original
            elif mode == "person":
                result = (
                    original if translated is None else blend(self._keep_face(original, translated), original, mask)
                )
            elif mode == "background":
                result = original if translated is None else blend(original, translated, mask)
            elif mode == "blur":
                result = blend(original, blur_image(original, self.blur_strength), mask)
            else:  # replace
                styled = translated is not None and self.replace_styled
                person = self._keep_face(original, translated) if styled and translated is not None else original
                result = blend(person, self._fitted_background(width, height), mask)
        self.composite_ms = (time.perf_counter() - start) * 1000.0
        return result

    def _keep_face(self, original: np.ndarray, translated: np.ndarray) -> np.ndarray:
        """The styled image with the camera's face mixed back at `face_strength` (as is when that is 0)."""
        if self._face_strength <= 0.0 or self._face_masker is None:
            return translated
        weight = self._face_masker(original)  # [H, W] from the faces of this very input frame
        weight *= self._face_strength
        return blend(original, translated, weight)

    def close(self) -> None:
        """Free the models (the stage can load them again with set_mode / set_face_strength)."""
        with self._lock:
            segmenter, self._segmenter = self._segmenter, None
            detector, self._face_detector = self._face_detector, None
            self._face_masker = None
            self._face_strength = 0.0
            self._mode = "off"
        if segmenter is not None:
            segmenter.close()
        if isinstance(detector, FaceDetector):
            detector.close()
