"""Benchmark of a style LoRA on a shared base: fused into a copy of the UNet versus a PEFT adapter.

A fused copy computes exactly what the plain UNet computes (the LoRA delta is added to the weights),
so its cost per call is the plain UNet's; a PEFT adapter adds two small matmuls per adapted layer
on every call. Tiny random `StreamUNet`, one 2-entry stream-batch call; repeats alternate the order.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per run (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant, alternating; medians (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig

    from vcam.errors import UserError
    from vcam.model.unet import tiny_stream_unet

    for name in ("rank", "calls", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)} must be 1 or more")
    torch.set_num_threads(args.threads)
    fused = tiny_stream_unet(seed=0)  # stands for the fused copy: same graph as the plain UNet
    adapted = tiny_stream_unet(seed=0)
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.rank,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        init_lora_weights="gaussian",
    )
    adapted.unet.add_adapter(lora, adapter_name="style")
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator)  # [entries, c, h, w]: a 2-step stream batch
    text = torch.randn(2, 77, fused.unet.config.cross_attention_dim, generator=generator)  # [entries, 77, d]
    timesteps = torch.tensor([399, 199])

    def time_calls(unet: Any) -> float:
        caches = unet.create_caches(2)
        with torch.inference_mode():
            unet.stream(sample, timesteps, text, None, caches, steps=[0, 1])  # untimed first call
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                unet.stream(sample, timesteps, text, None, caches, steps=[0, 1])
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    runs: dict[str, list[float]] = {"fused": [], "adapter": []}
    for repeat in range(args.repeats):
        order = (("fused", fused), ("adapter", adapted))
        for name, unet in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(time_calls(unet))
    fused_ms, adapter_ms = statistics.median(runs["fused"]), statistics.median(runs["adapter"])
    return {
        "benchmark": "lora",
        "model": "tiny_stream_unet (random weights), one 2-entry stream call",
        "rank": args.rank,
        "threads": args.threads,
        "repeats": args.repeats,
        "fused_copy_ms_per_call": round(fused_ms, 3),
        "peft_adapter_ms_per_call": round(adapter_ms, 3),
        "adapter_over_fused": round(adapter_ms / fused_ms, 3),
    }
