"""Offline translation of a finite frame sequence through a style, on the camera's streaming path.

Every input frame goes through the translator once, in order. A Live2Diff style's frames go through its
`StreamPipeline` (warmup, stream batch) directly, so each output is paired with the input it translates, and
the frames still in flight are flushed at the end: exactly one output per input. Other translators are
called frame by frame; a call that returns None (nothing to show yet) repeats the previous output (or the
input, before the first one), as the camera does.

The time spent inside the translator is counted on an injectable clock, apart from whatever the consumer
does between frames, so that content fps and latency measure the style, not the metrics computed meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from vcam.translators.base import Translator
    from vcam.translators.live2diff import Live2DiffTranslator


@dataclass(frozen=True)
class TranslatedFrame:
    """One input frame and its translation, both [H, W, 3] uint8 RGB of the same size."""

    index: int
    image: np.ndarray
    output: np.ndarray
    #: translator time (seconds) from handing this input over until its output came out
    latency_s: float
    #: emitted by the end-of-stream flush (its latency is not a streaming latency)
    flushed: bool = False


class OfflineTranslation:
    """Iterate over `TranslatedFrame`s of `frames` through `translator`; one per input, in order.

    `busy_s` is the translator time so far (on `clock`), `frames_read` the inputs consumed so far.
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        translator: Translator,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.frames = frames
        self.translator = translator
        self.clock = clock
        self.busy_s = 0.0
        self.frames_read = 0

    @property
    def latency_frames(self) -> int:
        """How many inputs late an output comes out while streaming (0 for the classic looks)."""
        return int(self.translator.latency_frames)

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of a width x height frame that the style restyles (the model's crop; else the frame)."""
        from vcam.translators.live2diff import Live2DiffTranslator

        if isinstance(self.translator, Live2DiffTranslator):
            return self.translator.fitter.region(width, height)
        return 0, 0, width, height

    def __iter__(self) -> Iterator[TranslatedFrame]:
        from vcam.translators.live2diff import Live2DiffTranslator

        if isinstance(self.translator, Live2DiffTranslator):
            yield from self._stream(self.translator)
        else:
            yield from self._call_each()

    def _stream(self, translator: Live2DiffTranslator) -> Iterator[TranslatedFrame]:
        pipeline = translator.pipeline
        fitter = translator.fitter
        inputs: dict[int, np.ndarray] = {}
        handed_at: dict[int, float] = {}  # input index -> busy_s when it was handed over
        for image in self.frames:
            height, width = image.shape[:2]
            index = pipeline.frames_in
            inputs[index] = image
            handed_at[index] = self.busy_s
            self.frames_read += 1
            started = self.clock()
            results = pipeline.step(fitter.to_model(image))
            outputs = [(result.index, fitter.from_model(result.image, width, height)) for result in results]
            self.busy_s += self.clock() - started
            for done, output in outputs:
                yield TranslatedFrame(done, inputs.pop(done), output, self.busy_s - handed_at.pop(done))
        first_flushed = pipeline.frames_in - len(inputs)
        started = self.clock()
        flushed = pipeline.flush()
        self.busy_s += self.clock() - started
        for offset, model_output in enumerate(flushed):
            index = first_flushed + offset
            source = inputs.pop(index)
            output = fitter.from_model(model_output, source.shape[1], source.shape[0])
            yield TranslatedFrame(index, source, output, self.busy_s - handed_at.pop(index), flushed=True)

    def _call_each(self) -> Iterator[TranslatedFrame]:
        last: np.ndarray | None = None
        for index, image in enumerate(self.frames):
            self.frames_read += 1
            started = self.clock()
            output = self.translator(image)
            elapsed = self.clock() - started
            self.busy_s += elapsed
            last = output if output is not None else (last if last is not None else image)
            yield TranslatedFrame(index, image, last, elapsed)
