"""One snapshot of the runtime's state, read by the CLI, the tray and the preview page."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

#: the states the runtime can be in ("restarting": the tray's supervisor restarts a camera process that crashed)
State = Literal[
    "starting", "warming_up", "running", "loading_style", "paused", "reconnecting", "restarting", "error", "stopped"
]
STATES: tuple[State, ...] = get_args(State)


@dataclass(frozen=True)
class Status:
    state: State = "starting"
    style: str = "passthrough"
    segment: str = "off"
    source: str = ""
    sinks: tuple[str, ...] = ()
    fps_in: float = 0.0  # frames captured per second (last few seconds)
    fps_out: float = 0.0  # frames sent to the sinks per second
    fps_model: float = 0.0  # frames the translator finished per second
    fps_content: float = 0.0  # new frames sent per second (the styled rate a viewer sees; repeats not counted)
    latency_ms_p50: float = 0.0  # capture -> send of the frame's translation (last few seconds)
    latency_ms_p95: float = 0.0
    latency_stages_ms: dict[str, float] = field(
        default_factory=dict
    )  # stage -> median ms (`vcam.latency.LATENCY_STAGES`)
    audio_delay_ms: int = 0  # the audio delay that puts the voice in sync (`vcam.latency.audio_delay_ms`)
    delay_ms: int = 0  # the fixed output delay held (`[output] delay_ms`; 0: off)
    profile: str = "off"  # `[style] profile`: off | auto | a pinned rung id
    profile_settings: str = ""  # the live style's rung id ("" when it runs its own settings or has no knobs)
    profiles: tuple[str, ...] = ()  # the rungs the live style offers, best first (empty: no knobs)
    frames_out: int = 0
    dropped: int = 0  # captured frames the work thread never saw (it was busy)
    repeated: int = 0  # output ticks that re-sent the previous frame
    segment_ms: float = 0.0  # segmentation time per frame (median)
    translate_ms: float = 0.0  # translator time per frame (median)
    last_error: str | None = None
    preview_url: str | None = None
    styles_loading: tuple[str, ...] = field(default_factory=tuple)
    model_memory_mb: float = 0.0  # model tensors resident (`Translator.resident_memory_mb`)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sinks"] = list(self.sinks)
        data["styles_loading"] = list(self.styles_loading)
        data["profiles"] = list(self.profiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        """The inverse of `to_dict` (the control API's clients): unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("sinks", "styles_loading"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
