"""Sending each output frame to every sink: a sink that fails is closed and dropped, the others keep going."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from vcam.errors import UserError
from vcam.sinks.base import Sink

log = logging.getLogger(__name__)


class SinkFanout:
    """The runtime's sinks; `send` reaches every working one. `on_error(message)` hears of each dropped sink."""

    def __init__(self, sinks: Sequence[Sink], on_error: Callable[[str], None]) -> None:
        self.sinks = list(sinks)
        self.failed: list[Sink] = []  # dropped after a failed send (closed already)
        self._on_error = on_error

    def working(self) -> list[Sink]:
        return [sink for sink in self.sinks if sink not in self.failed]

    def send(self, image: np.ndarray) -> bool:
        """Send to every working sink; False when none is left."""
        for sink in self.working():
            try:
                sink.send(image)
            except Exception as error:
                self._drop(sink, error)
        return len(self.failed) < len(self.sinks)

    def _drop(self, sink: Sink, error: Exception) -> None:
        log.error(
            "output %s failed and was stopped: %s", sink.description, error, exc_info=not isinstance(error, UserError)
        )
        self.failed.append(sink)
        try:
            sink.close()
        except Exception:  # closing must not hide the error that led here
            log.exception("error while closing %r", sink)
        others = [s.description for s in self.working()]
        still = f"; still sending to {', '.join(others)}" if others else ""
        self._on_error(f"output {sink.description} failed and was stopped: {error}{still}")
