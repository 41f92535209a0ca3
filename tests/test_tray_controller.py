"""The tray's controller alone (no icon, no pystray): the camera's states through start, failure, death,
restart and quit; styles that fail; downloads; settings saved only when the camera took them; diagnostics;
and the in-process camera over the real runtime (demo -> null)."""

from __future__ import annotations

import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from vcam.tray.backend import BackendChoice
from vcam.tray.controller import CameraHandle, InProcessCamera, TrayController

from tests.test_tray_fakes import FAKE_STYLES, FakeCamera
from tests.waiting import wait_for


@dataclass
class Cameras:
    """A camera factory that records each camera it builds; `make(config)` builds the next one."""

    make: Callable[[Any], FakeCamera] = FakeCamera
    built: list[FakeCamera] = field(default_factory=list)

    def __call__(self, config: Any) -> FakeCamera:
        self.built.append(self.make(config))
        return self.built[-1]


@dataclass
class Listener:
    """What the controller tells the icon: notifications and change signals."""

    notifications: list[str] = field(default_factory=list)
    changes: int = 0

    def notify(self, message: str) -> None:
        self.notifications.append(message)

    def on_change(self) -> None:
        self.changes += 1


def make_controller(
    cameras: Callable[[Any], CameraHandle], config_path: Path | None = None
) -> tuple[TrayController, Listener]:
    listener = Listener()
    controller = TrayController(config_path, cameras, notify=listener.notify, on_change=listener.on_change)
    controller._list_styles = lambda config: FAKE_STYLES  # type: ignore[method-assign]
    return controller, listener


def saved_config(home: Path) -> dict[str, Any]:
    path = home / "config" / "config.toml"
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def test_the_fake_and_the_in_process_camera_have_every_method_of_the_handle() -> None:
    methods = {name for name in dir(CameraHandle) if not name.startswith("_")}
    assert methods == {
        "start",
        "stop",
        "set_style",
        "set_segment",
        "set_profile",
        "pause",
        "resume",
        "status",
        "add_status_listener",
    }
    for camera_class in (FakeCamera, InProcessCamera):
        assert all(callable(getattr(camera_class, name, None)) for name in methods), camera_class


def test_start_runs_the_camera_and_lists_the_styles() -> None:
    cameras = Cameras()
    controller, listener = make_controller(cameras)
    assert controller.state().status.state == "starting"  # no camera yet: the default status
    assert controller.camera() is None
    controller.start_camera()
    camera = controller.camera()
    assert camera is cameras.built[0] and cameras.built[0].calls == [("start",)]
    state = controller.state()
    assert (state.status.state, state.runtime_failed, state.styles) == ("running", None, FAKE_STYLES)
    changes = listener.changes
    cameras.built[0].set_style("cartoon")  # the camera's status listener wakes the icon
    assert listener.changes == changes + 1
    assert listener.notifications == []


def test_a_camera_that_cannot_start_is_the_failed_state_until_a_restart_succeeds() -> None:
    cameras = Cameras(lambda config: FakeCamera(config, fail_start="no camera found" if not cameras.built else None))
    controller, listener = make_controller(cameras)
    controller.start_camera()
    assert controller.state().runtime_failed == "the camera could not start: no camera found"
    assert controller.camera() is None  # nothing to command
    assert listener.notifications == [
        'the camera could not start: no camera found. Use "Restart camera" in the menu after fixing it.'
    ]
    controller.restart_camera()
    wait_for(lambda: controller.camera() is not None, what="the restarted camera")
    assert controller.state().runtime_failed is None
    # the camera that failed to start is stopped (releasing what it opened) before the new one starts
    assert cameras.built[0].calls == [("stop",)] and cameras.built[1].calls == [("start",)]
    assert len(listener.notifications) == 1


def test_a_bad_config_file_is_the_failed_state_and_restart_reads_the_fixed_file(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text('[camera]\nfps = "fast"\n', encoding="utf-8")
    cameras = Cameras()
    controller, _listener = make_controller(cameras, config_path)
    controller.start_camera()
    failed = controller.state().runtime_failed
    assert failed is not None and "fps" in failed and str(config_path) in failed
    assert cameras.built == []
    config_path.write_text("[camera]\nfps = 15\n", encoding="utf-8")  # the user fixes it, then Restart
    controller.restart_camera()
    wait_for(lambda: controller.camera() is not None, what="the restarted camera")
    assert cameras.built[0].config.camera.fps == 15


def test_a_camera_that_dies_is_noticed_once_and_restart_replaces_it() -> None:
    cameras = Cameras()
    controller, listener = make_controller(cameras)
    controller.start_camera()
    assert controller.check().runtime_failed is None
    cameras.built[0].crash("work thread failed: out of memory")
    assert controller.check().runtime_failed == "work thread failed: out of memory"
    assert controller.check().runtime_failed == "work thread failed: out of memory"
    assert listener.notifications == [
        'work thread failed: out of memory. Use "Restart camera" in the menu after fixing it.'
    ]
    assert controller.camera() is None
    controller.restart_camera()
    wait_for(lambda: controller.camera() is cameras.built[-1] and len(cameras.built) == 2, what="a second camera")
    assert cameras.built[0].calls[-1] == ("stop",)  # the dead one is stopped before the new one starts
    assert controller.check().runtime_failed is None
    assert controller.state().status.state == "running"


def test_a_camera_stopped_by_quit_is_not_a_failure() -> None:
    cameras = Cameras()
    controller, listener = make_controller(cameras)
    controller.start_camera()
    controller.close()
    cameras.built[0].stop()
    assert controller.check().runtime_failed is None
    assert listener.notifications == []


def test_a_style_that_cannot_load_keeps_the_old_style_and_is_notified_once() -> None:
    cameras = Cameras(lambda config: FakeCamera(config, broken_styles={"anime": "no weights"}))
    controller, listener = make_controller(cameras)
    controller.start_camera()
    camera = controller.camera()
    assert camera is not None
    camera.set_style("anime")
    state = controller.check()
    controller.check()
    assert (state.status.style, state.runtime_failed) == ("passthrough", None)  # not a dead camera
    assert listener.notifications == ["style 'anime' could not be loaded: no weights"]
    camera.set_style("cartoon")
    assert controller.check().status.style == "cartoon"


def test_a_status_that_raises_is_shown_as_a_camera_that_stopped_responding() -> None:
    class Unresponsive(FakeCamera):
        def status(self) -> Any:
            raise TimeoutError("no answer")

    controller, _listener = make_controller(Cameras(Unresponsive))
    controller.start_camera()
    assert controller.state().runtime_failed == "the camera stopped responding: no answer"


def test_nothing_starts_after_close_and_a_start_under_way_stops_its_camera() -> None:
    cameras = Cameras()
    controller, _listener = make_controller(cameras)

    class QuitWhileStarting(FakeCamera):
        def start(self) -> None:
            controller.close()  # Quit arrives while the camera starts
            super().start()

    cameras.make = QuitWhileStarting
    controller.start_camera()
    assert cameras.built[0].calls == [("start",), ("stop",)]
    assert controller.camera() is None
    controller.start_camera()
    assert len(cameras.built) == 1
    assert controller.closing


def test_settings_are_saved_and_a_refused_value_leaves_the_file_unchanged(private_home: Path) -> None:
    controller, listener = make_controller(Cameras())
    controller.save_setting("segment.mode", "blur")
    assert saved_config(private_home) == {"segment": {"mode": "blur"}}
    controller.save_setting("segment.mode", "sparkles")
    assert saved_config(private_home) == {"segment": {"mode": "blur"}}
    assert len(listener.notifications) == 1
    assert listener.notifications[0].startswith("could not save segment.mode = 'sparkles' in the config file: ")


def install_download(monkeypatch: pytest.MonkeyPatch, download: Callable[..., None]) -> None:
    import vcam.store.download

    monkeypatch.setattr(vcam.store.download, "download_style", download)


def test_a_download_shows_progress_then_switches_and_saves_the_style(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    halfway, release = threading.Event(), threading.Event()

    def download_style(name: str, config: Any, progress: Callable[[str, float], None]) -> None:
        progress(f"{name}: unet", 0.5)
        halfway.set()
        release.wait(5)
        progress(f"{name}: done", 1.0)

    install_download(monkeypatch, download_style)
    cameras = Cameras()
    controller, listener = make_controller(cameras)
    controller.start_camera()
    controller.download_style("anime")
    assert halfway.wait(5)
    assert controller.state().downloads == {"anime": 0.5}
    controller.download_style("anime")  # a second click while downloading starts nothing
    release.set()
    wait_for(lambda: controller.state().status.style == "anime", what="the switch to the downloaded style")
    wait_for(lambda: saved_config(private_home) != {}, what="the saved style")
    assert saved_config(private_home) == {"style": {"name": "anime"}}
    assert controller.state().downloads == {}
    assert cameras.built[0].calls == [("start",), ("set_style", "anime")]
    assert listener.notifications == [
        "downloading the weights of Anime (diffusion); the Style menu shows the progress",
        "Anime (diffusion) is downloaded; switching to it",
    ]


def test_a_failed_download_is_kept_for_the_menu_and_saves_nothing(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def download_style(name: str, config: Any, progress: Callable[[str, float], None]) -> None:
        raise OSError("huggingface.co does not resolve")

    install_download(monkeypatch, download_style)
    cameras = Cameras()
    controller, listener = make_controller(cameras)
    controller.start_camera()
    controller.download_style("anime")
    wait_for(lambda: "anime" in controller.state().download_errors, what="the download error")
    controller.join_threads()
    state = controller.state()
    assert (state.downloads, state.download_errors) == ({}, {"anime": "huggingface.co does not resolve"})
    assert listener.notifications[-1] == "downloading Anime (diffusion) failed: huggingface.co does not resolve"
    assert cameras.built[0].calls == [("start",)]
    assert saved_config(private_home) == {}


def test_a_downloaded_style_the_camera_refuses_is_not_saved(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_download(monkeypatch, lambda name, config, progress: progress("done", 1.0))
    cameras = Cameras(lambda config: FakeCamera(config, refuse={"set_style": "the camera is closing"}))
    controller, listener = make_controller(cameras)
    controller.start_camera()
    controller.download_style("anime")
    wait_for(lambda: "anime" not in controller.state().downloads, what="the end of the download")
    controller.join_threads()
    assert listener.notifications[-1] == "download-anime failed: the camera is closing"
    assert controller.state().status.style == "passthrough"
    assert saved_config(private_home) == {}


def test_a_worker_that_raises_is_notified() -> None:
    controller, listener = make_controller(Cameras())

    def broken() -> None:
        raise ValueError("disk full")

    controller.spawn(broken, "about")
    controller.join_threads()
    assert listener.notifications == ["about failed: disk full"]


def test_diagnostics_report_the_backend_the_camera_and_what_doctor_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import vcam.doctor

    controller, _listener = make_controller(Cameras())
    controller.start_camera()
    checks = [
        vcam.doctor.Check("python", True, "3.11.7"),
        vcam.doctor.Check("virtual camera", False, "no v4l2loopback device", "run setup-v4l2loopback.sh"),
    ]
    monkeypatch.setattr(vcam.doctor, "run_checks", lambda config=None, config_path=None: checks)
    text = controller.diagnostics_text(BackendChoice("xorg", False))
    assert "Live2Diff Camera 0.1.0" in text
    assert "tray backend: xorg (no menu: see the warning in the log)" in text
    assert "  [ok] python: 3.11.7" in text
    assert "  [FAIL] virtual camera: no v4l2loopback device" in text
    assert "         fix: run setup-v4l2loopback.sh" in text
    assert "camera: Live2Diff Camera: Camera (no style), 30 fps" in text
    assert "camera error" not in text


def test_the_in_process_camera_runs_the_real_runtime(tmp_path: Path) -> None:
    """The in-process camera: the runtime built from the config, commanded through the handle (demo -> null)."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[camera]\nsource = "demo"\nwidth = 160\nheight = 96\nfps = 30\n'
        '[output]\nsinks = ["null"]\nwidth = 160\nheight = 96\nfps = 30\n',
        encoding="utf-8",
    )
    listener = Listener()
    controller = TrayController(config_path, InProcessCamera, notify=listener.notify, on_change=listener.on_change)
    controller.start_camera()
    try:
        camera = controller.camera()
        assert isinstance(camera, InProcessCamera), controller.state().runtime_failed
        wait_for(lambda: controller.check().status.state == "running", what="the running camera")
        camera.set_style("cartoon")
        camera.pause()
        wait_for(lambda: controller.check().status.style == "cartoon", what="the cartoon style")
        assert controller.check().status.state == "paused"
        camera.resume()
        assert controller.check().status.state == "running"
        assert listener.changes > 0 and listener.notifications == []
    finally:
        controller.close()
        controller.stop_camera()
    assert controller.camera() is None
    assert camera.status().state == "stopped"


def test_the_controller_imports_no_ui() -> None:
    import subprocess

    code = "import sys, vcam.tray.controller; print(sorted(m for m in ('pystray', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def write_image(path: Path) -> Path:
    import cv2
    import numpy as np

    cv2.imwrite(str(path), np.full((24, 32, 3), 200, np.uint8))
    return path


@dataclass
class ImageQuestions:
    """The tray's `ask_image`: records why an image was asked for and answers `answer`."""

    answer: Path | None = None
    problems: list[str] = field(default_factory=list)

    def __call__(self, problem: str) -> Path | None:
        self.problems.append(problem)
        return self.answer


def replace_controller(
    ask: ImageQuestions, cameras: Cameras | None = None
) -> tuple[TrayController, Listener, Cameras]:
    cameras = cameras or Cameras()
    listener = Listener()
    controller = TrayController(None, cameras, notify=listener.notify, on_change=listener.on_change, ask_image=ask)
    controller._list_styles = lambda config: FAKE_STYLES  # type: ignore[method-assign]
    controller.start_camera()
    return controller, listener, cameras


def test_replace_without_an_image_asks_for_one_and_saves_nothing_when_cancelled(private_home: Path) -> None:
    ask = ImageQuestions(answer=None)
    controller, listener, cameras = replace_controller(ask)
    controller.replace_background()
    controller.join_threads()
    assert ask.problems == ["no background image is set"]
    assert cameras.built[0].calls == [("start",)]  # the camera never saw "replace"
    assert saved_config(private_home) == {}
    assert len(cameras.built) == 1


def test_a_chosen_image_is_saved_then_the_camera_restarts_with_it_and_switches(
    private_home: Path, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "beach.png")
    ask = ImageQuestions(answer=image)
    controller, listener, cameras = replace_controller(ask)
    controller.replace_background()
    controller.join_threads()
    assert len(cameras.built) == 2
    assert cameras.built[0].calls == [("start",), ("stop",)]
    assert cameras.built[1].calls == [("start",), ("set_segment", "replace")]
    assert cameras.built[1].config.segment.background_image == str(image)  # the new camera got the image
    assert saved_config(private_home) == {"segment": {"background_image": str(image), "mode": "replace"}}
    # with the image set, the next choice switches at once, asking nothing
    controller.set_segment("off")
    controller.replace_background()
    assert len(ask.problems) == 1 and cameras.built[1].calls[-1] == ("set_segment", "replace")


def test_an_unreadable_chosen_image_is_refused_and_nothing_is_saved(private_home: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    controller, listener, cameras = replace_controller(ImageQuestions(answer=not_an_image))
    controller.replace_background()
    controller.join_threads()
    assert len(cameras.built) == 1 and saved_config(private_home) == {}
    assert listener.notifications == [
        f"cannot replace the background: [segment] background_image: cannot read {str(not_an_image)!r} as an "
        "image (use a .png or .jpg file)"
    ]


def test_a_mode_the_camera_refuses_is_never_saved(private_home: Path) -> None:
    cameras = Cameras(make=lambda config: FakeCamera(config, refuse={"set_segment": "mediapipe is not installed"}))
    controller, listener = make_controller(cameras)
    controller.start_camera()
    assert controller.set_segment("blur") is False
    assert saved_config(private_home) == {}


def test_a_saved_setting_the_camera_cannot_use_starts_it_without_and_is_notified_once(tmp_path: Path) -> None:
    """The real runtime: a saved "replace" without an image (what the tray used to save) no longer locks the
    user out: the camera runs with segmentation off, its menu stays usable, and the tray says so once."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[camera]\nsource = "demo"\nwidth = 160\nheight = 96\n[output]\nsinks = ["null"]\nwidth = 160\nheight = 96\n'
        '[segment]\nmode = "replace"\n',
        encoding="utf-8",
    )
    listener = Listener()
    controller = TrayController(config_path, notify=listener.notify, on_change=listener.on_change)
    controller.start_camera()
    try:
        wait_for(lambda: controller.check().status.state == "running", what="the running camera")
        for _ in range(3):
            state = controller.check()
        assert state.runtime_usable and state.status.segment == "off"
        assert len(listener.notifications) == 1
        assert "the saved segmentation mode 'replace' cannot be used" in listener.notifications[0]
        assert "segmentation off" in listener.notifications[0]
    finally:
        controller.close()
        controller.stop_camera()
