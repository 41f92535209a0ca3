"""The latency the camera adds: each frame's times from capture to send, the figures over the last seconds,
the audio delay that puts the voice back in sync, and a fixed output delay.

Every input frame gets a `FrameTiming` with its capture time (from the source: the camera driver's
timestamp where it gives one) and the time it passed each point of the work thread. A translator that
answers `latency_frames` calls late hands its output the timing of the input it derives from (the runtime's
delay line carries it), so latency is always measured from the capture of the picture that is shown. The
stages of one shown frame add up to its latency:

    queue      capture -> the work thread takes the frame (it was busy with the previous one)
    segment    resize to the output size and the person mask
    translate  the end of segmentation -> the end of the translator call that returned this frame's
               translation (for a pipelined model this holds the calls the frame waited inside the model)
    composite  the mask blend
    send_wait  finished -> sent by the output thread at its next tick (or later: a fixed `delay_ms`), with the
               style-switch crossfade

All times are seconds on the runtime's clock (`vcam.clock`); the source stamps frames on the same scale.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: seconds of history behind the latency figures and the content frame rate
LATENCY_WINDOW_S = 3.0
#: a slow model shows fewer frames than this in the window: the figures then cover its last `MIN_FRAMES` frames
#: sent within `MAX_WINDOW_S`
MIN_FRAMES, MAX_WINDOW_S = 3, 60.0
#: the stages of a shown frame, in order; their times add up to its capture-to-send latency
LATENCY_STAGES = ("queue", "segment", "translate", "composite", "send_wait")
#: the largest fixed output delay (`[output] delay_ms`): the frames held for it cost memory
MAX_DELAY_MS = 1000
#: the file (in the user cache folder) that keeps the last measured latency for `vcam doctor`
LAST_MEASUREMENT_FILE = "latency.json"
#: the command that measures it
MEASURE_COMMAND = "vcam bench latency"


@dataclass
class FrameTiming:
    """When one input frame passed each point of the frame loop (runtime clock, seconds; NaN: not yet)."""

    capture: float
    work_start: float = math.nan
    segmented: float = math.nan
    translated: float = math.nan
    composited: float = math.nan

    def stages_ms(self, sent: float) -> dict[str, float]:
        """Milliseconds spent in each of `LATENCY_STAGES` when the frame is sent at `sent`."""
        points = (self.capture, self.work_start, self.segmented, self.translated, self.composited, sent)
        return {
            stage: (end - start) * 1000
            for stage, start, end in zip(LATENCY_STAGES, points[:-1], points[1:], strict=True)
        }


def _percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `values`; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


@dataclass(frozen=True)
class LatencyFigures:
    """What the status shows about latency, over the last `LATENCY_WINDOW_S` seconds."""

    fps_content: float  # new frames sent per second (repeats of the same frame not counted)
    latency_ms_p50: float  # capture -> send
    latency_ms_p95: float
    stages_ms: dict[str, float]  # stage -> median milliseconds (see `LATENCY_STAGES`)


class LatencyMeter:
    """Collects the send time and stage times of every new frame sent; `figures(now)` sums up the window.

    Not thread-safe: the runtime records under its lock, and takes a `snapshot` under it to compute `figures`.
    """

    def __init__(self, window_s: float = LATENCY_WINDOW_S, max_frames: int = 1024) -> None:
        self.window_s = window_s
        self._sent: deque[tuple[float, float, dict[str, float]]] = deque(maxlen=max_frames)  # (sent, ms, stages)

    def record(self, timing: FrameTiming, sent: float) -> None:
        """A new frame (derived from the input `timing` describes) was sent at `sent`."""
        self._sent.append((sent, (sent - timing.capture) * 1000, timing.stages_ms(sent)))

    def clear(self) -> None:
        self._sent.clear()

    def snapshot(self) -> LatencyMeter:
        """A copy (the deque copied in C) whose `figures` can be computed without the caller's lock."""
        copy = LatencyMeter(self.window_s)
        copy._sent = self._sent.copy()
        return copy

    def figures(self, now: float) -> LatencyFigures:
        recent = [entry for entry in self._sent if now - entry[0] <= self.window_s]
        if len(recent) < MIN_FRAMES:  # a slow model: its last few frames, not nothing
            recent = [entry for entry in list(self._sent)[-MIN_FRAMES:] if now - entry[0] <= MAX_WINDOW_S]
        latencies = [ms for _, ms, _ in recent]
        fps = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            fps = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
        stages = {
            stage: round(statistics.median(stages[stage] for _, _, stages in recent), 1) if recent else 0.0
            for stage in LATENCY_STAGES
        }
        return LatencyFigures(
            fps_content=round(fps, 2),
            latency_ms_p50=round(_percentile(latencies, 0.5), 1),
            latency_ms_p95=round(_percentile(latencies, 0.95), 1),
            stages_ms=stages,
        )


def latency_status(figures: LatencyFigures, audio_offset_ms: int = 0) -> dict[str, Any]:
    """The `vcam.status.Status` fields these figures give."""
    return {
        "fps_content": figures.fps_content,
        "latency_ms_p50": figures.latency_ms_p50,
        "latency_ms_p95": figures.latency_ms_p95,
        "latency_stages_ms": dict(figures.stages_ms),
        "audio_delay_ms": audio_delay_ms(figures.latency_ms_p50, audio_offset_ms) if figures.latency_ms_p50 else 0,
    }


# ---------------------------------------------------------------------- a fixed output delay
def history_length(delay_ms: int, fps: float) -> int:
    """How many finished frames the output thread keeps to hold `delay_ms` (at most one per input frame)."""
    return max(2, math.ceil(delay_ms / 1000 * fps * 2) + 2)


def pick_delayed(frames: Iterable[Any], now: float, delay_ms: int) -> Any | None:
    """The newest of `frames` (oldest first, each with `.timing.capture`) captured at least `delay_ms` before
    `now`; None when none is that old yet. With `delay_ms` 0 it is simply the newest."""
    chosen = None
    for frame in frames:
        if (now - frame.timing.capture) * 1000 >= delay_ms - 1e-6:
            chosen = frame
    return chosen


# ---------------------------------------------------------------------- the audio delay to set
def audio_delay_ms(latency_ms_p50: float, offset_ms: int = 0) -> int:
    """The audio delay that puts the voice back in sync with the video: the camera's median capture-to-send
    latency (a lower bound: the sensor before it and the meeting app after it add their own) plus the user's
    measured `offset_ms` (`[output] audio_offset_ms`), rounded to 10 ms, never negative."""
    return max(0, int(round((latency_ms_p50 + offset_ms) / 10.0)) * 10)


def audio_delay_hint(delay_ms: int) -> str:
    """One paragraph telling the user where to set the audio delay."""
    return (
        f"Delay your microphone by {delay_ms} ms to keep your voice in sync with the styled video: in OBS, "
        f"Edit > Advanced Audio Properties > Sync Offset = {delay_ms} ms on the microphone; in other apps, their "
        "audio delay or sync offset setting if they have one (most meeting apps have none: send the microphone "
        "through OBS there). It is a lower bound; add what you measure with a clap test in [output] audio_offset_ms."
    )


# ---------------------------------------------------------------------- the last measurement, for `vcam doctor`
@dataclass(frozen=True)
class Measurement:
    """A latency measurement kept for `vcam doctor` and the tray's About."""

    latency_ms_p50: float
    latency_ms_p95: float
    fps_content: float
    style: str
    source: str
    measured_at: str  # ISO 8601, local time
    how: str  # the command or run that measured it


def last_measurement_path() -> Path:
    from vcam.paths import cache_dir

    return cache_dir() / LAST_MEASUREMENT_FILE


def save_measurement(measurement: Measurement, path: Path | None = None) -> None:
    """Keep `measurement` as the last one (atomically; a failure is logged, never raised: it is a cache)."""
    from vcam.config import write_text_atomically

    target = path or last_measurement_path()
    try:
        write_text_atomically(json.dumps(asdict(measurement), indent=2) + "\n", target)
    except OSError as error:
        log.warning("cannot keep the latency measurement in %s: %s", target, error)


def load_measurement(path: Path | None = None) -> Measurement | None:
    """The last measurement, or None when there is none (or the file is unreadable: it is only a cache)."""
    target = path or last_measurement_path()
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
        return Measurement(**{key: data[key] for key in Measurement.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.debug("ignoring the latency measurement in %s: %s", target, error)
        return None


def now_text() -> str:
    """The local time as ISO 8601 (seconds), for `Measurement.measured_at`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
