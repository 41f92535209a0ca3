"""The tray app: shows a pystray icon whose menu controls the camera that its `TrayController` runs.

The controller (`vcam.tray.controller`, no UI import) starts, watches and restarts the camera, downloads
styles and saves settings; this file holds the icon, the one thread that updates it, and the signals.

Threads:
- main: `icon.run()` (macOS needs the icon's loop there; every backend accepts it);
- vcam-tray-start: the controller loads the config and styles, builds and starts the camera (which has
  its own threads);
- vcam-tray-watch: wakes on the controller's changes (or every POLL_S for the fps) and updates the icon's
  image, tooltip and menu when they change; through the controller's check it also notices a camera
  that died and turns that into the error icon, a notification and the "Restart camera" item;
- short-lived workers (the controller's) for downloads, diagnostics and quitting, so the menu never blocks.

Errors never end the app silently: a camera that cannot start or dies shows in the icon (red,
with "!"), in the tooltip, in the menu's first line, and as a notification where the backend has
them; everything is also in the log file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from vcam.tray.autostart import disable_autostart, enable_autostart, is_autostart_enabled
from vcam.tray.backend import BackendChoice, choose_backend
from vcam.tray.controller import CameraFactory, TrayController
from vcam.tray.desktop_notification import send_desktop_notification
from vcam.tray.host import tray_host_problem
from vcam.tray.icons import icon_image, icon_state
from vcam.tray.menu import APP_TITLE, MenuState, build_menu, tooltip
from vcam.tray.single_instance import AlreadyRunning, SingleInstanceLock
from vcam.tray.xorg_clicks import receive_clicks

if TYPE_CHECKING:
    import pystray

log = logging.getLogger(__name__)

#: how often the watcher refreshes the tooltip's fps when nothing else happens
POLL_S = 1.0
ICON_NAME = "live2diff-vcam"
#: how long to wait for the icon's loop to end after stop(), and how often to ask again (xorg)
STOP_RETRY_S = 1.0
STOP_RETRIES = 3
DIAGNOSTICS_FILE_NAME = "diagnostics.txt"


class TrayApp:
    """The tray icon and its menu over a `TrayController`; `run()` shows the icon until Quit.

    Args:
        config_path: the config file (None: the user's default file).
        camera_factory: builds the camera from the config (default: `vcam.tray.child_camera.ChildCamera`).
        backend: the chosen pystray backend (for the "no menu" warning and the diagnostics).
        autostart_home: the home folder the "Start at login" item writes into (None: the user's).
    """

    def __init__(
        self,
        config_path: Path | None = None,
        camera_factory: CameraFactory | None = None,
        backend: BackendChoice | None = None,
        autostart_home: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.backend = backend if backend is not None else BackendChoice(None, True)
        self.autostart_home = autostart_home
        self._wake = threading.Event()
        self.controller = TrayController(
            config_path,
            camera_factory,
            notify=self.notify,
            on_change=self._wake.set,
            ask_image=self.ask_background_image,
        )
        self._autostart = self._read_autostart()
        self._watcher: threading.Thread | None = None
        self._icon_loop_running = False
        self._loop_ended = threading.Event()
        self._refreshed = threading.Event()
        self._shown: dict[str, Any] = {}  # what the icon shows now: image state, title, menu key
        self.icon: pystray.Icon | None = None

    # ------------------------------------------------------------------ state
    def state(self) -> MenuState:
        """One snapshot of everything the menu and the icon show."""
        return dataclasses.replace(self.controller.state(), autostart=self._autostart)

    def _read_autostart(self) -> bool:
        try:
            return is_autostart_enabled(self.autostart_home)
        except Exception as error:  # a broken registry or home must not stop the tray
            log.warning("cannot tell whether the tray starts at login: %s", error)
            return False

    # ------------------------------------------------------------------ menu actions
    def download_style(self, name: str) -> None:
        self.controller.download_style(name)

    def save_setting(self, key: str, value: Any) -> None:
        self.controller.save_setting(key, value)

    def replace_background(self) -> None:
        self.controller.replace_background()

    def ask_background_image(self, problem: str) -> Path | None:
        """A file chooser for the background image; without one, open the settings folder and say which key
        to set (the controller calls this in a worker thread)."""
        from vcam.tray.file_chooser import find_file_chooser
        from vcam.tray.opener import open_path

        from vcam.paths import config_file

        gtk_loop_runs = self._icon_loop_running and self.backend.name in ("gtk", "appindicator")
        chooser = find_file_chooser(gtk_loop_runs)
        if chooser is not None:
            return chooser(f"{APP_TITLE}: a picture to put behind you")
        path = self.config_path if self.config_path is not None else config_file()
        self.notify(
            f'{problem}. To replace the background, set background_image = "/path/to/picture.jpg" under '
            f'[segment] in {path} (its folder is open now), then choose "Replace the background" again'
        )
        try:
            open_path(self.settings_folder())
        except Exception as error:  # no file manager: the notification still says where
            log.warning("cannot open the settings folder: %s", error)
        return None

    def restart_runtime(self) -> None:
        self.controller.restart_camera()

    def open_log(self) -> None:
        """Open the camera's log file (its process's, else the log folder)."""
        from vcam.tray.opener import open_path

        from vcam.paths import log_dir

        path = self.controller.log_path() or log_dir()
        self.controller.spawn(lambda: open_path(path), "open-log")

    def open_preview(self) -> None:
        from vcam.tray.opener import open_url

        url = self.state().status.preview_url
        if url is None:
            self.notify('no preview is running: add "preview" to [output] sinks in the config')
            return
        self.controller.spawn(lambda: open_url(url), "open-preview")

    def settings_folder(self) -> Path:
        from vcam.paths import config_dir

        folder = self.config_path.parent if self.config_path is not None else config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def open_settings_folder(self) -> None:
        from vcam.tray.opener import open_path

        self.controller.spawn(lambda: open_path(self.settings_folder()), "open-settings")

    def set_autostart(self, enabled: bool) -> None:
        """Turn "Start at login" on or off."""
        try:
            if enabled:
                enable_autostart(self.autostart_home)
            else:
                disable_autostart(self.autostart_home)
        except Exception as error:
            log.exception("changing start at login failed")
            self.notify(f"could not turn start at login {'on' if enabled else 'off'}: {error}")
        self._autostart = self._read_autostart()
        self._wake.set()

    def show_about(self) -> None:
        """Write the diagnostics report next to the log file and open it."""

        def about() -> None:
            from vcam.tray.opener import open_path

            from vcam.paths import log_dir

            text = self.controller.diagnostics_text(self.backend)
            folder = log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / DIAGNOSTICS_FILE_NAME
            path.write_text(text, encoding="utf-8")
            failed = text.count("[FAIL]")
            self.notify(f"{failed} check(s) failed: see {path}" if failed else f"all checks passed: see {path}")
            open_path(path)

        self.controller.spawn(about, "about")

    def quit(self) -> None:
        """Stop the camera and the icon (from any thread); the watcher does it when it runs."""
        if self.controller.closing:
            return
        log.info("quitting")
        self.controller.close()
        self._wake.set()
        watcher = self._watcher
        if watcher is None or not watcher.is_alive():
            self.controller.spawn(self._shut_down, "quit")

    def _shut_down(self) -> None:
        self.controller.stop_camera()
        icon = self.icon
        if icon is None or not self._icon_loop_running:
            return
        self._icon_loop_running = False
        icon.stop()
        # pystray's xorg backend sometimes loses a stop request that closely follows icon updates
        # (about 1 in 4 here; its loop then waits for X events forever); sending it again ends the loop
        for _attempt in range(STOP_RETRIES):
            if self._loop_ended.wait(STOP_RETRY_S) or not type(icon).__module__.endswith("_xorg"):
                return
            log.debug("the xorg icon loop did not stop; asking again")
            icon._stop()

    # ------------------------------------------------------------------ the icon
    def notify(self, message: str) -> None:
        """A desktop notification (the icon's where the backend has them, else the desktop's); always logged."""
        log.warning("%s", message)
        icon = self.icon
        if icon is None:
            return
        if not getattr(icon, "HAS_NOTIFICATION", False):
            send_desktop_notification(APP_TITLE, message)
            return
        try:
            icon.notify(message, APP_TITLE)
        except Exception as error:  # no notification daemon: the icon and the log still show it
            log.debug("notification failed: %s", error)

    def refresh(self) -> None:
        """Bring the icon's image, tooltip and menu up to date with the runtime; called by the watcher."""
        state = dataclasses.replace(self.controller.check(), autostart=self._autostart)
        icon = self.icon
        if icon is None:
            return
        image_state = icon_state(state.status, state.runtime_failed is not None)
        if self._shown.get("image") != image_state:
            icon.icon = icon_image(image_state)
            self._shown["image"] = image_state
        title = tooltip(state)
        if self._shown.get("title") != title:
            icon.title = title
            self._shown["title"] = title
        key = state.menu_key()
        if self._shown.get("menu") != key:
            self._shown["menu"] = key
            if getattr(icon, "HAS_MENU", False):
                icon.update_menu()

    def check_tray_host(self) -> str | None:
        """Say once (log and a desktop notification) when no system tray can show the icon; the camera runs on."""
        problem = tray_host_problem()
        if problem is not None:
            log.warning("%s", problem)
            send_desktop_notification(f"{APP_TITLE}: the tray icon cannot appear", problem)
        return problem

    def _watch(self) -> None:
        """The one thread that changes the icon after start-up (pystray's xorg backend and python-xlib
        deadlock when several threads update the icon at once), including stopping it on Quit."""
        try:
            while not self.controller.closing:
                self._wake.wait(POLL_S)
                self._wake.clear()
                if self.controller.closing:
                    break
                try:
                    self.refresh()
                except Exception:  # the watcher must outlive any one bad refresh
                    log.exception("refreshing the tray icon failed")
                self._refreshed.set()
        finally:
            self._shut_down()

    def wait_refreshed(self, timeout: float = 10.0) -> bool:
        """Wait until the watcher has shown the state as it is now (tests, `on_ready`)."""
        self._refreshed.clear()
        self._wake.set()
        return self._refreshed.wait(timeout)

    def build_icon(self) -> pystray.Icon:
        import pystray

        icon = pystray.Icon(
            ICON_NAME, icon_image("warming_up"), APP_TITLE, menu=build_menu(self.state, self.controller.camera, self)
        )
        self._shown["image"] = "warming_up"
        return icon

    def run(self, on_ready: Callable[[TrayApp], None] | None = None) -> int:
        """Show the icon and run the camera until Quit (blocks; call from the main thread). Returns 0."""
        self.icon = icon = self.build_icon()
        log.info("tray icon backend: %s", type(icon).__module__)
        if type(icon).__module__.endswith("_xorg"):
            receive_clicks(icon)

        def setup(icon: Any) -> None:
            self._icon_loop_running = True
            icon.visible = True
            if self.backend.warning:
                log.warning("%s", self.backend.warning)
            self._watcher = self.controller.spawn(self._watch, "watch")
            if self.backend.name is not None:  # Linux: is there a tray to show the icon in?
                self.controller.spawn(self.check_tray_host, "tray-host")
            starter = self.controller.spawn(self.controller.start_camera, "start")
            if on_ready is not None:

                def ready() -> None:
                    starter.join()
                    self.wait_refreshed()
                    on_ready(self)

                self.controller.spawn(ready, "ready")

        previous = _install_signal_handlers(self.quit)
        try:
            icon.run(setup)
        except Exception:
            if not self.controller.closing:
                raise
            # pystray's GTK backends raise at exit when the session has no notification service
            log.debug("the icon's loop raised while stopping", exc_info=True)
        finally:
            self._loop_ended.set()
            self._icon_loop_running = False  # the loop is over: nothing may wait on it now
            _restore_signal_handlers(previous)
            self.controller.close()
            self._wake.set()
            self.controller.stop_camera()
            self.controller.join_threads(timeout=5)
        return 0


def _install_signal_handlers(quit_app: Callable[[], None]) -> dict[int, Any]:
    """SIGTERM (and SIGINT, where the backend keeps it) quit the app cleanly; only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: quitting", signum)
        quit_app()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def run_tray(
    config_path: Path | None = None,
    *,
    camera_factory: CameraFactory | None = None,
    on_ready: Callable[[TrayApp], None] | None = None,
) -> int:
    """Run the tray (blocks until Quit); with another tray already running, say so and return 0."""
    try:
        lock = SingleInstanceLock()
        lock.acquire()
    except AlreadyRunning as error:
        log.warning("%s", error)
        return 0
    try:
        backend = choose_backend()
        app = TrayApp(config_path, camera_factory=camera_factory, backend=backend)
        return app.run(on_ready)
    finally:
        lock.release()


def gui_main() -> None:
    """The `vcam-tray` GUI launcher (no console window on Windows): `vcam-tray [--config PATH]`."""
    from vcam.logs import setup_logging

    parser = argparse.ArgumentParser(prog="vcam-tray", description="The Live2Diff Camera tray icon.")
    parser.add_argument("--config", type=Path, default=None, help="the config file (default: the user's)")
    args = parser.parse_args()
    setup_logging()
    sys.exit(run_tray(args.config))
