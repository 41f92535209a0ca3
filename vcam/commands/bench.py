"""`vcam bench TARGET`: benchmarks that print JSON (figures for the README)."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

#: target -> module under vcam/bench/ with add_arguments(parser) and run(args) -> dict
TARGETS = {
    "runtime": "frame loop overhead and output pacing (demo source, passthrough)",
    "latency": "capture-to-send latency, content fps and stage times of a style (demo source), audio delay to set",
    "unet": "streaming UNet: KV cache vs full-window recompute; cached attention: plain vs SDPA vs fused (CUDA)",
    "model": "streaming pipeline: pipelined vs sequential steps, per-stage breakdown",
    "segment": "segmentation and compositing per mode at 1280x720",
    "lora": "style LoRA on a shared base: fused copy vs PEFT adapter, per UNet call",
    "classic": "classic looks: warp error with and without temporal state, on a photograph clip",
    "preview": "preview streams: the rate ffprobe reports, how far behind live a timestamp-paced player settles",
    "serve": "remote server engine: 1/2/4 clients, one stacked UNet call per tick vs one per client",
    "onnx": "one UNet stream step: PyTorch (reference, static step) vs onnxruntime, alternating",
    "switch": "style loads: the longest output gap while a diffusion style loads, at start-up and on a switch",
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print JSON")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, text in TARGETS.items():
        target = targets.add_parser(name, help=text, description=text)
        module = importlib.import_module(f"vcam.bench.{name}")
        module.add_arguments(target)
        target.set_defaults(handler=run, bench_module=f"vcam.bench.{name}")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args.bench_module)
    result = module.run(args)
    print(json.dumps(result, indent=2))
    return 0
