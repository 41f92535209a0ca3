"""Shared helpers for the model tests: an independent reference of Live2Diff's attention pattern."""

from __future__ import annotations

from typing import Any

import torch
from vcam.model.stream_attention import SlotPositionalEncoding
from vcam.model.unet import StreamUNet


def reference_visible(frame: int, warmup_frames: int, window: int, num_frames: int) -> tuple[list[int], list[int]]:
    """The frames that ``frame`` attends to and their PE positions, written straight from the spec."""
    if frame < warmup_frames:
        frames = list(range(min(warmup_frames, num_frames)))
        return frames, frames
    ring = window - warmup_frames
    query_position = warmup_frames + min(frame - warmup_frames, ring - 1)
    recent = list(range(max(warmup_frames, frame - ring + 1), frame + 1))
    frames = list(range(warmup_frames)) + recent
    positions = list(range(warmup_frames)) + [query_position - (frame - f) for f in recent]
    return frames, positions


class ReferenceCausalProcessor:
    """Full recompute of a whole clip: each frame attends to the warmup frames and its window of predecessors.

    Computes ``softmax(W_q(x+pe) . W_k(x+pe)) W_v(x+pe)`` one query at a time, with no cache and no PE algebra.
    """

    def __init__(self, pos_table: SlotPositionalEncoding, warmup_frames: int, window: int) -> None:
        self.pos_table = pos_table
        self.warmup_frames = warmup_frames
        self.window = window

    def __call__(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows, num_frames, _ = hidden_states.shape
        pe = self.pos_table.pe[0]  # [L, C]
        heads = attn.heads
        outs = []
        for frame in range(num_frames):
            frames, positions = reference_visible(frame, self.warmup_frames, self.window, num_frames)
            query_position = positions[frames.index(frame)]
            query = attn.to_q(hidden_states[:, frame : frame + 1] + pe[query_position])  # [rows, 1, inner]
            keys_in = hidden_states[:, frames] + pe[positions]  # [rows, n, C]
            key = attn.to_k(keys_in)  # [rows, n, inner]
            value = attn.to_v(keys_in)  # [rows, n, inner]
            query = query.view(rows, 1, heads, -1).transpose(1, 2)  # [rows, heads, 1, d]
            key = key.view(rows, len(frames), heads, -1).transpose(1, 2)  # [rows, heads, n, d]
            value = value.view(rows, len(frames), heads, -1).transpose(1, 2)  # [rows, heads, n, d]
            weights = (query @ key.transpose(-1, -2) * attn.scale).softmax(-1)  # [rows, heads, 1, n]
            outs.append((weights @ value).transpose(1, 2).reshape(rows, 1, -1))  # [rows, 1, inner]
        out = torch.cat(outs, dim=1)  # [rows, F, inner]
        return attn.to_out[1](attn.to_out[0](out))


def install_reference(unet: StreamUNet, warmup_frames: int = 8, window: int = 16) -> None:
    """Replace every temporal processor of ``unet`` by the causal reference (the model is no longer streaming)."""
    for block in unet.temporal_transformer_blocks():
        for attn in (block.attn1, block.attn2):
            attn.set_processor(ReferenceCausalProcessor(block.pos_embed, warmup_frames, window))


#: tolerance for outputs of a model whose weights were saved and loaded again: the weights are equal, but a
#: loaded tensor may live in another memory layout (e.g. a view into a safetensors buffer, 8-byte aligned), which
#: picks another CPU kernel; float32 results then differ in the last bits (diffusers' save/load tests use 5e-5)
LOADED_OUTPUT_TOLERANCE: dict[str, float] = {"rtol": 1e-5, "atol": 5e-5}


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Every parameter and buffer of `model` equals the one of the same name in `reference`, bit for bit."""
    state, expected = model.state_dict(), reference.state_dict()
    assert set(state) == set(expected), sorted(set(state) ^ set(expected))[:5]
    for key, value in expected.items():
        assert state[key].dtype == value.dtype, key
        assert torch.equal(state[key], value), f"{key} differs"


def random_clip(num_frames: int, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Latents, depth latents and one prompt embedding for a clip, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(num_frames, 4, size, size, generator=generator),
        "depth": torch.randn(num_frames, 4, size, size, generator=generator),
        "prompt": torch.randn(1, 77, 32, generator=generator),
    }


def to_live2diff_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our motion + depth-mapper tensors under Live2Diff's original names (the inverse of the converter).

    Written independently of ``convert_live2diff_motion_state_dict``, from the original AnimateDiff layout:
    ``...motion_modules.M.temporal_transformer.{norm,proj_in,proj_out,transformer_blocks.T.{attention_blocks.A,
    norms.A,ff,ff_norm}}`` with a PE table per attention block, and ``flow_conv_in.*`` for the depth mapper.
    """
    block_renames = {"attn1": "attention_blocks.0", "attn2": "attention_blocks.1", "norm1": "norms.0"}
    block_renames |= {"norm2": "norms.1", "norm3": "ff_norm", "ff": "ff"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("depth_mapper."):
            out["flow_conv_in." + key[len("depth_mapper.") :]] = value
            continue
        if ".motion_modules." not in key:
            continue
        head, rest = key[len("unet.") :].split(".motion_modules.")
        index, rest = rest.split(".", 1)
        prefix = f"{head}.motion_modules.{index}.temporal_transformer."
        if not rest.startswith("transformer_blocks."):
            out[prefix + rest] = value
            continue
        _, block, sub = rest.split(".", 2)
        if sub == "pos_embed.pe":
            for attention in ("attention_blocks.0", "attention_blocks.1"):
                out[f"{prefix}transformer_blocks.{block}.{attention}.pos_encoder.pe"] = value.clone()
            continue
        module, tail = sub.split(".", 1)
        out[f"{prefix}transformer_blocks.{block}.{block_renames[module]}.{tail}"] = value
    return out
