"""The tray menu model (pystray's headless dummy backend): items, radio and enabled states follow the
status, and every item sends the right command to the runtime or the app."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from vcam.tray.menu import (
    LABEL_ABOUT,
    LABEL_AUTOSTART,
    LABEL_OPEN_LOG,
    LABEL_PAUSE,
    LABEL_PREVIEW,
    LABEL_PROFILE,
    LABEL_QUIT,
    LABEL_RESTART,
    LABEL_SEGMENT,
    LABEL_SETTINGS,
    LABEL_STYLE,
    PROFILE_LABELS,
    SEGMENT_LABELS,
    MenuState,
    build_menu,
    find_item,
    tooltip,
)

from tests.test_tray_fakes import FAKE_STYLES, FakeActions, FakeCamera, FakeStyle, dummy_pystray_backend
from vcam.status import Status

with dummy_pystray_backend():
    import pystray


RUNGS = ("t2-512x288-taesd", "t2-512x288-taesd-d2", "t1-448x256-taesd-d2")


class Harness:
    """A menu over a fake runtime whose state the test sets."""

    def __init__(self, **state: Any) -> None:
        self.runtime = FakeCamera()
        self.actions = FakeActions()
        self.extra: dict[str, Any] = {"styles": FAKE_STYLES, **state}
        self.runtime_present = True
        self.menu = build_menu(self.state, lambda: self.runtime if self.runtime_present else None, self.actions)

    def state(self) -> MenuState:
        return MenuState(status=self.runtime.status(), **self.extra)

    def set_status(self, **changes: Any) -> None:
        self.runtime._status = dataclasses.replace(self.runtime._status, **changes)

    def item(self, *path: str) -> pystray.MenuItem:
        return find_item(self.menu, *path)

    def click(self, *path: str) -> None:
        self.item(*path)(None)


def top_labels(menu: pystray.Menu) -> list[str]:
    return [item.text for item in menu]


def test_top_level_items_in_order() -> None:
    harness = Harness()
    assert top_labels(harness.menu) == [
        "Live2Diff Camera: running (Camera (no style))",
        "- - - -",
        LABEL_STYLE,
        LABEL_SEGMENT,
        LABEL_PAUSE,
        "- - - -",
        LABEL_PREVIEW,
        LABEL_SETTINGS,
        LABEL_AUTOSTART,
        LABEL_ABOUT,
        "- - - -",
        LABEL_QUIT,
    ]
    assert not harness.item("Live2Diff Camera").enabled  # the state line is information only
    assert harness.item(LABEL_PAUSE).default  # a click on the icon (xorg, Windows) toggles pause


def test_style_items_are_radio_and_follow_the_status() -> None:
    harness = Harness()
    styles = list(harness.item(LABEL_STYLE).submenu)
    assert [item.text for item in styles] == [
        "Camera (no style)",
        "Cartoon",
        "Anime (diffusion) (not downloaded: click to download)",
    ]
    assert all(item.radio for item in styles)
    assert [item.checked for item in styles] == [True, False, False]
    harness.set_status(style="cartoon")
    assert [item.checked for item in harness.item(LABEL_STYLE).submenu] == [False, True, False]


def test_choosing_a_ready_style_sends_set_style_and_saves_it() -> None:
    harness = Harness()
    harness.click(LABEL_STYLE, "Cartoon")
    assert harness.runtime.calls == [("set_style", "cartoon")]
    assert harness.runtime.status().style == "cartoon"
    assert harness.actions.calls == [("save_setting", "style.name", "cartoon")]


def test_a_style_without_weights_offers_the_download_instead() -> None:
    harness = Harness()
    harness.click(LABEL_STYLE, "Anime (diffusion)")
    assert harness.runtime.calls == []
    assert harness.actions.calls == [("download_style", "anime")]


def test_download_progress_and_failure_are_shown_in_the_style_item() -> None:
    harness = Harness(downloads={"anime": 0.42})
    item = harness.item(LABEL_STYLE, "Anime (diffusion)")
    assert item.text == "Anime (diffusion) (downloading 42%)"
    assert not item.enabled  # no second download of the same style
    harness.extra = {"styles": FAKE_STYLES, "download_errors": {"anime": "disk full"}}
    item = harness.item(LABEL_STYLE, "Anime (diffusion)")
    assert item.text == "Anime (diffusion) (download failed: click to retry)"
    assert item.enabled


def test_a_loading_style_is_marked() -> None:
    harness = Harness()
    harness.set_status(state="loading_style", styles_loading=("cartoon",))
    assert harness.item(LABEL_STYLE, "Cartoon").text == "Cartoon (loading...)"
    assert harness.item("Live2Diff Camera").text == "Live2Diff Camera: loading a style (Camera (no style))"


def test_segmentation_items_are_radio_and_send_set_segment() -> None:
    harness = Harness()
    items = list(harness.item(LABEL_SEGMENT).submenu)
    assert [item.text for item in items] == list(SEGMENT_LABELS.values())
    assert [item.checked for item in items] == [True, False, False, False, False]
    assert all(item.radio for item in items)
    direct = [mode for mode in SEGMENT_LABELS if mode != "replace"]
    for mode in direct:
        harness.click(LABEL_SEGMENT, SEGMENT_LABELS[mode])
        assert harness.runtime.status().segment == mode
        assert [item.checked for item in harness.item(LABEL_SEGMENT).submenu].count(True) == 1
        assert harness.item(LABEL_SEGMENT, SEGMENT_LABELS[mode]).checked
    assert harness.runtime.calls == [("set_segment", mode) for mode in direct]
    assert ("save_setting", "segment.mode", "blur") in harness.actions.calls
    # "replace" needs an image: the app checks for one (and asks for it) before anything reaches the camera
    harness.click(LABEL_SEGMENT, SEGMENT_LABELS["replace"])
    assert harness.actions.calls[-1] == ("replace_background",)
    assert harness.runtime.calls[-1] == ("set_segment", "blur")


def test_pause_toggles_between_pause_and_resume() -> None:
    harness = Harness()
    assert harness.item(LABEL_PAUSE).checked is False
    harness.click(LABEL_PAUSE)
    assert harness.runtime.status().state == "paused"
    assert harness.item(LABEL_PAUSE).checked is True
    assert harness.item("Live2Diff Camera").text.startswith("Live2Diff Camera: paused")
    harness.click(LABEL_PAUSE)
    assert harness.runtime.calls == [("pause",), ("resume",)]
    assert harness.item(LABEL_PAUSE).checked is False


def test_the_default_action_is_pause() -> None:
    harness = Harness()
    harness.menu(None)  # what a click on the icon does where the backend has a default action
    assert harness.runtime.calls == [("pause",)]


def test_preview_is_enabled_only_with_a_preview_url() -> None:
    harness = Harness()
    assert not harness.item(LABEL_PREVIEW).enabled
    harness.set_status(preview_url="http://127.0.0.1:8765/")
    assert harness.item(LABEL_PREVIEW).enabled
    harness.click(LABEL_PREVIEW)
    assert harness.actions.calls == [("open_preview",)]


def test_autostart_checkbox_reflects_and_toggles() -> None:
    harness = Harness(autostart=False)
    assert harness.item(LABEL_AUTOSTART).checked is False
    harness.click(LABEL_AUTOSTART)
    harness.extra["autostart"] = True
    assert harness.item(LABEL_AUTOSTART).checked is True
    harness.click(LABEL_AUTOSTART)
    assert harness.actions.calls == [("set_autostart", True), ("set_autostart", False)]


def test_settings_about_and_quit_call_the_app() -> None:
    harness = Harness()
    for label in (LABEL_SETTINGS, LABEL_ABOUT, LABEL_QUIT):
        harness.click(label)
    assert harness.actions.calls == [("open_settings_folder",), ("show_about",), ("quit",)]
    assert harness.runtime.calls == []


def test_a_failed_runtime_offers_restart_and_disables_the_camera_commands() -> None:
    harness = Harness(runtime_failed="the camera could not start: no webcam")
    assert LABEL_RESTART in top_labels(harness.menu)
    assert harness.item("Live2Diff Camera").text == "Live2Diff Camera: stopped by an error"
    assert not harness.item(LABEL_PAUSE).enabled
    assert not any(item.enabled for item in harness.item(LABEL_SEGMENT).submenu)
    styles = {item.text: item.enabled for item in harness.item(LABEL_STYLE).submenu}
    assert styles["Cartoon"] is False
    assert styles["Anime (diffusion) (not downloaded: click to download)"] is True  # downloads still work
    harness.click(LABEL_RESTART)
    harness.click(LABEL_OPEN_LOG)
    assert harness.actions.calls == [("restart_runtime",), ("open_log",)]


def test_restart_is_hidden_while_the_runtime_is_healthy_and_shown_when_it_dies() -> None:
    harness = Harness()
    assert LABEL_RESTART not in top_labels(harness.menu) and LABEL_OPEN_LOG not in top_labels(harness.menu)
    harness.runtime.crash("work thread failed: boom")
    assert LABEL_RESTART in top_labels(harness.menu) and LABEL_OPEN_LOG in top_labels(harness.menu)


def test_without_a_runtime_commands_are_dropped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    harness.runtime_present = False
    harness.click(LABEL_STYLE, "Cartoon")
    assert harness.runtime.calls == []
    assert "the camera is not running" in caplog.text


def test_a_refused_command_does_not_escape_the_menu(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()

    def refuse(mode: str) -> None:
        raise ValueError(f"unknown segmentation mode {mode!r}")

    harness.runtime.set_segment = refuse  # type: ignore[method-assign]
    harness.click(LABEL_SEGMENT, "Blur the background")
    assert "unknown segmentation mode 'blur'" in caplog.text
    assert not any(call[0] == "save_setting" for call in harness.actions.calls)  # a refused mode is never saved


def test_a_refused_style_is_not_saved() -> None:
    harness = Harness()
    harness.runtime.refuse["set_style"] = "the camera is busy"
    harness.click(LABEL_STYLE, "Cartoon")
    assert harness.actions.calls == []
    del harness.runtime.refuse["set_style"]
    harness.click(LABEL_STYLE, "Cartoon")
    assert harness.actions.calls == [("save_setting", "style.name", "cartoon")]


def test_menu_key_ignores_fps_but_not_the_style() -> None:
    state = MenuState(status=Status(state="running", fps_out=29.0), styles=FAKE_STYLES)
    faster = dataclasses.replace(state, status=dataclasses.replace(state.status, fps_out=30.0))
    assert state.menu_key() == faster.menu_key()
    other = dataclasses.replace(state, status=dataclasses.replace(state.status, style="cartoon"))
    assert state.menu_key() != other.menu_key()
    downloading = dataclasses.replace(state, downloads={"anime": 0.5})
    assert downloading.menu_key() != state.menu_key()


def test_tooltip_shows_style_and_fps() -> None:
    styles = (FakeStyle("cartoon", "Cartoon"),)
    running = MenuState(status=Status(state="running", style="cartoon", fps_out=29.7), styles=styles)
    assert tooltip(running) == "Live2Diff Camera: Cartoon, 30 fps"
    paused = dataclasses.replace(running, status=Status(state="paused", style="cartoon"))
    assert tooltip(paused) == "Live2Diff Camera: paused (Cartoon)"
    warming = dataclasses.replace(running, status=Status(state="warming_up", style="cartoon", fps_out=12.0))
    assert tooltip(warming) == "Live2Diff Camera: warming up (Cartoon, 12 fps)"
    failed = dataclasses.replace(running, runtime_failed="x" * 300)
    assert tooltip(failed).startswith("Live2Diff Camera: error: xxx")
    assert len(tooltip(failed)) == 127


def test_the_profile_menu_shows_the_live_styles_rungs_and_pins_one() -> None:
    harness = Harness()
    assert LABEL_PROFILE not in top_labels(harness.menu)  # a look without model settings: no profile menu
    harness.set_status(style="anime", profile="auto", profile_settings="t1-448x256-taesd-d2", profiles=RUNGS)
    assert LABEL_PROFILE in top_labels(harness.menu)
    items = list(harness.item(LABEL_PROFILE).submenu)
    assert [item.text for item in items] == [
        PROFILE_LABELS["auto"],
        PROFILE_LABELS["off"],
        "t2-512x288-taesd",
        "t2-512x288-taesd-d2",
        "t1-448x256-taesd-d2 (now)",
    ]
    assert [item.checked for item in items] == [True, False, False, False, False]
    assert all(item.radio for item in items)
    harness.click(LABEL_PROFILE, "t2-512x288-taesd-d2")  # depth on every 2nd frame, pinned
    assert harness.runtime.calls == [("set_profile", "t2-512x288-taesd-d2")]
    assert harness.actions.calls == [("save_setting", "style.profile", "t2-512x288-taesd-d2")]
    assert harness.item(LABEL_PROFILE, "t2-512x288-taesd-d2").checked


def test_the_tooltip_shows_the_styled_rate_the_latency_and_the_audio_delay() -> None:
    status = Status(
        state="running", style="cartoon", fps_out=30.0, fps_content=14.6, latency_ms_p50=183.0, audio_delay_ms=180
    )
    state = MenuState(status=status, styles=(FakeStyle("cartoon", "Cartoon"),))
    assert tooltip(state) == "Live2Diff Camera: Cartoon, 15 new of 30 fps, 183 ms late (delay audio 180 ms)"
