"""What a `StreamPipeline` holds per frame and per prompt: frames in flight, encoded inputs, prompt states,
and the results and step plans it hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class StreamResult:
    """One finished frame: the translation of input number `index` (0, 1, 2, ... since the last reset)."""

    index: int
    image: np.ndarray  # [H, W, 3] uint8 RGB at the model size
    skipped: bool = False  # True when the input was skipped as similar and the previous output repeated
    latent: torch.Tensor | None = None  # [4, h, w] the denoised latent that was decoded (None when skipped)


@dataclass
class InFlight:
    """A frame inside the stream batch: its noisy latent at timestep `step` of the schedule."""

    index: int
    sample: torch.Tensor  # [4, h, w] x_t at timesteps[step]
    depth: torch.Tensor | None  # [4, h, w]
    step: int


@dataclass
class EncodedFrame:
    """An input frame in latent space, kept for the warmup and for a prompt change.

    `depth` (normalised per frame) is set for frames that stream; a warmup normalises the `raw_depth` of its
    frames together, as the reference does.
    """

    index: int
    latent: torch.Tensor  # [4, h, w] clean latent
    depth: torch.Tensor | None  # [4, h, w]
    raw_depth: torch.Tensor | None = None  # [1, d, d] the depth model's prediction


@dataclass
class StreamStepPlan:
    """A step between `StreamPipeline.begin_step` and `finish_step`: the stream batch's UNet inputs.

    `results` is set instead when the step needed no stream-batch call (it ran whole in `begin_step`).
    """

    results: list[StreamResult] | None = None
    entries: list[InFlight] = field(default_factory=list)
    samples: torch.Tensor | None = None  # [B, 4, h, w]
    timesteps: torch.Tensor | None = None  # [B]
    embeds: torch.Tensor | None = None  # [B, 77, d]
    depth: torch.Tensor | None = None  # [B, 4, h, w] or None
    steps: list[int] = field(default_factory=list)  # entry i's denoising step
    entry_caches: list[Any] = field(default_factory=list)  # entry i's per-layer KV caches (of step steps[i])


@dataclass
class PromptState:
    """What a prompt owns: its embedding and its caches (one per denoising step)."""

    prompt: str
    embeds: torch.Tensor  # [1, 77, d]
    caches: Any  # vcam.model.stream_attention.StreamCaches


@dataclass(frozen=True)
class SkippedFrame:
    """An input the similar-frame filter skipped: its output repeats the previous one."""

    index: int
