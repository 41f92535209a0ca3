"""The grid benchmark of `vcam bench model`: one JSON "cell" per size x T x dtype x mode, written as soon as done.

`vcam bench model --model sd15-random` builds the whole pipeline at real size with random weights (no file is
read) and times each cell: warmup (8 frames), `--settle` untimed frames (the ring and the batch filling, and
the compilation of a compiled mode), then `--frames` timed frames. A cell reports ms per frame end to end, FPS,
the per-stage breakdown (encode, depth, UNet, decode), the measured latency in frames, the KV cache's size and
the peak memory (the CUDA allocator's peak during the cell, weights included; on a CPU the process's peak RSS,
which only grows). `--out DIR` writes each cell to `DIR/cell-<name>.json` the moment it is done (`--out
FILE.jsonl` appends one line per cell instead), so a run that is stopped still leaves every finished cell
behind. `--plan gpu` is the one-call GPU plan in priority order: fp16 eager for every size and T, then compiled
at each size with T=2, then fp32 eager once.

Modes: "eager" (the reference path), "static" (the tensor-only stream step, eager), "compiled" (`torch.compile`
of the UNet over the static stream step), "cudagraph" (the static stream step captured as a CUDA graph per batch
composition; CUDA only) and "onnx" (the stream step as an ONNX graph run by onnxruntime, see
`vcam.model.onnx_step`). `--overlap off,on` times each cell without and with the encode overlap
(`vcam.model.overlap`: the next frame's encode and depth on a side CUDA stream during the UNet call; cells named
`...-overlap`). On CUDA the per-stage breakdown is device time from CUDA events (`stage_timing`; no host sync
inside a frame, with or without overlap), on a CPU wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.errors import UserError

if TYPE_CHECKING:
    from vcam.model.pipeline import StreamPipeline

log = logging.getLogger(__name__)

CELL_MODES = ("eager", "static", "compiled", "cudagraph", "onnx")
CELL_DTYPES = ("float16", "float32")
PLANS = ("grid", "gpu")
#: `--overlap`: each cell without ("off") and/or with ("on") the encode overlap
CELL_OVERLAPS = ("off", "on")
GPU_PLAN_SIZES = ((512, 512), (512, 288))
GPU_PLAN_STEPS = (1, 2, 4)
#: the stream batch the compiled cells and the single fp32 cell of the GPU plan use
PLAN_COMPILED_STEPS = 2


@dataclass(frozen=True)
class Cell:
    """One measurement: a model size, T denoising steps, a dtype and a mode."""

    width: int
    height: int
    steps: int
    dtype: str
    mode: str
    overlap: bool = False

    @property
    def name(self) -> str:
        suffix = "-overlap" if self.overlap else ""
        return f"{self.width}x{self.height}-T{self.steps}-{self.dtype}-{self.mode}{suffix}"


def parse_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"--{what} {text!r} is empty: give a comma-separated list")
    return items


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in parse_list(text, "sizes"):
        match = re.fullmatch(r"(\d+)[xX](\d+)", item)
        if not match:
            raise UserError(f"--sizes: {item!r} is not WIDTHxHEIGHT, e.g. 512x288")
        width, height = int(match.group(1)), int(match.group(2))
        if width % 8 or height % 8 or width < 8 or height < 8:
            raise UserError(f"--sizes: {item} is not a positive multiple of 8 on both sides, e.g. 512x288")
        sizes.append((width, height))
    return sizes


def parse_steps(text: str) -> list[int]:
    from vcam.model.random_full import T_INDEX_LISTS

    steps = []
    for item in parse_list(text, "steps"):
        if not item.isdigit() or int(item) not in T_INDEX_LISTS:
            raise UserError(f"--steps: {item!r} is not one of {sorted(T_INDEX_LISTS)} (denoising steps T)")
        steps.append(int(item))
    return steps


def parse_choices(text: str, what: str, allowed: tuple[str, ...]) -> list[str]:
    items = parse_list(text, what)
    for item in items:
        if item not in allowed:
            raise UserError(f"--{what}: {item!r} is not one of {', '.join(allowed)}")
    return items


def plan_cells(
    plan: str,
    sizes: list[tuple[int, int]],
    steps: list[int],
    dtypes: list[str],
    modes: list[str],
    overlaps: tuple[bool, ...] = (False,),
) -> list[Cell]:
    """The cells to run, in order.

    "grid": every size x T x dtype x mode x overlap, dtype-major (the models are built once per dtype), a cell
    without overlap right before the same cell with it. "gpu": fp16 eager for every size and T; the first size
    with T=2 and overlap; then compiled at every size with T=2; then fp32 eager once (the first size, T=2).
    `dtypes`/`modes`/`overlaps` are ignored; `sizes`/`steps` replace the plan's defaults when given.
    """
    if plan not in PLANS:
        raise UserError(f"--plan {plan!r} is not one of {', '.join(PLANS)}")
    if plan == "grid":
        return [
            Cell(width, height, count, dtype, mode, overlap)
            for dtype in dtypes
            for mode in modes
            for (width, height) in sizes
            for count in steps
            for overlap in overlaps
        ]
    compiled_steps = PLAN_COMPILED_STEPS if PLAN_COMPILED_STEPS in steps else steps[0]
    cells = [Cell(width, height, count, "float16", "eager") for (width, height) in sizes for count in steps]
    cells.append(Cell(sizes[0][0], sizes[0][1], compiled_steps, "float16", "eager", overlap=True))
    cells += [Cell(width, height, compiled_steps, "float16", "compiled") for (width, height) in sizes]
    cells.append(Cell(sizes[0][0], sizes[0][1], compiled_steps, "float32", "eager"))
    return cells


def _peak_memory_mb(device_type: str) -> float:
    if device_type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    import sys

    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def frames_for(count: int, width: int, height: int) -> list[Any]:
    """`count` camera-like frames: a random texture panning 4 pixels per frame (seeded)."""
    import numpy as np

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height, width + 4 * count, 3), dtype=np.uint8)
    return [np.ascontiguousarray(texture[:, 4 * i : 4 * i + width]) for i in range(count)]


def measure_stream(pipeline: StreamPipeline, frames: int, settle: int = 0) -> dict[str, Any]:
    """Warm up, run `settle` untimed frames, then time `frames` calls: ms per frame, stages, latency, memory."""
    import torch

    device_type = pipeline.device.type
    # with overlap the warmup runs one call later: that call is part of the warmup, and every timed call then
    # runs one UNet call (the previous frame) and one encode (its own), as in the steady state
    warmup_calls = pipeline.warmup_frames + (1 if pipeline.overlap else 0)
    images = frames_for(warmup_calls + settle + frames, pipeline.width, pipeline.height)
    warmup_started = time.perf_counter()
    for image in images[:warmup_calls]:
        pipeline.step(image)
    warmup_seconds = time.perf_counter() - warmup_started
    settle_started = time.perf_counter()
    for image in images[warmup_calls : warmup_calls + settle]:
        pipeline.step(image)
    settle_seconds = time.perf_counter() - settle_started
    pipeline.times.clear()
    if device_type == "cuda":
        torch.cuda.synchronize()
    latencies: list[int] = []
    emitted = 0
    last_latent = None
    started = time.perf_counter()
    for image in images[warmup_calls + settle :]:
        call_index = pipeline.frames_in
        for result in pipeline.step(image):
            emitted += 1
            last_latent = result.latent
            if result.index >= pipeline.warmup_frames:
                latencies.append(call_index - result.index)
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    ms_per_frame = 1000.0 * seconds / frames
    return {
        "ms_per_frame": round(ms_per_frame, 3),
        "fps": round(1000.0 / ms_per_frame, 2),
        "breakdown_ms": {stage: round(value, 3) for stage, value in pipeline.times.per_call_ms().items()},
        "latency_frames": max(latencies) if latencies else None,
        "outputs": emitted,
        "overlap": pipeline.overlap,
        "stage_timing": "cuda-events" if device_type == "cuda" else "wall",  # device time per stage on CUDA
        "warmup_s": round(warmup_seconds, 3),
        "settle_s": round(settle_seconds, 3),
        "kv_cache_mb": round(pipeline.cache_nbytes() / 2**20, 2),
        "peak_memory_mb": round(_peak_memory_mb(device_type), 1),
        # random weights in fp16 may overflow somewhere; the timing is the same either way
        "finite": None if last_latent is None else bool(torch.isfinite(last_latent).all()),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ms per frame (its breakdown and memory figures come with it)."""
    ordered = sorted(runs, key=lambda run: run["ms_per_frame"])
    return ordered[len(ordered) // 2]


@contextlib.contextmanager
def cell_mode(unet: Any, mode: str, compile_backend: str) -> Iterator[None]:
    """Set the UNet up for `mode` for the duration of one cell (every repeat), then restore it."""
    from vcam.model.step_backends import attach_step_backend, detach_step_backend

    if mode == "eager":
        yield
        return
    from vcam.paths import cache_dir

    attach_step_backend(unet, mode, compile_backend=compile_backend, onnx_cache_dir=cache_dir() / "onnx")
    try:
        yield
    finally:
        detach_step_backend(unet)


def _environment(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


def _build_models(model: str, device: Any, dtype: Any, vae: str) -> Any:
    """An object with `.pipeline(width, height, t_index_list, vae)` and `.unet` for `model`."""
    from vcam.model.random_full import SD15_RANDOM_NAME, build_random_full_models

    if model == SD15_RANDOM_NAME:
        return build_random_full_models(device, dtype, vaes=(vae,))
    return _TinyModels(device, dtype, vae)


class _TinyModels:
    """The tiny random preset with the same `.pipeline()` signature (one UNet shared by every cell)."""

    def __init__(self, device: Any, dtype: Any, vae: str) -> None:
        import torch

        from vcam.model.tiny import build_tiny_pipeline

        self.vae = vae
        self.base = build_tiny_pipeline(vae=vae)
        for module in (
            self.base.unet,
            self.base.prompt_encoder.text_encoder,
            self.base.codec.vae,
            self.base.depth_encoder.model if self.base.depth_encoder is not None else None,
        ):
            if module is not None:
                torch.nn.Module.to(module, device=device, dtype=dtype)
        self.unet = self.base.unet
        self.build_seconds = 0.0

    def pipeline(self, width: int, height: int, t_index_list: Any, vae: str, overlap: bool = False) -> StreamPipeline:
        from vcam.model.scheduler import build_stream_schedule

        schedule = build_stream_schedule(t_index_list)
        return self.base.sibling(width=width, height=height, schedule=schedule, overlap=overlap)

    def parameter_count(self) -> dict[str, int]:
        return {"unet": sum(p.numel() for p in self.unet.parameters())}


def run_cells(args: argparse.Namespace) -> dict[str, Any]:
    """`vcam bench model` in grid mode: runs the cells in order, writing each one as soon as it is done."""
    import torch

    from vcam.model.depth import check_depth_every
    from vcam.model.loading import resolve_device
    from vcam.model.random_full import RANDOM_FULL_VAES, SD15_RANDOM_NAME, T_INDEX_LISTS

    if args.model not in (SD15_RANDOM_NAME, "tiny"):
        raise UserError(f"--model {args.model!r}: the grid runs on 'tiny' or {SD15_RANDOM_NAME!r} (random weights)")
    if args.vae not in RANDOM_FULL_VAES:
        raise UserError(f"--vae {args.vae!r} is not one of {', '.join(RANDOM_FULL_VAES)}")
    if args.settle < 0:
        raise UserError(f"--settle {args.settle} must be 0 or more")
    if args.repeats is None:
        args.repeats = 1
    check_depth_every(args.depth_every, "--depth-every")
    device = resolve_device(args.device)
    default_sizes = "64x64,64x32" if args.model == "tiny" else ",".join(f"{w}x{h}" for w, h in GPU_PLAN_SIZES)
    sizes = parse_sizes(args.sizes or default_sizes)
    steps = parse_steps(args.steps or ",".join(str(s) for s in GPU_PLAN_STEPS))
    default_dtype = "float16" if device.type == "cuda" else "float32"
    dtypes = parse_choices(args.dtypes or default_dtype, "dtypes", CELL_DTYPES)
    modes = parse_choices(args.modes or "eager", "modes", CELL_MODES)
    overlaps = tuple(value == "on" for value in parse_choices(args.overlap or "off", "overlap", CELL_OVERLAPS))
    cells = plan_cells(args.plan, sizes, steps, dtypes, modes, overlaps)
    if args.only:
        wanted = set(parse_list(args.only, "only"))
        cells = [cell for cell in cells if cell.name in wanted]
        if not cells:
            raise UserError(
                f"--only {args.only!r} matches no cell of the plan: names look like 512x512-T2-float16-eager"
            )
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".jsonl":
        out.mkdir(parents=True, exist_ok=True)
    environment = _environment(device)
    log.info("%d cells on %s: %s", len(cells), device, [cell.name for cell in cells])
    results: list[dict[str, Any]] = []
    models: Any = None
    models_dtype: str | None = None
    for cell in cells:
        if models_dtype != cell.dtype:
            models = None  # free the previous dtype's models first
            if device.type == "cuda":
                torch.cuda.empty_cache()
            models = _build_models(args.model, device, getattr(torch, cell.dtype), args.vae)
            models_dtype = cell.dtype
        result = _run_cell(args, cell, models, device, environment, T_INDEX_LISTS[cell.steps])
        results.append(result)
        if out is not None:
            write_cell(out, result)
        log.info("cell %s: %s", cell.name, {k: result.get(k) for k in ("ms_per_frame", "fps", "error")})
    return {"benchmark": "model-cells", "model": args.model, "device": str(device), **environment, "cells": results}


def write_cell(out: Path, result: dict[str, Any]) -> None:
    """`out` a folder: `out/cell-NAME.json`; `out` a `.jsonl` file: one line appended (and flushed)."""
    if out.suffix == ".jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as lines:
            lines.write(json.dumps(result) + "\n")
        return
    (out / f"cell-{result['cell']}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _run_cell(
    args: argparse.Namespace, cell: Cell, models: Any, device: Any, environment: dict[str, Any], t_index: Any
) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {
        "cell": cell.name,
        "model": args.model,
        "size": f"{cell.width}x{cell.height}",
        "steps": cell.steps,
        "t_index_list": list(t_index),
        "dtype": cell.dtype,
        "mode": cell.mode,
        "vae": args.vae,
        "device": str(device),
        "frames_timed": args.frames,
        "settle_frames": args.settle,
        "depth_every": args.depth_every,
        "models_build_s": round(float(models.build_seconds), 1),
        **environment,
    }
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result["weights_memory_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        with cell_mode(models.unet, cell.mode, args.compile_backend):
            for _ in range(args.repeats):
                pipeline = models.pipeline(cell.width, cell.height, t_index, args.vae, overlap=cell.overlap)
                pipeline.depth_every = args.depth_every
                try:
                    runs.append(measure_stream(pipeline, args.frames, args.settle))
                finally:
                    pipeline.close()
        result.update(median_run(runs))
        result["repeats"] = len(runs)
        result["ms_per_frame_runs"] = [run["ms_per_frame"] for run in runs]
    except UserError:
        raise
    except Exception as error:  # one failing cell (a compiler error, out of memory) must not lose the others
        log.exception("cell %s failed", cell.name)
        result["error"] = f"{type(error).__name__}: {error}"[:2000]
    result["cell_s"] = round(time.perf_counter() - started, 1)
    return result
