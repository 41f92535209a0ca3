"""The identity translator: the camera image as it is."""

from __future__ import annotations

import numpy as np

from vcam.translators.base import Translator


class PassthroughTranslator(Translator):
    name = "passthrough"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image
