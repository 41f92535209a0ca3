"""``vcam bench unet``: what the KV cache buys, on a small random StreamUNet (no download).

Two measurements, printed as JSON by the CLI:

1. Per latent size: ms per new frame streaming with the KV cache (one UNet call on one frame) versus
   recomputing the whole 16-frame window through the UNet for every new frame (what a bi-directional
   AnimateDiff needs), their ratio, and the cache's memory per denoising step.
2. The cached temporal attention of one SD1.5-sized layer (8 heads x 40 channels, h*w rows, 1 query against
   16 slots; ``--attention-shapes`` for other levels) with the plain matmul-softmax path versus SDPA, and the
   fused Triton kernel where it runs (CUDA with triton): the whole layer (q/k/v/out projections, cache write,
   attention), the kernel alone (attention over the cache with the per-slot PE terms) and the static step's
   kernel (the new row joins the softmax; what the CUDA graph replays), in steady state (all slots visible)
   and while the ring fills (masked slots); and the warmup layer (8 frames x 8). ``--out FILE.jsonl`` appends
   each attention row the moment it is measured (``benchmarks/gpu.sh`` reads them).

Times are the fastest of the repeats (this runs on shared machines), in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import logging
import platform
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vcam bench unet``."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32], help="latent sizes (image = 8x)")
    parser.add_argument("--frames", type=int, default=6, help="timed streamed frames per size")
    parser.add_argument("--recompute-repeats", type=int, default=2, help="timed 16-frame window recomputes")
    parser.add_argument("--attention-rows", type=int, nargs="+", default=[1024, 4096], help="h*w of the layer")
    parser.add_argument(
        "--attention-shapes",
        nargs="+",
        metavar="ROWSxCHANNELS",
        help="layers as h*w x channels (8 heads), instead of --attention-rows at 320 channels; SD1.5 at 512x512: "
        "4096x320 1024x640 256x1280 64x1280",
    )
    parser.add_argument("--attention-only", action="store_true", help="skip the streaming UNet part")
    parser.add_argument("--out", metavar="FILE.jsonl", help="append each attention row to FILE.jsonl when measured")
    parser.add_argument("--attention-repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 on cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)


def _best_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """The fastest of ``repeats`` timed calls after one untimed call (the least disturbed on a shared machine)."""
    fn()  # warm-up call: allocations, kernel selection
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return min(times)


def _unet_rows(args: argparse.Namespace, device: Any, dtype: Any, sync: Callable[[], None]) -> list[dict[str, Any]]:
    import torch

    from vcam.model.unet import tiny_stream_unet

    unet = torch.nn.Module.to(tiny_stream_unet(args.seed), device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for size in args.sizes:
        prompt = torch.randn(1, 77, unet.config["cross_attention_dim"], generator=generator).to(device, dtype)
        warm = torch.randn(8, 4, size, size, generator=generator).to(device, dtype)  # [8, 4, h, w]
        frame = torch.randn(1, 4, size, size, generator=generator).to(device, dtype)  # [1, 4, h, w]
        window = torch.randn(1, 4, 16, size, size, generator=generator).to(device, dtype)  # [1, 4, 16, h, w]
        timestep = torch.tensor([500], device=device)
        caches = unet.create_caches(1)
        with torch.no_grad():
            unet.warmup(warm, 500, prompt, None, caches, 0)
            stream_one = functools.partial(unet.stream, frame, timestep, prompt, None, caches, [0])
            cached_ms = _best_ms(stream_one, args.frames, sync)
            recompute = functools.partial(unet, window, timestep, prompt.expand(16, -1, -1))
            recompute_ms = _best_ms(recompute, args.recompute_repeats, sync)
        cache_bytes = caches.nbytes()
        rows.append(
            {
                "latent": size,
                "image_px": size * 8,
                "cached_ms_per_frame": round(cached_ms, 2),
                "recompute_window_ms_per_frame": round(recompute_ms, 2),
                "speedup": round(recompute_ms / cached_ms, 2),
                "cache_bytes_per_step": cache_bytes,
                "cache_mib_per_step": round(cache_bytes / 2**20, 3),
            }
        )
        logger.info("unet bench %s", rows[-1])
    return rows


def _attention_shapes(args: argparse.Namespace) -> list[tuple[int, int]]:
    from vcam.errors import UserError

    if not args.attention_shapes:
        return [(rows, 320) for rows in args.attention_rows]
    shapes = []
    for text in args.attention_shapes:
        rows, _, channels = text.partition("x")
        if not (rows.isdigit() and channels.isdigit() and int(rows) > 0 and int(channels) % 8 == 0 < int(channels)):
            raise UserError(
                f"--attention-shapes {text!r} is not ROWSxCHANNELS with channels a multiple of 8 (4096x320)"
            )
        shapes.append((int(rows), int(channels)))
    return shapes


def _attention_rows(
    args: argparse.Namespace, shapes: list[tuple[int, int]], device: Any, dtype: Any, sync: Callable[[], None]
) -> list[dict[str, Any]]:
    import torch
    from diffusers.models.attention_processor import Attention

    from vcam.model import cached_attention
    from vcam.model.stream_attention import (
        KVCache,
        SlotPositionalEncoding,
        StreamContext,
        StreamTemporalAttnProcessor,
        resolve_backend,
        static_step_layout,
    )

    heads = 8  # SD1.5's motion modules: 8 heads at every level (40, 80, 160 channels each)
    cached_backends = ["math", "sdpa"] + (["fused"] if resolve_backend("fused", device) == "fused" else [])
    results: list[dict[str, Any]] = []
    for rows, dim in shapes:
        torch.manual_seed(args.seed)
        attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False).to(device, dtype).eval()
        table = SlotPositionalEncoding(dim, 24).to(device, dtype)
        # "filling": 1 frame streamed before, then 1 + 5 timed appends: the ring (8 slots) never fills.
        for state, streamed, repeats in (("steady", 20, args.attention_repeats), ("filling", 1, 5)):
            row: dict[str, Any] = {"rows": rows, "heads": heads, "head_dim": dim // heads, "state": state}
            for backend in cached_backends:
                context = StreamContext()
                processor = StreamTemporalAttnProcessor(table, 0, context, backend)
                attn.set_processor(processor)
                cache = KVCache()
                with torch.no_grad():
                    context.mode, context.entry_caches = "warmup", [[cache]]
                    attn(torch.randn(rows, 8, dim, device=device, dtype=dtype))
                    context.mode = "stream"
                    for _ in range(streamed):
                        attn(torch.randn(rows, 1, dim, device=device, dtype=dtype))
                    frame = torch.randn(rows, 1, dim, device=device, dtype=dtype)  # [rows, 1, C]
                    layer_ms = _best_ms(functools.partial(attn, frame), repeats, sync)
                    query = torch.randn(rows, heads, 1, dim // heads, device=device, dtype=dtype)
                    kernel = functools.partial(processor._cached_attention, attn, query, cache, backend)
                    kernel_ms = _best_ms(kernel, args.attention_repeats, sync)
                    if backend != "sdpa":  # the static step's kernel, same cache state
                        _, _, visible, _ = static_step_layout([[cache]])
                        static_args = _static_kernel_args(cache, query, visible.to(device))
                        static_kernel = getattr(cached_attention, f"{backend}_static_attention")
                        static_ms = _best_ms(functools.partial(static_kernel, *static_args), repeats, sync)
                        row[f"{backend}_static_kernel_ms"] = round(static_ms, 3)
                row[f"{backend}_layer_ms"] = round(layer_ms, 3)
                row[f"{backend}_kernel_ms"] = round(kernel_ms, 3)
            for backend in cached_backends[1:]:
                row[f"{backend}_over_math_layer"] = round(row[f"{backend}_layer_ms"] / row["math_layer_ms"], 2)
                row[f"{backend}_over_math_kernel"] = round(row[f"{backend}_kernel_ms"] / row["math_kernel_ms"], 2)
            if "fused" in cached_backends:
                row["fused_over_math_static_kernel"] = round(
                    row["fused_static_kernel_ms"] / row["math_static_kernel_ms"], 2
                )
                row["fused_failure"] = cached_attention.kernel_failure()  # not None: "fused" timed the plain path
            _emit(args, row, results)
        warm_row: dict[str, Any] = {"rows": rows, "heads": heads, "head_dim": dim // heads, "state": "warmup 8x8"}
        warm_frames = torch.randn(rows, 8, dim, device=device, dtype=dtype)  # [rows, 8, C]
        for backend in ("math", "sdpa"):
            attn.set_processor(StreamTemporalAttnProcessor(table, 0, StreamContext(), backend))
            with torch.no_grad():
                warm_ms = _best_ms(functools.partial(attn, warm_frames), args.attention_repeats, sync)
            warm_row[f"{backend}_layer_ms"] = round(warm_ms, 3)
        warm_row["sdpa_over_math_layer"] = round(warm_row["sdpa_layer_ms"] / warm_row["math_layer_ms"], 2)
        _emit(args, warm_row, results)
        logger.info("attention bench rows=%d channels=%d done", rows, dim)
    return results


def _static_kernel_args(cache: Any, query: Any, visible: Any) -> tuple[Any, ...]:
    """Inputs of ``*_static_attention`` over ``cache`` (the new row: random, PE terms: random, fixed seed)."""
    import torch

    kv = cache.kv  # [2, rows, heads, window, d]
    _, _, heads, window, head_dim = kv.shape
    generator = torch.Generator().manual_seed(1)
    pe = torch.randn(3, heads, window + 1, head_dim, generator=generator).to(kv.device, kv.dtype)  # [q/k/v, ...]
    new_rows = torch.randn(2, *query.shape, generator=generator).to(kv.device, kv.dtype)  # [2, rows, heads, 1, d]
    return query, pe[0, :, 0], kv[0], kv[1], new_rows[0], new_rows[1], pe[1], pe[2], visible, head_dim**-0.5


def _emit(args: argparse.Namespace, row: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Keep the row, and append it to ``--out`` now (a run stopped later still leaves it)."""
    import json
    from pathlib import Path

    results.append(row)
    if args.out:
        with Path(args.out).open("a", encoding="utf-8") as lines:
            lines.write(json.dumps({"benchmark": "unet-attention", "device": args.device, **row}) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict."""
    import torch

    shapes = _attention_shapes(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from vcam.errors import UserError

        raise UserError(f"--device {args.device} was asked but torch sees no CUDA GPU: use --device cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    started = time.perf_counter()
    unet_rows = [] if args.attention_only else _unet_rows(args, device, dtype, sync)
    attention_rows = _attention_rows(args, shapes, device, dtype, sync)
    return {
        "benchmark": "unet",
        "model": "tiny_stream_unet (random weights)",
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "window_frames": 16,
        "unet": unet_rows,
        "cached_attention": attention_rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
