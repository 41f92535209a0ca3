"""The tray app without a real icon: what the icon and the menu show for the controller's camera start,
failure and restart, the watcher's icon updates, downloads, settings, autostart and quitting; and the menu
driving the real runtime (demo -> null). The controller alone is tested in test_tray_controller.py."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from vcam.tray.app import TrayApp
from vcam.tray.menu import LABEL_PAUSE, LABEL_RESTART, LABEL_SEGMENT, LABEL_STYLE, build_menu, find_item

from tests.test_tray_fakes import FAKE_STYLES, FakeCamera
from tests.waiting import wait_for


class RecordingIcon:
    """Records what the app shows (the parts of pystray.Icon the app uses)."""

    HAS_MENU = True
    HAS_NOTIFICATION = True

    def __init__(self) -> None:
        self.images: list[Any] = []
        self.titles: list[str] = []
        self.menu_updates = 0
        self.notifications: list[str] = []
        self.stopped = threading.Event()

    @property
    def icon(self) -> Any:
        return self.images[-1] if self.images else None

    @icon.setter
    def icon(self, value: Any) -> None:
        self.images.append(value)

    @property
    def title(self) -> str:
        return self.titles[-1] if self.titles else ""

    @title.setter
    def title(self, value: str) -> None:
        self.titles.append(value)

    def update_menu(self) -> None:
        self.menu_updates += 1

    def notify(self, message: str, title: str | None = None) -> None:
        self.notifications.append(message)

    def stop(self) -> None:
        self.stopped.set()


def make_app(tmp_path: Path, factory: Callable[[Any], Any], **kwargs: Any) -> tuple[TrayApp, RecordingIcon]:
    app = TrayApp(camera_factory=factory, autostart_home=tmp_path / "home", **kwargs)
    app.controller._list_styles = lambda config: FAKE_STYLES  # type: ignore[method-assign]
    icon = RecordingIcon()
    app.icon = icon  # type: ignore[assignment]
    return app, icon


def test_start_runtime_shows_running_with_style_and_fps(tmp_path: Path) -> None:
    runtimes: list[FakeCamera] = []

    def factory(config: Any) -> FakeCamera:
        runtimes.append(FakeCamera(config))
        return runtimes[-1]

    app, icon = make_app(tmp_path, factory)
    app.controller.start_camera()
    assert runtimes[0].calls == [("start",)]
    assert runtimes[0].config.style.name == "passthrough"  # the user's (default) config
    state = app.state()
    assert state.runtime_failed is None
    assert state.styles == FAKE_STYLES
    app.refresh()
    assert icon.titles == ["Live2Diff Camera: Camera (no style), 30 fps"]
    assert len(icon.images) == 1
    menu_updates = icon.menu_updates
    app.refresh()  # nothing changed: nothing redrawn
    assert (len(icon.images), len(icon.titles), icon.menu_updates) == (1, 1, menu_updates)
    runtimes[0].pause()
    app.refresh()
    assert icon.titles[-1] == "Live2Diff Camera: paused (Camera (no style))"
    assert len(icon.images) == 2
    assert icon.menu_updates == menu_updates + 1


def test_a_runtime_that_cannot_start_shows_the_error_and_restart_recovers(tmp_path: Path) -> None:
    attempts: list[FakeCamera] = []

    def factory(config: Any) -> FakeCamera:
        attempts.append(FakeCamera(config, fail_start="no camera found" if not attempts else None))
        return attempts[-1]

    app, icon = make_app(tmp_path, factory)
    app.controller.start_camera()
    state = app.state()
    assert state.runtime_failed == "the camera could not start: no camera found"
    assert app.controller.camera() is None
    assert icon.notifications == [
        'the camera could not start: no camera found. Use "Restart camera" in the menu after fixing it.'
    ]
    app.refresh()
    assert icon.title == "Live2Diff Camera: error: the camera could not start: no camera found"
    from vcam.tray.icons import icon_image

    assert icon.icon is icon_image("error")
    app.restart_runtime()
    wait_for(lambda: app.controller.camera() is not None)
    assert app.state().runtime_failed is None
    assert attempts[1].calls == [("start",)]


def test_a_runtime_that_dies_turns_into_error_icon_notification_and_restart(tmp_path: Path) -> None:
    app, icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()
    app.refresh()
    runtime = app.controller.camera()
    assert isinstance(runtime, FakeCamera)
    runtime.crash("work thread failed: out of memory")
    app.refresh()
    state = app.state()
    assert state.runtime_failed == "work thread failed: out of memory"
    assert icon.title == "Live2Diff Camera: error: work thread failed: out of memory"
    assert any("out of memory" in message for message in icon.notifications)
    menu = build_menu(app.state, app.controller.camera, app)
    assert find_item(menu, LABEL_RESTART).visible


def test_a_new_runtime_error_is_notified_once(tmp_path: Path) -> None:
    app, icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()
    runtime = app.controller.camera()
    assert isinstance(runtime, FakeCamera)
    runtime._update(("fail",), last_error="style 'anime' could not be loaded: no weights")
    app.refresh()
    app.refresh()
    assert icon.notifications == ["style 'anime' could not be loaded: no weights"]
    assert app.state().runtime_failed is None  # a failed style is not a dead camera


def test_the_watcher_wakes_on_status_changes(tmp_path: Path) -> None:
    app, icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()
    watcher = threading.Thread(target=app._watch)
    watcher.start()
    try:
        runtime = app.controller.camera()
        assert runtime is not None
        runtime.set_style("cartoon")
        wait_for(lambda: icon.title == "Live2Diff Camera: Cartoon, 30 fps", timeout=0.9)  # before POLL_S
    finally:
        app.controller.close()
        app._wake.set()
        watcher.join(timeout=5)
    assert not watcher.is_alive()


def test_menu_choices_are_saved_in_the_config_file(tmp_path: Path, private_home: Path) -> None:
    app, _icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()
    menu = build_menu(app.state, app.controller.camera, app)
    find_item(menu, LABEL_STYLE, "Cartoon")(None)
    find_item(menu, LABEL_SEGMENT, "Blur the background")(None)
    saved = tomllib.loads((private_home / "config" / "config.toml").read_text(encoding="utf-8"))
    assert saved == {"style": {"name": "cartoon"}, "segment": {"mode": "blur"}}


def test_download_shows_progress_then_switches_to_the_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vcam.store.download

    app, icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()
    halfway, release = threading.Event(), threading.Event()

    def download_style(name: str, config: Any, progress: Callable[[str, float], None]) -> None:
        progress(f"{name}: unet", 0.5)
        halfway.set()
        release.wait(5)
        progress(f"{name}: done", 1.0)

    monkeypatch.setattr(vcam.store.download, "download_style", download_style)
    menu = build_menu(app.state, app.controller.camera, app)
    find_item(menu, LABEL_STYLE, "Anime (diffusion)")(None)
    assert halfway.wait(5)
    assert find_item(menu, LABEL_STYLE, "Anime (diffusion)").text == "Anime (diffusion) (downloading 50%)"
    app.download_style("anime")  # a second click while downloading starts nothing
    release.set()
    wait_for(lambda: app.state().status.style == "anime")
    assert app.state().downloads == {}
    runtime = app.controller.camera()
    assert isinstance(runtime, FakeCamera) and ("set_style", "anime") in runtime.calls
    assert icon.notifications[0].startswith("downloading the weights of Anime (diffusion)")
    assert icon.notifications[-1] == "Anime (diffusion) is downloaded; switching to it"


def test_a_failed_download_is_shown_and_can_be_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vcam.store.download

    app, icon = make_app(tmp_path, FakeCamera)
    app.controller.start_camera()

    def download_style(name: str, config: Any, progress: Callable[[str, float], None]) -> None:
        raise OSError("huggingface.co does not resolve")

    monkeypatch.setattr(vcam.store.download, "download_style", download_style)
    app.download_style("anime")
    wait_for(lambda: "anime" in app.state().download_errors)
    assert app.state().downloads == {}
    menu = build_menu(app.state, app.controller.camera, app)
    assert find_item(menu, LABEL_STYLE, "Anime").text == "Anime (diffusion) (download failed: click to retry)"
    assert icon.notifications[-1] == "downloading Anime (diffusion) failed: huggingface.co does not resolve"


def test_autostart_item_writes_and_removes_the_entry(tmp_path: Path) -> None:
    app, _icon = make_app(tmp_path, FakeCamera)
    assert app.state().autostart is False
    app.set_autostart(True)
    entry = tmp_path / "home" / ".config" / "autostart" / "live2diff-vcam.desktop"
    assert entry.is_file()
    assert app.state().autostart is True
    app.set_autostart(False)
    assert not entry.exists()
    assert app.state().autostart is False


def test_quit_stops_the_runtime_and_the_icon(tmp_path: Path) -> None:
    app, icon = make_app(tmp_path, FakeCamera)
    app._icon_loop_running = True  # as in run(), without a real icon loop
    app.controller.start_camera()
    runtime = app.controller.camera()
    assert isinstance(runtime, FakeCamera)
    app.quit()
    assert icon.stopped.wait(5)
    assert runtime.calls[-1] == ("stop",)
    assert app.controller.camera() is None


def test_menu_drives_the_real_runtime(tmp_path: Path) -> None:
    """Every runtime item changes the real runtime's status (demo source, null sink)."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[camera]\nsource = "demo"\nwidth = 160\nheight = 96\nfps = 30\n'
        '[output]\nsinks = ["null"]\nwidth = 160\nheight = 96\nfps = 30\n',
        encoding="utf-8",
    )
    app = TrayApp(config_path=config_path, autostart_home=tmp_path / "home")
    app.icon = RecordingIcon()  # type: ignore[assignment]
    app.controller.start_camera()
    try:
        state = app.state()
        assert state.runtime_failed is None, state.runtime_failed
        assert "cartoon" in [style.name for style in state.styles]
        wait_for(lambda: app.state().status.state == "running")
        menu = build_menu(app.state, app.controller.camera, app)

        find_item(menu, LABEL_STYLE, "Cartoon")(None)
        wait_for(lambda: app.state().status.style == "cartoon")
        assert find_item(menu, LABEL_STYLE, "Cartoon").checked

        find_item(menu, LABEL_PAUSE)(None)
        wait_for(lambda: app.state().status.state == "paused")
        assert find_item(menu, LABEL_PAUSE).checked
        find_item(menu, LABEL_PAUSE)(None)
        wait_for(lambda: app.state().status.state == "running")

        find_item(menu, LABEL_SEGMENT, "Blur the background")(None)
        wait_for(lambda: app.state().status.segment == "blur")
        find_item(menu, LABEL_SEGMENT, "Off")(None)
        wait_for(lambda: app.state().status.segment == "off")
        assert app.state().runtime_failed is None
        saved = tomllib.loads(config_path.read_text(encoding="utf-8"))
        assert saved["style"] == {"name": "cartoon"} and saved["segment"] == {"mode": "off"}
    finally:
        app.controller.stop_camera()


def fake_program(folder: Path, name: str, script: str) -> Path:
    """An executable `name` in `folder` (a stand-in for a dialog program the machine lacks)."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return program


def test_the_background_image_comes_from_zenity_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "zenity", f'printf "%s\\n" "$@" > {tmp_path}/args\necho /home/me/beach.jpg\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    app, icon = make_app(tmp_path, FakeCamera)
    assert app.ask_background_image("no background image is set") == Path("/home/me/beach.jpg")
    args = (tmp_path / "args").read_text().splitlines()
    assert args[0] == "--file-selection" and "--file-filter=Images | *.png *.jpg *.jpeg *.webp *.bmp" in args
    assert icon.notifications == []
    fake_program(bin_dir, "zenity", "exit 1\n")  # the user pressed Cancel
    assert app.ask_background_image("no background image is set") is None
    assert icon.notifications == []


def test_without_a_file_chooser_the_settings_folder_opens_and_the_key_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_home: Path
) -> None:
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "xdg-open", f'echo "$1" > {tmp_path}/opened\n')
    monkeypatch.setenv("PATH", str(bin_dir))  # no zenity, no kdialog; the icon's GTK loop is not running
    app, icon = make_app(tmp_path, FakeCamera)
    assert app.ask_background_image("no background image is set") is None
    config = private_home / "config" / "config.toml"
    assert icon.notifications == [
        'no background image is set. To replace the background, set background_image = "/path/to/picture.jpg" '
        f'under [segment] in {config} (its folder is open now), then choose "Replace the background" again'
    ]
    wait_for(lambda: (tmp_path / "opened").exists(), what="xdg-open to run")
    assert (tmp_path / "opened").read_text().strip() == str(config.parent)
