"""Runs clips through styles on the camera's streaming path and measures each (style, clip) pair.

Metrics (each defined in its own function; the README's `vcam eval` section gives the formulas):
- warp error: model/metrics.py `warp_error` (Lai et al. 2018), DIS flow between the input frames,
  occlusion-masked, RGB in [0, 1], squared differences summed over channels, averaged over the clip;
- warp error, StreamV2V-style: model/metrics.py `streamv2v_warp_error`, 0-255 with the uint8 wrap;
- CLIP consistency and CLIP text alignment: vcam/eval/clip.py, x100;
- depth MSE: DPT relative depth of input and output, each min-max normalised to [0, 1] per frame;
- content fps (frames per second of translator time) and latency (frames, and median milliseconds of
  translator time from an input to its output while streaming).
The input's own metrics (the floor a style cannot beat for flicker) are measured on the first style's pass.
Metrics are measured on the part of the frame the style restyles (the model's crop; the whole frame for the
classic looks).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.eval.models import CLIP_MODEL_NAME, DEPTH_MODEL_NAME, EvalModels

if TYPE_CHECKING:
    from vcam.eval.clips import Clip
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: the row of the input's own metrics in the tables
INPUT_ROW = "input"


@dataclass(frozen=True)
class Metric:
    """One column of the tables: its key in JSON/CSV, its header, whether lower is better, its model."""

    key: str
    header: str
    lower_is_better: bool | None
    model: str | None = None  # the evaluation model it needs ("clip", "depth"), None for none
    digits: int = 4


METRICS = (
    Metric("warp_error", "warp err", True, digits=5),
    Metric("warp_error_255", "warp err 0-255*", True, digits=2),
    Metric("clip_consistency", "CLIP cons", False, CLIP_MODEL_NAME, digits=2),
    Metric("clip_text", "CLIP text", False, CLIP_MODEL_NAME, digits=2),
    Metric("depth_mse", "depth MSE", True, DEPTH_MODEL_NAME, digits=5),
    Metric("content_fps", "fps", False, digits=1),
    Metric("latency_frames", "lat (fr)", True, digits=0),
    Metric("latency_ms", "lat (ms)", True, digits=0),
)
METRIC_KEYS = tuple(metric.key for metric in METRICS)


@dataclass
class Result:
    """The metrics of one style (or the input) on one clip; a value is None when it does not apply."""

    style: str
    clip: str
    frames: int
    values: dict[str, float | None]
    #: per-frame warp error, pair (t-1, t) at position t-1
    per_frame_warp_error: list[float] = field(default_factory=list)
    #: metric key -> why it has no value ("not available: `vcam models download clip`", "no prompt", ...)
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "style": self.style,
            "clip": self.clip,
            "frames": self.frames,
            **self.values,
            "notes": dict(self.notes),
            "per_frame_warp_error": list(self.per_frame_warp_error),
        }


class Accumulator:
    """Collects one stream of (input, output) frame pairs and turns them into a `Result`."""

    def __init__(self, models: EvalModels, prompt: str | None, measure_depth: bool = True) -> None:
        """`prompt`: the style's prompt for CLIP text alignment (None: none); `measure_depth` False skips DPT."""
        from vcam.model.metrics import FlowEstimator

        self.models = models
        self.prompt = prompt
        self.measure_depth = measure_depth
        self.flow = FlowEstimator()
        self.frames = 0
        self.warp: list[float] = []
        self.warp_255: list[float] = []
        self.depth_errors: list[float] = []
        self.embeddings: list[np.ndarray] = []
        self.latencies_s: list[float] = []
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, image: np.ndarray, output: np.ndarray, latency_s: float | None = None) -> None:
        """Frame t: the input and its translation, [H, W, 3] uint8 RGB of the same size."""
        from vcam.model.metrics import occlusion_mask, streamv2v_occlusion, streamv2v_warp_error, warp_error

        if image.shape != output.shape:
            raise ValueError(f"input {image.shape} and output {output.shape} differ in size")
        self.frames += 1
        if latency_s is not None:
            self.latencies_s.append(latency_s)
        if self._previous is not None:
            previous_image, previous_output = self._previous
            flow_back = self.flow(image, previous_image)  # t -> t-1
            flow_forward = self.flow(previous_image, image)  # t-1 -> t
            visible = occlusion_mask(flow_back, flow_forward)
            self.warp.append(warp_error(previous_output, output, flow_back, visible))
            occluded = streamv2v_occlusion(flow_forward, flow_back)
            self.warp_255.append(streamv2v_warp_error(previous_output, output, flow_back, occluded))
        self._previous = (image, output)
        if self.models.clip is not None:
            self.embeddings.append(self.models.clip.image_embeddings([output])[0])
        if self.models.depth is not None and self.measure_depth:
            self.depth_errors.append(depth_mse(self.models.depth, image, output))

    def result(self, style: str, clip: str, busy_s: float | None, latency_frames: int | None) -> Result:
        from vcam.eval.clip import frame_consistency, text_alignment

        values: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
        notes: dict[str, str] = {}
        values["warp_error"] = _mean(self.warp)
        values["warp_error_255"] = _mean(self.warp_255)
        if self.models.clip is None:
            notes["clip_consistency"] = notes["clip_text"] = self.models.reason(CLIP_MODEL_NAME) or ""
        else:
            embeddings = np.stack(self.embeddings) if self.embeddings else np.zeros((0, 1), np.float32)
            consistency = frame_consistency(embeddings)
            values["clip_consistency"] = None if consistency is None else 100.0 * consistency
            if self.prompt is None:
                notes["clip_text"] = "no prompt (not a diffusion style)"
            else:
                alignment = text_alignment(embeddings, self.models.clip.text_embedding(self.prompt))
                values["clip_text"] = None if alignment is None else 100.0 * alignment
        if self.models.depth is None:
            notes["depth_mse"] = self.models.reason(DEPTH_MODEL_NAME) or ""
        else:
            values["depth_mse"] = _mean(self.depth_errors)
        if busy_s is not None and busy_s > 0:
            values["content_fps"] = self.frames / busy_s
        if latency_frames is not None:
            values["latency_frames"] = float(latency_frames)
        values["latency_ms"] = 1000.0 * float(np.median(self.latencies_s)) if self.latencies_s else None
        return Result(style, clip, self.frames, values, list(self.warp), notes)


def depth_mse(depth: Any, image: np.ndarray, output: np.ndarray) -> float:
    """MSE between the DPT depth of the input and of the output, each min-max normalised to [0, 1] per frame."""
    import torch

    pixels = torch.from_numpy(np.stack([image, output])).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [2, 3, H, W]
    maps = depth.depth_images(pixels)[:, 0].float()  # [2, H, W] in [-1, 1]
    unit = (maps + 1.0) / 2.0  # [2, H, W] in [0, 1]
    return float(((unit[0] - unit[1]) ** 2).mean())


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _crop(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = region
    return image[y : y + h, x : x + w]


@dataclass
class Evaluation:
    """Every (style, clip) result, the input's own results per clip, and the styles and clips in order."""

    styles: list[str]
    clips: list[str]
    results: list[Result]
    inputs: list[Result]


def style_prompt(translator: Translator) -> str | None:
    """The prompt a diffusion style renders (None for the classic looks)."""
    prompt = getattr(translator, "prompt", None)
    return prompt if isinstance(prompt, str) and prompt else None


def evaluate(
    clips: Sequence[Clip],
    styles: Sequence[str],
    load_translator: Callable[[str], Translator],
    models: EvalModels,
    max_frames: int | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Evaluation:
    """Run every clip through every style (one translator per style, reset between clips) and measure."""
    from tqdm import tqdm

    from vcam.eval.clips import ClipError, read_clip
    from vcam.translators.offline import OfflineTranslation

    results: list[Result] = []
    inputs: dict[str, Result] = {}
    for style in styles:
        translator = load_translator(style)
        try:
            prompt = style_prompt(translator)
            for clip in clips:
                translator.reset()
                translation = OfflineTranslation(read_clip(clip, max_frames), translator, clock=clock)
                measure = Accumulator(models, prompt)
                floor = Accumulator(models, None, measure_depth=False) if clip.name not in inputs else None
                bar = tqdm(
                    total=clip.count(max_frames),
                    unit="frame",
                    desc=f"{style} {clip.name}",
                    disable=not progress,
                    file=sys.stderr,
                )
                try:
                    for frame in translation:
                        region = translation.region(frame.image.shape[1], frame.image.shape[0])
                        image = _crop(frame.image, region)
                        measure.add(image, _crop(frame.output, region), None if frame.flushed else frame.latency_s)
                        if floor is not None:
                            floor.add(image, image)
                        bar.update(1)
                finally:
                    bar.close()
                if translation.frames_read == 0:
                    raise ClipError(f"clip {str(clip.path)!r} has no frames: give a clip with at least one frame")
                results.append(measure.result(style, clip.name, translation.busy_s, translation.latency_frames))
                if floor is not None:
                    inputs[clip.name] = _input_result(floor.result(INPUT_ROW, clip.name, None, None))
        finally:
            translator.close()
    return Evaluation(list(styles), [clip.name for clip in clips], results, [inputs[clip.name] for clip in clips])


def _input_result(result: Result) -> Result:
    """The input's own row: what does not apply to an unstyled input is marked so."""
    for key in ("clip_text", "depth_mse", "content_fps", "latency_frames", "latency_ms"):
        result.values[key] = None
        result.notes[key] = "-"
    return result


def mean_over_clips(results: Sequence[Result], style: str) -> Result:
    """A style's row over all clips: each metric averaged over the clips that have it (papers average videos)."""
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for key in METRIC_KEYS:
        present = [result.values[key] for result in results if result.values.get(key) is not None]
        values[key] = float(np.mean([value for value in present if value is not None])) if present else None
        if not present:
            reasons = [result.notes[key] for result in results if key in result.notes]
            if reasons:
                notes[key] = reasons[0]
    frames = sum(result.frames for result in results)
    per_frame = [value for result in results for value in result.per_frame_warp_error]
    return Result(style, "all", frames, values, per_frame, notes)
