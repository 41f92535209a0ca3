"""The tray app: runs the camera with the user's config and shows a pystray icon whose menu controls it.

Threads:
- main: `icon.run()` (macOS needs the icon's loop there; every backend accepts it);
- vcam-tray-start: loads the config and styles, builds and starts the runtime (which has its own threads);
- vcam-tray-watch: wakes on the runtime's status listener (or every POLL_S for the fps) and updates
  the icon's image, tooltip and menu when they change; it also notices a runtime that died and
  turns that into the error icon, a notification and the "Restart camera" item;
- short-lived workers for downloads, diagnostics and quitting, so the menu never blocks.

Errors never end the app silently: a runtime that cannot start or dies shows in the icon (red,
with "!"), in the tooltip, in the menu's first line, and as a notification where the backend has
them; everything is also in the log file.
"""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from vcam.tray.autostart import disable_autostart, enable_autostart, is_autostart_enabled
from vcam.tray.backend import BackendChoice, choose_backend
from vcam.tray.icons import icon_image, icon_state
from vcam.tray.menu import APP_TITLE, MenuState, RuntimeControl, StyleEntry, build_menu, style_title, tooltip
from vcam.tray.single_instance import AlreadyRunning, SingleInstanceLock

from vcam.status import Status

if TYPE_CHECKING:
    import pystray

    from vcam.config import Config

log = logging.getLogger(__name__)

#: how often the watcher refreshes the tooltip's fps when nothing else happens
POLL_S = 1.0
ICON_NAME = "live2diff-vcam"
#: how long to wait for the icon's loop to end after stop(), and how often to ask again (xorg)
STOP_RETRY_S = 1.0
STOP_RETRIES = 3
DIAGNOSTICS_FILE_NAME = "diagnostics.txt"


class ManagedRuntime(RuntimeControl, Protocol):
    """What the app needs beyond the menu's commands: starting it and hearing about changes."""

    def start(self) -> None: ...

    def add_status_listener(self, fn: Callable[[Status], None]) -> None: ...


RuntimeFactory = Callable[["Config"], ManagedRuntime]


def _default_runtime_factory(config: Config) -> ManagedRuntime:
    from vcam.runtime import build_runtime

    return build_runtime(config)


class TrayApp:
    """The tray's state and the menu's actions; `run()` shows the icon until Quit.

    Args:
        config_path: the config file (None: the user's default file).
        runtime_factory: builds the runtime from the config (default: `vcam.runtime.build_runtime`).
        backend: the chosen pystray backend (for the "no menu" warning and the diagnostics).
        autostart_home: the home folder the "Start at login" item writes into (None: the user's).
    """

    def __init__(
        self,
        config_path: Path | None = None,
        runtime_factory: RuntimeFactory | None = None,
        backend: BackendChoice | None = None,
        autostart_home: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.backend = backend if backend is not None else BackendChoice(None, True)
        self.autostart_home = autostart_home
        self._runtime_factory = runtime_factory or _default_runtime_factory
        self._lock = threading.RLock()
        self._runtime: ManagedRuntime | None = None
        self._config: Config | None = None
        self._failed: str | None = None
        self._styles: tuple[StyleEntry, ...] = ()
        self._downloads: dict[str, float] = {}
        self._download_errors: dict[str, str] = {}
        self._autostart = self._read_autostart()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._starting = threading.Lock()  # one start or restart at a time
        self._threads: list[threading.Thread] = []
        self._watcher: threading.Thread | None = None
        self._icon_loop_running = False
        self._loop_ended = threading.Event()
        self._refreshed = threading.Event()
        self._shown: dict[str, Any] = {}  # what the icon shows now: image state, title, menu key
        self._last_error_seen: str | None = None
        self.icon: pystray.Icon | None = None

    # ------------------------------------------------------------------ state
    def state(self) -> MenuState:
        """One snapshot of everything the menu and the icon show."""
        with self._lock:
            runtime, failed = self._runtime, self._failed
            styles, downloads, errors = self._styles, dict(self._downloads), dict(self._download_errors)
            autostart = self._autostart
        status = Status()
        if runtime is not None:
            try:
                status = runtime.status()
            except Exception as error:
                log.exception("the runtime's status failed")
                failed = failed or f"the camera stopped responding: {error}"
        return MenuState(
            status=status,
            styles=styles,
            runtime_failed=failed,
            downloads=downloads,
            download_errors=errors,
            autostart=autostart,
        )

    def runtime(self) -> RuntimeControl | None:
        """The runtime to command, or None while there is none (starting, failed, quitting)."""
        with self._lock:
            return self._runtime if self._failed is None else None

    def _read_autostart(self) -> bool:
        try:
            return is_autostart_enabled(self.autostart_home)
        except Exception as error:  # a broken registry or home must not stop the tray
            log.warning("cannot tell whether the tray starts at login: %s", error)
            return False

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except Exception as error:
                log.exception("the tray's %s thread failed", name)
                self.notify(f"{name} failed: {error}")

        thread = threading.Thread(target=guarded, name=f"vcam-tray-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    # ------------------------------------------------------------------ runtime lifecycle
    def _load_config(self) -> Config:
        from vcam.config import load_config

        return load_config(self.config_path)

    def _list_styles(self, config: Config) -> tuple[StyleEntry, ...]:
        """Every style; the classic ones alone when the diffusion catalogue cannot be read."""
        from vcam.styles import list_styles

        try:
            return tuple(list_styles(config))
        except Exception as error:
            log.warning("cannot list the diffusion styles (%s); offering the classic ones", error)
        try:
            return tuple(list_styles(config, diffusion=False))
        except Exception as error:
            log.warning("cannot list the styles: %s", error)
            return ()

    def start_runtime(self) -> None:
        """Load the config and the styles, build the runtime and start it; failures become the error state."""
        with self._starting:
            if self._stopping.is_set():
                return
            try:
                config = self._load_config()
                with self._lock:
                    self._config = config
                styles = self._list_styles(config)
                with self._lock:
                    self._styles = styles
                runtime = self._runtime_factory(config)
                runtime.add_status_listener(lambda status: self._wake.set())
                with self._lock:
                    self._runtime = runtime
                    self._failed = None
                runtime.start()
            except Exception as error:
                log.exception("the camera could not start")
                self._set_failed(f"the camera could not start: {error}")
            else:
                log.info("camera started")
                if self._stopping.is_set():  # Quit came while it was starting
                    self._stop_runtime()
            self._wake.set()

    def _set_failed(self, message: str) -> None:
        with self._lock:
            already = self._failed is not None
            self._failed = message
        self._wake.set()
        if not already:
            self.notify(f'{message}. Use "Restart camera" in the menu after fixing it.')

    def _stop_runtime(self) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            try:
                runtime.stop()
            except Exception:
                log.exception("stopping the camera failed")

    def restart_runtime(self) -> None:
        """Stop the runtime (if any) and start a fresh one from the config file as it is now."""

        def restart() -> None:
            log.info("restarting the camera")
            self._stop_runtime()
            with self._lock:
                self._failed = None
                self._last_error_seen = None
            self._wake.set()
            self.start_runtime()

        self._spawn(restart, "restart")

    # ------------------------------------------------------------------ menu actions
    def save_setting(self, key: str, value: Any) -> None:
        """Remember a menu choice in the config file, so the next start uses it."""
        from vcam.config import update_config

        try:
            config = update_config({key: value}, path=self.config_path)
        except Exception as error:
            log.warning("cannot save %s = %r: %s", key, value, error)
            self.notify(f"could not save {key} = {value!r} in the config file: {error}")
            return
        with self._lock:
            self._config = config
        self._wake.set()

    def download_style(self, name: str) -> None:
        """Download the weights of style `name` in the background; the menu shows the progress."""
        with self._lock:
            if name in self._downloads:
                return
            self._downloads[name] = 0.0
            self._download_errors.pop(name, None)
        self._wake.set()
        self._spawn(lambda: self._download(name), f"download-{name}")

    def _download(self, name: str) -> None:
        title = style_title(self.state(), name)
        self.notify(f"downloading the weights of {title}; the Style menu shows the progress")
        last_percent = -1

        def progress(message: str, fraction: float) -> None:
            nonlocal last_percent
            fraction = min(max(float(fraction), 0.0), 1.0)
            with self._lock:
                self._downloads[name] = fraction
            if int(fraction * 100) != last_percent:
                last_percent = int(fraction * 100)
                log.info("download %s: %d%% %s", name, last_percent, message)
                self._wake.set()

        try:
            from vcam.store.download import download_style

            config = self._config if self._config is not None else self._load_config()
            download_style(name, config, progress)
        except Exception as error:
            log.exception("downloading style %r failed", name)
            with self._lock:
                self._downloads.pop(name, None)
                self._download_errors[name] = str(error)
            self._wake.set()
            self.notify(f"downloading {title} failed: {error}")
            return
        styles = self._list_styles(config)
        with self._lock:
            self._downloads.pop(name, None)
            self._styles = styles or self._styles
        self._wake.set()
        self.notify(f"{title} is downloaded; switching to it")
        runtime = self.runtime()
        if runtime is not None:
            runtime.set_style(name)
            self.save_setting("style.name", name)

    def open_preview(self) -> None:
        from vcam.tray.opener import open_url

        url = self.state().status.preview_url
        if url is None:
            self.notify('no preview is running: add "preview" to [output] sinks in the config')
            return
        self._spawn(lambda: open_url(url), "open-preview")

    def settings_folder(self) -> Path:
        from vcam.paths import config_dir

        folder = self.config_path.parent if self.config_path is not None else config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def open_settings_folder(self) -> None:
        from vcam.tray.opener import open_path

        self._spawn(lambda: open_path(self.settings_folder()), "open-settings")

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
        with self._lock:
            self._autostart = self._read_autostart()
        self._wake.set()

    def diagnostics_text(self) -> str:
        """The About / diagnostics report: versions, backend, status, and what `vcam doctor` checks."""
        from vcam import __version__

        state = self.state()
        lines = [
            f"{APP_TITLE} {__version__}",
            f"Python {platform.python_version()} on {platform.platform()}",
            f"tray backend: {self.backend.name or 'pystray default'}"
            + ("" if self.backend.has_menu else " (no menu: see the warning in the log)"),
            f"config file: {self.config_path or 'the default one'}",
            f"camera: {tooltip(state)}",
        ]
        if state.runtime_failed:
            lines.append(f"camera error: {state.runtime_failed}")
        if state.status.last_error:
            lines.append(f"last error: {state.status.last_error}")
        lines += ["", "Checks (vcam doctor):"]
        try:
            from vcam.doctor import run_checks

            checks = run_checks(self._config) if self._config is not None else run_checks(config_path=self.config_path)
            for check in checks:
                lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
                if not check.ok and check.fix:
                    lines.append(f"         fix: {check.fix}")
        except Exception as error:
            log.exception("the diagnostics failed")
            lines.append(f"  the checks could not run: {error}")
        return "\n".join(lines) + "\n"

    def show_about(self) -> None:
        """Write the diagnostics report next to the log file and open it."""

        def about() -> None:
            from vcam.tray.opener import open_path

            from vcam.paths import log_dir

            text = self.diagnostics_text()
            folder = log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / DIAGNOSTICS_FILE_NAME
            path.write_text(text, encoding="utf-8")
            failed = text.count("[FAIL]")
            self.notify(f"{failed} check(s) failed: see {path}" if failed else f"all checks passed: see {path}")
            open_path(path)

        self._spawn(about, "about")

    def quit(self) -> None:
        """Stop the camera and the icon (from any thread); the watcher does it when it runs."""
        if self._stopping.is_set():
            return
        log.info("quitting")
        self._stopping.set()
        self._wake.set()
        watcher = self._watcher
        if watcher is None or not watcher.is_alive():
            self._spawn(self._shut_down, "quit")

    def _shut_down(self) -> None:
        self._stop_runtime()
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
        """A desktop notification where the backend has them; always logged."""
        log.warning("%s", message)
        icon = self.icon
        if icon is None or not getattr(icon, "HAS_NOTIFICATION", False):
            return
        try:
            icon.notify(message, APP_TITLE)
        except Exception as error:  # no notification daemon: the icon and the log still show it
            log.debug("notification failed: %s", error)

    def refresh(self) -> None:
        """Bring the icon's image, tooltip and menu up to date with the runtime; called by the watcher."""
        state = self.state()
        status = state.status
        if state.runtime_failed is None and self._runtime is not None and not self._stopping.is_set():
            if status.state in ("error", "stopped"):
                self._set_failed(status.last_error or "the camera stopped unexpectedly")
                state = self.state()
            elif status.last_error and status.last_error != self._last_error_seen:
                self.notify(status.last_error)
        self._last_error_seen = status.last_error
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

    def _watch(self) -> None:
        """The one thread that changes the icon after start-up (pystray's xorg backend and python-xlib
        deadlock when several threads update the icon at once), including stopping it on Quit."""
        try:
            while not self._stopping.is_set():
                self._wake.wait(POLL_S)
                self._wake.clear()
                if self._stopping.is_set():
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
            ICON_NAME, icon_image("warming_up"), APP_TITLE, menu=build_menu(self.state, self.runtime, self)
        )
        self._shown["image"] = "warming_up"
        return icon

    def run(self, on_ready: Callable[[TrayApp], None] | None = None) -> int:
        """Show the icon and run the camera until Quit (blocks; call from the main thread). Returns 0."""
        self.icon = icon = self.build_icon()
        log.info("tray icon backend: %s", type(icon).__module__)

        def setup(icon: Any) -> None:
            self._icon_loop_running = True
            icon.visible = True
            if self.backend.warning:
                log.warning("%s", self.backend.warning)
            self._watcher = self._spawn(self._watch, "watch")
            starter = self._spawn(self.start_runtime, "start")
            if on_ready is not None:

                def ready() -> None:
                    starter.join()
                    self.wait_refreshed()
                    on_ready(self)

                self._spawn(ready, "ready")

        previous = _install_signal_handlers(self.quit)
        try:
            icon.run(setup)
        except Exception:
            if not self._stopping.is_set():
                raise
            # pystray's GTK backends raise at exit when the session has no notification service
            log.debug("the icon's loop raised while stopping", exc_info=True)
        finally:
            self._loop_ended.set()
            self._icon_loop_running = False  # the loop is over: nothing may wait on it now
            _restore_signal_handlers(previous)
            self._stopping.set()
            self._wake.set()
            self._stop_runtime()
            for thread in list(self._threads):
                if thread is not threading.current_thread():
                    thread.join(timeout=5)
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
    runtime_factory: RuntimeFactory | None = None,
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
        app = TrayApp(config_path, runtime_factory=runtime_factory, backend=backend)
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
