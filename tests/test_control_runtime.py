"""The control API on an in-process runtime: health while a style loads, a prompt change while the camera runs
(off the frame loop, never waited for), and the preview page's control panel in a real headless Chromium."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vcam.model.pipeline import StreamPipeline

from tests.chromium import CHROMIUM, Chromium
from tests.waiting import wait_for
from vcam.config import Config, config_from_dict
from vcam.control.client import ControlClient
from vcam.control.session import ControlSession
from vcam.run_settings import RunSettings
from vcam.runtime import Runtime
from vcam.sinks.base import Sink
from vcam.sinks.null import NullSink
from vcam.sinks.preview import PreviewSink
from vcam.sources.demo import DemoSource
from vcam.styles import load_translator
from vcam.translators.base import Translator

W, H, FPS = 96, 64, 15.0


class DistinctFrames(Sink):
    """Counts the distinct images it is sent (a repeated frame does not count)."""

    description = "distinct"

    def __init__(self) -> None:
        self.distinct = 0
        self._last = b""

    def open(self, width: int, height: int, fps: float) -> None:
        pass

    def send(self, image: np.ndarray) -> None:
        digest = hashlib.sha1(image.tobytes()).digest()
        if digest != self._last:
            self._last = digest
            self.distinct += 1

    def close(self) -> None:
        pass


def tiny_config(tmp_path: Path, **style: Any) -> Config:
    return config_from_dict({"style": {"name": "tiny-random", **style}, "output": {"sinks": ["null"]}})


class Session:
    """A started runtime with its control API; `client` talks to it over HTTP."""

    def __init__(
        self, tmp_path: Path, config: Config, sinks: list[Sink], loader: Callable[[str], Translator] | None = None
    ) -> None:
        self.settings = RunSettings(config)
        self.stopped = threading.Event()
        self.runtime = Runtime(
            DemoSource(W, H, FPS),
            sinks,
            width=W,
            height=H,
            fps=FPS,
            style=config.style.name,
            translator_loader=loader or (lambda name: load_translator(name, config, self.settings)),
        )
        self.control = ControlSession(
            self.runtime, config, self.settings, self.stopped.set, control_file=tmp_path / "control.json"
        )
        self.runtime.start()
        self.endpoint = self.control.start()
        self.client = ControlClient(self.endpoint)

    def close(self) -> None:
        self.control.close()
        self.runtime.stop()


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    made: list[Session] = []
    yield made
    for session in made:
        session.close()


def test_health_answers_while_a_style_loads(tmp_path: Path, sessions: list[Session]) -> None:
    from vcam.styles import load_translator as real_loader

    entered, release = threading.Event(), threading.Event()
    config = config_from_dict({"output": {"sinks": ["null"]}})

    def held_loader(name: str) -> Translator:
        if name == "cartoon":
            entered.set()
            release.wait(30)
        return real_loader(name, config)

    session = Session(tmp_path, config, [NullSink()], held_loader)
    sessions.append(session)
    session.client.set_style("cartoon")
    assert entered.wait(10)
    try:
        health = session.client.health(timeout=5)
        assert health["ok"] is True and health["state"] == "loading_style"
        frames = health["frames_out"]
        wait_for(lambda: session.client.health(timeout=5)["frames_out"] > frames, 10, "frames while loading")
    finally:
        release.set()
    wait_for(lambda: session.client.status().style == "cartoon", 10, "the cartoon style")
    session.close()
    assert not (tmp_path / "control.json").exists()
    sessions.clear()


def test_a_prompt_change_runs_beside_the_frames_and_is_never_waited_for(
    tmp_path: Path, sessions: list[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new prompt's warmup is held open: the camera keeps producing new styled frames all along, the switch
    runs in a thread of its own (not the output or work thread), and the prompt changes once it is done."""
    held, release = threading.Event(), threading.Event()
    threads: list[str] = []
    original = StreamPipeline._prepare_switch

    def gated(self: StreamPipeline, prompt: str, frames: list[Any], generation: int, own_thread: bool) -> None:
        threads.append(threading.current_thread().name)
        held.set()
        release.wait(60)
        original(self, prompt, frames, generation, own_thread)

    monkeypatch.setattr(StreamPipeline, "_prepare_switch", gated)
    frames = DistinctFrames()
    session = Session(tmp_path, tiny_config(tmp_path), [frames])
    sessions.append(session)
    wait_for(lambda: session.client.status().style == "tiny-random", 60, "the tiny model")
    wait_for(lambda: session.client.status().state == "running", 60, "the tiny model to warm up")
    try:
        session.client.set_prompt("a watercolour portrait")
        assert held.wait(30), "the prompt switch did not start"
        before = frames.distinct
        wait_for(lambda: frames.distinct >= before + 3, 120, "new frames while the prompt switch is held")
        translator: Any = session.runtime._translator
        assert translator.pipeline.prompt != "a watercolour portrait"  # the old prompt streams meanwhile
        assert translator.pipeline.prompt_switch_pending
    finally:
        release.set()
    wait_for(lambda: translator.pipeline.prompt == "a watercolour portrait", 60, "the new prompt")
    assert threads == ["vcam-prompt-warmup"]
    assert session.client.settings()["prompt"] == "a watercolour portrait"


def test_config_settings_reach_the_style_and_the_filter_changes_in_place(
    tmp_path: Path, sessions: list[Session]
) -> None:
    config = tiny_config(tmp_path, prompt="ink on paper", t_index_list=[20, 35], noise="fresh")
    session = Session(tmp_path, config, [NullSink()])
    sessions.append(session)
    wait_for(lambda: session.client.status().style == "tiny-random", 60, "the tiny model")
    pipeline = session.runtime._translator.pipeline  # type: ignore[attr-defined]
    assert pipeline.prompt == "ink on paper" and pipeline.noise == "fresh"
    assert list(pipeline.schedule.t_index_list) == [20, 35]
    assert pipeline.similar_filter is None
    session.client.change_settings(similar_filter=True, similar_threshold=0.9)
    wait_for(lambda: pipeline.similar_filter is not None, 30, "the filter on")
    assert pipeline.similar_filter.threshold == 0.9


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_changes_the_style_through_the_control_api(tmp_path: Path, sessions: list[Session]) -> None:
    config = config_from_dict({"output": {"sinks": ["preview:0"]}})
    session = Session(tmp_path, config, [PreviewSink(port=0)])
    sessions.append(session)
    assert session.endpoint.url == session.runtime.status().preview_url  # the API shares the preview's port
    with Chromium() as browser:
        browser.open(session.endpoint.url)
        browser.wait_for("document.body.dataset.controlReady === '1'", what="the control panel")
        assert browser.evaluate("document.getElementById('control-prompt').disabled") is True  # a classic look
        browser.evaluate(
            "(() => { const select = document.getElementById('control-style'); select.value = 'cartoon';"
            " select.dispatchEvent(new Event('change')); })()"
        )
        wait_for(lambda: session.runtime.status().style == "cartoon", 30, "the style change from the page")
        browser.wait_for("document.getElementById('style').textContent === 'cartoon'", what="the page's status")
        browser.evaluate(
            "(() => { const select = document.getElementById('control-segment'); select.value = 'sparkles';"
            " const option = new Option('sparkles', 'sparkles'); select.add(option); select.value = 'sparkles';"
            " select.dispatchEvent(new Event('change')); })()"
        )
        message = browser.wait_for("document.getElementById('control-error').textContent", what="the error line")
        assert "segment.mode = 'sparkles' is not allowed" in message
