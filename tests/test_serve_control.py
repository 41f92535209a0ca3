"""The data channel's control messages (strength, t_index_list, style, prompt) and the engine applying them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipeline_helpers import moving_frames
from vcam.config import Config
from vcam.errors import ConfigError
from vcam.serve.control import BadControl, ControlRequest, parse_control, t_index_list_for_strength
from vcam.serve.engine import Engine, StyleFactory
from vcam.serve.streams import StyledFrame


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_control_messages_are_checked() -> None:
    assert parse_control({"strength": 0.6}) == ControlRequest(strength=0.6)
    assert parse_control({"t_index_list": [10, 30, 40]}) == ControlRequest(t_index_list=(10, 30, 40))
    assert parse_control({"style": "sketch", "prompt": "a cat"}) == ControlRequest(style="sketch", prompt="a cat")
    for bad, words in [
        ({"strenght": 0.5}, "unknown control key(s) strenght: use style, prompt, strength, t_index_list"),
        ({"strength": 0}, "strength 0 must be a number above 0 and at most 1"),
        ({"strength": 1.5}, "strength 1.5 must be"),
        ({"strength": True}, "strength True must be"),
        ({"strength": "0.5"}, "strength '0.5' must be"),
        ({"strength": 0.5, "t_index_list": [30]}, "give strength or t_index_list, not both"),
        ({"style": "sketch", "strength": 0.5}, "change the style first"),
        ({"prompt": 3}, "prompt must be a string"),
        ([1, 2], "control messages are JSON objects"),
    ]:
        with pytest.raises(BadControl, match=None) as caught:
            parse_control(bad)
        assert words in str(caught.value)
    with pytest.raises(ConfigError, match=r"control message: t_index_list = \[40, 30\] is not allowed"):
        parse_control({"t_index_list": [40, 30]})  # the config's own rule and words


def test_strength_sets_the_first_step_and_keeps_the_later_ones() -> None:
    assert t_index_list_for_strength(0.8, (30, 40)) == (10, 40)  # as many steps: the same cost and latency
    assert t_index_list_for_strength(0.4, (30, 40)) == (30, 40)
    assert t_index_list_for_strength(0.3, (30, 40)) == (35, 40)
    assert t_index_list_for_strength(0.2, (30, 40)) == (40,)  # a step below the first is dropped
    assert t_index_list_for_strength(0.01, (30, 40)) == (49,)
    assert t_index_list_for_strength(1.0, (20, 30, 40)) == (0, 30, 40)


def _run(engine: Engine, stream_id: str, frames: list[np.ndarray], start_pts: int) -> None:
    stream = engine.client(stream_id)
    assert stream is not None
    for number, frame in enumerate(frames):
        stream.push(frame, start_pts + 3000 * number)
        assert engine.tick()


def test_a_strength_change_restarts_the_stream_on_new_steps_with_its_prompt() -> None:
    engine = Engine(StyleFactory(Config()), max_clients=2)
    delivered: list[StyledFrame] = []
    engine.add("a", "tiny-random", delivered.append)
    frames = [np.ascontiguousarray(frame) for frame in moving_frames(24, seed=0)]
    _run(engine, "a", frames[:12], 0)
    stream = engine.client("a")
    assert stream is not None
    old = stream.style.pipeline
    assert old is not None and old.schedule.t_index_list == [30, 40]
    old.set_prompt("another prompt", background=False)
    before = len(delivered)
    assert before > 1

    state = engine.set_steps("a", strength=0.8)
    assert state.settings() == {"style": "tiny-random", "t_index_list": [10, 40], "strength": 0.8}
    assert stream.style is not state  # applied by the engine thread, at the next step
    _run(engine, "a", frames[12:], 12 * 3000)
    assert stream.style is state and stream.style.pipeline is not None
    assert stream.style.pipeline.prompt == "another prompt"
    assert stream.style.pipeline.warmed_up
    after = delivered[before:]
    assert after, "no frame after the change"
    pts = [frame.pts for frame in delivered]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # every output labelled with its own input's pts
    assert all(frame.pts >= 12 * 3000 for frame in after)
    assert stream.error is None

    with pytest.raises(BadControl, match="not a diffusion style"):
        engine.add("b", "passthrough", delivered.append)
        engine.set_steps("b", strength=0.5)
    engine.stop()
