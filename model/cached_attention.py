"""The attention of the stream step's one cached query: the plain kernels ("math") and a fused Triton kernel.

One query per spatial row attends to the ``window`` slots of its KV cache (K/V stored without PE, each slot's
PE key and value terms added at attention time, hidden slots masked) and, in the static step, to the new
frame's own row, which is not in the cache yet. Each kernel comes in two forms with one signature per form:
``*_cached_attention`` for the eager stream step (the new row already appended) and ``*_static_attention`` for
the static step (the cache read only; the PE additions of the query and the new row are part of the kernel).

The plain kernels launch one kernel per operation (matmuls, einsums for the PE terms, masked_fill, the new
row's score, cat, softmax, adds); on a GPU such tiny shapes (h*w rows x 8 heads x 40-160 channels against 16
slots) cost more in launches and memory round trips than in arithmetic. The fused kernel runs one program per
(block of rows, head): it loads the query and the block's slots as one ``[rows, slots, head_dim]`` tile of K
(and then of V), adds each slot's PE key and value terms, masks the hidden slots, takes one softmax over the
slots and the new row in registers (fp32, whatever the input dtype) and writes the output: one launch per
layer per batch entry. It runs on CUDA, or on any tensors under Triton's interpreter (``TRITON_INTERPRET=1``
set before triton is imported: slow, for tests on a CPU). It takes no host sync and no data-dependent Python
branch, so it can be captured in a CUDA graph. While torch.compile traces (inductor fuses the plain kernels
itself) or an export runs (the graph needs standard ops), ``can_run`` says no and the plain kernels run. The
kernel is untried on most GPUs: if it fails to compile or launch, the plain kernels run from then on and the
log says why once (``kernel_failure``).
triton is imported only when the kernel is first used.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: elements of a program's [rows, slots, head_dim] tile on a GPU: 8 rows x 16 slots x 64 (head_dim 40 padded),
#: 64 fp32 registers a thread at 4 warps; fewer rows for wider heads (4 at head_dim 80, 2 at 160)
TILE_ELEMENTS = 8192
INTERPRETER_BLOCK_ROWS = 64  # the interpreter's cost is per program, not per element
NUM_WARPS = 4
_failures: list[str] = []  # the compiled kernel's first error on this machine; the plain kernels run from then on


@functools.cache
def triton_available() -> bool:
    """True when triton imports (CUDA builds of torch on Linux ship it)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_on() -> bool:
    """True when Triton's interpreter is asked for (``TRITON_INTERPRET=1``): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tracing() -> bool:
    """True while torch.compile, TorchScript or the ONNX exporter traces: the plain ops are wanted there."""
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch.export (torch >= 2.6)
    return bool(
        torch.compiler.is_compiling()
        or (exporting is not None and exporting())
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )


def can_run(device: torch.device) -> bool:
    """True where the fused kernel runs: CUDA with triton, or any device under Triton's interpreter."""
    # tracing first: under torch.compile it is a constant, and nothing after it is traced
    return not tracing() and (device.type == "cuda" or interpreter_on()) and not _failures and triton_available()


def kernel_failure() -> str | None:
    """Why the fused kernel failed to compile or launch here (the plain kernels then run instead), or None."""
    return _failures[0] if _failures else None


def math_cached_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    pe_key: torch.Tensor,
    pe_value: torch.Tensor,
    valid: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Plain matmul-softmax over cached K/V plus per-slot PE terms, without materialising ``K + pe``.

    query ``[rows, heads, 1, d]`` (PE in), keys/values ``[rows, heads, window, d]`` (no PE), pe_key/pe_value
    ``[heads, window, d]``, valid ``[window]`` bool or None (all visible). Returns ``[rows, heads, 1, d]``.
    """
    # einsum for the PE terms: a broadcasting matmul against [heads, window, d] is ~15x slower on the CPU
    scores = torch.matmul(query, keys.transpose(-1, -2))  # [rows, heads, 1, window]
    scores = scores + torch.einsum("rhqd,hkd->rhqk", query, pe_key)  # [rows, heads, 1, window]
    scores = scores * scale
    if valid is not None:
        scores = scores.masked_fill(~valid, -math.inf)
    weights = scores.softmax(dim=-1)  # [rows, heads, 1, window]
    out = torch.matmul(weights, values)  # [rows, heads, 1, d]
    return out + torch.einsum("rhqk,hkd->rhqd", weights, pe_value)  # [rows, heads, 1, d]


def math_static_attention(
    query_raw: torch.Tensor,
    query_pe: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    new_key_raw: torch.Tensor,
    new_value_raw: torch.Tensor,
    pe_key: torch.Tensor,
    pe_value: torch.Tensor,
    visible: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query against the visible old slots plus the new row, in one softmax; the cache is only read.

    query_raw/new_key_raw/new_value_raw ``[rows, heads, 1, d]`` (no PE), query_pe ``[heads, d]``, keys/values
    ``[rows, heads, window, d]`` (no PE), pe_key/pe_value ``[heads, window + 1, d]`` (slot ``window``: the new
    row's PE terms), visible ``[window]`` bool (the old slots seen). Returns ``[rows, heads, 1, d]``.
    """
    window = keys.shape[2]
    query = query_raw + query_pe[None, :, None]  # [rows, heads, 1, d]
    new_key = new_key_raw + pe_key[None, :, window:]  # [rows, heads, 1, d]
    new_value = new_value_raw + pe_value[None, :, window:]  # [rows, heads, 1, d]
    scores = torch.matmul(query, keys.transpose(-1, -2))  # [rows, heads, 1, window]
    scores = scores + torch.einsum("rhqd,hkd->rhqk", query, pe_key[:, :window])  # [rows, heads, 1, window]
    scores = scores.masked_fill(~visible, -math.inf)  # [rows, heads, 1, window]
    new_score = (query * new_key).sum(dim=-1, keepdim=True)  # [rows, heads, 1, 1]
    weights = (torch.cat([scores, new_score], dim=-1) * scale).softmax(dim=-1)  # [rows, heads, 1, window + 1]
    old_weights = weights[..., :-1]  # [rows, heads, 1, window]
    out = torch.matmul(old_weights, values)  # [rows, heads, 1, d]
    out = out + torch.einsum("rhqk,hkd->rhqd", old_weights, pe_value[:, :window])  # [rows, heads, 1, d]
    return out + weights[..., -1:] * new_value  # [rows, heads, 1, d]


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[misc]
    def cached_attention_kernel(  # type: ignore[no-untyped-def]  # triton reads the annotations
        q_ptr,  # [rows, heads, d]
        q_pe_ptr,  # [heads, d] (HAS_QUERY_PE)
        k_ptr,  # [rows, heads, window, d]
        v_ptr,  # [rows, heads, window, d]
        pe_k_ptr,  # [heads, window (+1 with HAS_NEW), d]
        pe_v_ptr,  # [heads, window (+1 with HAS_NEW), d]
        mask_ptr,  # [window] bool (HAS_MASK)
        new_k_ptr,  # [rows, heads, d] (HAS_NEW)
        new_v_ptr,  # [rows, heads, d] (HAS_NEW)
        out_ptr,  # [rows, heads, d]
        rows,
        scale,
        stride_q_r,
        stride_q_h,
        stride_qpe_h,
        stride_k_r,
        stride_k_h,
        stride_k_s,
        stride_v_r,
        stride_v_h,
        stride_v_s,
        stride_pek_h,
        stride_pek_s,
        stride_pev_h,
        stride_pev_s,
        stride_nk_r,
        stride_nk_h,
        stride_nv_r,
        stride_nv_h,
        stride_o_r,
        stride_o_h,
        WINDOW: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_D: tl.constexpr,
        HAS_QUERY_PE: tl.constexpr,
        HAS_MASK: tl.constexpr,
        HAS_NEW: tl.constexpr,
    ):
        head = tl.program_id(1)
        row = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [R]
        slot = tl.arange(0, BLOCK_S)  # [S]
        dim = tl.arange(0, BLOCK_D)  # [D]; the last dimension of every tensor is contiguous
        row_ok = row < rows
        slot_ok = slot < WINDOW
        dim_ok = dim < HEAD_DIM
        tile_ok = row_ok[:, None] & dim_ok[None, :]  # [R, D]
        cube_ok = row_ok[:, None, None] & slot_ok[None, :, None] & dim_ok[None, None, :]  # [R, S, D]
        plane_ok = slot_ok[:, None] & dim_ok[None, :]  # [S, D]
        # 1. the query, PE in, pre-scaled
        query = tl.load(q_ptr + row[:, None] * stride_q_r + head * stride_q_h + dim[None, :], mask=tile_ok, other=0.0)
        query = query.to(tl.float32)  # [R, D]
        if HAS_QUERY_PE:
            query_pe = tl.load(q_pe_ptr + head * stride_qpe_h + dim, mask=dim_ok, other=0.0)  # [D]
            query = query + query_pe.to(tl.float32)[None, :]
        query = query * scale
        # 2. scores of the cached slots: K + PE key term, hidden and padding slots at -inf
        k_offsets = row[:, None, None] * stride_k_r + slot[None, :, None] * stride_k_s + dim[None, None, :]
        keys = tl.load(k_ptr + head * stride_k_h + k_offsets, mask=cube_ok, other=0.0).to(tl.float32)  # [R, S, D]
        pe_offsets = slot[:, None] * stride_pek_s + dim[None, :]  # [S, D]
        key_pe = tl.load(pe_k_ptr + head * stride_pek_h + pe_offsets, mask=plane_ok, other=0.0).to(tl.float32)
        scores = tl.sum(query[:, None, :] * (keys + key_pe[None, :, :]), axis=2)  # [R, S]
        seen = slot_ok
        if HAS_MASK:
            seen = seen & (tl.load(mask_ptr + slot, mask=slot_ok, other=0).to(tl.int32) != 0)  # [S]
        scores = tl.where(seen[None, :], scores, float("-inf"))
        top = tl.max(scores, axis=1)  # [R]
        # 3. the new frame's own row (static step): its score joins the same softmax
        if HAS_NEW:
            new_k_tile = new_k_ptr + row[:, None] * stride_nk_r + head * stride_nk_h + dim[None, :]  # [R, D]
            new_key = tl.load(new_k_tile, mask=tile_ok, other=0.0)  # 0 in the padding: it joins a dot product
            new_key_pe = tl.load(pe_k_ptr + head * stride_pek_h + WINDOW * stride_pek_s + dim, mask=dim_ok, other=0.0)
            new_score = tl.sum(query * (new_key.to(tl.float32) + new_key_pe.to(tl.float32)[None, :]), axis=1)  # [R]
            top = tl.maximum(top, new_score)
        # 4. softmax weights (fp32) and the weighted sum of V + PE value term
        weights = tl.exp(scores - top[:, None])  # [R, S]; 0 where hidden
        total = tl.sum(weights, axis=1)  # [R]
        v_offsets = row[:, None, None] * stride_v_r + slot[None, :, None] * stride_v_s + dim[None, None, :]
        values = tl.load(v_ptr + head * stride_v_h + v_offsets, mask=cube_ok, other=0.0).to(tl.float32)  # [R, S, D]
        pe_offsets = slot[:, None] * stride_pev_s + dim[None, :]  # [S, D]
        value_pe = tl.load(pe_v_ptr + head * stride_pev_h + pe_offsets, mask=plane_ok, other=0.0).to(tl.float32)
        out = tl.sum(weights[:, :, None] * (values + value_pe[None, :, :]), axis=1)  # [R, D]
        if HAS_NEW:
            new_weight = tl.exp(new_score - top)  # [R]
            new_v_tile = new_v_ptr + row[:, None] * stride_nv_r + head * stride_nv_h + dim[None, :]  # [R, D]
            new_value = tl.load(new_v_tile, mask=tile_ok, other=0.0)
            new_value_pe = tl.load(
                pe_v_ptr + head * stride_pev_h + WINDOW * stride_pev_s + dim, mask=dim_ok, other=0.0
            )
            out += new_weight[:, None] * (new_value.to(tl.float32) + new_value_pe.to(tl.float32)[None, :])
            total += new_weight
        out = out / total[:, None]  # [R, D]
        out_tile = out_ptr + row[:, None] * stride_o_r + head * stride_o_h + dim[None, :]
        tl.store(out_tile, out.to(out_ptr.dtype.element_ty), mask=tile_ok)

    return cached_attention_kernel


def _fall_back(error: Exception) -> None:
    """The kernel is untried on most GPUs: a compile or launch error makes the plain kernels run from now on,
    said once in the log (and by ``kernel_failure``) rather than stopping the camera. Not under the interpreter,
    where the tests must see the error."""
    if interpreter_on():
        raise error
    _failures.append(f"{type(error).__name__}: {error}")
    logger.warning("the fused attention kernel failed (%s); using the plain kernels from now on", _failures[0])


def _check_last_dim(**tensors: torch.Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape[-1] > 1 and tensor.stride(-1) != 1:
            raise ValueError(f"fused attention needs {name} contiguous in its last dimension, got {tensor.stride()}")


def _launch(
    query: torch.Tensor,
    query_pe: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    pe_key: torch.Tensor,
    pe_value: torch.Tensor,
    visible: torch.Tensor | None,
    new_key: torch.Tensor | None,
    new_value: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    import triton

    rows, heads, window, head_dim = keys.shape
    out = torch.empty(rows, 1, heads, head_dim, device=query.device, dtype=query.dtype)  # [rows, 1, heads, d]
    q = query[:, :, 0]  # [rows, heads, d]
    new_k = q if new_key is None else new_key[:, :, 0]  # [rows, heads, d]; q: a placeholder, never read
    new_v = q if new_value is None else new_value[:, :, 0]  # [rows, heads, d]
    q_pe = q[0] if query_pe is None else query_pe  # [heads, d]
    block_slots, block_dim = triton.next_power_of_2(window), triton.next_power_of_2(head_dim)
    block_rows = INTERPRETER_BLOCK_ROWS if interpreter_on() else max(1, TILE_ELEMENTS // (block_slots * block_dim))
    grid = (triton.cdiv(rows, block_rows), heads)
    _kernel()[grid](
        q,
        q_pe,
        keys,
        values,
        pe_key,
        pe_value,
        q if visible is None else visible,
        new_k,
        new_v,
        out,
        rows,
        scale,
        q.stride(0),
        q.stride(1),
        q_pe.stride(0),
        *keys.stride()[:3],
        *values.stride()[:3],
        *pe_key.stride()[:2],
        *pe_value.stride()[:2],
        *new_k.stride()[:2],
        *new_v.stride()[:2],
        out.stride(0),
        out.stride(2),
        WINDOW=window,
        HEAD_DIM=head_dim,
        BLOCK_R=block_rows,
        BLOCK_S=block_slots,
        BLOCK_D=block_dim,
        HAS_QUERY_PE=query_pe is not None,
        HAS_MASK=visible is not None,
        HAS_NEW=new_key is not None,
        num_warps=NUM_WARPS,
    )
    return out.transpose(1, 2)  # [rows, heads, 1, d]


def fused_cached_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    pe_key: torch.Tensor,
    pe_value: torch.Tensor,
    valid: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """``math_cached_attention`` in one launch: the eager stream step's query against its (already written) cache.

    query ``[rows, heads, 1, d]`` (PE in), keys/values ``[rows, heads, window, d]`` (no PE), pe_key/pe_value
    ``[heads, window, d]``, valid ``[window]`` bool or None (all visible). Returns ``[rows, heads, 1, d]``.
    """
    _check_last_dim(query=query, keys=keys, values=values, pe_key=pe_key, pe_value=pe_value)
    if not _failures:
        try:
            return _launch(query, None, keys, values, pe_key, pe_value, valid, None, None, scale)
        except Exception as error:  # a compile or launch error on an untried GPU
            _fall_back(error)
    return math_cached_attention(query, keys, values, pe_key, pe_value, valid, scale)


def fused_static_attention(
    query_raw: torch.Tensor,
    query_pe: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    new_key_raw: torch.Tensor,
    new_value_raw: torch.Tensor,
    pe_key: torch.Tensor,
    pe_value: torch.Tensor,
    visible: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``math_static_attention`` in one launch.

    query_raw/new_key_raw/new_value_raw ``[rows, heads, 1, d]`` (no PE), query_pe ``[heads, d]``, keys/values
    ``[rows, heads, window, d]`` (read only), pe_key/pe_value ``[heads, window + 1, d]`` (slot ``window``: the
    new row's PE terms), visible ``[window]`` bool (the old slots seen). Returns ``[rows, heads, 1, d]``.
    """
    _check_last_dim(query=query_raw, query_pe=query_pe, keys=keys, values=values, pe_key=pe_key, pe_value=pe_value)
    _check_last_dim(new_key=new_key_raw, new_value=new_value_raw)
    args = (query_raw, query_pe, keys, values, new_key_raw, new_value_raw, pe_key, pe_value, visible)
    if not _failures:
        try:
            return _launch(
                query_raw, query_pe, keys, values, pe_key, pe_value, visible, new_key_raw, new_value_raw, scale
            )
        except Exception as error:  # a compile or launch error on an untried GPU
            _fall_back(error)
    return math_static_attention(*args, scale)
