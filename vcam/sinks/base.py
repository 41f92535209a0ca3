"""The `Sink` contract: where finished frames go."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

#: returns the runtime's status as a JSON-able dict (see `vcam.status.Status.to_dict`)
StatusProvider = Callable[[], dict[str, Any]]


class Sink(ABC):
    """A consumer of finished frames.

    `open(width, height, fps)` is called exactly once before the first `send`; `send(image)` gets
    HxWx3 uint8 RGB frames of exactly that size, at the output fps; `close()` is called exactly
    once at shutdown (also after a failed `open`). Errors a user can fix raise `SinkError`.
    """

    description: str = "sink"

    @abstractmethod
    def open(self, width: int, height: int, fps: float) -> None: ...

    @abstractmethod
    def send(self, image: np.ndarray) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    def url(self) -> str | None:
        """The address where a viewer can watch this sink's frames (a local page), or None (the default)."""
        return None

    def bind_status(self, provider: StatusProvider) -> None:  # noqa: B027 (optional hook)
        """Give the sink a way to read the runtime's status (the preview page shows it)."""
