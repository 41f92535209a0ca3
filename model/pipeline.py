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

With `overlap` (`vcam.model.overlap`) call k runs steps 2-3 on frame k-1 while frame k's step 1 runs on a side
CUDA stream: the outputs are the same, one call later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
from vcam.model.depth import check_depth_every
from vcam.model.noise import DEFAULT_NOISE, NOISE_MODES, StreamNoise, check_noise_mode
from vcam.model.overlap import EncodeOverlap
from vcam.model.priority import lower_thread_priority
from vcam.model.similar_filter import SimilarFrameFilter
from vcam.model.stage_times import STAGES, StageTimes
from vcam.model.stream_state import EncodedFrame, InFlight, PromptState, SkippedFrame, StreamResult, StreamStepPlan

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

__all__ = ["NOISE_MODES", "STAGES", "StageTimes", "StreamPipeline", "StreamResult", "StreamStepPlan"]
#: Live2Diff's inference constants: sink slots and cache window
WARMUP_FRAMES = 8
WINDOW = 16
#: the constructor arguments a `sibling` takes over as they are (besides the UNet lock; never the similar filter)
_SIBLING_KEPT = (
    *("unet", "prompt_encoder", "codec", "depth_encoder", "schedule", "prompt", "width", "height", "seed", "noise"),
    *("stream_batch", "warmup_frames", "window", "depth_every", "overlap"),
)


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
        noise: str = DEFAULT_NOISE,
        stream_batch: bool = True,
        similar_filter: SimilarFrameFilter | None = None,
        warmup_frames: int = WARMUP_FRAMES,
        window: int = WINDOW,
        unet_lock: threading.Lock | None = None,
        depth_every: int = 1,
        overlap: bool = False,
    ) -> None:
        """`unet_lock`: shared by every pipeline on the same `unet` (see `sibling`); a new lock when None.
        `depth_every`: estimate depth on every N-th frame only and reuse it in between (depth changes slowly).
        `overlap`: encode the next frame while the UNet runs (`vcam.model.overlap`; one more frame of latency)."""
        check_noise_mode(noise)
        check_depth_every(depth_every)
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
        self.overlap = overlap
        parameter = next(unet.parameters())
        self.device: torch.device = parameter.device
        self.dtype: torch.dtype = parameter.dtype
        self.schedule = schedule.to(self.device, self.dtype)
        self.times = StageTimes()
        self._state_lock = threading.RLock()  # guards the stream state below
        self.background_policy: Callable[[], AbstractContextManager[object]] = nullcontext  # a prompt warmup's thread
        # one UNet forward at a time, across every pipeline sharing this UNet (it holds per-call context)
        self._unet_lock = unet_lock if unet_lock is not None else threading.Lock()
        self._prompt = self._make_prompt_state(prompt)
        self._switch_generation = 0
        self._switch_ready: PromptState | None = None
        self._switch_thread: threading.Thread | None = None
        self._switch_error: BaseException | None = None
        self._overlap = EncodeOverlap(self.device)
        self._reset_stream()

    # ----------------------------------------------------------------------------------------------
    # public API

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def latency_frames(self) -> int:
        """Calls between an input and its output once warmed up (T - 1 with the stream batch, 1 more with overlap)."""
        return (self.num_steps - 1 if self.stream_batch else 0) + (1 if self.overlap else 0)

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

    @property
    def state_lock(self) -> threading.RLock:
        """Held by every call that reads or changes the stream state (re-entrant)."""
        return self._state_lock

    @property
    def unet_lock(self) -> threading.Lock:
        """Held around every UNet forward; shared by all pipelines on this UNet."""
        return self._unet_lock

    def sibling(self, **overrides: Any) -> StreamPipeline:
        """A new pipeline on the same models (no reload) with some constructor arguments changed.

        E.g. `sibling(stream_batch=False)` for the sequential reference, `sibling(seed=1)`. The sibling shares
        this pipeline's UNet lock, so both can run at once from different threads (a style's warmup while
        another streams).
        """
        arguments: dict[str, Any] = {name: getattr(self, name) for name in _SIBLING_KEPT}
        arguments.update(similar_filter=None, unet_lock=self._unet_lock)
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
        with self._state_lock:
            plan = self.begin_step(image)
            if plan.results is not None:
                return plan.results
            return self.finish_step(plan, self._unet_stream(plan))

    def begin_step(self, image: np.ndarray) -> StreamStepPlan:
        """The first half of `step`: everything up to the stream batch's UNet call, which the caller makes.

        When the step needs no stream-batch call (warming up, a skipped similar frame, the sequential mode),
        it runs whole here and the plan carries its `results`. Otherwise the plan holds the UNet's inputs; the
        caller runs `unet.stream_entries` on them (alone, or stacked with other pipelines' plans on the same
        UNet: `vcam.model.batch`), holding `unet_lock`, and passes the noise prediction to `finish_step`. Call
        both from one thread, with no other call on this pipeline in between.
        With `overlap` the plan is for the frame held since the last call; this one's encode is held for
        `launch_encode`, or launched here when there is no UNet call.
        """
        check_image(image, self.width, self.height)
        with self._state_lock:
            self._apply_ready_switch()
            index = self._next_index
            self._next_index += 1
            pixels = self._to_tensor(image)  # [1, 3, H, W]
            if not self.overlap:
                return self._process(SkippedFrame(index) if self._skips(pixels) else self._encode(index, pixels))
            held = self._overlap.take(self._encode)  # frame index - 1, ready on this stream
            plan = self._process(held) if held is not None else StreamStepPlan(results=self._emit())
            if self._skips(pixels):  # after `_process`: the filter runs once warmed up, as without overlap
                self._overlap.skip(index)
            else:
                self._overlap.defer(index, pixels)
                if plan.results is not None:
                    self._overlap.launch(self._encode)
            return plan

    def launch_encode(self) -> None:
        """With `overlap`: launch the held frame's encode and depth on the side stream now, behind the UNet call
        (`finish_step` does it when not done yet; `vcam.model.batch` right after the stacked UNet call)."""
        with self._state_lock:
            self._overlap.launch(self._encode)

    def finish_step(self, plan: StreamStepPlan, noise_pred: torch.Tensor) -> list[StreamResult]:
        """The second half of `step`: denoise with the UNet's `noise_pred` [B, 4, h, w], emit what finished."""
        with self._state_lock:
            self._overlap.launch(self._encode)
            self._stream_outputs(plan, noise_pred)
            self.times.calls += 1
            return self._emit()

    def run_pending(self) -> list[StreamResult]:
        """With `overlap`: process the frame held for the next call now (a translator's warmup before it goes
        live; `flush`) and return what that finished; the next call then only encodes its own frame."""
        with self._state_lock:
            held = self._overlap.take(self._encode)
            if held is None:
                return []
            plan = self._process(held)
            if plan.results is not None:
                return plan.results
            return self.finish_step(plan, self._unet_stream(plan))

    def flush(self) -> list[np.ndarray]:
        """Finish every frame still in the pipeline (end of a video): returns their outputs in order."""
        with self._state_lock:
            results = self.run_pending()
            if not self._warmed and self._pending:
                self._run_stream_warmup()
            while self._inflight:
                self._stream_step(None)
            return [result.image for result in results + self._emit()]

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
                args=(prompt, frames, generation, background),
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
        self._overlap.clear()
        self._next_index = 0
        self._warmed = False
        self._pending: list[EncodedFrame] = []
        self._recent: deque[EncodedFrame] = deque(maxlen=self.warmup_frames)
        self._inflight: list[InFlight] = []
        self._order: deque[tuple[int, bool]] = deque()  # (input index, skipped) awaiting output, in order
        self._finished: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        self._last_output: np.ndarray | None = None
        self._last_depth: torch.Tensor | None = None  # [4, h, w], reused between depth frames (depth_every)
        latent_shape = (4, self.height // 8, self.width // 8)
        self._stream_noise = StreamNoise(self.noise, self.seed, self.num_steps, latent_shape, self.device, self.dtype)
        if self.similar_filter is not None:
            self.similar_filter.reset()

    def _make_prompt_state(self, prompt: str) -> PromptState:
        caches = self.unet.create_caches(self.num_steps, warmup_frames=self.warmup_frames, window=self.window)
        return PromptState(prompt=prompt, embeds=self._embed(prompt), caches=caches)

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

    def _timed(self, stage: str) -> AbstractContextManager[None]:
        """On CUDA, device time on the current stream (no host sync inside a frame); on other devices wall time."""
        return self.times.timed(stage, self.device, self._overlap.current_stream())

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        from vcam.model.vae import images_to_tensor

        return images_to_tensor([image], self.codec.device, self.codec.dtype)  # [1, 3, H, W]

    def _skips(self, pixels: torch.Tensor) -> bool:
        """True when the similar-frame filter skips this frame ([1, 3, H, W]); it runs once warmed up."""
        return self._warmed and self.similar_filter is not None and self.similar_filter.should_skip(pixels[0])

    def _process(self, frame: EncodedFrame | SkippedFrame) -> StreamStepPlan:
        """Steps 2-3 for one frame: collect it for the warmup, run the sequential steps or plan the stream batch."""
        if isinstance(frame, SkippedFrame):
            self._order.append((frame.index, True))
            return StreamStepPlan(results=self._emit())
        self._recent.append(frame)
        self._order.append((frame.index, False))
        if not self._warmed:
            self._pending.append(frame)
            if len(self._pending) == self.warmup_frames:
                self._run_stream_warmup()
            return StreamStepPlan(results=self._emit())
        if not self.stream_batch:
            self._sequential_steps(frame)
            self.times.calls += 1
            return StreamStepPlan(results=self._emit())
        return self._stream_inputs(frame)

    def _encode(self, index: int, pixels: torch.Tensor) -> EncodedFrame:
        """Step 1: the latent and depth of a frame; the depth latent only for a streaming frame (`EncodedFrame`)."""
        with self._timed("encode"):
            latent = self.codec.encode(pixels).to(device=self.device, dtype=self.dtype)  # [1, 4, h, w]
        encoded = EncodedFrame(index=index, latent=latent[0], depth=None)
        if self.depth_encoder is not None:
            if self._warmed and self._last_depth is not None and index % self.depth_every:
                encoded.depth = self._last_depth  # [4, h, w] from the last depth frame
                return encoded
            with self._timed("depth"):
                raw = self.depth_encoder.predict(pixels)  # [1, 1, d, d]
                encoded.raw_depth = raw[0]
                if self._warmed:
                    depth = self.depth_encoder.encode(raw, self.codec, self.height, self.width)  # [1, 4, h, w]
                    encoded.depth = depth[0].to(device=self.device, dtype=self.dtype)
                    self._last_depth = encoded.depth
        return encoded

    def _warmup_depth(self, frames: Sequence[EncodedFrame]) -> torch.Tensor | None:
        """The warmup frames' depth latents [F, 4, h, w], min-max normalised over the frames together."""
        import torch

        if self.depth_encoder is None or frames[0].raw_depth is None:
            return None
        raw = torch.stack([frame.raw_depth for frame in frames])  # type: ignore[misc]  # [F, 1, d, d]
        depth = self.depth_encoder.encode(raw, self.codec, self.height, self.width, batch=True)  # [F, 4, h, w]
        return depth.to(device=self.device, dtype=self.dtype)

    def _noise(self, step: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise for `count` latents at `step` (`vcam.model.noise`): [count, 4, h, w]."""
        return self._stream_noise.draw(step, count, generator)

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        from vcam.model.vae import tensor_to_images

        with self._timed("decode"):
            images = self.codec.decode(latents)  # [B, 3, H, W]
            return tensor_to_images(images)

    def _run_warmup(
        self, frames: Sequence[EncodedFrame], state: PromptState, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Denoise `frames` together through every step, filling slots 0..F-1 of each step's caches.

        Returns the clean latents [F, 4, h, w]. `generator` draws fresh noise (the stream's when None).
        """
        import torch

        count = len(frames)
        latents = torch.stack([frame.latent for frame in frames])  # [F, 4, h, w]
        depth = self._warmup_depth(frames)  # [F, 4, h, w] or None
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

    def _stream_step(self, new: EncodedFrame | None) -> None:
        """Step 3: one UNet call over the new frame (step 0) and the frames in flight (their next step)."""
        plan = self._stream_inputs(new)
        if plan.entries:
            self._stream_outputs(plan, self._unet_stream(plan))

    def _unet_stream(self, plan: StreamStepPlan) -> torch.Tensor:
        """The stream batch's UNet call: the noise prediction [B, 4, h, w]."""
        import torch

        with self._unet_lock, self._timed("unet"), torch.inference_mode():
            return self.unet.stream(
                plan.samples, plan.timesteps, plan.embeds, plan.depth, self._prompt.caches, steps=plan.steps
            )  # [B, 4, h, w]

    def _stream_inputs(self, new: EncodedFrame | None) -> StreamStepPlan:
        """Step 3's UNet inputs: the new frame at step 0 and every frame in flight at its next step."""
        import torch

        entries = list(self._inflight)
        if new is not None:
            sample = self.schedule.add_noise(new.latent[None], self._noise(0, 1), [0])[0]  # [4, h, w]
            entries.insert(0, InFlight(index=new.index, sample=sample, depth=new.depth, step=0))
        if not entries:
            return StreamStepPlan(results=[])
        entries.sort(key=lambda entry: entry.step)  # newest (noisiest) first, the oldest last
        steps = [entry.step for entry in entries]
        depth = None if entries[0].depth is None else torch.stack([e.depth for e in entries])  # type: ignore[misc]
        return StreamStepPlan(
            entries=entries,
            samples=torch.stack([entry.sample for entry in entries]),  # [B, 4, h, w]
            timesteps=self.schedule.timesteps[steps],  # [B]
            embeds=self._prompt.embeds.expand(len(entries), -1, -1),  # [B, 77, d]
            depth=depth,  # [B, 4, h, w] or None
            steps=steps,
            entry_caches=[self._prompt.caches.layers(step) for step in steps],
        )

    def _stream_outputs(self, plan: StreamStepPlan, noise_pred: torch.Tensor) -> None:
        """Step 3's end: denoise each entry; the finished one is decoded, the others re-noised to their next step."""
        entries = plan.entries
        steps = [entry.step for entry in entries]
        denoised = self.schedule.denoise(plan.samples, noise_pred, steps)  # [B, 4, h, w]
        still: list[InFlight] = []
        done: list[int] = []
        for position, entry in enumerate(entries):
            if entry.step == self.num_steps - 1:
                done.append(position)
                continue
            next_step = entry.step + 1
            renoised = self.schedule.add_noise(
                denoised[position : position + 1], self._noise(next_step, 1), [next_step]
            )
            still.append(InFlight(index=entry.index, sample=renoised[0], depth=entry.depth, step=next_step))
        self._inflight = still
        if done:
            images = self._decode(denoised[done])
            for position, image in zip(done, images, strict=True):
                self._finished[entries[position].index] = (image, denoised[position])

    def _sequential_steps(self, new: EncodedFrame) -> None:
        """The reference: the new frame runs its T steps as T UNet calls, one after another."""
        sample = self.schedule.add_noise(new.latent[None], self._noise(0, 1), [0])  # [1, 4, h, w]
        depth = None if new.depth is None else new.depth[None]  # [1, 4, h, w]
        denoised = sample
        for step in range(self.num_steps):
            timesteps = self.schedule.timesteps[step : step + 1]  # [1]
            plan = StreamStepPlan(samples=sample, timesteps=timesteps, embeds=self._prompt.embeds, depth=depth)
            plan.steps = [step]
            noise_pred = self._unet_stream(plan)  # [1, 4, h, w]
            denoised = self.schedule.denoise(sample, noise_pred, [step])  # [1, 4, h, w]
            if step + 1 < self.num_steps:
                sample = self.schedule.add_noise(denoised, self._noise(step + 1, 1), [step + 1])
        self._finished[new.index] = (self._decode(denoised)[0], denoised[0])

    # ----------------------------------------------------------------------------------------------
    # prompt switch

    def _prepare_switch(self, prompt: str, frames: list[EncodedFrame], generation: int, own_thread: bool) -> None:
        """Background: the new prompt's embeddings, caches and warmup on the most recent frames (in `own_thread`:
        below the frame loop's threads in CPU priority, under `background_policy`)."""
        import torch

        if own_thread:
            lower_thread_priority()
        try:
            with self.background_policy() if own_thread else nullcontext():
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
