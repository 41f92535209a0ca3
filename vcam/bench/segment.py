"""Benchmark of person segmentation and compositing per mode, on the demo source's frames.

For each mode: milliseconds per frame of `mask()` (downscale, model, temporal smoothing,
feathering, upsampling) and of `composite()`, medians over the frames. The translator is not run:
a precomputed stand-in image plays the styled frame, so only segmentation's own cost is measured.
Also: the model alone on the downscaled frame, and guided vs bilinear upsampling (time and IoU
against the demo figure's ground truth), the measure behind the `refine=True` default.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vcam.segment.stage import SEGMENT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="1280x720", help="frame size (default 1280x720)")
    parser.add_argument(
        "--frames", type=int, default=60, help="timed frames per mode; figures are medians (default 60)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first, per mode (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="demo scene seed (default 0)")
    parser.add_argument("--model", default="", help="a .tflite segmentation model (default: the bundled one)")
    parser.add_argument("--work-width", type=int, default=320, help="width the model's input is cut to (default 320)")


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float(((mask > 0.5) & truth).sum() / max(1, ((mask > 0.5) | truth).sum()))


def _run_mode(
    mode: str,
    frames: list[np.ndarray],
    styled: list[np.ndarray],
    warmup: int,
    model: str,
    work_width: int,
    background: Path,
    refine: bool = True,
    truths: list[np.ndarray] | None = None,
) -> dict[str, float]:
    from vcam.segment.stage import SegmentationStage

    stage = SegmentationStage(
        mode, model_path=model, background_image=background, work_width=work_width, refine=refine
    )
    mask_ms: list[float] = []
    composite_ms: list[float] = []
    ious: list[float] = []
    try:
        for index, (frame, translated) in enumerate(zip(frames, styled, strict=True)):
            mask = stage.mask(frame, timestamp=index / 30.0)
            stage.composite(frame, translated if stage.needs_translation else None, mask)
            if index >= warmup:
                mask_ms.append(stage.last_ms)
                composite_ms.append(stage.composite_ms)
                if truths is not None and mask is not None:
                    ious.append(_iou(mask, truths[index]))
    finally:
        stage.close()
    result = {
        "mask_ms": round(statistics.median(mask_ms), 3),
        "composite_ms": round(statistics.median(composite_ms), 3),
        "total_ms": round(statistics.median(m + c for m, c in zip(mask_ms, composite_ms, strict=True)), 3),
    }
    if ious:
        result["iou_mean"] = round(statistics.fmean(ious), 4)
        result["iou_min"] = round(min(ious), 4)
    return result


def _model_ms(frames: list[np.ndarray], warmup: int, model: str, work_width: int) -> float:
    import cv2

    from vcam.segment.segmenter import PersonSegmenter

    segmenter = PersonSegmenter(model)
    times: list[float] = []
    try:
        for index, frame in enumerate(frames):
            height, width = frame.shape[:2]
            work_w = min(work_width, width)
            small = cv2.resize(frame, (work_w, max(1, round(height * work_w / width))), interpolation=cv2.INTER_AREA)
            start = time.perf_counter()
            segmenter.segment(small, index)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        segmenter.close()
    return round(statistics.median(times), 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from vcam.commands.common import parse_size
    from vcam.segment.segmenter import resolve_model_path
    from vcam.sources.demo import demo_person_mask, render_demo_frame

    width, height = parse_size(args.size)
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    count = args.warmup + args.frames
    frames = [render_demo_frame(index, width, height, args.seed) for index in range(count)]
    styled = [255 - frame for frame in frames]  # a stand-in for the translator's output
    truths = [demo_person_mask(index, width, height, args.seed) for index in range(count)]
    modes: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vcam-bench-segment-") as folder:
        background = Path(folder) / "background.png"
        ramp = np.linspace(0, 255, 1920, dtype=np.uint8)[None, :, None]  # [1, 1920, 1]
        cv2.imwrite(str(background), np.broadcast_to(ramp, (1080, 1920, 3)).copy())
        for mode in SEGMENT_MODES:
            modes[mode] = _run_mode(mode, frames, styled, args.warmup, args.model, args.work_width, background)
        refine = {
            name: _run_mode("blur", frames, styled, args.warmup, args.model, args.work_width, background, flag, truths)
            for name, flag in (("guided", True), ("bilinear", False))
        }
    return {
        "benchmark": "segment",
        "size": f"{width}x{height}",
        "frames": args.frames,
        "model": resolve_model_path(args.model).name,
        "work_width": args.work_width,
        "model_ms": _model_ms(frames, args.warmup, args.model, args.work_width),
        "modes": modes,
        "upsampling": {
            name: {"mask_ms": r["mask_ms"], **{k: v for k, v in r.items() if k.startswith("iou")}}
            for name, r in refine.items()
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
    }
