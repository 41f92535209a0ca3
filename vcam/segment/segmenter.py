"""The person segmenter: MediaPipe Tasks' `ImageSegmenter` in VIDEO mode on a Selfie Segmentation model.

The bundled model is MediaPipe's `selfie_segmentation_landscape.tflite` (Apache-2.0, see
`models/LICENSE-mediapipe-models.txt`); newer mediapipe wheels no longer ship it. A user may
point `[segment] model` at another `.tflite` segmentation model with TFLite metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vcam.errors import ConfigError, MissingDependencyError, UserError

log = logging.getLogger(__name__)

#: the model shipped inside the package (144x256 input, one "person" confidence channel)
BUNDLED_MODEL_PATH = Path(__file__).resolve().parent / "models" / "selfie_segmentation_landscape.tflite"

#: how to get mediapipe, named in the error when it is missing
SEGMENT_EXTRA_HINT = "pip install 'live2diff-vcam[segment]'"


def import_mediapipe() -> Any:
    """Import mediapipe, or raise MissingDependencyError naming the extra to install."""
    try:
        import mediapipe
        from mediapipe.tasks.python import vision  # noqa: F401 (checks the Tasks API is there)
    except ImportError as error:
        raise MissingDependencyError(
            f"person segmentation needs mediapipe, which is not installed ({error}): run {SEGMENT_EXTRA_HINT}"
        ) from error
    return mediapipe


def resolve_model_path(model_path: str | Path | None) -> Path:
    """The model file to load: `model_path`, or the bundled model when it is None or empty."""
    if model_path is None or str(model_path) == "":
        path = BUNDLED_MODEL_PATH
        if not path.is_file():
            raise UserError(
                f"the bundled segmentation model is missing: {path} (reinstall live2diff-vcam, "
                "or set [segment] model to a .tflite file)"
            )
        return path
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"[segment] model: no such file: {str(model_path)!r} (point it at a .tflite segmentation model, "
            'or set it to "" for the bundled one)'
        )
    return path


@contextlib.contextmanager
def native_stderr_to_debug_log() -> Iterator[None]:
    """Move what native code writes to file descriptor 2 meanwhile (TFLite's and absl's start-up
    notices when a model loads) into this module's debug log instead of the user's console."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (e.g. a GUI process): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace").strip()
            if text:
                log.debug("native output while loading the segmentation model:\n%s", text)


class PersonSegmenter:
    """Runs a segmentation model on RGB images and returns a person-confidence mask.

    Frames go through `segment(image, timestamp_ms)` in VIDEO mode: timestamps must be strictly
    increasing (the caller makes sure they are). The mask has the image's size, float32 in [0, 1].
    Models with one output channel give the person confidence directly; models with a "person"
    label use that channel; other multi-class models use 1 - background (channel 0).
    """

    def __init__(self, model_path: str | Path | None = None) -> None:
        mediapipe = import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = resolve_model_path(model_path)
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        try:
            with native_stderr_to_debug_log():
                self._segmenter = vision.ImageSegmenter.create_from_options(options)
        except (RuntimeError, ValueError, OSError) as error:
            raise ConfigError(
                f"[segment] model: cannot load {str(self.model_path)!r} as a MediaPipe segmentation model "
                f'({error}); use a .tflite image segmentation model with metadata, or "" for the bundled one'
            ) from error
        # close the task when this object is garbage collected (callers should close() it explicitly)
        self._finalizer = weakref.finalize(self, self._segmenter.close)
        self._finalizer.atexit = False  # at exit mediapipe's executor is already shut down
        self._mediapipe = mediapipe
        labels = [label.lower() for label in (self._segmenter.labels or [])]
        self._person_channel: int | None = labels.index("person") if "person" in labels else None
        log.info("segmentation model %s loaded (labels: %s)", self.model_path, labels or "none")

    def segment(self, image: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """Person confidence of `image` (HxWx3 uint8 RGB): [h, w] float32 in [0, 1]."""
        mp_image = self._mediapipe.Image(
            image_format=self._mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(image)
        )
        result = self._segmenter.segment_for_video(mp_image, timestamp_ms)
        masks = result.confidence_masks
        if not masks:
            raise RuntimeError(f"segmentation model {self.model_path} returned no confidence mask")
        if len(masks) == 1:
            confidence = masks[0].numpy_view()
        elif self._person_channel is not None:
            confidence = masks[self._person_channel].numpy_view()
        else:
            confidence = 1.0 - masks[0].numpy_view()
        confidence = confidence.reshape(image.shape[0], image.shape[1])  # [h, w]
        return np.clip(confidence, 0.0, 1.0).astype(np.float32, copy=True)

    def close(self) -> None:
        """Free the model; idempotent."""
        self._finalizer()
