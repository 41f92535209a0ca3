"""The `Translator` contract: how the work thread turns a camera image into a styled one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vcam.output_gate import OutputGate


class Translator(ABC):
    """Turns one RGB image into one styled RGB image, one call per new input.

    - `__call__(image)` takes HxWx3 uint8 RGB and returns HxWx3 uint8 RGB of the same size, or
      None while the translator has nothing to show yet (e.g. a diffusion model filling its
      warmup frames). An image returned by call `i` is the translation of the input of call
      `i - latency_frames` (0 for stateless looks), so the runtime can composite it with the
      segmentation mask of that same input.
    - `reset()` forgets all temporal state (caches, previous frames); the next call starts anew.
    - `warmup(images)` fills the temporal state from recent camera frames before the translator goes
      live (a style switch); their outputs are dropped. Stateless translators do nothing.
    - `give_way_to(gate)`: background work it starts later (a new prompt's warmup) gives way to the output's
      frames (`vcam.output_gate`); the runtime calls it before the translator goes live.
    - `resident_memory_mb()` is the memory its models hold (0.0 for looks with no model).
    - `warming_up` is True while calls return None or the model is still filling its caches.
    - `close()` frees what the translator holds (GPU memory); called exactly once.
    """

    #: the style name this translator implements
    name: str = "translator"

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray | None: ...

    def reset(self) -> None:  # noqa: B027 (stateless translators have nothing to reset)
        """Forget temporal state."""

    def warmup(self, images: list[np.ndarray]) -> None:  # noqa: B027 (stateless translators need no warmup)
        """Fill the temporal state from recent camera frames (HxWx3 uint8 RGB, oldest first); outputs dropped."""

    def give_way_to(self, gate: OutputGate) -> None:  # noqa: B027 (looks that start no background work)
        """Background work this translator starts later (a new prompt's warmup) gives way to `gate`'s frames."""

    def resident_memory_mb(self) -> float:
        """MB of model tensors this translator's models hold in memory (0.0 for looks with no model)."""
        return 0.0

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
