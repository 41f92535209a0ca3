"""`vcam bench onnx`: one stream step of the UNet in PyTorch (reference and static step) and in onnxruntime.

The three run alternately on the same inputs and caches (warmed up with 8 frames), so a loaded machine slows
them alike; reported: the median ms per call of each, the ratios, the providers onnxruntime took and the
export time (0 when the graph was already in the cache folder). `--model tiny` or `--model sd15-random` (the
real-size UNet with random weights).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from vcam.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="tiny | sd15-random (default tiny)")
    parser.add_argument("--size", default=None, help="model size WxH (default 64x64 tiny, 512x288 sd15-random)")
    parser.add_argument("--steps", type=int, default=1, help="stream batch T (default 1)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per path, alternating (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vcam.commands.common import parse_size
    from vcam.model.random_full import SD15_RANDOM_NAME, build_random_full_models
    from vcam.model.step_backends import attach_step_backend, detach_step_backend, make_step_backend
    from vcam.model.unet import tiny_stream_unet
    from vcam.paths import cache_dir

    if args.model not in ("tiny", SD15_RANDOM_NAME):
        raise UserError(f"--model {args.model!r} is not tiny or {SD15_RANDOM_NAME}")
    if not 1 <= args.steps <= 4 or args.calls < 1:
        raise UserError(f"--steps {args.steps} must be 1 to 4 and --calls {args.calls} 1 or more")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    width, height = parse_size(args.size or ("64x64" if args.model == "tiny" else "512x288"))
    unet = tiny_stream_unet() if args.model == "tiny" else build_random_full_models("cpu", vaes=()).unet
    batch, h, w = args.steps, height // 8, width // 8
    generator = torch.Generator().manual_seed(0)
    dim = int(unet.config["cross_attention_dim"])
    embeds = torch.randn(1, 77, dim, generator=generator)  # [1, 77, d]
    caches = unet.create_caches(batch)
    with torch.inference_mode():
        for step in range(batch):
            warm = torch.randn(8, 4, h, w, generator=generator)  # [8, 4, h, w]
            unet.warmup(warm, 500, embeds, torch.randn(8, 4, h, w, generator=generator), caches, step)
    sample = torch.randn(batch, 4, h, w, generator=generator)  # [B, 4, h, w]
    depth = torch.randn(batch, 4, h, w, generator=generator)  # [B, 4, h, w]
    timesteps = torch.full((batch,), 400, dtype=torch.long)
    steps = list(range(batch))
    times: dict[str, list[float]] = {"torch": [], "static": [], "onnx": []}
    with torch.inference_mode():
        # the onnx backend exports on the third call of a batch size: two untimed calls, then the export
        onnx = attach_step_backend(unet, "onnx", onnx_cache_dir=cache_dir() / "onnx")
        for _ in range(2):
            unet.stream(sample, timesteps, embeds, depth, caches, steps)
        started = time.perf_counter()
        unet.stream(sample, timesteps, embeds, depth, caches, steps)
        export_seconds = time.perf_counter() - started
        providers: list[list[str]] = onnx.providers_used  # type: ignore[attr-defined]
        backends = {"torch": None, "static": make_step_backend("static"), "onnx": onnx}
        for _ in range(args.calls):
            for name, backend in backends.items():
                unet.step_backend = backend  # the same objects every time: no new export or session
                started = time.perf_counter()
                unet.stream(sample, timesteps, embeds, depth, caches, steps)
                times[name].append(1000.0 * (time.perf_counter() - started))
        unet.step_backend = onnx
        detach_step_backend(unet)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    return {
        "benchmark": "onnx",
        "model": args.model,
        "size": f"{width}x{height}",
        "steps": batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "calls": args.calls,
        "median_ms": medians,
        "onnx_over_torch": round(medians["onnx"] / medians["torch"], 3),
        "static_over_torch": round(medians["static"] / medians["torch"], 3),
        "first_onnx_call_s": round(export_seconds, 1),
        "providers": providers,
        "ms_runs": {name: [round(value, 1) for value in values] for name, values in times.items()},
    }
