"""The auto profile: the ladder of settings, the precedence of what the user set, the load-time measurement and
its cache, and the adaptive loop under a scripted load (a fake model whose cost follows the settings)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes.clock import ManualClock
from tests.waiting import wait_for
from vcam.config import config_from_dict
from vcam.errors import ConfigError
from vcam.output_gate import OutputGate
from vcam.profile import (
    DEPTH_COST,
    DOWN_AFTER_S,
    FRAME_COST,
    MEASURE_CALLS,
    UP_AFTER_S,
    VAE_COST,
    MeasurementCache,
    ProfileController,
    ProfileSettings,
    StyleKnobs,
    build_ladder,
    pinned_knobs,
    t_index_list_for_steps,
)
from vcam.runtime import Runtime
from vcam.sinks.null import NullSink
from vcam.sources.demo import DemoSource
from vcam.translators.base import Translator

STYLE = "sketchy"
DEFAULT = ProfileSettings(2, 512, 288, "taesd")
TARGET = 15.0
SOURCE_FPS = 30.0
#: seconds between two judgements (the runtime judges every 15 output ticks: 0.5 s at 30 fps)
STEP_S = 0.5
#: seconds a reload takes before the new settings are live
LOAD_S = 1.0


class FakeModel(Translator):
    """A model at some settings (it only remembers them; the simulation times it)."""

    name = STYLE

    def __init__(self, settings: ProfileSettings | None) -> None:
        self.settings = settings

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


def controller(tmp_path: Path, capacity: float | None, mode: str = "auto") -> ProfileController:
    cache = MeasurementCache(tmp_path / "profiles.json")
    made = ProfileController(
        mode,
        lambda style, settings: FakeModel(settings),
        lambda style: StyleKnobs(DEFAULT) if style == STYLE else None,
        target_fps=TARGET,
        cache=cache,
    )
    if capacity is not None:
        cache.put(f"cpu|{STYLE}|{build_ladder(StyleKnobs(DEFAULT))[0].id}", capacity, DEFAULT.id)
    return made


def simulate(profile: ProfileController, capacity_at: dict[float, float], seconds: float) -> list[str]:
    """Run a camera whose model's time per frame is its rung's cost / capacity (`capacity_at`: from a time on), the
    content rate capped by the camera's 30 fps; each change reloads after `LOAD_S`. Returns the rungs switched to."""
    live = profile.load(STYLE, None, [np.zeros((8, 8, 3), np.uint8)])
    profile.on_swap(live, 0.0)
    pending: tuple[float, Translator] | None = None
    now = 0.0
    while now < seconds:
        now = round(now + STEP_S, 6)
        if pending is not None and now >= pending[0]:
            profile.on_swap(pending[1], now)
            live, pending = pending[1], None
        capacity = capacity_at[max(t for t in capacity_at if t <= now)]
        settings = live.settings if isinstance(live, FakeModel) and live.settings else DEFAULT
        call_ms = 1000 * settings.cost() / capacity
        fps = min(SOURCE_FPS, 1000 / call_ms)
        change = profile.observe(now, fps, steady=pending is None, call_ms=call_ms)
        if change is not None:
            pending = (now + LOAD_S, profile.load(STYLE, change, []))
    return [rung for _, rung, _ in profile.changes]


def test_fewer_steps_keep_the_strength() -> None:
    assert t_index_list_for_steps((30, 40), 1) == (30,)
    assert t_index_list_for_steps((30, 40), 2) == (30, 40)
    assert t_index_list_for_steps((20, 30, 40, 45), 2) == (20, 45)
    assert t_index_list_for_steps((20, 30, 40, 45), 3) == (20, 32, 45)
    assert t_index_list_for_steps((45, 49), 1) == (45,)


def test_the_ladder_goes_from_best_to_fastest_and_keeps_what_the_user_set() -> None:
    ladder = [rung.id for rung in build_ladder(StyleKnobs(DEFAULT))]
    assert ladder == [
        "t2-512x288-kl",
        "t2-512x288-taesd",
        "t2-512x288-taesd-d2",  # depth on every 2nd frame: the first thing given up below the style's own
        "t2-448x256-taesd-d2",
        "t1-448x256-taesd-d2",
        "t1-384x216-taesd-d2",
    ]
    costs = [rung.cost() for rung in build_ladder(StyleKnobs(DEFAULT))]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
    steps_pinned = [rung.id for rung in build_ladder(StyleKnobs(DEFAULT, frozenset({"steps"})))]
    assert steps_pinned == [
        "t2-512x288-kl",
        "t2-512x288-taesd",
        "t2-512x288-taesd-d2",
        "t2-448x256-taesd-d2",
        "t2-384x216-taesd-d2",
    ]
    all_pinned = build_ladder(StyleKnobs(DEFAULT, frozenset({"steps", "size", "vae", "depth"})))
    assert all_pinned == [DEFAULT]


def test_a_style_without_a_depth_prior_has_no_depth_rungs() -> None:
    ladder = [rung.id for rung in build_ladder(StyleKnobs(DEFAULT, depth=False))]
    assert ladder == ["t2-512x288-kl", "t2-512x288-taesd", "t2-448x256-taesd", "t1-448x256-taesd", "t1-384x216-taesd"]


def test_depth_every_n_costs_the_depth_over_n() -> None:
    every, second, fourth = (replace(DEFAULT, depth_every=n) for n in (1, 2, 4))
    pixels = DEFAULT.width * DEFAULT.height
    assert every.cost() - second.cost() == pytest.approx(pixels * DEPTH_COST / 2)
    assert every.cost() - fourth.cost() == pytest.approx(pixels * DEPTH_COST * 3 / 4)
    assert every.cost() == pytest.approx(pixels * (DEFAULT.steps + VAE_COST["taesd"] + FRAME_COST + DEPTH_COST))


def test_rung_ids_name_the_depth_rate_and_the_old_ids_still_parse() -> None:
    """A profile saved before depth rungs existed (three parts) is depth on every frame; "-dN" is every N-th."""
    assert ProfileSettings.parse("t1-448x256-taesd") == ProfileSettings(1, 448, 256, "taesd", depth_every=1)
    assert ProfileSettings.parse("t1-448x256-taesd").id == "t1-448x256-taesd"
    assert ProfileSettings.parse("t2-512x288-kl-d3") == ProfileSettings(2, 512, 288, "kl", depth_every=3)
    for rung in build_ladder(StyleKnobs(DEFAULT)):
        assert ProfileSettings.parse(rung.id) == rung
    assert config_from_dict({"style": {"profile": "t1-448x256-taesd"}}).style.profile == "t1-448x256-taesd"
    assert config_from_dict({"style": {"profile": "t1-448x256-taesd-d2"}}).style.profile == "t1-448x256-taesd-d2"
    for bad in ("t1-448x256-taesd-d1", "t1-448x256-taesd-d0", "t1-448x256-taesd-d31", "t1-448x256-taesd-dx"):
        with pytest.raises(ConfigError, match="style.profile"):
            config_from_dict({"style": {"profile": bad}})


def test_a_depth_rate_the_user_set_pins_the_knob() -> None:
    """`[styles.NAME] depth_every` or `[style] depth_every` (the CLI's --depth-every, the control API): every rung
    keeps it; the other knobs still move."""
    from_table = config_from_dict({"style": {"name": STYLE}, "styles": {STYLE: {"depth_every": 3}}})
    assert pinned_knobs(from_table.user_set, STYLE) == {"depth"}
    from_style = config_from_dict({"style": {"name": STYLE, "depth_every": 1}})
    assert pinned_knobs(from_style.user_set, STYLE) == {"depth"}  # 1 set on purpose pins depth on every frame
    assert pinned_knobs(config_from_dict({"style": {"name": STYLE}}).user_set, STYLE) == frozenset()
    pinned = build_ladder(StyleKnobs(replace(DEFAULT, depth_every=3), frozenset({"depth"})))
    assert [rung.id for rung in pinned] == [
        "t2-512x288-kl-d3",
        "t2-512x288-taesd-d3",
        "t2-448x256-taesd-d3",
        "t1-448x256-taesd-d3",
        "t1-384x216-taesd-d3",
    ]
    every_frame = build_ladder(StyleKnobs(DEFAULT, frozenset({"depth"})))
    assert all(rung.depth_every == 1 for rung in every_frame) and len(every_frame) == 5


def test_the_config_records_what_the_user_set_and_checks_the_profile() -> None:
    config = config_from_dict(
        {"style": {"name": STYLE, "profile": "auto"}, "styles": {STYLE: {"t_index_list": [25, 35]}}}
    )
    assert {"style.name", "style.profile", f"styles.{STYLE}.t_index_list"} <= config.user_set.as_dict().keys()
    assert "output.fps" not in config.user_set
    assert pinned_knobs(config.user_set, STYLE) == {"steps"}
    assert pinned_knobs(config.user_set, "other") == frozenset()
    assert config_from_dict({"style": {"profile": "t1-448x256-taesd"}}).style.profile == "t1-448x256-taesd"
    for bad in ("fast", "t9-448x256-taesd", "t1-450x256-taesd", "t1-448x256-vqgan", "t1-448x256-taesd-2"):
        with pytest.raises(ConfigError, match="style.profile"):
            config_from_dict({"style": {"profile": bad}})
    with pytest.raises(ConfigError, match="output.delay_ms"):
        config_from_dict({"output": {"delay_ms": 5000}})


def test_a_scripted_slowdown_gives_exactly_the_expected_changes(tmp_path: Path) -> None:
    """At 20 fps on the style's own settings (t2-512x288-taesd), the model slows to half at 30 s, to a quarter at
    60 s, recovers to 82 % at 90 s and fully at 150 s. The profile drops to the best rung predicted to hold 15 fps
    (x 1.1), then to the fastest; after 10 s of headroom it goes up to the best rung that holds: at 82 % that is
    depth on every 2nd frame (16.9 fps predicted where every frame's depth gives 16.4), at 100 % the style's own
    settings again (a rung left for being too slow is retried only with 1.25x the capacity it was left at)."""
    capacity = 20 * DEFAULT.cost()
    profile = controller(tmp_path, capacity)
    load = {0.0: capacity, 30.0: capacity / 2, 60.0: capacity / 4, 90.0: capacity * 0.82, 150.0: capacity}
    changes = simulate(profile, load, 250)
    assert changes == ["t1-448x256-taesd-d2", "t1-384x216-taesd-d2", "t2-512x288-taesd-d2", "t2-512x288-taesd"]
    times = [when for when, _, _ in profile.changes]
    assert 30 + DOWN_AFTER_S <= times[0] <= 30 + DOWN_AFTER_S + 2 * STEP_S  # under for a few seconds, not at once
    assert 60 + DOWN_AFTER_S <= times[1] <= 60 + DOWN_AFTER_S + 2 * STEP_S
    assert 90 + UP_AFTER_S <= times[2] <= 90 + UP_AFTER_S + 2 * STEP_S
    assert 150 + UP_AFTER_S <= times[3] <= 150 + UP_AFTER_S + 2 * STEP_S


def test_a_slowdown_the_depth_rate_alone_absorbs_takes_only_the_depth_step(tmp_path: Path) -> None:
    """At 20 fps on the style's own settings, the model slows by 5 % (19 fps: over the target, nothing changes),
    then to 13 fps: the depth rung alone would not hold 15 x 1.1, so the profile goes past it to the next size; at
    16.4 fps (just under 15 x 1.1 with depth on every frame) it comes back up exactly to the depth rung, and stays."""
    capacity = 20 * DEFAULT.cost()
    profile = controller(tmp_path, capacity)
    load = {0.0: capacity, 20.0: capacity * 0.95, 40.0: capacity * 0.65, 80.0: capacity * 0.82}
    changes = simulate(profile, load, 200)
    assert changes == ["t2-448x256-taesd-d2", "t2-512x288-taesd-d2"]


@pytest.mark.parametrize("load", [6.0, 11.0, 14.0, 16.45, 17.0, 24.0, 40.0, 80.0])
@pytest.mark.parametrize("measured_error", [0.7, 1.0, 1.4])
def test_a_constant_load_changes_the_profile_at_most_once(tmp_path: Path, load: float, measured_error: float) -> None:
    """`load`: the fps the style's own settings would run at; the load-time measurement was off by
    `measured_error`. Whatever the start, one change at most reaches a rung that holds, and it stays."""
    capacity = load * DEFAULT.cost()
    profile = controller(tmp_path, capacity * measured_error)
    changes = simulate(profile, {0.0: capacity}, 300)
    assert len(changes) <= 1, profile.changes
    if measured_error == 1.0:
        assert changes == []  # an accurate measurement starts at the right rung


def test_the_load_time_measurement_is_cached_per_device_and_style(tmp_path: Path) -> None:
    """No cached figure: the style is loaded at its own settings, timed for a few calls on the camera's frames (a
    model that takes 1/12 s per call at that cost), and the best rung predicted to hold 15 fps is loaded."""
    clock = ManualClock(auto_advance=True)
    loads: list[ProfileSettings | None] = []

    class TimedModel(FakeModel):
        def __call__(self, image: np.ndarray) -> np.ndarray:
            clock.wait(1 / 12)
            return image

    def load(style: str, settings: ProfileSettings | None) -> Translator:
        loads.append(settings)
        return TimedModel(settings)

    cache = MeasurementCache(tmp_path / "profiles.json")
    profile = ProfileController(
        "auto", load, lambda style: StyleKnobs(DEFAULT), target_fps=TARGET, cache=cache, clock=clock
    )
    frames = [np.zeros((8, 8, 3), np.uint8)] * 4
    translator = profile.load(STYLE, None, frames)
    capacity = 12 * DEFAULT.cost()
    assert clock.waits == [1 / 12] * MEASURE_CALLS
    assert cache.get(f"cpu|{STYLE}|t2-512x288-kl") == pytest.approx(capacity)
    expected = next(rung for rung in build_ladder(StyleKnobs(DEFAULT)) if capacity / rung.cost() >= 16.5)
    assert loads == [DEFAULT, expected] and isinstance(translator, FakeModel) and translator.settings == expected
    again = ProfileController("auto", load, lambda style: StyleKnobs(DEFAULT), target_fps=TARGET, cache=cache)
    again.load(STYLE, None, frames)
    assert loads[2:] == [expected]  # from the cache: no measurement


def test_the_measurement_leaves_out_the_time_a_load_gives_way_to_the_output(tmp_path: Path) -> None:
    """Each measured call computes for 1/12 s and then waits 1/24 s for the output to send a frame (its torch calls
    give way, `vcam.output_gate`): the capacity measured is the model's, 12 calls a second at that cost."""
    clock = ManualClock(auto_advance=True)
    gate = OutputGate(clock, longest_wait_s=30.0)

    class GivingWayModel(FakeModel):
        def __call__(self, image: np.ndarray) -> np.ndarray:
            clock.wait(1 / 12)
            waits = gate.waits
            gate.expect(clock.now())  # a frame is due now

            def output() -> None:  # the output thread sends it 1/24 s later
                wait_for(lambda: gate.waits == waits + 1, what="the call to give way")
                clock.advance(1 / 24)
                gate.expect(clock.now() + 1.0)

            sender = threading.Thread(target=output)
            sender.start()
            gate.give_way()
            sender.join()
            return image

    cache = MeasurementCache(tmp_path / "profiles.json")
    profile = ProfileController(
        "auto",
        lambda style, settings: GivingWayModel(settings),
        lambda style: StyleKnobs(DEFAULT),
        target_fps=TARGET,
        cache=cache,
        clock=clock,
    )
    profile.load(STYLE, None, [np.zeros((8, 8, 3), np.uint8)] * 4)
    assert gate.waits == MEASURE_CALLS
    assert cache.get(f"cpu|{STYLE}|t2-512x288-kl") == pytest.approx(12 * DEFAULT.cost())


def test_set_profile_pins_a_rung_through_the_style_switch(tmp_path: Path) -> None:
    loaded: list[ProfileSettings | None] = []

    def load(style: str, settings: ProfileSettings | None) -> Translator:
        loaded.append(settings)
        return FakeModel(settings)

    profile = ProfileController(
        "off", load, lambda style: StyleKnobs(DEFAULT) if style == STYLE else None, cache=MeasurementCache(tmp_path)
    )
    runtime = Runtime(DemoSource(64, 48, 30), [NullSink()], width=64, height=48, fps=30, style=STYLE, profile=profile)
    runtime.start()
    try:
        wait_for(lambda: runtime.status().style == STYLE, what="the style")
        assert (runtime.status().profile, runtime.status().profile_settings) == ("off", "")
        runtime.set_profile("t1-384x216-taesd")
        wait_for(lambda: runtime.status().profile_settings == "t1-384x216-taesd", what="the pinned profile")
        assert runtime.status().profile == "t1-384x216-taesd" and runtime.status().style == STYLE
        with pytest.raises(ConfigError, match="style.profile"):
            runtime.set_profile("fastest")
        runtime.set_style("passthrough")  # a look without knobs: no profile applies
        wait_for(lambda: runtime.status().style == "passthrough", what="passthrough")
        assert runtime.status().profile_settings == ""
    finally:
        runtime.stop()
    assert loaded == [None, ProfileSettings.parse("t1-384x216-taesd"), None]  # passthrough: loaded as it is


def test_the_depth_rate_reaches_the_pipeline_and_the_users_value_wins() -> None:
    """The tiny model's knobs: its ladder's depth rung loads a pipeline with depth on every 2nd frame; a depth rate
    the user set (the file, the CLI, the control API) pins the knob, and wins over a rung that says otherwise."""
    from vcam.run_settings import RunSettings
    from vcam.styles import TINY_STYLE_NAME, load_translator, style_knobs

    config = config_from_dict({"style": {"name": TINY_STYLE_NAME}})
    knobs = style_knobs(TINY_STYLE_NAME, config)
    assert knobs is not None and knobs.depth and knobs.default.depth_every == 1 and "depth" not in knobs.pinned
    rung = build_ladder(knobs)[2]
    assert rung.id == "t2-64x64-taesd-d2"
    translator: Any = load_translator(TINY_STYLE_NAME, config, profile=rung)
    try:
        assert translator.pipeline.depth_every == 2 and translator.pipeline.codec.vae.__class__.__name__ == (
            "AutoencoderTiny"
        )
    finally:
        translator.close()
    pinned = config_from_dict({"style": {"name": TINY_STYLE_NAME, "depth_every": 3}})
    knobs = style_knobs(TINY_STYLE_NAME, pinned)
    assert knobs is not None and knobs.default.depth_every == 3 and "depth" in knobs.pinned
    assert {each.depth_every for each in build_ladder(knobs)} == {3}
    translator = load_translator(TINY_STYLE_NAME, pinned, profile=rung)  # a rung from before the pin
    try:
        assert translator.pipeline.depth_every == 3
    finally:
        translator.close()
    settings = RunSettings(config)
    settings.change(TINY_STYLE_NAME, {"depth_every": 4})  # through the control API
    knobs = style_knobs(TINY_STYLE_NAME, config, settings)
    assert knobs is not None and knobs.default.depth_every == 4 and "depth" in knobs.pinned
