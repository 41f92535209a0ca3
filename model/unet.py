"""``StreamUNet``: SD1.5's UNet inflated with AnimateDiff motion modules, made streaming as in Live2Diff.

Built on diffusers' ``UNetMotionModel`` (motion modules after each spatial transformer of the down and up
blocks, none in the mid block; parameter names as diffusers' ``MotionAdapter``), with:

- the temporal attentions replaced by ``StreamTemporalAttnProcessor`` (uni-directional, KV-cached);
- the motion modules' input GroupNorm computed per frame (``FrameGroupNorm``), as in the original AnimateDiff
  and Live2Diff: diffusers pools it over all frames of the clip, which would let future frames leak into
  the past (``motion_norm="clip"`` keeps diffusers' behaviour, for parity tests);
- Live2Diff's depth mapping network, whose output is added to the ``conv_in`` output (a forward hook, so
  the diffusers parameter names stay unchanged).

Three calls share the same weights:

- ``warmup``: the first F <= 8 frames of a video at one timestep, bi-directional among themselves; fills the
  warmup slots of one step's caches.
- ``stream``: a batch of B single new frames, entry i at its own timestep, reading and appending to the
  caches of denoising step ``steps[i]``.
- ``forward``: plain bi-directional AnimateDiff over whole clips (no cache).

One forward call at a time per model: the processors read the current call's mode from a shared context.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_motion_model import UNetMotionModel
from torch import nn

from .depth_mapper import DepthMapper
from .stream_attention import (
    ATTENTION_BACKENDS,
    StaticStep,
    StreamCaches,
    StreamContext,
    install_stream_processors,
)

logger = logging.getLogger(__name__)

MOTION_NORMS = ("frame", "clip")

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockMotion", "DownBlockMotion"),
    "up_block_types": ("UpBlockMotion", "CrossAttnUpBlockMotion"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "cross_attention_dim": 32,
    "num_attention_heads": 2,
    "motion_num_attention_heads": 2,
    "motion_max_seq_length": 24,
    "depth_mapper_channels": (8, 16),
}


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm of a motion module's input, per frame, as in the original AnimateDiff and Live2Diff.

    diffusers' ``AnimateDiffTransformer3D`` normalises its ``[B, C, F, H, W]`` input with statistics pooled over
    all F frames; a frame's output then depends on future frames, which a stream cannot have. This class keeps
    the same parameters (same state-dict keys) and normalises each frame on its own.
    """

    @classmethod
    def like(cls, norm: nn.GroupNorm) -> FrameGroupNorm:
        frame_norm = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        frame_norm.load_state_dict(norm.state_dict())
        return frame_norm.to(next(norm.parameters()).device) if norm.affine else frame_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        batch, channels, frames, height, width = x.shape
        per_frame = x.transpose(1, 2).reshape(batch * frames, channels, height, width)  # [B*F, C, H, W]
        normed = super().forward(per_frame)  # [B*F, C, H, W]
        return normed.reshape(batch, frames, channels, height, width).transpose(1, 2)  # [B, C, F, H, W]


class StreamUNet(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """SD1.5 UNet + AnimateDiff motion modules + depth mapper, with streaming temporal attention.

    State dict keys: ``unet.*`` (diffusers ``UNetMotionModel`` names, so ``unet.down_blocks.0.motion_modules.*``
    match ``MotionAdapter``'s ``down_blocks.0.motion_modules.*``) and ``depth_mapper.*``.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = 64,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "DownBlockMotion",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        cross_attention_dim: int = 768,
        num_attention_heads: int | tuple[int, ...] = 8,
        use_linear_projection: bool = False,
        time_cond_proj_dim: int | None = None,
        motion_num_attention_heads: int = 8,
        motion_max_seq_length: int = 24,
        use_depth_mapper: bool = True,
        depth_mapper_channels: tuple[int, ...] = (16, 32, 96, 256),
        warmup_frames: int = 8,
        window: int = 16,
        attention_backend: str = "auto",
        motion_norm: str = "frame",
    ) -> None:
        super().__init__()
        if not 0 < warmup_frames < window:
            raise ValueError(f"warmup_frames must be in 1..{window - 1} (window={window}), got {warmup_frames}")
        if window > motion_max_seq_length:
            raise ValueError(
                f"window {window} exceeds motion_max_seq_length {motion_max_seq_length}: the PE table is too short"
            )
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
        if motion_norm not in MOTION_NORMS:
            raise ValueError(f"motion_norm must be one of {MOTION_NORMS}, got {motion_norm!r}")
        self.unet = UNetMotionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=cross_attention_dim,
            num_attention_heads=num_attention_heads,
            use_linear_projection=use_linear_projection,
            time_cond_proj_dim=time_cond_proj_dim,
            motion_num_attention_heads=motion_num_attention_heads,
            motion_max_seq_length=motion_max_seq_length,
            use_motion_mid_block=False,
        )
        self.depth_mapper: DepthMapper | None = (
            DepthMapper(in_channels, block_out_channels[0], tuple(depth_mapper_channels)) if use_depth_mapper else None
        )
        if motion_norm == "frame":
            for unet_block in [*self.unet.down_blocks, *self.unet.up_blocks]:
                for motion_module in unet_block.motion_modules:
                    motion_module.norm = FrameGroupNorm.like(motion_module.norm)
        self._context = StreamContext()
        self._depth_embedding: torch.Tensor | None = None
        # runs `stream` calls when set (vcam.model.step_backends: static, compiled, CUDA graph, ONNX)
        self.step_backend: Any = None
        self._processors = install_stream_processors(
            self.temporal_transformer_blocks(), self._context, attention_backend
        )
        # the hook holds the model weakly: no reference cycle, so a released model is freed at once (no GC pass)
        owner = weakref.ref(self)

        def add_depth_embedding(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
            model = owner()
            return None if model is None else model._add_depth_embedding(module, inputs, output)

        self.unet.conv_in.register_forward_hook(add_depth_embedding)

    # -- structure -------------------------------------------------------------------------------------------

    def temporal_transformer_blocks(self) -> list[nn.Module]:
        """The motion modules' transformer blocks in execution order (down blocks, then up blocks)."""
        blocks: list[nn.Module] = []
        for unet_block in [*self.unet.down_blocks, *self.unet.up_blocks]:
            for motion_module in unet_block.motion_modules:
                blocks.extend(motion_module.transformer_blocks)
        return blocks

    @property
    def num_temporal_layers(self) -> int:
        """Temporal self-attention layers (two per motion-module transformer block); one cache each per step."""
        return len(self._processors)

    def set_attention_backend(self, backend: str) -> None:
        """Kernel of the temporal attention: "auto", "math" (matmul-softmax), "sdpa", "xformers" or "fused"."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        for processor in self._processors:
            processor.backend = backend

    def create_caches(
        self, num_steps: int, warmup_frames: int | None = None, window: int | None = None
    ) -> StreamCaches:
        """One KV cache per denoising step per temporal attention layer (allocated on first write).

        warmup_frames/window default to the config's (8 and 16).
        """
        warmup_frames = int(self.config["warmup_frames"]) if warmup_frames is None else warmup_frames
        window = int(self.config["window"]) if window is None else window
        max_length = int(self.config["motion_max_seq_length"])
        if window > max_length:
            raise ValueError(f"window {window} exceeds motion_max_seq_length {max_length}")
        return StreamCaches(num_steps, self.num_temporal_layers, warmup_frames, window)

    # -- calls -----------------------------------------------------------------------------------------------

    def warmup(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        caches: StreamCaches,
        step: int,
    ) -> torch.Tensor:
        """Denoise the F warmup frames of one video at one timestep and fill slots 0..F-1 of ``step``'s caches.

        sample ``[F, C, h, w]``, encoder_hidden_states ``[1 or F, 77, d]``, depth_latent ``[F, C, h, w]`` or
        None. Returns the noise prediction ``[F, C, h, w]``.
        """
        num_frames = sample.shape[0]
        if sample.ndim != 4:
            raise ValueError(f"warmup sample must be [F, C, h, w], got shape {tuple(sample.shape)}")
        if not 1 <= num_frames <= caches.warmup_frames:
            raise ValueError(f"warmup takes 1..{caches.warmup_frames} frames, got {num_frames}")
        encoder_hidden_states = self._per_entry(encoder_hidden_states, num_frames, "encoder_hidden_states")
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)[:1]  # [1]
        video = sample.permute(1, 0, 2, 3)[None]  # [1, C, F, h, w]
        with self._mode("warmup", [caches.layers(step)], depth_latent, num_frames):
            out = self.unet(video, timestep, encoder_hidden_states).sample  # [1, C, F, h, w]
        return out[0].permute(1, 0, 2, 3)

    def stream(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        caches: StreamCaches,
        steps: Sequence[int],
    ) -> torch.Tensor:
        """Denoise B single new frames; entry i reads, then appends to, the caches of step ``steps[i]``.

        sample ``[B, C, h, w]``, timesteps ``[B]``, encoder_hidden_states ``[B (or 1), 77, d]``, depth_latent
        ``[B, C, h, w]`` or None. Steps must be distinct. Returns the noise prediction ``[B, C, h, w]``.
        """
        batch = sample.shape[0]
        if sample.ndim != 4:
            raise ValueError(f"stream sample must be [B, C, h, w], got shape {tuple(sample.shape)}")
        steps = [int(step) for step in steps]
        if len(steps) != batch:
            raise ValueError(f"{batch} entries need {batch} steps, got {steps}")
        if len(set(steps)) != batch:
            raise ValueError(f"entries must be at distinct steps, got {steps}")
        if self.step_backend is not None:  # one stream's entries: the static / compiled / ONNX step
            timesteps, encoder_hidden_states = self._entry_inputs(sample, timesteps, encoder_hidden_states)
            return self.step_backend.stream(
                self, sample, timesteps, encoder_hidden_states, depth_latent, caches, steps
            )
        return self.stream_entries(
            sample, timesteps, encoder_hidden_states, depth_latent, [caches.layers(step) for step in steps]
        )

    def stream_entries(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        entry_caches: Sequence[list[Any]],
    ) -> torch.Tensor:
        """Like ``stream``, with entry i's per-layer caches given directly: ``entry_caches[i]``.

        The entries may come from several streams (each its own ``StreamCaches``): several clients' stream
        batches stacked into one UNet call. No two entries may share a cache list. This is the eager path: a
        step backend (``step_backends``) runs one stream's entries through ``stream``.
        """
        batch = sample.shape[0]
        if sample.ndim != 4:
            raise ValueError(f"stream sample must be [B, C, h, w], got shape {tuple(sample.shape)}")
        if len(entry_caches) != batch:
            raise ValueError(f"{batch} entries need {batch} cache lists, got {len(entry_caches)}")
        if len({id(layers) for layers in entry_caches}) != batch:
            raise ValueError("two entries share one step's caches: entries must be at distinct steps")
        timesteps, encoder_hidden_states = self._entry_inputs(sample, timesteps, encoder_hidden_states)
        video = sample[:, :, None]  # [B, C, 1, h, w]
        with self._mode("stream", list(entry_caches), depth_latent, batch):
            out = self.unet(video, timesteps, encoder_hidden_states).sample  # [B, C, 1, h, w]
        return out[:, :, 0]

    def _entry_inputs(
        self, sample: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One timestep ``[B]`` and one text embedding ``[B, 77, d]`` per entry of ``sample`` ``[B, C, h, w]``."""
        batch = sample.shape[0]
        timesteps = torch.as_tensor(timesteps, device=sample.device).reshape(-1)  # [B or 1]
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(batch)
        if timesteps.numel() != batch:
            raise ValueError(f"{batch} entries need {batch} timesteps, got {timesteps.numel()}")
        return timesteps, self._per_entry(encoder_hidden_states, batch, "encoder_hidden_states")

    def stream_static(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        static: StaticStep,
    ) -> torch.Tensor:
        """The stream call as a tensor-only function (see ``StaticStep``): reads ``static.caches``, leaves the new
        K/V rows in ``static.new_rows``. sample ``[B, C, h, w]``, timesteps ``[B]``, encoder_hidden_states
        ``[B, 77, d]``, depth_latent ``[B, C, h, w]`` or None. Returns the noise prediction ``[B, C, h, w]``."""
        video = sample[:, :, None]  # [B, C, 1, h, w]
        with self._mode("stream", [], depth_latent, sample.shape[0], static):
            out = self.unet(video, timesteps, encoder_hidden_states).sample  # [B, C, 1, h, w]
        return out[:, :, 0]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bi-directional AnimateDiff over whole clips, no cache: sample ``[B, C, F, h, w]``.

        encoder_hidden_states ``[B*F, 77, d]`` (or ``[B, 77, d]``, repeated per frame); depth_latent like sample
        or None. Returns ``[B, C, F, h, w]``.
        """
        batch, _, num_frames = sample.shape[:3]
        if encoder_hidden_states.shape[0] == batch and num_frames > 1:
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)  # [B*F, 77, d]
        depth = None
        if depth_latent is not None:
            depth = depth_latent.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*F, C, h, w]
        with self._mode("full", [], depth, batch * num_frames):
            return self.unet(sample, timestep, encoder_hidden_states).sample

    # -- internals -------------------------------------------------------------------------------------------

    @staticmethod
    def _per_entry(tensor: torch.Tensor, count: int, name: str) -> torch.Tensor:
        if tensor.shape[0] == count:
            return tensor
        if tensor.shape[0] == 1:
            return tensor.expand(count, *tensor.shape[1:])
        raise ValueError(f"{name} must have 1 or {count} rows, got shape {tuple(tensor.shape)}")

    @contextlib.contextmanager
    def _mode(
        self,
        mode: str,
        entry_caches: list[list[Any]],
        depth_latent: torch.Tensor | None,
        images: int,
        static: StaticStep | None = None,
    ) -> Iterator[None]:
        if depth_latent is not None:
            if self.depth_mapper is None:
                raise ValueError(
                    "this StreamUNet has no depth mapper (use_depth_mapper=False); pass depth_latent=None"
                )
            if depth_latent.shape[0] != images:
                raise ValueError(f"depth_latent must have {images} images, got shape {tuple(depth_latent.shape)}")
            self._depth_embedding = self.depth_mapper(depth_latent.to(self.dtype))  # [N, c0, h, w]
        self._context.mode = mode
        self._context.entry_caches = entry_caches
        self._context.static = static
        try:
            yield
        finally:
            self._context.mode = "full"
            self._context.entry_caches = []
            self._context.static = None
            self._depth_embedding = None

    def _add_depth_embedding(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
        if self._depth_embedding is None:
            return None
        if self._depth_embedding.shape != output.shape:
            raise ValueError(
                f"depth embedding {tuple(self._depth_embedding.shape)} does not match conv_in output "
                f"{tuple(output.shape)}: depth_latent must have the sample's size"
            )
        return output + self._depth_embedding.to(output.dtype)


def tiny_stream_unet(seed: int = 0) -> StreamUNet:
    """A tiny random ``StreamUNet`` (``TINY_UNET_CONFIG``) for tests and benchmarks; fp32, CPU, eval mode.

    The depth mapper's last conv is made non-zero (seeded) so depth inputs have an effect in tests.
    """
    torch.manual_seed(seed)
    unet = StreamUNet(**TINY_UNET_CONFIG)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # diffusers zero-inits motion modules' proj_out; random values make the temporal path observable.
        for name, parameter in unet.named_parameters():
            if parameter.abs().sum() == 0 and ("proj_out" in name or "depth_mapper.conv_out" in name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return unet.eval()
