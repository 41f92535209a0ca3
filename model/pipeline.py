"""`StreamPipeline`: Live2Diff's streaming video-to-video, one `__call__` per new camera frame.

One call:
  1. encode the frame (VAE or TAESD) and its depth (DPT -> normalised -> VAE), keep both for a later
     prompt change;
  2. while warming up, collect frames; the 8th frame runs the warmup: the 8 frames are denoised together
     (bi-directional temporal attention), every step in sequence, filling each step's cache sink slots,
     and all 8 outputs are emitted;
  3. afterwards, one UNet call carries the stream batch: the new frame at step 0 (the noisiest timestep)
     and every frame still in flight at its next step, each with its own timestep, depth latent and cache
     step; the entry that finished its last step is decoded and emitted, the others are re-noised to
     their next timestep. Right after the warmup the batch grows 1, 2, ... T entries (no filler frames),
     so output i is always the translation of input i, T-1 calls later.

`set_prompt` changes the prompt without a stall: the new prompt's warmup runs in a background thread on
the most recent warmup-size input frames, with its own caches, while calls keep using the old prompt;
the next call after it finishes swaps prompt, embeddings and caches at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.errors import ConfigError
from vcam.frame import check_image

if TYPE_CHECKING:
    import torch
    from vcam.model.depth import DepthEncoder
    from vcam.model.scheduler import StreamSchedule
    from vcam.model.text import PromptEncoder
    from vcam.model.unet import StreamUNet
    from vcam.model.vae import LatentCodec

log = logging.getLogger(__name__)

NOISE_MODES = ("fixed", "fresh")
#: Live2Diff's inference constants: sink slots and cache window
WARMUP_FRAMES = 8
WINDOW = 16
#: the similar-frame filter's defaults (from StreamDiffusion / Live2Diff)
SIMILAR_THRESHOLD = 0.98
SIMILAR_MAX_SKIPS = 10
STAGES = ("encode", "depth", "unet", "decode")


@dataclass(frozen=True)
class StreamResult:
    """One finished frame: the translation of input number `index` (0, 1, 2, ... since the last reset)."""

    index: int
    image: np.ndarray  # [H, W, 3] uint8 RGB at the model size
    skipped: bool = False  # True when the input was skipped as similar and the previous output repeated
    latent: torch.Tensor | None = None  # [4, h, w] the denoised latent that was decoded (None when skipped)


@dataclass
class _InFlight:
    """A frame inside the stream batch: its noisy latent at timestep `step` of the schedule."""

    index: int
    sample: torch.Tensor  # [4, h, w] x_t at timesteps[step]
    depth: torch.Tensor | None  # [4, h, w]
    step: int


@dataclass
class _Encoded:
    """An input frame in latent space, kept for the warmup and for a prompt change."""

    index: int
    latent: torch.Tensor  # [4, h, w] clean latent
    depth: torch.Tensor | None  # [4, h, w]


@dataclass
class _PromptState:
    """What a prompt owns: its embedding and its caches (one per denoising step)."""

    prompt: str
    embeds: torch.Tensor  # [1, 77, d]
    caches: Any  # vcam.model.stream_attention.StreamCaches


@dataclass
class StageTimes:
    """Seconds spent per stage since the last `clear()` (CUDA work is synchronised before reading the clock)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    calls: int = 0

    def clear(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = 0

    def per_call_ms(self) -> dict[str, float]:
        count = max(self.calls, 1)
        return {stage: 1000.0 * value / count for stage, value in self.seconds.items()}


class SimilarFrameFilter:
    """Skips inputs nearly equal to the last processed one (StreamDiffusion's stochastic similarity filter).

    Skip probability max(0, 1 - (1 - cos) / (1 - threshold)), cos being the cosine similarity of the two
    frames, with at most `max_skips` skips in a row. Seeded, so a run is reproducible.
    """

    def __init__(
        self, threshold: float = SIMILAR_THRESHOLD, max_skips: int = SIMILAR_MAX_SKIPS, seed: int = 0
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"similar-frame threshold {threshold} is not in (0, 1): use e.g. 0.98")
        if max_skips < 1:
            raise ConfigError(f"similar-frame max_skips {max_skips} is not >= 1: use e.g. 10")
        self.threshold = threshold
        self.max_skips = max_skips
        self.seed = seed
        self._random = random.Random(seed)
        self._previous: torch.Tensor | None = None
        self._skips = 0

    def reset(self) -> None:
        self._random = random.Random(self.seed)
        self._previous = None
        self._skips = 0

    def should_skip(self, image: torch.Tensor) -> bool:
        """True to skip `image` ([3, H, W]); a processed image becomes the new reference."""
        import torch

        flat = image.reshape(-1).float()
        if self._previous is not None and self._skips < self.max_skips:
            cosine = float(torch.nn.functional.cosine_similarity(flat, self._previous, dim=0))
            probability = max(0.0, 1.0 - (1.0 - cosine) / (1.0 - self.threshold))
            if self._random.random() < probability:
                self._skips += 1
                return True
        self._previous = flat
        self._skips = 0
        return False


class StreamPipeline:
    """Live2Diff streaming video-to-video; one `__call__` per new frame, thread-safe.

    Frames are HxWx3 uint8 RGB at exactly `width` x `height` (the translator resizes camera frames).
    With `stream_batch=False` every frame runs its T steps as T UNet calls one after another (no delay;
    the reference the stream batch is tested and benchmarked against).
    """

    def __init__(
        self,
        unet: StreamUNet,
        prompt_encoder: PromptEncoder,
        codec: LatentCodec,
        depth_encoder: DepthEncoder | None,
        schedule: StreamSchedule,
        prompt: str,
        width: int,
        height: int,
        seed: int = 0,
        noise: str = "fixed",
        stream_batch: bool = True,
        similar_filter: SimilarFrameFilter | None = None,
        warmup_frames: int = WARMUP_FRAMES,
        window: int = WINDOW,
        unet_lock: threading.Lock | None = None,
        depth_every: int = 1,
    ) -> None:
        """`unet_lock`: shared by every pipeline on the same `unet` (see `sibling`); a new lock when None.
        `depth_every`: estimate depth on every N-th frame only and reuse it in between (depth changes slowly)."""
        if noise not in NOISE_MODES:
            raise ConfigError(f"noise mode {noise!r} is not one of {NOISE_MODES}")
        if depth_every < 1:
            raise ConfigError(f"depth_every {depth_every} is not 1 or more: 1 estimates depth on every frame")
        if width % 8 or height % 8 or width < 8 or height < 8:
            raise ConfigError(f"model size {width}x{height} is not a positive multiple of 8: use e.g. 512x512")
        self.unet = unet
        self.prompt_encoder = prompt_encoder
        self.codec = codec
        self.depth_encoder = depth_encoder
        self.width = width
        self.height = height
        self.seed = seed
        self.noise = noise
        self.stream_batch = stream_batch
        self.similar_filter = similar_filter
        self.warmup_frames = warmup_frames
        self.window = window
        self.depth_every = depth_every
        parameter = next(unet.parameters())
        self.device: torch.device = parameter.device
        self.dtype: torch.dtype = parameter.dtype
        self.schedule = schedule.to(self.device, self.dtype)
        self.times = StageTimes()
        self._state_lock = threading.RLock()  # guards the stream state below
        # one UNet forward at a time, across every pipeline sharing this UNet (it holds per-call context)
        self._unet_lock = unet_lock if unet_lock is not None else threading.Lock()
        self._prompt = self._make_prompt_state(prompt)
        self._switch_generation = 0
        self._switch_ready: _PromptState | None = None
        self._switch_thread: threading.Thread | None = None
        self._switch_error: BaseException | None = None
        self._reset_stream()

    # ----------------------------------------------------------------------------------------------
    # public API

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def latency_frames(self) -> int:
        """Calls between an input and its output once warmed up (T - 1 with the stream batch)."""
        return self.num_steps - 1 if self.stream_batch else 0

    @property
    def prompt(self) -> str:
        return self._prompt.prompt

    @property
    def prompt_embeds(self) -> torch.Tensor:
        """The embedding used by the stream right now: [1, 77, d]."""
        return self._prompt.embeds

    @property
    def warmed_up(self) -> bool:
        return self._warmed

    @property
    def frames_in(self) -> int:
        return self._next_index

    @property
    def prompt_switch_pending(self) -> bool:
        """True from `set_prompt` (on a warmed-up stream) until the switch has happened."""
        return self._switch_thread is not None

    def sibling(self, **overrides: Any) -> StreamPipeline:
        """A new pipeline on the same models (no reload) with some constructor arguments changed.

        E.g. `sibling(stream_batch=False)` for the sequential reference, `sibling(seed=1)`. The sibling shares
        this pipeline's UNet lock, so both can run at once from different threads (a style's warmup while
        another streams).
        """
        arguments: dict[str, Any] = {
            "unet": self.unet,
            "prompt_encoder": self.prompt_encoder,
            "codec": self.codec,
            "depth_encoder": self.depth_encoder,
            "schedule": self.schedule,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "noise": self.noise,
            "stream_batch": self.stream_batch,
            "similar_filter": None,
            "warmup_frames": self.warmup_frames,
            "window": self.window,
            "unet_lock": self._unet_lock,
            "depth_every": self.depth_every,
        }
        arguments.update(overrides)
        return StreamPipeline(**arguments)

    def cache_nbytes(self) -> int:
        """Bytes held by the KV caches of the current prompt and of a pending prompt switch."""
        total = int(self._prompt.caches.nbytes())
        ready = self._switch_ready
        return total + (int(ready.caches.nbytes()) if ready is not None else 0)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """Feed one frame; returns the frames finished by this call (0 while filling, 8 at warmup, then 1)."""
        return [result.image for result in self.step(image)]

    def step(self, image: np.ndarray) -> list[StreamResult]:
        """Like `__call__`, with each output's input index."""
        check_image(image, self.width, self.height)
        with self._state_lock:
            self._apply_ready_switch()
            index = self._next_index
            self._next_index += 1
            pixels = self._to_tensor(image)  # [1, 3, H, W]
            if self._warmed and self.similar_filter is not None and self.similar_filter.should_skip(pixels[0]):
                self._order.append((index, True))
                return self._emit()
            encoded = self._encode(index, pixels)
            self._recent.append(encoded)
            if not self._warmed:
                self._order.append((index, False))
                self._pending.append(encoded)
                if len(self._pending) == self.warmup_frames:
                    self._run_stream_warmup()
                return self._emit()
            self._order.append((index, False))
            if self.stream_batch:
                self._stream_step(encoded)
            else:
                self._sequential_steps(encoded)
            self.times.calls += 1
            return self._emit()

    def flush(self) -> list[np.ndarray]:
        """Finish every frame still in the pipeline (end of a video): returns their outputs in order."""
        with self._state_lock:
            if not self._warmed and self._pending:
                self._run_stream_warmup()
            while self._inflight:
                self._stream_step(None)
            return [result.image for result in self._emit()]

    def reset(self) -> None:
        """Forget the stream: caches, frames in flight, warmup; a pending prompt switch is dropped."""
        with self._state_lock:
            self._cancel_switch()
            self._prompt.caches.reset()
            self._reset_stream()

    def set_prompt(self, prompt: str, background: bool = True) -> None:
        """Change the prompt without a gap in the output.

        Before the warmup has run, the new prompt simply replaces the old one. Afterwards its warmup runs on
        the most recent inputs with fresh caches (in a thread when `background`), the stream keeps the old
        prompt meanwhile, and the first call after it is done switches atomically. A newer `set_prompt`
        supersedes a pending one.
        """
        with self._state_lock:
            if prompt == self._prompt.prompt and self._switch_thread is None:
                return
            self._cancel_switch()
            if not self._warmed:
                self._prompt.prompt = prompt
                self._prompt.embeds = self._embed(prompt)
                return
            frames = list(self._recent)[-self.warmup_frames :]
            self._switch_generation += 1
            generation = self._switch_generation
            thread = threading.Thread(
                target=self._prepare_switch,
                args=(prompt, frames, generation),
                name="vcam-prompt-warmup",
                daemon=True,
            )
            self._switch_thread = thread
        if background:
            thread.start()
        else:
            thread.run()
            with self._state_lock:
                self._apply_ready_switch()

    def wait_prompt_switch(self, timeout: float | None = None) -> bool:
        """Wait until a pending prompt warmup has finished (the swap happens on the next call)."""
        thread = self._switch_thread
        if thread is not None and thread.ident is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Drop the stream and free the caches."""
        with self._state_lock:
            self._cancel_switch()
            self._prompt.caches.release()
            self._reset_stream()

    # ----------------------------------------------------------------------------------------------
    # stream state

    def _reset_stream(self) -> None:
        import torch

        self._next_index = 0
        self._warmed = False
        self._pending: list[_Encoded] = []
        self._recent: deque[_Encoded] = deque(maxlen=self.warmup_frames)
        self._inflight: list[_InFlight] = []
        self._order: deque[tuple[int, bool]] = deque()  # (input index, skipped) awaiting output, in order
        self._finished: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        self._last_output: np.ndarray | None = None
        self._last_depth: torch.Tensor | None = None  # [1, 4, h, w], reused between depth frames (depth_every)
        self._noise_generator = torch.Generator(device="cpu").manual_seed(self.seed)
        latent_shape = (self.num_steps, 4, self.height // 8, self.width // 8)
        fixed = torch.randn(latent_shape, generator=torch.Generator(device="cpu").manual_seed(self.seed))
        self._fixed_noise = fixed.to(device=self.device, dtype=self.dtype)  # [T, 4, h, w]
        if self.similar_filter is not None:
            self.similar_filter.reset()

    def _make_prompt_state(self, prompt: str) -> _PromptState:
        caches = self.unet.create_caches(self.num_steps, warmup_frames=self.warmup_frames, window=self.window)
        return _PromptState(prompt=prompt, embeds=self._embed(prompt), caches=caches)

    def _embed(self, prompt: str) -> torch.Tensor:
        return self.prompt_encoder(prompt).to(device=self.device, dtype=self.dtype)  # [1, 77, d]

    def _emit(self) -> list[StreamResult]:
        """Pop the outputs that are ready, in input order."""
        results: list[StreamResult] = []
        while self._order:
            index, skipped = self._order[0]
            latent = None
            if skipped:
                if self._last_output is None:
                    break
                image = self._last_output
            elif index in self._finished:
                image, latent = self._finished.pop(index)
            else:
                break
            self._order.popleft()
            self._last_output = image
            results.append(StreamResult(index=index, image=image, skipped=skipped, latent=latent))
        return results

    # ----------------------------------------------------------------------------------------------
    # model stages

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        import torch

        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times.seconds[stage] += time.perf_counter() - start

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        from vcam.model.vae import images_to_tensor

        return images_to_tensor([image], self.codec.device, self.codec.dtype)  # [1, 3, H, W]

    def _encode(self, index: int, pixels: torch.Tensor) -> _Encoded:
        with self._timed("encode"):
            latent = self.codec.encode(pixels).to(device=self.device, dtype=self.dtype)  # [1, 4, h, w]
        depth = None
        if self.depth_encoder is not None and self._last_depth is not None and index % self.depth_every:
            depth = self._last_depth  # [1, 4, h, w] from the last depth frame
        elif self.depth_encoder is not None:
            with self._timed("depth"):
                depth = self.depth_encoder(pixels, self.codec).to(device=self.device, dtype=self.dtype)  # [1, 4, h, w]
            self._last_depth = depth
        return _Encoded(index=index, latent=latent[0], depth=None if depth is None else depth[0])

    def _noise(self, step: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise for `count` latents at `step`: the step's fixed tensor, or fresh seeded draws."""
        import torch

        if self.noise == "fixed":
            return self._fixed_noise[step].expand(count, -1, -1, -1)  # [count, 4, h, w]
        shape = (count, 4, self.height // 8, self.width // 8)
        fresh = torch.randn(shape, generator=generator if generator is not None else self._noise_generator)
        return fresh.to(device=self.device, dtype=self.dtype)  # [count, 4, h, w]

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        from vcam.model.vae import tensor_to_images

        with self._timed("decode"):
            images = self.codec.decode(latents)  # [B, 3, H, W]
            return tensor_to_images(images)

    def _run_warmup(
        self, frames: Sequence[_Encoded], state: _PromptState, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Denoise `frames` together through every step, filling slots 0..F-1 of each step's caches.

        Returns the clean latents [F, 4, h, w]. `generator` draws fresh noise (the stream's when None).
        """
        import torch

        count = len(frames)
        latents = torch.stack([frame.latent for frame in frames])  # [F, 4, h, w]
        depth = None if frames[0].depth is None else torch.stack([f.depth for f in frames])  # type: ignore[misc]
        sample = self.schedule.add_noise(latents, self._noise(0, count, generator), [0] * count)  # [F, 4, h, w]
        denoised = sample
        for step in range(self.num_steps):
            with self._unet_lock, self._timed("unet"), torch.inference_mode():
                noise_pred = self.unet.warmup(
                    sample, self.schedule.timesteps[step], state.embeds, depth, state.caches, step=step
                )  # [F, 4, h, w]
            denoised = self.schedule.denoise(sample, noise_pred, [step] * count)  # [F, 4, h, w]
            if step + 1 < self.num_steps:
                noise = self._noise(step + 1, count, generator)  # [F, 4, h, w]
                sample = self.schedule.add_noise(denoised, noise, [step + 1] * count)
        return denoised

    def _run_stream_warmup(self) -> None:
        """Step 2: the first frames, denoised together; their outputs are emitted."""
        frames = self._pending
        self._pending = []
        denoised = self._run_warmup(frames, self._prompt)  # [F, 4, h, w]
        for frame, image, latent in zip(frames, self._decode(denoised), denoised, strict=True):
            self._finished[frame.index] = (image, latent)
        self._warmed = True
        log.debug("warmup done on %d frames (%d steps)", len(frames), self.num_steps)

    def _stream_step(self, new: _Encoded | None) -> None:
        """Step 3: one UNet call over the new frame (step 0) and the frames in flight (their next step)."""
        import torch

        entries = list(self._inflight)
        if new is not None:
            sample = self.schedule.add_noise(new.latent[None], self._noise(0, 1), [0])[0]  # [4, h, w]
            entries.insert(0, _InFlight(index=new.index, sample=sample, depth=new.depth, step=0))
        if not entries:
            return
        entries.sort(key=lambda entry: entry.step)  # newest (noisiest) first, the oldest last
        steps = [entry.step for entry in entries]
        samples = torch.stack([entry.sample for entry in entries])  # [B, 4, h, w]
        depth = None if entries[0].depth is None else torch.stack([e.depth for e in entries])  # type: ignore[misc]
        timesteps = self.schedule.timesteps[steps]  # [B]
        embeds = self._prompt.embeds.expand(len(entries), -1, -1)  # [B, 77, d]
        with self._unet_lock, self._timed("unet"), torch.inference_mode():
            noise_pred = self.unet.stream(samples, timesteps, embeds, depth, self._prompt.caches, steps=steps)
        denoised = self.schedule.denoise(samples, noise_pred, steps)  # [B, 4, h, w]
        still: list[_InFlight] = []
        done: list[int] = []
        for position, entry in enumerate(entries):
            if entry.step == self.num_steps - 1:
                done.append(position)
                continue
            next_step = entry.step + 1
            renoised = self.schedule.add_noise(
                denoised[position : position + 1], self._noise(next_step, 1), [next_step]
            )
            still.append(_InFlight(index=entry.index, sample=renoised[0], depth=entry.depth, step=next_step))
        self._inflight = still
        if done:
            images = self._decode(denoised[done])
            for position, image in zip(done, images, strict=True):
                self._finished[entries[position].index] = (image, denoised[position])

    def _sequential_steps(self, new: _Encoded) -> None:
        """The reference: the new frame runs its T steps as T UNet calls, one after another."""
        import torch

        sample = self.schedule.add_noise(new.latent[None], self._noise(0, 1), [0])  # [1, 4, h, w]
        depth = None if new.depth is None else new.depth[None]  # [1, 4, h, w]
        denoised = sample
        for step in range(self.num_steps):
            with self._unet_lock, self._timed("unet"), torch.inference_mode():
                noise_pred = self.unet.stream(
                    sample,
                    self.schedule.timesteps[step : step + 1],
                    self._prompt.embeds,
                    depth,
                    self._prompt.caches,
                    steps=[step],
                )  # [1, 4, h, w]
            denoised = self.schedule.denoise(sample, noise_pred, [step])  # [1, 4, h, w]
            if step + 1 < self.num_steps:
                sample = self.schedule.add_noise(denoised, self._noise(step + 1, 1), [step + 1])
        self._finished[new.index] = (self._decode(denoised)[0], denoised[0])

    # ----------------------------------------------------------------------------------------------
    # prompt switch

    def _prepare_switch(self, prompt: str, frames: list[_Encoded], generation: int) -> None:
        """Background: the new prompt's embeddings, caches and warmup on the most recent frames."""
        import torch

        try:
            state = self._make_prompt_state(prompt)
            if frames:
                generator = torch.Generator(device="cpu").manual_seed(self.seed + generation)
                self._run_warmup(frames, state, generator)
        except BaseException as error:  # reported on the next call, which keeps the old prompt
            log.exception("prompt warmup for %r failed", prompt)
            with self._state_lock:
                if generation == self._switch_generation:
                    self._switch_error = error
            return
        with self._state_lock:
            if generation == self._switch_generation:
                self._switch_ready = state
            else:
                state.caches.release()

    def _apply_ready_switch(self) -> None:
        """Swap in a finished prompt warmup: prompt, embeddings and caches at once. Frames in flight go on."""
        error = self._switch_error
        if error is not None:
            self._switch_error = None
            self._switch_thread = None
            raise RuntimeError(f"the new prompt's warmup failed ({error}); the previous prompt stays") from error
        ready = self._switch_ready
        if ready is None:
            return
        old = self._prompt
        self._prompt = ready
        self._switch_ready = None
        self._switch_thread = None
        old.caches.release()
        log.info("prompt switched to %r", ready.prompt)

    def _cancel_switch(self) -> None:
        self._switch_generation += 1
        if self._switch_ready is not None:
            self._switch_ready.caches.release()
        self._switch_ready = None
        self._switch_error = None
        self._switch_thread = None


# --------------------------------------------------------------------------------------------------------
# building a pipeline from local weights

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16")
VAE_KINDS = ("taesd", "kl")


@dataclass(frozen=True)
class PipelineSpec:
    """Everything `load_stream_pipeline` needs, as local paths (fields match `vcam.weights.StylePaths`).

    base: a single-file SD1.5 checkpoint (.safetensors/.ckpt) or a diffusers folder with unet/ (and maybe
    text_encoder/, vae/); sd15: the SD1.5 diffusers folder (tokenizer/, text_encoder/, vae/, scheduler/);
    motion: live2diff.ckpt (or its safetensors conversion); lcm_lora, style_lora: LoRA files fused into the
    UNet (style_lora at lora_scale); taesd, depth: folders for AutoencoderTiny and DPTForDepthEstimation.
    """

    base: Path
    sd15: Path
    motion: Path
    depth: Path
    prompt: str
    name: str = "live2diff"
    base_format: str = "single_file"
    lcm_lora: Path | None = None
    style_lora: Path | None = None
    lora_scale: float = 1.0
    taesd: Path | None = None
    t_index_list: tuple[int, ...] = (30, 40)
    clip_skip: int = 2
    width: int = 512
    height: int = 512
    seed: int = 0
    noise: str = "fixed"
    vae: str = "taesd"  # "taesd" (fast, the default) or "kl" (SD's VAE)
    similar_filter: bool = False
    attention: str = "auto"  # temporal attention kernel: auto | math | sdpa | xformers
    compile: bool = False  # torch.compile the UNet (CUDA; the first calls are slow)

    @classmethod
    def from_style_paths(cls, paths: Any, **overrides: Any) -> PipelineSpec:
        """From a `vcam.weights.StylePaths` (any object with the same fields), plus overrides (width, seed, ...)."""
        fields = {
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
        }
        fields.update(overrides)
        return cls(**fields)


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" is CUDA when available, else MPS when available, else the CPU."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"models.device {device!r} is not one of {DEVICES}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "models.device is 'cuda' but torch sees no CUDA GPU: install a CUDA build of torch or use 'cpu'"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("models.device is 'mps' but this torch has no MPS backend: use 'cpu'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto" is float16 on CUDA and MPS, float32 on the CPU."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"models.dtype {dtype!r} is not one of {DTYPES}")
    if dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return torch.float16 if dtype == "float16" else torch.float32


def _require_path(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist: run `vcam models download` or fix the path")
    return path


def _load_text_encoder(spec: PipelineSpec) -> Any:
    """The style's CLIP text encoder: base/text_encoder, a single file's own weights, or SD1.5's."""
    from transformers import CLIPTextModel

    if spec.base.is_dir() and (spec.base / "text_encoder" / "config.json").is_file():
        return CLIPTextModel.from_pretrained(spec.base / "text_encoder", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(spec.sd15 / "text_encoder", local_files_only=True)
    if spec.base.is_file():
        from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
        from vcam.model.weights import WeightsError, load_state_dict_file

        converted = convert_ldm_clip_checkpoint(load_state_dict_file(spec.base))
        if converted:
            expected = set(text_encoder.state_dict())
            if not any(key.startswith("text_model.") for key in expected):  # transformers 5 layout
                converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
            usable = {key: value for key, value in converted.items() if key in expected}
            missing = expected - set(usable) - {"text_model.embeddings.position_ids"}
            if missing:
                raise WeightsError(
                    f"{spec.base}: its text encoder lacks {len(missing)} weights (e.g. {sorted(missing)[:3]}): "
                    "use an SD1.5 checkpoint"
                )
            text_encoder.load_state_dict(usable, strict=False)
            log.info("text encoder weights taken from %s", spec.base)
    return text_encoder


def _load_vae(spec: PipelineSpec) -> Any:
    if spec.vae not in VAE_KINDS:
        raise ConfigError(f"vae {spec.vae!r} is not one of {VAE_KINDS}")
    if spec.vae == "taesd":
        from diffusers import AutoencoderTiny

        return AutoencoderTiny.from_pretrained(_require_path(spec.taesd, "TAESD folder"), local_files_only=True)
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(vae_source(spec), local_files_only=True)


def _scheduler_config(spec: PipelineSpec) -> dict[str, Any] | None:
    """SD1.5's scheduler_config.json, less what LCMScheduler does not take (its PNDM's `skip_prk_steps`, which
    diffusers would warn about on every load)."""
    import inspect
    import json

    from diffusers import LCMScheduler

    path = spec.sd15 / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return None
    accepted = set(inspect.signature(LCMScheduler.__init__).parameters)
    config = dict(json.loads(path.read_text(encoding="utf-8")))
    dropped = sorted(key for key in config if not key.startswith("_") and key not in accepted)
    if dropped:
        log.debug("%s: %s not used by the LCM scheduler", path, dropped)
    return {key: value for key, value in config.items() if key in accepted}


@dataclass(frozen=True)
class PipelineParts:
    """The models a pipeline uses besides its UNet; several pipelines (and UNets) may share one set."""

    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: Any  # transformers CLIPTextModel, on the device, eval
    codec: LatentCodec
    depth_encoder: DepthEncoder


def text_encoder_source(spec: PipelineSpec) -> Path:
    """Where the style's text encoder weights come from: the base (its text_encoder/ or single file), else SD1.5."""
    if spec.base.is_dir() and (spec.base / "text_encoder" / "config.json").is_file():
        return spec.base
    if spec.base.is_file():
        return spec.base
    return spec.sd15


def vae_source(spec: PipelineSpec) -> Path | None:
    """The folder the autoencoder is loaded from (TAESD's, or the base's / SD1.5's vae/)."""
    if spec.vae == "taesd":
        return spec.taesd
    return spec.base / "vae" if spec.base.is_dir() and (spec.base / "vae").is_dir() else spec.sd15 / "vae"


def _check_spec_paths(spec: PipelineSpec) -> None:
    for path, what in ((spec.base, "base model"), (spec.sd15, "SD1.5 folder"), (spec.motion, "motion checkpoint")):
        _require_path(path, what)
    _require_path(spec.depth, "depth model folder")


def load_pipeline_unet(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> StreamUNet:
    """The style's `StreamUNet`: base + motion weights, LCM-LoRA and style LoRA fused (in float32), on the device."""
    import torch
    from vcam.model.weights import fuse_lora, load_stream_unet

    _check_spec_paths(spec)
    unet = load_stream_unet(spec.base, spec.motion, torch_dtype=torch.float32, attention_backend=spec.attention)
    if spec.lcm_lora is not None:
        fuse_lora(unet, _require_path(spec.lcm_lora, "LCM-LoRA"), scale=1.0, adapter_name="lcm")
    if spec.style_lora is not None:
        fuse_lora(unet, _require_path(spec.style_lora, "style LoRA"), scale=spec.lora_scale, adapter_name="style")
    # nn.Module.to: ModelMixin.to warns about fp32 modules on every dtype cast, even when there are none
    unet = torch.nn.Module.to(unet, device=device, dtype=dtype).eval()
    if spec.compile:
        unet.unet = torch.compile(unet.unet)  # type: ignore[assignment]
    return unet


def load_pipeline_parts(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> PipelineParts:
    """Tokenizer, text encoder, autoencoder and depth estimator of a style, on the device."""
    import torch
    from transformers import CLIPTokenizer, DPTForDepthEstimation
    from vcam.model.depth import DPT_INPUT_SIZE, DepthEncoder
    from vcam.model.vae import LatentCodec

    _check_spec_paths(spec)
    tokenizer: Any = CLIPTokenizer.from_pretrained(spec.sd15 / "tokenizer", local_files_only=True)
    text_encoder = torch.nn.Module.to(_load_text_encoder(spec), device=device, dtype=dtype).eval()
    codec = LatentCodec(torch.nn.Module.to(_load_vae(spec), device=device, dtype=dtype).eval())
    depth_model: Any = DPTForDepthEstimation.from_pretrained(spec.depth, local_files_only=True)
    depth_size = int(getattr(depth_model.config, "image_size", DPT_INPUT_SIZE) or DPT_INPUT_SIZE)
    depth_model = torch.nn.Module.to(depth_model, device=device, dtype=dtype).eval()
    return PipelineParts(tokenizer, text_encoder, codec, DepthEncoder(depth_model, input_size=depth_size))


def assemble_stream_pipeline(
    spec: PipelineSpec, unet: StreamUNet, parts: PipelineParts, unet_lock: threading.Lock | None = None
) -> StreamPipeline:
    """A `StreamPipeline` for `spec` on already loaded models (the prompt, schedule and caches are its own).

    Pipelines sharing `unet` must share `unet_lock`.
    """
    from vcam.model.scheduler import build_lcm_scheduler, build_stream_schedule
    from vcam.model.text import PromptEncoder

    schedule = build_stream_schedule(spec.t_index_list, build_lcm_scheduler(_scheduler_config(spec)))
    return StreamPipeline(
        unet=unet,
        prompt_encoder=PromptEncoder(parts.tokenizer, parts.text_encoder, clip_skip=spec.clip_skip),
        codec=parts.codec,
        depth_encoder=parts.depth_encoder,
        schedule=schedule,
        prompt=spec.prompt,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        noise=spec.noise,
        similar_filter=SimilarFrameFilter(seed=spec.seed) if spec.similar_filter else None,
        unet_lock=unet_lock,
    )


def load_stream_pipeline(spec: PipelineSpec, device: str = "auto", dtype: str = "auto") -> StreamPipeline:
    """Build a `StreamPipeline` from local weights (no network).

    The LCM-LoRA and the style LoRA are fused into the UNet in float32, then every model moves to the
    device and dtype ("auto": CUDA + float16 when there is a GPU, else CPU + float32). On CUDA the temporal
    attention uses xformers when installed, else SDPA; `spec.compile` wraps the UNet in `torch.compile`.
    `vcam.model.pool.ModelPool` does the same but shares models between styles.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    _check_spec_paths(spec)
    _check_t_index_list(spec)
    started = time.perf_counter()
    unet = load_pipeline_unet(spec, torch_device, torch_dtype)
    parts = load_pipeline_parts(spec, torch_device, torch_dtype)
    log.info(
        "loaded %s in %.1f s on %s (%s): steps %s, %dx%d",
        spec.name,
        time.perf_counter() - started,
        torch_device,
        torch_dtype,
        list(spec.t_index_list),
        spec.width,
        spec.height,
    )
    return assemble_stream_pipeline(spec, unet, parts)


def _check_t_index_list(spec: PipelineSpec) -> None:
    """Fail fast on a bad t_index_list, before any weights are read."""
    from vcam.model.scheduler import check_t_index_list

    check_t_index_list(spec.t_index_list)
