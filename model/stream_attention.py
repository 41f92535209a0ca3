"""Live2Diff's streaming temporal attention and its KV cache, in one file.

AnimateDiff's motion modules let every frame attend to every other frame of a clip. Live2Diff makes that
attention uni-directional so it can run on a live stream: a frame attends to a few warmup frames, kept for
ever as attention "sinks", and to a ring of the most recent frames, itself included, never to the future.

Cache layout (defaults: 8 warmup slots, 16 slots in all)::

    slot:  0 1 2 3 4 5 6 7 | 8 9 10 11 12 13 14 15
           warmup frames   | ring of the 8 most recent frames (the next write overwrites the oldest)

Positional encoding (PE) per slot: warmup slots keep PE 0..7. While the ring fills, the j-th frame after
the warmup sits at its natural position 8 + j; once the ring is full the newest frame always gets PE 15,
the one before it 14, ... the oldest 8. A steady-state query therefore sees exactly the last row of the
16-frame training mask (``training_attention_mask``). Empty slots are masked out.

The q/k/v projections of the motion module have no bias, so ``W(x + pe) = Wx + W pe``: K and V are cached
without PE, and the PE term of each slot is added at attention time. The PE term is computed as
``proj(pe) - proj(0)``, which is exact for any linear projection, PEFT LoRA layers included.

``StreamTemporalAttnProcessor`` is a diffusers attention processor; the UNet tells it the mode of the
current call through a shared ``StreamContext``:

- ``"full"``: AnimateDiff's own bi-directional attention over the F frames of the call (PE 0..F-1).
- ``"warmup"``: the same, and each video's K/V are written to the warmup slots of its cache.
- ``"stream"``: one new frame per batch entry; entry i appends its K/V to its own cache (one cache per
  denoising step) and attends to that cache's visible slots.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from vcam.model import cached_attention
from vcam.model.cached_attention import (
    fused_cached_attention,
    fused_static_attention,
    math_cached_attention,
    math_static_attention,
)
from vcam.model.slot_positions import SlotPositionalEncoding

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "math", "sdpa", "xformers", "fused")
MODES = ("full", "warmup", "stream")


def training_attention_mask(length: int, warmup_frames: int) -> torch.Tensor:
    """Live2Diff's training mask for a clip of ``length`` frames: ``mask[i, j]`` is True where frame i sees j.

    Rows 0..warmup-1 attend to columns 0..warmup-1 (a bi-directional block); row i >= warmup attends to 0..i.
    """
    if not 0 <= warmup_frames <= length:
        raise ValueError(f"warmup_frames must be in 0..{length}, got {warmup_frames}")
    rows = torch.arange(length)[:, None]  # [L, 1]
    cols = torch.arange(length)[None, :]  # [1, L]
    causal = cols <= rows  # [L, L]
    warmup_block = (rows < warmup_frames) & (cols < warmup_frames)  # [L, L]
    return causal | warmup_block


@dataclass(frozen=True)
class SlotLayout:
    """Which slots the newest query sees and at which positions (PE indices)."""

    query_position: int
    key_positions: tuple[int, ...]  # per slot; -1 for an empty slot
    valid: tuple[bool, ...]  # per slot

    def visible_positions(self) -> list[int]:
        """The positions of the visible slots, sorted."""
        return sorted(p for p, ok in zip(self.key_positions, self.valid, strict=True) if ok)


class KVCache:
    """The keys and values (without PE) of one temporal attention layer at one denoising step.

    Holds ``window`` slots: ``warmup_frames`` sink slots, then a ring of the most recent frames. Its size is
    fixed whatever the stream length. The tensor is allocated on the first write with the writer's device and
    dtype, shape ``[2, rows, heads, window, head_dim]`` (rows = h*w of the layer's feature map).
    """

    def __init__(self, warmup_frames: int = 8, window: int = 16) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 <= warmup_frames < window:
            raise ValueError(f"warmup_frames must be in 0..{window - 1} (window={window}), got {warmup_frames}")
        self.warmup_frames = warmup_frames
        self.window = window
        self.kv: torch.Tensor | None = None  # [2, rows, heads, window, head_dim]
        self.num_warmup = 0
        self.num_streamed = 0
        self._slot_frame: list[int] = [-1] * window  # stream index held by each ring slot; -1 empty

    @property
    def ring_size(self) -> int:
        """The number of ring slots (the most recent frames kept)."""
        return self.window - self.warmup_frames

    @property
    def frames_seen(self) -> int:
        """Warmup frames plus streamed frames written so far (streamed ones keep counting after eviction)."""
        return self.num_warmup + self.num_streamed

    def reset(self) -> None:
        """Forget every frame; the memory is kept and reused by the next writes."""
        self.num_warmup = 0
        self.num_streamed = 0
        self._slot_frame = [-1] * self.window

    def release(self) -> None:
        """Forget every frame and free the memory."""
        self.reset()
        self.kv = None

    def nbytes(self) -> int:
        """Bytes held by the cache tensor (0 before the first write)."""
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()

    def _ensure(self, like: torch.Tensor) -> torch.Tensor:
        rows, heads, _, head_dim = like.shape
        shape = (2, rows, heads, self.window, head_dim)
        if self.kv is None:
            self.kv = torch.zeros(shape, device=like.device, dtype=like.dtype)
        elif tuple(self.kv.shape) != shape or self.kv.device != like.device or self.kv.dtype != like.dtype:
            raise ValueError(
                f"KV cache holds {tuple(self.kv.shape)} {self.kv.dtype} on {self.kv.device}, got a write for "
                f"{shape} {like.dtype} on {like.device}: the resolution, device or dtype changed; call release()"
            )
        return self.kv

    def write_warmup(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store the warmup frames in slots 0..F-1. keys/values: ``[rows, heads, F, head_dim]`` without PE."""
        num_frames = keys.shape[2]
        if num_frames > self.warmup_frames:
            raise ValueError(f"{num_frames} warmup frames do not fit the {self.warmup_frames} warmup slots")
        if self.frames_seen:
            raise ValueError(f"warmup on a cache that already holds {self.frames_seen} frames; call reset() first")
        kv = self._ensure(keys)
        kv[0, :, :, :num_frames] = keys
        kv[1, :, :, :num_frames] = values
        self.num_warmup = num_frames

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store one new frame in the ring, over the oldest. keys/values: ``[rows, heads, 1, head_dim]``."""
        if keys.shape[2] != 1:
            raise ValueError(f"append takes one frame, got {keys.shape[2]}")
        kv = self._ensure(keys)
        slot = self.next_slot
        kv[0, :, :, slot] = keys[:, :, 0]
        kv[1, :, :, slot] = values[:, :, 0]
        self.advance()

    @property
    def next_slot(self) -> int:
        """The ring slot the next streamed frame goes to (the one holding the oldest frame once full)."""
        return self.warmup_frames + self.num_streamed % self.ring_size

    def advance(self) -> None:
        """Record that the next streamed frame's row has been written to `next_slot` (by `append` or on the
        device by a static stream step)."""
        self._slot_frame[self.next_slot] = self.num_streamed
        self.num_streamed += 1

    def plan_append(self) -> tuple[int, SlotLayout]:
        """The slot the next append writes and the layout a query sees once it is written; changes nothing."""
        slot = self.next_slot
        held = self._slot_frame[slot]
        self.advance()
        try:
            return slot, self.layout()
        finally:
            self.num_streamed -= 1
            self._slot_frame[slot] = held

    def layout(self) -> SlotLayout:
        """Positions and visibility of the slots for a query by the newest streamed frame."""
        if self.num_streamed == 0:
            raise ValueError("no streamed frame in the cache yet: append() one first")
        newest = self.num_streamed - 1
        query_position = self.num_warmup + min(newest, self.ring_size - 1)
        positions = []
        valid = []
        for slot in range(self.window):
            if slot < self.warmup_frames:
                ok = slot < self.num_warmup
                positions.append(slot if ok else -1)
            else:
                frame = self._slot_frame[slot]
                ok = frame >= 0
                positions.append(query_position - (newest - frame) if ok else -1)
            valid.append(ok)
        return SlotLayout(query_position, tuple(positions), tuple(valid))


class StreamCaches:
    """One ``KVCache`` per denoising step per temporal attention layer, for one video stream."""

    def __init__(self, num_steps: int, num_layers: int, warmup_frames: int = 8, window: int = 16) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_layers = num_layers
        self.warmup_frames = warmup_frames
        self.window = window
        self.caches = [[KVCache(warmup_frames, window) for _ in range(num_layers)] for _ in range(num_steps)]

    @property
    def num_steps(self) -> int:
        return len(self.caches)

    def layers(self, step: int) -> list[KVCache]:
        """The per-layer caches of denoising step ``step``."""
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step must be in 0..{self.num_steps - 1}, got {step}")
        return self.caches[step]

    def frames_seen(self, step: int) -> int:
        """Frames written to the caches of ``step`` (warmup plus streamed)."""
        return self.layers(step)[0].frames_seen if self.num_layers else 0

    def reset(self, step: int | None = None) -> None:
        """Forget the frames of one step, or of all steps; memory is kept for reuse."""
        for cache_step in range(self.num_steps) if step is None else [step]:
            for cache in self.layers(cache_step):
                cache.reset()

    def release(self) -> None:
        """Forget everything and free the memory."""
        for step_caches in self.caches:
            for cache in step_caches:
                cache.release()

    def nbytes(self) -> int:
        """Bytes held by all cache tensors."""
        return sum(cache.nbytes() for step_caches in self.caches for cache in step_caches)


@dataclass
class StreamContext:
    """What the UNet tells its temporal attention processors for the current forward call.

    ``entry_caches[i]`` are the per-layer caches read and written by video/entry i of the batch.
    """

    mode: str = "full"
    entry_caches: list[list[KVCache]] = field(default_factory=list)
    static: StaticStep | None = None  # set: "stream" mode runs the tensor-only step (see StaticStep)


@dataclass
class StaticStep:
    """One stream step as tensors only, so it can be compiled, captured as a CUDA graph or exported to ONNX.

    Nothing Python-side is read or changed inside the forward: each entry's cache tensors are read only, the
    slot layout arrives as tensors, and each layer's new K/V rows are left in ``new_rows`` for the caller to
    copy into the ring (in place, on the device) or to return as graph outputs. The new row is attended to
    directly (its score joins the visible old slots' in one softmax), so the cache is never copied.
    """

    write_slot: torch.Tensor | None  # [B] long: the ring slot each entry's new row goes to (None: not written here)
    key_positions: torch.Tensor  # [B, window] long: PE position per slot once the row is written (0 when hidden)
    visible: torch.Tensor  # [B, window] bool: the old slots the query sees (the write slot excluded)
    query_position: torch.Tensor  # [B] long: the new frame's position (its key's too)
    caches: list[list[torch.Tensor]]  # [entry][layer] -> [2, rows, heads, window, head_dim], read only
    new_rows: list[list[torch.Tensor | None]] = field(default_factory=list)  # [entry][layer] -> [2, rows, heads, d]

    def __post_init__(self) -> None:
        if not self.new_rows:
            self.new_rows = [[None] * len(layers) for layers in self.caches]


def resolve_backend(backend: str, device: torch.device, cached: bool = True) -> str:
    """The attention kernel to use.

    "auto": for the cached shape on CUDA the fused Triton kernel when triton imports (``cached_attention``), else
    xformers (if installed) or SDPA, as for the warmup shape; on other devices the plain matmul-softmax for the
    cached shape (1 query against 16 slots: measured several times faster than SDPA on the CPU, see ``vcam bench
    unet``) and SDPA for the bi-directional warmup shape. "xformers" falls back to SDPA off CUDA; "fused" falls
    back to what "auto" picks without it where the kernel cannot run (no triton, no CUDA, warmup, tracing).
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    wants_fused = backend == "fused" or (backend == "auto" and device.type == "cuda")
    if cached and wants_fused and cached_attention.can_run(device):
        return "fused"
    if backend == "fused":
        backend = "auto"  # the kernel cannot run here: what "auto" picks without it
    if backend == "xformers" and device.type != "cuda":
        return "sdpa"
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "xformers" if _xformers_available() else "sdpa"
    return "math" if cached else "sdpa"


def _xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def _pe_terms(linear: torch.nn.Module, pe_rows: torch.Tensor) -> torch.Tensor:
    """``linear(pe) - linear(0)``: the PE contribution to a projection, shape ``[P, inner]``."""
    inputs = torch.cat([pe_rows, torch.zeros_like(pe_rows[:1])])  # [P + 1, C]
    projected = linear(inputs)  # [P + 1, inner]
    return projected[:-1] - projected[-1:]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[rows, F, heads*d] -> [rows, heads, F, d]``."""
    rows, frames, inner = x.shape
    return x.view(rows, frames, heads, inner // heads).transpose(1, 2)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str, scale: float) -> torch.Tensor:
    """Unmasked attention. query ``[rows, heads, Fq, d]``, key/value ``[rows, heads, Fk, d]``."""
    if backend == "xformers":
        import xformers.ops

        out = xformers.ops.memory_efficient_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
        )  # [rows, Fq, heads, d]
        return out.transpose(1, 2)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # [rows, heads, Fq, Fk]
    return torch.matmul(scores.softmax(dim=-1), value)  # [rows, heads, Fq, d]


class StreamTemporalAttnProcessor:
    """Temporal self-attention of one motion-module layer: bi-directional (full, warmup) or cached (stream).

    ``hidden_states`` arrive as ``[batch*h*w, frames, C]`` (AnimateDiff's layout, rows ordered by batch entry).
    """

    def __init__(
        self, pos_table: SlotPositionalEncoding, layer_index: int, context: StreamContext, backend: str = "auto"
    ) -> None:
        self.pos_table = pos_table
        self.layer_index = layer_index
        self.context = context
        self.backend = backend

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("streaming temporal attention is self-attention without a mask")
        residual = hidden_states
        mode = self.context.mode
        if mode == "stream" and self.context.static is not None:
            out = self._stream_static(attn, hidden_states, self.context.static)  # [rows, 1, inner]
        elif mode == "stream":
            out = self._stream(attn, hidden_states)  # [rows, 1, inner]
        elif mode in ("full", "warmup"):
            out = self._bidirectional(attn, hidden_states, write=mode == "warmup")  # [rows, F, inner]
        else:
            raise ValueError(f"unknown streaming attention mode {mode!r}; expected one of {MODES}")
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _entries(self, rows: int) -> tuple[list[list[KVCache]], int]:
        entry_caches = self.context.entry_caches
        if not entry_caches or rows % len(entry_caches):
            raise ValueError(f"{rows} attention rows cannot be split over {len(entry_caches)} cache entries")
        return entry_caches, rows // len(entry_caches)

    def _bidirectional(self, attn: Attention, x: torch.Tensor, write: bool) -> torch.Tensor:
        rows, frames, _ = x.shape
        heads = attn.heads
        backend = resolve_backend(self.backend, x.device, cached=False)
        pe = self.pos_table.rows(torch.arange(frames, device=x.device)).to(x.dtype)  # [F, C]
        query = _split_heads(attn.to_q(x) + _pe_terms(attn.to_q, pe), heads)  # [rows, heads, F, d]
        key_raw = _split_heads(attn.to_k(x), heads)  # [rows, heads, F, d]
        value_raw = _split_heads(attn.to_v(x), heads)  # [rows, heads, F, d]
        key = key_raw + _split_heads(_pe_terms(attn.to_k, pe)[None], heads)  # [rows, heads, F, d]
        value = value_raw + _split_heads(_pe_terms(attn.to_v, pe)[None], heads)  # [rows, heads, F, d]
        out = _attend(query, key, value, backend, attn.scale)  # [rows, heads, F, d]
        if write:
            entry_caches, entry_rows = self._entries(rows)
            for entry, caches in enumerate(entry_caches):
                part = slice(entry * entry_rows, (entry + 1) * entry_rows)
                caches[self.layer_index].write_warmup(key_raw[part], value_raw[part])
        return out.transpose(1, 2).reshape(rows, frames, -1)

    def _stream(self, attn: Attention, x: torch.Tensor) -> torch.Tensor:
        rows, frames, _ = x.shape
        if frames != 1:
            raise ValueError(f"stream mode takes one frame per batch entry, got {frames}")
        heads = attn.heads
        backend = resolve_backend(self.backend, x.device)
        entry_caches, entry_rows = self._entries(rows)
        query_raw = _split_heads(attn.to_q(x), heads)  # [rows, heads, 1, d]
        key_raw = _split_heads(attn.to_k(x), heads)  # [rows, heads, 1, d]
        value_raw = _split_heads(attn.to_v(x), heads)  # [rows, heads, 1, d]
        outs = []
        for entry, caches in enumerate(entry_caches):
            part = slice(entry * entry_rows, (entry + 1) * entry_rows)
            cache = caches[self.layer_index]
            cache.append(key_raw[part], value_raw[part])
            outs.append(self._cached_attention(attn, query_raw[part], cache, backend))  # [entry_rows, heads, 1, d]
        out = torch.cat(outs) if len(outs) > 1 else outs[0]  # [rows, heads, 1, d]
        return out.transpose(1, 2).reshape(rows, 1, -1)

    def _stream_static(self, attn: Attention, x: torch.Tensor, static: StaticStep) -> torch.Tensor:
        """The stream step over read-only caches; the new K/V rows go to ``static.new_rows`` (see StaticStep)."""
        rows, frames, _ = x.shape
        entries = len(static.caches)
        if frames != 1 or not entries or rows % entries:
            raise ValueError(f"static stream step: {rows} rows x {frames} frames do not fit {entries} entries")
        heads = attn.heads
        entry_rows = rows // entries
        window = static.key_positions.shape[1]
        kernel = (
            fused_static_attention if resolve_backend(self.backend, x.device) == "fused" else math_static_attention
        )
        query_raw = _split_heads(attn.to_q(x), heads)  # [rows, heads, 1, d]
        key_raw = _split_heads(attn.to_k(x), heads)  # [rows, heads, 1, d]
        value_raw = _split_heads(attn.to_v(x), heads)  # [rows, heads, 1, d]
        head_dim = query_raw.shape[-1]
        positions = torch.cat([static.key_positions, static.query_position[:, None]], dim=1)  # [B, window + 1]
        pe = self.pos_table.table[0].index_select(0, positions.reshape(-1)).to(x.dtype)  # [B*(window+1), C]
        pe_query = _pe_terms(attn.to_q, pe).view(entries, window + 1, heads, head_dim)[:, -1]  # [B, heads, d]
        pe_key = _pe_terms(attn.to_k, pe).view(entries, window + 1, heads, head_dim).transpose(1, 2)
        pe_value = _pe_terms(attn.to_v, pe).view(entries, window + 1, heads, head_dim).transpose(1, 2)
        outs = []
        for entry in range(entries):
            part = slice(entry * entry_rows, (entry + 1) * entry_rows)
            kv = static.caches[entry][self.layer_index]  # [2, entry_rows, heads, window, d]
            new_key, new_value = key_raw[part], value_raw[part]  # [entry_rows, heads, 1, d] each
            static.new_rows[entry][self.layer_index] = torch.stack([new_key[:, :, 0], new_value[:, :, 0]])
            args = (query_raw[part], pe_query[entry], kv[0], kv[1], new_key, new_value, pe_key[entry], pe_value[entry])
            outs.append(kernel(*args, static.visible[entry], attn.scale))  # [entry_rows, heads, 1, d]
        out = torch.cat(outs) if len(outs) > 1 else outs[0]  # [rows, heads, 1, d]
        return out.transpose(1, 2).reshape(rows, 1, -1)

    def _cached_attention(
        self, attn: Attention, query_raw: torch.Tensor, cache: KVCache, backend: str
    ) -> torch.Tensor:
        """One entry's query ``[rows, heads, 1, d]`` (without PE) against its cache's visible slots."""
        if cache.kv is None:
            raise RuntimeError("the KV cache is empty after append(); this is a bug")
        heads = attn.heads
        layout = cache.layout()
        device = query_raw.device
        slot_positions = torch.tensor([max(p, 0) for p in layout.key_positions], device=device)  # [window]
        all_positions = torch.cat([slot_positions, torch.tensor([layout.query_position], device=device)])
        pe = self.pos_table.rows(all_positions).to(query_raw.dtype)  # [window + 1, C]
        pe_query = _split_heads(_pe_terms(attn.to_q, pe[-1:])[None], heads)  # [1, heads, 1, d]
        pe_key = _split_heads(_pe_terms(attn.to_k, pe[:-1])[None], heads)[0]  # [heads, window, d]
        pe_value = _split_heads(_pe_terms(attn.to_v, pe[:-1])[None], heads)[0]  # [heads, window, d]
        query = query_raw + pe_query  # [rows, heads, 1, d]
        keys, values = cache.kv[0], cache.kv[1]  # [rows, heads, window, d] each
        if backend in ("math", "fused"):
            kernel = fused_cached_attention if backend == "fused" else math_cached_attention
            valid = None if all(layout.valid) else torch.tensor(layout.valid, device=device)  # [window]
            return kernel(query, keys, values, pe_key, pe_value, valid, attn.scale)
        if all(layout.valid):
            return _attend(query, keys + pe_key, values + pe_value, backend, attn.scale)
        visible = torch.tensor([slot for slot, ok in enumerate(layout.valid) if ok], device=device)  # [n]
        keys = keys.index_select(2, visible) + pe_key.index_select(1, visible)  # [rows, heads, n, d]
        values = values.index_select(2, visible) + pe_value.index_select(1, visible)  # [rows, heads, n, d]
        return _attend(query, keys, values, backend, attn.scale)


def static_step_layout(
    caches: Sequence[Sequence[KVCache]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The slot tensors of a static step for entries whose per-layer caches are ``caches[i]`` (host side).

    Returns (write_slot [B], key_positions [B, window], visible [B, window], query_position [B]) on the CPU;
    every layer of one entry shares them (all its layers were written together).
    """
    slots, positions, visible, queries = [], [], [], []
    for layers in caches:
        slot, layout = layers[0].plan_append()
        slots.append(slot)
        positions.append([max(p, 0) for p in layout.key_positions])
        visible.append([ok and index != slot for index, ok in enumerate(layout.valid)])
        queries.append(layout.query_position)
    return (
        torch.tensor(slots, dtype=torch.long),
        torch.tensor(positions, dtype=torch.long),
        torch.tensor(visible, dtype=torch.bool),
        torch.tensor(queries, dtype=torch.long),
    )


def install_stream_processors(
    transformer_blocks: Sequence[Any], context: StreamContext, backend: str = "auto"
) -> list[StreamTemporalAttnProcessor]:
    """Make the temporal attentions of AnimateDiff transformer blocks streaming; returns their processors.

    Each block's ``pos_embed`` becomes a ``SlotPositionalEncoding`` (same table, identity forward) and its
    ``attn1``/``attn2`` get a processor reading that table. Layer indices follow the order given.
    """
    processors: list[StreamTemporalAttnProcessor] = []
    for block in transformer_blocks:
        table = block.pos_embed
        if table is None:
            raise ValueError("a motion-module transformer block without positional embeddings cannot stream")
        if not isinstance(table, SlotPositionalEncoding):
            old_table = table.get_buffer("pe")  # [1, max_length, dim]
            dim, max_length = old_table.shape[2], old_table.shape[1]
            slot_table = SlotPositionalEncoding(dim, max_seq_length=max_length).to(old_table.device, old_table.dtype)
            slot_table.table.copy_(old_table)
            block.pos_embed = slot_table
            table = slot_table
        for attn in (block.attn1, block.attn2):
            if attn is None:
                continue
            processor = StreamTemporalAttnProcessor(table, len(processors), context, backend)
            attn.set_processor(processor)
            processors.append(processor)
    return processors
