"""One client's stream on the server: its own style state, its newest input, its outputs with their pts.

A client's frames carry media timestamps (pts, 90 kHz); each output goes back with the pts of the input it
is the translation of, so the client knows which of its frames a styled frame belongs to. The first input
always gets an answer at once (the styled frame if there is one, else the input itself), which gives the
returning video the same time origin as the incoming one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vcam.model.pipeline import StreamPipeline, StreamResult
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: inputs a client may have waiting; a newer one pushes out the oldest
INPUT_QUEUE_FRAMES = 1
#: how many recent inputs' (index -> pts, arrival) are remembered to label late outputs
PTS_MEMORY = 64


@dataclass(frozen=True)
class StyledFrame:
    """An output frame: `image` [H, W, 3] uint8 RGB at the input's size, `pts` its input's media timestamp."""

    image: np.ndarray
    pts: int
    latency_s: float  # from the input's arrival on the server to this output


@dataclass
class StyleState:
    """What styles one client's frames: a pipeline (batchable across clients) or a plain translator."""

    name: str
    pipeline: StreamPipeline | None = None
    translator: Translator | None = None
    fitter: Any = None  # vcam FrameFitter for a pipeline
    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        try:
            if self.translator is not None:
                self.translator.close()
            elif self.pipeline is not None:
                self.pipeline.close()
        finally:
            if self.on_close is not None:
                self.on_close()

    def settings(self) -> dict[str, Any]:
        """What the status message says of the style: its name and, for a diffusion style, its steps."""
        if self.pipeline is None:
            return {"style": self.name}
        schedule = self.pipeline.schedule
        return {
            "style": self.name,
            "t_index_list": list(schedule.t_index_list),
            "strength": round(schedule.strength, 3),
        }


class ClientStream:
    """One client's stream state; `push` from the network side, `take`/`finish` from the engine thread."""

    def __init__(self, client_id: str, style: StyleState, deliver: Callable[[StyledFrame], None]) -> None:
        self.client_id = client_id
        self.style = style
        self._deliver = deliver
        self._lock = threading.Lock()
        self._inputs: deque[tuple[np.ndarray, int, float]] = deque(maxlen=INPUT_QUEUE_FRAMES)
        self._labels: dict[int, tuple[int, float]] = {}  # call index -> (pts, arrival time)
        self._calls = 0
        self._answered_first = False
        self.frames_in = 0
        self.frames_dropped = 0
        self.frames_out = 0
        self.last_input_time: float | None = None
        self._out_times: deque[float] = deque(maxlen=120)
        self._latencies: deque[float] = deque(maxlen=120)
        self.closed = False
        self.error: str | None = None
        self._next_style: StyleState | None = None  # a style change, applied by the engine thread
        self._first_call_of_style = 0  # the call index of the current style's first input

    # -- network side ----------------------------------------------------------------------------------------

    def push(self, image: np.ndarray, pts: int, now: float | None = None) -> None:
        """A new input frame; when one is already waiting, the older is dropped."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._inputs) == self._inputs.maxlen:
                self.frames_dropped += 1
            self._inputs.append((image, pts, now))
            self.frames_in += 1
            self.last_input_time = now

    # -- engine side -----------------------------------------------------------------------------------------

    def replace_style(self, state: StyleState) -> None:
        """Switch to `state` before the next step (the engine thread swaps it in and closes the old one)."""
        dropped: StyleState | None = state
        with self._lock:
            if not self.closed:
                dropped, self._next_style = self._next_style, state
        if dropped is not None:
            dropped.close()  # a change that never took effect, or one that came after the close

    def take(self) -> tuple[np.ndarray, int, float] | None:
        """The oldest waiting input, or None. Engine thread: first applies a pending style change."""
        with self._lock:
            old: StyleState | None = None
            if self._next_style is not None:
                old, self.style, self._next_style = self.style, self._next_style, None
                self._first_call_of_style = self._calls  # the new pipeline counts its inputs from 0
                self.error = None
            taken = self._inputs.popleft() if self._inputs else None
        if old is not None:
            old.close()
        return taken

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """The image the pipeline gets (fitted to the model size)."""
        fitter = self.style.fitter
        return fitter.to_model(image) if fitter is not None else image

    def label(self, pts: int, arrival: float) -> int:
        """Remember the input of this call; returns its call index."""
        index = self._calls
        self._calls += 1
        self._labels[index] = (pts, arrival)
        for old in [key for key in self._labels if key < index - PTS_MEMORY]:
            del self._labels[old]
        return index

    def finish_pipeline(self, image: np.ndarray, results: list[StreamResult]) -> None:
        """Deliver a pipeline's finished results (model size) at the size of `image`, the call's input."""
        height, width = image.shape[:2]
        base = self._first_call_of_style
        outputs = [
            (base + result.index, self.style.fitter.from_model(result.image, width, height)) for result in results
        ]
        self._finish(image, outputs)

    def finish_translator(self, image: np.ndarray, output: np.ndarray | None, latency_frames: int) -> None:
        index = self._calls - 1 - latency_frames
        self._finish(image, [] if output is None else [(index, output)])

    def _finish(self, image: np.ndarray, outputs: list[tuple[int, np.ndarray]]) -> None:
        now = time.monotonic()
        if not self._answered_first:
            self._answered_first = True
            if not any(index == 0 for index, _ in outputs):
                outputs = [(0, image), *outputs]  # the time origin of the returning video (see the module doc)
        for index, output in outputs:
            label = self._labels.pop(index, None)
            if label is None:
                continue
            pts, arrival = label
            self.frames_out += 1
            self._out_times.append(now)
            self._latencies.append(now - arrival)
            self._deliver(StyledFrame(image=output, pts=pts, latency_s=now - arrival))

    def figures(self) -> dict[str, float]:
        """Output fps over the last outputs and median latency (ms)."""
        times = list(self._out_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        latencies = sorted(self._latencies)
        median = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
        return {"fps": round(fps, 2), "latency_ms": round(median, 1)}

    def close(self) -> None:
        if self.closed:
            return
        with self._lock:
            self.closed = True
            self._inputs.clear()
            pending, self._next_style = self._next_style, None
        self._labels.clear()
        for state in (self.style, pending):
            try:
                if state is not None:
                    state.close()
            except Exception:
                log.exception("closing client %s's style failed", self.client_id)
