"""Benchmark of the streaming pipeline: the stream batch (one UNet call per frame) versus T sequential calls.

`vcam bench model --model tiny` runs the tiny random preset on the CPU (correctness of the path and the
ratios); `--model STYLE` loads a downloaded style (real FPS on a GPU); `--model sd15-random` (or any grid option)
runs the grid of cells of `vcam.bench.cells`: the real-size model with random weights, no download.
Reported per mode: ms per frame after
the warmup, the per-stage breakdown (encode, depth, UNet, decode), the measured latency in frames, the KV
cache size and the peak memory (CUDA allocator peak, or the process's peak RSS on the CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vcam.model.pipeline import StreamPipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="tiny", help="'tiny', 'sd15-random' (real size, random weights) or a downloaded style"
    )
    parser.add_argument("--t-index-list", metavar="I,J,..", help="denoising steps, e.g. 30,40 (default: the style's)")
    parser.add_argument(
        "--repeats", type=int, help="runs per mode (alternating) or per cell; medians (default 5, cells 1)"
    )
    parser.add_argument("--frames", type=int, default=24, help="frames timed after the warmup (default 24)")
    parser.add_argument("--size", metavar="WxH", help="model size (default 64x64 for tiny, 512x512 otherwise)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | float16 (default auto)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (real models on CUDA)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--config", help="config file (for --model STYLE; default: the user's config.toml)")
    grid = parser.add_argument_group(
        "grid of cells (--model sd15-random, or tiny with any of these): one JSON per size x T x dtype x mode"
    )
    grid.add_argument("--plan", default="grid", help="grid (every combination) | gpu (the one-call GPU plan)")
    grid.add_argument("--sizes", metavar="WxH,..", help="model sizes (default 512x512,512x288; tiny 64x64,64x32)")
    grid.add_argument("--steps", metavar="T,..", help="denoising steps T per cell (default 1,2,4)")
    grid.add_argument("--dtypes", metavar="D,..", help="float16,float32 (default float16 on CUDA, else float32)")
    grid.add_argument("--modes", metavar="M,..", help="eager,static,compiled,cudagraph,onnx (default eager)")
    grid.add_argument(
        "--only", metavar="CELL,..", help="run only these cells of the plan, e.g. 512x512-T2-float16-eager"
    )
    grid.add_argument(
        "--overlap", metavar="off,on", help="each cell without (off, the default) and/or with the encode overlap"
    )
    grid.add_argument("--vae", default="taesd", help="taesd (default) | kl (SD's full VAE)")
    grid.add_argument("--depth-every", type=int, default=1, help="depth on every N-th frame only (default 1)")
    grid.add_argument("--settle", type=int, default=2, help="untimed frames after the warmup (default 2)")
    grid.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    grid.add_argument(
        "--out", metavar="DIR", help="write each cell to DIR/cell-NAME.json (or a line of DIR.jsonl) when done"
    )


#: options that switch `vcam bench model --model tiny` to the grid of cells
GRID_OPTIONS = ("sizes", "steps", "dtypes", "modes", "only", "out", "overlap")


def wants_grid(args: argparse.Namespace) -> bool:
    from vcam.model.random_full import SD15_RANDOM_NAME

    return args.model == SD15_RANDOM_NAME or args.plan != "grid" or any(getattr(args, o) for o in GRID_OPTIONS)


def _build(args: argparse.Namespace, t_index_list: tuple[int, ...] | None) -> StreamPipeline:
    from vcam.commands.common import parse_size

    size = parse_size(args.size) if args.size else None
    if args.model == "tiny":
        from vcam.model.tiny import TINY_HEIGHT, TINY_T_INDEX_LIST, TINY_WIDTH, build_tiny_pipeline

        width, height = size or (TINY_WIDTH, TINY_HEIGHT)
        return build_tiny_pipeline(t_index_list=t_index_list or TINY_T_INDEX_LIST, width=width, height=height)
    from vcam.config import load_config
    from vcam.model.loading import load_stream_pipeline
    from vcam.store.store import resolve_style_paths
    from vcam.translators.live2diff import pipeline_spec

    config = load_config(args.config)
    overrides: dict[str, Any] = {"compile": bool(args.compile)}
    if size:
        overrides["width"], overrides["height"] = size
    if t_index_list:
        overrides["t_index_list"] = t_index_list
    spec = pipeline_spec(resolve_style_paths(args.model, config), **overrides)
    return load_stream_pipeline(spec, device=args.device, dtype=args.dtype)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vcam.errors import UserError

    t_index_list: tuple[int, ...] | None = None
    if args.t_index_list:
        try:
            t_index_list = tuple(int(part) for part in args.t_index_list.split(","))
        except ValueError:
            raise UserError(f"--t-index-list {args.t_index_list!r} must be integers separated by commas") from None
    if args.frames < 1:
        raise UserError(f"--frames {args.frames} must be 1 or more")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be 1 or more")
        torch.set_num_threads(args.threads)
    if args.repeats is not None and args.repeats < 1:
        raise UserError(f"--repeats {args.repeats} must be 1 or more")
    from vcam.bench.cells import measure_stream, median_run, run_cells

    if wants_grid(args):
        return run_cells(args)
    args.repeats = 5 if args.repeats is None else args.repeats
    base = _build(args, t_index_list)
    runs: dict[str, list[dict[str, Any]]] = {"pipelined": [], "sequential": []}
    for repeat in range(args.repeats):
        # alternate the order, so neither mode always runs first (allocator and cache warm-up)
        modes = ("pipelined", "sequential") if repeat % 2 == 0 else ("sequential", "pipelined")
        for mode in modes:
            pipeline = base.sibling(stream_batch=mode == "pipelined")
            runs[mode].append(measure_stream(pipeline, args.frames))
            pipeline.close()
    result_pipelined = median_run(runs["pipelined"])
    result_sequential = median_run(runs["sequential"])
    ratios = [
        s["ms_per_frame"] / p["ms_per_frame"] for p, s in zip(runs["pipelined"], runs["sequential"], strict=True)
    ]
    pipelined = base
    return {
        "model": args.model,
        "size": f"{pipelined.width}x{pipelined.height}",
        "t_index_list": list(pipelined.schedule.t_index_list),
        "steps": pipelined.num_steps,
        "device": str(pipelined.device),
        "dtype": str(pipelined.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "frames_timed": args.frames,
        "repeats": args.repeats,
        "pipelined": result_pipelined,
        "sequential": result_sequential,
        "speedup": round(statistics.median(ratios), 3),  # median of the per-repeat ratios
        "platform": platform.platform(),
    }
