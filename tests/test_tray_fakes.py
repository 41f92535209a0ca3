"""Fakes shared by the tray tests: a camera that records commands, menu actions, a Run-key registry.

`FakeCamera` satisfies the tray's `CameraHandle` protocol the way `InProcessCamera` (the runtime) does:
commands change its status at once and call the status listeners; a style that cannot load leaves the
old style on and reports the error, as the runtime's fallback does. The tests in this file check that
the fakes behave like that contract, so the tray tests stand on a faithful stand-in.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from vcam.errors import UserError
from vcam.status import Status


@contextmanager
def dummy_pystray_backend() -> Iterator[None]:
    """Import pystray with its headless `dummy` backend (menus work, icons do not run); env restored after."""
    previous = os.environ.get("PYSTRAY_BACKEND")
    os.environ["PYSTRAY_BACKEND"] = "dummy"
    try:
        import pystray  # noqa: F401  (the backend is chosen at this first import)

        yield
    finally:
        if previous is None:
            os.environ.pop("PYSTRAY_BACKEND", None)
        else:
            os.environ["PYSTRAY_BACKEND"] = previous


@dataclass(frozen=True)
class FakeStyle:
    name: str
    title: str
    ready: bool = True
    kind: str = "classic"
    detail: str = ""


FAKE_STYLES = (
    FakeStyle("passthrough", "Camera (no style)"),
    FakeStyle("cartoon", "Cartoon"),
    FakeStyle("anime", "Anime (diffusion)", ready=False, kind="diffusion"),
)


class FakeCamera:
    """Records every command; its status follows the commands like the real runtime's.

    Args:
        fail_start: `start()` raises RuntimeError(fail_start).
        broken_styles: style name -> why it cannot load (the style stays as it was; `last_error` says so).
        refuse: command name -> why the camera refuses it (the command raises UserError with that text).
    """

    def __init__(
        self,
        config: Any = None,
        fail_start: str | None = None,
        status: Status | None = None,
        *,
        broken_styles: dict[str, str] | None = None,
        refuse: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.fail_start = fail_start
        self.broken_styles = broken_styles or {}
        self.refuse = refuse or {}
        self.calls: list[tuple[str, ...]] = []
        self._status = status or Status(state="running", style="passthrough", segment="off", fps_out=30.0)
        self._listeners: list[Callable[[Status], None]] = []
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def _update(self, call: tuple[str, ...], **changes: Any) -> None:
        with self._lock:
            self.calls.append(call)
            self._status = dataclasses.replace(self._status, **changes)
            listeners = list(self._listeners)
        self.changed.set()
        for listener in listeners:
            listener(self._status)

    def start(self) -> None:
        if self.fail_start is not None:
            raise RuntimeError(self.fail_start)
        self._update(("start",))

    def stop(self) -> None:
        self._update(("stop",), state="stopped")

    def _check_accepted(self, command: str) -> None:
        if command in self.refuse:
            raise UserError(self.refuse[command])

    def set_style(self, name: str) -> None:
        self._check_accepted("set_style")
        if name in self.broken_styles:
            self._update(
                ("set_style", name), last_error=f"style {name!r} could not be loaded: {self.broken_styles[name]}"
            )
        else:
            self._update(("set_style", name), style=name)

    def set_segment(self, mode: str) -> None:
        self._check_accepted("set_segment")
        self._update(("set_segment", mode), segment=mode)

    def set_profile(self, mode: str) -> None:
        self._check_accepted("set_profile")
        self._update(("set_profile", mode), profile=mode)

    def pause(self) -> None:
        self._update(("pause",), state="paused")

    def resume(self) -> None:
        self._update(("resume",), state="running")

    def status(self) -> Status:
        with self._lock:
            return self._status

    def add_status_listener(self, fn: Callable[[Status], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def crash(self, message: str) -> None:
        """What the real runtime reports when a thread died."""
        self._update(("crash",), state="error", last_error=message)


@dataclass
class FakeActions:
    """Records the menu's non-runtime actions."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def download_style(self, name: str) -> None:
        self.calls.append(("download_style", name))

    def save_setting(self, key: str, value: Any) -> None:
        self.calls.append(("save_setting", key, value))

    def replace_background(self) -> None:
        self.calls.append(("replace_background",))

    def restart_runtime(self) -> None:
        self.calls.append(("restart_runtime",))

    def open_log(self) -> None:
        self.calls.append(("open_log",))

    def open_preview(self) -> None:
        self.calls.append(("open_preview",))

    def open_settings_folder(self) -> None:
        self.calls.append(("open_settings_folder",))

    def set_autostart(self, enabled: bool) -> None:
        self.calls.append(("set_autostart", enabled))

    def show_about(self) -> None:
        self.calls.append(("show_about",))

    def quit(self) -> None:
        self.calls.append(("quit",))


class FakeRunKey:
    """A dict standing in for HKCU\\...\\Run (the real one is only on Windows)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)


def test_fake_runtime_follows_commands_and_calls_listeners() -> None:
    runtime = FakeCamera()
    seen: list[Status] = []
    runtime.add_status_listener(seen.append)
    runtime.set_style("cartoon")
    runtime.pause()
    assert runtime.status().style == "cartoon"
    assert runtime.status().state == "paused"
    runtime.resume()
    runtime.set_segment("blur")
    assert (runtime.status().state, runtime.status().segment) == ("running", "blur")
    assert [status.state for status in seen] == ["running", "paused", "running", "running"]
    assert runtime.calls == [("set_style", "cartoon"), ("pause",), ("resume",), ("set_segment", "blur")]


def test_fake_camera_keeps_the_old_style_when_one_cannot_load_and_raises_when_refusing() -> None:
    camera = FakeCamera(broken_styles={"anime": "no weights"}, refuse={"set_segment": "segmentation is not available"})
    camera.set_style("anime")
    assert (camera.status().style, camera.status().last_error) == (
        "passthrough",
        "style 'anime' could not be loaded: no weights",
    )
    with pytest.raises(UserError, match="segmentation is not available"):
        camera.set_segment("blur")
    assert camera.status().segment == "off"
    assert camera.calls == [("set_style", "anime")]


def test_fake_run_key_round_trip() -> None:
    key = FakeRunKey()
    key.set("a", "b")
    assert key.get("a") == "b"
    key.delete("a")
    key.delete("a")
    assert key.get("a") is None
