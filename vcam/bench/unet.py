"""``vcam bench unet``: what the KV cache buys, on a small random StreamUNet (no download).

Two measurements, printed as JSON by the CLI:

1. Per latent size: ms per new frame streaming with the KV cache (one UNet call on one frame) versus
   recomputing the whole 16-frame window through the UNet for every new frame (what a bi-directional
   AnimateDiff needs), their ratio, and the cache's memory per denoising step.
2. The cached temporal attention of one SD1.5-sized layer (8 heads x 40 channels, h*w rows, 1 query against
   16 slots) with the plain matmul-softmax path versus SDPA: the whole layer (q/k/v/out projections, cache
   write, attention) and the kernel alone (attention over the cache with the per-slot PE terms), in steady
   state (all slots visible) and while the ring fills (masked slots); and the warmup layer (8 frames x 8).

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


def _attention_rows(
    args: argparse.Namespace, device: Any, dtype: Any, sync: Callable[[], None]
) -> list[dict[str, Any]]:
    import torch
    from diffusers.models.attention_processor import Attention

    from vcam.model.stream_attention import (
        KVCache,
        SlotPositionalEncoding,
        StreamContext,
        StreamTemporalAttnProcessor,
    )

    dim, heads = 320, 8  # SD1.5's first level: 8 heads x 40 channels
    torch.manual_seed(args.seed)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False).to(device, dtype).eval()
    table = SlotPositionalEncoding(dim, 24).to(device, dtype)
    results = []
    for rows in args.attention_rows:
        # "filling": 1 frame streamed before, then 1 + 5 timed appends: the ring (8 slots) never fills.
        for state, streamed, repeats in (("steady", 20, args.attention_repeats), ("filling", 1, 5)):
            row: dict[str, Any] = {"rows": rows, "heads": heads, "head_dim": dim // heads, "state": state}
            for backend in ("math", "sdpa"):
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
                row[f"{backend}_layer_ms"] = round(layer_ms, 3)
                row[f"{backend}_kernel_ms"] = round(kernel_ms, 3)
            row["sdpa_over_math_layer"] = round(row["sdpa_layer_ms"] / row["math_layer_ms"], 2)
            row["sdpa_over_math_kernel"] = round(row["sdpa_kernel_ms"] / row["math_kernel_ms"], 2)
            results.append(row)
        warm_row: dict[str, Any] = {"rows": rows, "heads": heads, "head_dim": dim // heads, "state": "warmup 8x8"}
        warm_frames = torch.randn(rows, 8, dim, device=device, dtype=dtype)  # [rows, 8, C]
        for backend in ("math", "sdpa"):
            attn.set_processor(StreamTemporalAttnProcessor(table, 0, StreamContext(), backend))
            with torch.no_grad():
                warm_ms = _best_ms(functools.partial(attn, warm_frames), args.attention_repeats, sync)
            warm_row[f"{backend}_layer_ms"] = round(warm_ms, 3)
        warm_row["sdpa_over_math_layer"] = round(warm_row["sdpa_layer_ms"] / warm_row["math_layer_ms"], 2)
        results.append(warm_row)
        logger.info("attention bench rows=%d done", rows)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict."""
    import torch

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
    unet_rows = _unet_rows(args, device, dtype, sync)
    attention_rows = _attention_rows(args, device, dtype, sync)
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
