"""`Live2DiffTranslator`: the runtime's `Translator` for a `StreamPipeline`.

The pipeline emits outputs in bursts (nothing while it collects its warmup frames, all of them when the
warmup runs, then one per call T-1 calls late). The translator turns that into the `Translator` contract
exactly: call `c` returns the translation of the input of call `c - latency_frames` (latency T-1), or None
while there is none yet. The warmup's burst covers the T-1 calls in which the stream batch fills.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.errors import ConfigError
from vcam.frame import check_image
from vcam.translators.base import Translator

if TYPE_CHECKING:
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.pool import ModelPool

log = logging.getLogger(__name__)

#: how a camera frame of another aspect ratio is fitted to the model size
FIT_MODES = ("crop", "stretch")
#: pixels per latent cell of SD's autoencoders
VAE_SCALE_FACTOR = 8


class FrameFitter:
    """Maps camera frames to the model size and model outputs back, pixel-aligned with the camera frame.

    - "crop": the centred region of the model's aspect ratio is scaled to the model size; the output is
      scaled back into that region and the margins are black (pillar/letter box).
    - "stretch": the whole frame is scaled to the model size and back (no margins, distorted inside the model).
    """

    def __init__(self, model_width: int, model_height: int, fit: str = "crop") -> None:
        if fit not in FIT_MODES:
            raise ConfigError(f"fit mode {fit!r} is not one of {FIT_MODES}")
        self.model_width = model_width
        self.model_height = model_height
        self.fit = fit

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the camera frame that the model sees."""
        if self.fit == "stretch":
            return 0, 0, width, height
        model_aspect = self.model_width / self.model_height
        if width / height > model_aspect:
            crop_width = max(1, min(width, round(height * model_aspect)))
            return (width - crop_width) // 2, 0, crop_width, height
        crop_height = max(1, min(height, round(width / model_aspect)))
        return 0, (height - crop_height) // 2, width, crop_height

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """A camera frame [H, W, 3] -> the model's input [model_height, model_width, 3]."""
        height, width = image.shape[:2]
        x, y, w, h = self.region(width, height)
        return _resize(image[y : y + h, x : x + w], self.model_width, self.model_height)

    def from_model(self, output: np.ndarray, width: int, height: int) -> np.ndarray:
        """A model output -> a frame [height, width, 3] aligned with the camera frame it came from."""
        x, y, w, h = self.region(width, height)
        if (x, y, w, h) == (0, 0, width, height):
            return _resize(output, width, height)
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        frame[y : y + h, x : x + w] = _resize(output, w, h)
        return frame


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def native_model_size(base: Any) -> tuple[int, int]:
    """(width, height) a base model was trained at: its UNet config's sample_size times the VAE's factor 8."""
    from vcam.model.weights import base_unet_config

    sample_size = base_unet_config(base).get("sample_size") or 64
    side = int(sample_size[0] if isinstance(sample_size, list | tuple) else sample_size) * VAE_SCALE_FACTOR
    return side, side


def model_size_for_output(native: tuple[int, int], output_width: int, output_height: int) -> tuple[int, int]:
    """The model size for an output aspect: the native long side, the short side to the output's aspect.

    E.g. 512x288 for a 1280x720 output of an SD1.5 style (latent 64x36): the whole camera frame is
    styled, with no bars, at fewer pixels than 512x512. Sides are multiples of 8 (the VAE factor).
    """
    side = max(native)
    if output_width >= output_height:
        short = round(side * output_height / output_width / VAE_SCALE_FACTOR) * VAE_SCALE_FACTOR
        return side, max(VAE_SCALE_FACTOR, short)
    short = round(side * output_width / output_height / VAE_SCALE_FACTOR) * VAE_SCALE_FACTOR
    return max(VAE_SCALE_FACTOR, short), side


class Live2DiffTranslator(Translator):
    """Runs camera frames through a `StreamPipeline`; call `c` returns the output for input `c - latency_frames`."""

    def __init__(
        self,
        pipeline: StreamPipeline,
        name: str = "live2diff",
        fit: str = "crop",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """`on_close` is called once, after the pipeline is closed (a pool lease's `release`)."""
        self.pipeline = pipeline
        self._on_close = on_close
        self.name = name
        self.fitter = FrameFitter(pipeline.width, pipeline.height, fit)
        self._ready: dict[int, np.ndarray] = {}  # input index -> model-size output not shown yet
        self._closed = False

    @classmethod
    def from_style(
        cls,
        entry: Any,
        paths: Any,
        config: Any,
        size: tuple[int, int] | None = None,
        pool: ModelPool | None = None,
    ) -> Live2DiffTranslator:
        """Load a diffusion style: `entry` a catalogue `StyleEntry`, `paths` its `StylePaths`, `config` a `Config`.

        Device and dtype come from `config.models`, the noise seed from `config.style.seed`. The model runs at
        `size` (width, height), by default the base model's native size (its UNet's sample_size x 8: 512 for
        SD1.5) shaped to the output's aspect (512x288 for 1280x720); camera frames are fitted to it and the
        output scaled back. Models come from `pool` (the
        process's shared pool by default): a style on models already loaded for another style shares them.
        """
        from vcam.model.pipeline import PipelineSpec
        from vcam.model.pool import shared_pool

        if size is None:
            size = model_size_for_output(native_model_size(paths.base), config.output.width, config.output.height)
        width, height = size
        spec = PipelineSpec.from_style_paths(paths, seed=int(config.style.seed), width=width, height=height)
        lease = (pool or shared_pool()).acquire(spec, device=config.models.device, dtype=config.models.dtype)
        if config.models.backend != "torch":
            from vcam.model.step_backends import use_model_backend

            from vcam.paths import cache_dir

            try:
                use_model_backend(lease.pipeline.unet, config.models.backend, cache_dir() / "onnx")
            except BaseException:
                lease.release()
                raise
        return cls(lease.pipeline, name=str(entry.name), on_close=lease.release)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        check_image(image)
        height, width = image.shape[:2]
        index_now = self.pipeline.frames_in  # the input index this call gets
        for result in self.pipeline.step(self.fitter.to_model(image)):
            self._ready[result.index] = result.image
        wanted = index_now - self.latency_frames
        shown: np.ndarray | None = None
        for index in sorted(self._ready):
            if index > wanted:
                break
            output = self._ready.pop(index)
            if index == wanted:
                shown = output
        if shown is None:
            return None
        return self.fitter.from_model(shown, width, height)

    def warmup(self, images: list[np.ndarray]) -> None:
        """Run the warmup on the most recent camera frames before this translator goes live (style change).

        Their outputs are dropped: the first `latency_frames` calls afterwards return None, then call `c`
        returns the translation of its own input `c - latency_frames` as always.
        """
        for image in images[-self.pipeline.warmup_frames :]:
            check_image(image)
            self.pipeline.step(self.fitter.to_model(image))
        self._ready.clear()

    @property
    def latency_frames(self) -> int:
        return self.pipeline.latency_frames

    @property
    def warming_up(self) -> bool:
        return not self.pipeline.warmed_up

    @property
    def prompt(self) -> str:
        return self.pipeline.prompt

    def set_prompt(self, prompt: str) -> None:
        """Switch the prompt without a gap (the new prompt's warmup runs in the background)."""
        self.pipeline.set_prompt(prompt)

    def reset(self) -> None:
        self.pipeline.reset()
        self._ready.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        try:
            self.pipeline.close()
        finally:
            if self._on_close is not None:
                self._on_close()
