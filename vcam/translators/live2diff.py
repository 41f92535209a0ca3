"""`Live2DiffTranslator`: the app's adapter from a `vcam.model` `StreamPipeline` to the `Translator` contract.

It frames camera frames for the model (`FrameFitter`), picks the model size for the output's aspect, maps a
style's local weight paths onto the model's `PipelineSpec`, and takes its models from the shared pool.

The pipeline emits outputs in bursts (nothing while it collects its warmup frames, all of them when the
warmup runs, then one per call T-1 calls late). The translator turns that into the `Translator` contract
exactly: call `c` returns the translation of the input of call `c - latency_frames` (T-1; T with the
encode overlap, `[models] overlap`), or None while there is none yet. The warmup's burst covers the T-1 calls
in which the stream batch fills.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.errors import ConfigError
from vcam.frame import check_image
from vcam.model.tiny import TINY_HEIGHT, TINY_T_INDEX_LIST, TINY_WIDTH
from vcam.model.vae import VAE_SCALE_FACTOR
from vcam.output_gate import OutputGate, giving_way
from vcam.styles import TINY_STYLE_NAME
from vcam.translators.base import Translator

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.model.loading import PipelineSpec
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.pool import ModelPool
    from vcam.run_settings import RunSettings
    from vcam.store.store import StylePaths

log = logging.getLogger(__name__)

#: how a camera frame of another aspect ratio is fitted to the model size
FIT_MODES = ("crop", "stretch")
#: pixels per latent cell of SD's autoencoders


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


def native_model_size(base: Path) -> tuple[int, int]:
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


def pipeline_spec(paths: StylePaths, **overrides: Any) -> PipelineSpec:
    """The model's `PipelineSpec` for a style's local paths, plus overrides (width, height, seed, compile, ...)."""
    from vcam.model.loading import PipelineSpec

    fields: dict[str, Any] = {
        "name": paths.name,
        "base": Path(paths.base),
        "base_format": paths.base_format,
        "sd15": Path(paths.sd15),
        "motion": Path(paths.motion),
        "lcm_lora": Path(paths.lcm_lora) if paths.lcm_lora else None,
        "style_lora": Path(paths.style_lora) if paths.style_lora else None,
        "lora_scale": float(paths.lora_scale),
        "taesd": Path(paths.taesd) if paths.taesd else None,
        "depth": Path(paths.depth),
        "prompt": paths.prompt,
        "t_index_list": tuple(paths.t_index_list),
        "clip_skip": int(paths.clip_skip),
        "noise": paths.noise,
        "depth_every": paths.depth_every,
    }
    fields.update(overrides)
    return PipelineSpec(**fields)


class Live2DiffTranslator(Translator):
    """Runs camera frames through a `StreamPipeline`; call `c` returns the output for input `c - latency_frames`."""

    def __init__(
        self,
        pipeline: StreamPipeline,
        name: str = "live2diff",
        fit: str = "crop",
        on_close: Callable[[], None] | None = None,
        pool: ModelPool | None = None,
        settings: RunSettings | None = None,
    ) -> None:
        """`on_close` is called once, after the pipeline is closed (a pool lease's `release`); `pool`: the
        model pool the pipeline's models come from (it answers `resident_memory_mb`); `settings`: the run's
        changeable settings, whose prompt and similar-frame filter this translator follows while it runs."""
        self.pipeline = pipeline
        self.pool = pool
        self._on_close = on_close
        self.name = name
        self.fitter = FrameFitter(pipeline.width, pipeline.height, fit)
        self._ready: dict[int, np.ndarray] = {}  # input index -> model-size output not shown yet
        self._closed = False
        self._settings = settings
        self._own_prompt = pipeline.prompt  # the style's prompt, or the one the user set when it was built
        self._settings_version = -1
        self._follow_settings()

    def _follow_settings(self) -> None:
        """Apply the run's live settings when they changed: the prompt (through the pipeline's background
        prompt switch: this call never waits for it) and the similar-frame filter."""
        settings = self._settings
        if settings is None or settings.version == self._settings_version:
            return
        from vcam.model.similar_filter import SimilarFrameFilter

        self._settings_version = settings.version
        on, threshold = settings.similar_filter()
        current = self.pipeline.similar_filter
        if not on:
            self.pipeline.similar_filter = None
        elif current is None or current.threshold != threshold:
            self.pipeline.similar_filter = SimilarFrameFilter(threshold, seed=self.pipeline.seed)
        prompt = settings.style(self.name).prompt or self._own_prompt
        if prompt != self.pipeline.prompt:
            log.info("style %r: prompt changes to %r", self.name, prompt)
            self.pipeline.set_prompt(prompt)

    @classmethod
    def from_style(
        cls,
        paths: StylePaths,
        config: Config,
        size: tuple[int, int] | None = None,
        pool: ModelPool | None = None,
        settings: RunSettings | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Live2DiffTranslator:
        """Load the diffusion style whose local weights are `paths` (from the model store).

        Device and dtype come from `config.models`, the noise seed from `config.style.seed`. The model runs at
        `size` (width, height), by default the base model's native size (its UNet's sample_size x 8: 512 for
        SD1.5) shaped to the output's aspect (512x288 for 1280x720); camera frames are fitted to it and the
        output scaled back. Models come from `pool` (the process's shared pool by default): a style on models
        already loaded for another style shares them. `overrides` replace `PipelineSpec` fields (a profile's
        `t_index_list`, `vae` and `depth_every`); what the user set in `settings` (prompt, strength, noise, depth
        rate, VAE, compile) overrides both the style's own and the profile's.
        """
        from vcam.model.pool import shared_pool

        if size is None:
            size = model_size_for_output(native_model_size(paths.base), config.output.width, config.output.height)
        width, height = size
        spec_overrides = dict(overrides or {})
        if settings is not None:
            spec_overrides.update(settings.spec_overrides(paths.name))  # the user's values win
        from vcam.model.loading import resolve_device
        from vcam.model.overlap import resolve_overlap

        device = resolve_device(config.models.device)
        if spec_overrides.get("compile") and device.type != "cuda":
            log.warning("models.compile applies on CUDA only: running %s without it on %s", paths.name, device)
            spec_overrides["compile"] = False
        compiled = bool(spec_overrides.get("compile", config.models.compile))
        spec_overrides.setdefault("overlap", resolve_overlap(config.models.overlap, device.type, compiled))
        spec = pipeline_spec(paths, seed=config.style.seed, width=width, height=height, **spec_overrides)
        pool = pool or shared_pool()
        lease = pool.acquire(spec, device=config.models.device, dtype=config.models.dtype)
        if config.models.backend != "torch":
            from vcam.model.step_backends import use_model_backend
            from vcam.paths import cache_dir

            try:
                use_model_backend(lease.pipeline.unet, config.models.backend, cache_dir() / "onnx")
            except BaseException:
                lease.release()
                raise
        return cls(lease.pipeline, name=paths.name, on_close=lease.release, pool=pool, settings=settings)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        check_image(image)
        self._follow_settings()
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
        self.pipeline.run_pending()  # with overlap, the last frame (and so the warmup) waits for the next call
        self._ready.clear()

    def give_way_to(self, gate: OutputGate) -> None:
        """A new prompt's background warmup (`set_prompt`) gives way to `gate`'s frames."""
        self.pipeline.background_policy = functools.partial(giving_way, gate)

    def resident_memory_mb(self) -> float:
        """MB of model tensors held by the model pool this translator's models come from (every style sharing
        it counted once); 0.0 for a pipeline built outside a pool (the tiny test model)."""
        from vcam.model.pool import MB

        return self.pool.resident_bytes() / MB if self.pool is not None else 0.0

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


def build_tiny_translator(
    seed: int = 0,
    t_index_list: Sequence[int] = TINY_T_INDEX_LIST,
    fit: str = "crop",
    settings: RunSettings | None = None,
    size: tuple[int, int] = (TINY_WIDTH, TINY_HEIGHT),
    vae: str = "kl",
    depth_every: int = 1,
    overlap: bool = False,
) -> Translator:
    """The "tiny-random" style: a `Live2DiffTranslator` over `vcam.model.tiny.build_tiny_pipeline(seed)`, with
    what the user set in `settings` (prompt, strength, noise, depth rate, VAE; compile does not apply on the CPU)."""
    from vcam.model.tiny import build_tiny_pipeline

    overrides: dict[str, Any] = {
        "t_index_list": t_index_list,
        "width": size[0],
        "height": size[1],
        "vae": vae,
        "depth_every": depth_every,
        "overlap": overlap,
    }
    if settings is not None:
        overrides.update(settings.spec_overrides(TINY_STYLE_NAME))  # the user's values win
    overrides.pop("compile", None)
    pipeline = build_tiny_pipeline(seed=seed, **overrides)
    return Live2DiffTranslator(pipeline, name=TINY_STYLE_NAME, fit=fit, settings=settings)
