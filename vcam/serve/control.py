"""Control messages a client sends on its data channel, checked: style, prompt, strength, t_index_list.

`{"strength": S}` (0 < S <= 1, how much of the camera image is replaced) sets the first, noisiest step of the
client's `t_index_list` to round((1 - S) * 50) and keeps the style's later steps above it; `{"t_index_list":
[...]}` sets the list itself. Both go through the config's one rule (`check_t_index_list`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vcam.errors import RemoteError

#: the keys a control message may have
CONTROL_KEYS = ("style", "prompt", "strength", "t_index_list")


class BadControl(RemoteError):
    """A control message that cannot be used; the client gets an error message with the reason."""


@dataclass(frozen=True)
class ControlRequest:
    """One control message, checked; a field is None when the message does not set it."""

    style: str | None = None
    prompt: str | None = None
    strength: float | None = None
    t_index_list: tuple[int, ...] | None = None


def parse_control(data: Any) -> ControlRequest:
    """A decoded control message -> ControlRequest, or BadControl saying what is wrong."""
    from vcam.model.scheduler import check_t_index_list

    if not isinstance(data, dict):
        raise BadControl('control messages are JSON objects, e.g. {"strength": 0.6}')
    unknown = sorted(set(data) - set(CONTROL_KEYS))
    if unknown:
        raise BadControl(f"unknown control key(s) {', '.join(unknown)}: use {', '.join(CONTROL_KEYS)}")
    if "strength" in data and "t_index_list" in data:
        raise BadControl("give strength or t_index_list, not both")
    if "style" in data and ("strength" in data or "t_index_list" in data):
        raise BadControl("change the style first, then its strength or t_index_list (two messages)")
    for key in ("style", "prompt"):
        if key in data and not isinstance(data[key], str):
            raise BadControl(f"{key} must be a string")
    strength = data.get("strength")
    if strength is not None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise BadControl(f"strength {strength!r} must be a number above 0 and at most 1 (e.g. 0.6)")
        strength = float(strength)
    t_index_list = data.get("t_index_list")
    if t_index_list is not None:
        t_index_list = check_t_index_list(t_index_list, "control message")
    return ControlRequest(data.get("style"), data.get("prompt"), strength, t_index_list)


def t_index_list_for_strength(strength: float, current: Sequence[int]) -> tuple[int, ...]:
    """The `t_index_list` for `strength` (see the module docstring), starting from the style's `current`."""
    from vcam.model.scheduler import NUM_INFERENCE_STEPS, check_t_index_list

    first = min(NUM_INFERENCE_STEPS - 1, round((1.0 - strength) * NUM_INFERENCE_STEPS))
    return check_t_index_list([first, *[step for step in current[1:] if step > first]], f"strength {strength:g}")
