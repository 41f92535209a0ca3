"""The `Translator` contract: how the work thread turns a camera image into a styled one."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Translator(ABC):
    """Turns one RGB image into one styled RGB image, one call per new input.

    - `__call__(image)` takes HxWx3 uint8 RGB and returns HxWx3 uint8 RGB of the same size, or
      None while the translator has nothing to show yet (e.g. a diffusion model filling its
      warmup frames). An image returned by call `i` is the translation of the input of call
      `i - latency_frames` (0 for stateless looks), so the runtime can composite it with the
      segmentation mask of that same input.
    - `reset()` forgets all temporal state (caches, previous frames); the next call starts anew.
    - `warming_up` is True while calls return None or the model is still filling its caches.
    - `close()` frees what the translator holds (GPU memory); called exactly once.
    """

    #: the style name this translator implements
    name: str = "translator"

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray | None: ...

    def reset(self) -> None:  # noqa: B027 (stateless translators have nothing to reset)
        """Forget temporal state."""

    @property
    def latency_frames(self) -> int:
        """How many calls late an output is relative to its input."""
        return 0

    @property
    def warming_up(self) -> bool:
        return False

    @property
    def problem(self) -> str | None:
        """Why the look cannot be shown now (e.g. "remote style unavailable: ..."), or None; meanwhile calls
        return the plain camera image."""
        return None

    def close(self) -> None:  # noqa: B027 (stateless translators hold nothing)
        """Free held resources."""
