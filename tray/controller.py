"""The tray's camera supervisor, without any UI import: starts the camera, notices when it dies, restarts it,
downloads style weights with progress, saves menu choices in the config file, and writes the diagnostics text.

The controller talks to the camera only through `CameraHandle`. The tray's camera is `ChildCamera`
(`vcam.tray.child_camera`): `vcam run` as a child process behind its local control API, restarted with backoff
when it crashes, so this process loads no torch and a crash of the camera never takes the icon down.
`InProcessCamera` runs the runtime in this process instead (tests, development).

The icon (`vcam.tray.app`) owns the controller and hears from it through two callbacks: `notify(message)`
for what the user must see, and `on_change()` whenever the state the icon shows may have changed; a third,
`ask_image(problem)`, asks the user for a background image (a file chooser, or says which key to set).

A menu choice is saved in the config file only once the camera accepted it, and a saved choice the camera
cannot use at start is dropped there (`vcam.assemble`): no setting can lock the user out of the camera.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vcam.tray.child_camera import ChildCamera, CrashReport, CrashReporting
from vcam.tray.menu import APP_TITLE, MenuState, MenuStyle, RuntimeControl, style_title, tooltip

from vcam.status import Status

if TYPE_CHECKING:
    from vcam.tray.backend import BackendChoice

    from vcam.config import Config
    from vcam.runtime import Runtime

log = logging.getLogger(__name__)


class CameraHandle(RuntimeControl, Protocol):
    """The camera as the tray commands it: the menu's commands (`RuntimeControl`: set_style, set_segment,
    pause, resume, stop, status) plus starting it and hearing about its status changes.

    Commands return once the camera accepted them (a style then loads in the background); a refused
    command raises. `status()` is a snapshot; listeners may be called from any thread.
    """

    def start(self) -> None: ...

    def add_status_listener(self, fn: Callable[[Status], None]) -> None: ...


CameraFactory = Callable[["Config"], CameraHandle]


class InProcessCamera:
    """The camera's runtime running in this process, built from the config by the app's composition root."""

    def __init__(self, config: Config) -> None:
        from vcam.assemble import build_runtime  # the tray's one reference to the composition root

        self.runtime: Runtime = build_runtime(config)

    def start(self) -> None:
        self.runtime.start()

    def stop(self) -> None:
        self.runtime.stop()

    def set_style(self, name: str) -> None:
        self.runtime.set_style(name)

    def set_segment(self, mode: str) -> None:
        self.runtime.set_segment(mode)

    def set_profile(self, mode: str) -> None:
        self.runtime.set_profile(mode)

    def pause(self) -> None:
        self.runtime.pause()

    def resume(self) -> None:
        self.runtime.resume()

    def status(self) -> Status:
        return self.runtime.status()

    def add_status_listener(self, fn: Callable[[Status], None]) -> None:
        self.runtime.add_status_listener(fn)


def _ignore_change() -> None:
    pass


def _log_only(message: str) -> None:
    log.warning("%s", message)


def _no_chooser(problem: str) -> Path | None:
    log.warning("%s: set [segment] background_image in the config file", problem)
    return None


def background_image_problem(image: str) -> str | None:
    """Why `image` (the config's segment.background_image) cannot be put behind the user; None when it can."""
    from vcam.errors import UserError
    from vcam.segment.compose import load_image

    if not image:
        return "no background image is set"
    try:
        load_image(image)
    except UserError as error:
        return str(error)
    return None


class TrayController:
    """The camera, the styles, downloads and settings behind the tray's menu; thread-safe.

    Args:
        config_path: the config file (None: the user's default file).
        camera_factory: builds the camera from the config (default: `ChildCamera`, a supervised child process).
        notify: shows a message to the user (the icon's notification; default: the log only).
        on_change: called whenever the state may have changed (the icon's watcher wakes on it).
        ask_image: asks the user for a background image, given why one is needed; returns the file or None
            (called in a worker thread; default: log which key to set).
    """

    def __init__(
        self,
        config_path: Path | None = None,
        camera_factory: CameraFactory | None = None,
        *,
        notify: Callable[[str], None] = _log_only,
        on_change: Callable[[], None] = _ignore_change,
        ask_image: Callable[[str], Path | None] = _no_chooser,
    ) -> None:
        self.config_path = config_path
        self._ask_image = ask_image
        self._camera_factory: CameraFactory = camera_factory or ChildCamera
        self._notify = notify
        self._on_change = on_change
        self._lock = threading.RLock()
        self._camera: CameraHandle | None = None
        self._config: Config | None = None
        self._failed: str | None = None
        self._styles: tuple[MenuStyle, ...] = ()
        self._downloads: dict[str, float] = {}
        self._download_errors: dict[str, str] = {}
        self._last_error_seen: str | None = None
        self._last_crash: CrashReport | None = None  # of a camera that was since replaced
        self._last_log: Path | None = None
        self._closing = threading.Event()
        self._starting = threading.Lock()  # one start or restart at a time
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ state
    def state(self) -> MenuState:
        """One snapshot of the camera, the styles and the downloads (the app adds its own items)."""
        with self._lock:
            camera, failed = self._camera, self._failed
            styles, downloads, errors = self._styles, dict(self._downloads), dict(self._download_errors)
        status = Status()
        if camera is not None:
            try:
                status = camera.status()
            except Exception as error:
                log.exception("the runtime's status failed")
                failed = failed or f"the camera stopped responding: {error}"
        return MenuState(
            status=status,
            styles=styles,
            runtime_failed=failed,
            downloads=downloads,
            download_errors=errors,
        )

    def camera(self) -> CameraHandle | None:
        """The camera to command, or None while there is none (starting, failed, quitting)."""
        with self._lock:
            return self._camera if self._failed is None else None

    def check(self) -> MenuState:
        """The state now, after turning a camera that died into the failed state and notifying each new
        camera error once (the icon's watcher calls it on every wake)."""
        state = self.state()
        status = state.status
        if state.runtime_failed is None and self._camera is not None and not self._closing.is_set():
            if status.state in ("error", "stopped"):
                self._set_failed(status.last_error or "the camera stopped unexpectedly")
                state = self.state()
            elif status.last_error and status.last_error != self._last_error_seen:
                self._notify(status.last_error)
        self._last_error_seen = status.last_error
        return state

    # ------------------------------------------------------------------ worker threads
    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Run `target` in a daemon thread `vcam-tray-NAME`; an exception in it is logged and notified."""

        def guarded() -> None:
            try:
                target()
            except Exception as error:
                log.exception("the tray's %s thread failed", name)
                self._notify(f"{name} failed: {error}")

        thread = threading.Thread(target=guarded, name=f"vcam-tray-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def join_threads(self, timeout: float = 5.0) -> None:
        """Wait for the threads from `spawn` (each up to `timeout` seconds), except the calling one."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)

    # ------------------------------------------------------------------ camera lifecycle
    def _load_config(self) -> Config:
        from vcam.config import load_config

        return load_config(self.config_path)

    def _list_styles(self, config: Config) -> tuple[MenuStyle, ...]:
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

    def start_camera(self) -> None:
        """Load the config and the styles, build the camera and start it; failures become the error state."""
        with self._starting:
            if self._closing.is_set():
                return
            try:
                config = self._load_config()
                with self._lock:
                    self._config = config
                styles = self._list_styles(config)
                with self._lock:
                    self._styles = styles
                camera = self._camera_factory(config)
                camera.add_status_listener(lambda status: self._on_change())
                with self._lock:
                    self._camera = camera
                    self._failed = None
                camera.start()
            except Exception as error:
                log.exception("the camera could not start")
                self._set_failed(f"the camera could not start: {error}")
            else:
                log.info("camera started")
                if self._closing.is_set():  # Quit came while it was starting
                    self.stop_camera()
            self._on_change()

    def _set_failed(self, message: str) -> None:
        with self._lock:
            already = self._failed is not None
            self._failed = message
        self._on_change()
        if not already:
            self._notify(f'{message}. Use "Restart camera" in the menu after fixing it.')

    def stop_camera(self) -> None:
        """Stop the camera, if there is one (blocks until it stopped)."""
        with self._lock:
            camera, self._camera = self._camera, None
        if isinstance(camera, CrashReporting):
            self._last_crash = camera.last_crash() or self._last_crash
            self._last_log = camera.log_path() or self._last_log
        if camera is not None:
            try:
                camera.stop()
            except Exception:
                log.exception("stopping the camera failed")

    def restart_camera(self) -> None:
        """In the background: stop the camera (if any) and start a fresh one from the config file as it is now."""

        def restart() -> None:
            log.info("restarting the camera")
            self.stop_camera()
            with self._lock:
                self._failed = None
                self._last_error_seen = None
            self._on_change()
            self.start_camera()

        self.spawn(restart, "restart")

    @property
    def closing(self) -> bool:
        """True once `close()` was called: the tray is quitting."""
        return self._closing.is_set()

    def close(self) -> None:
        """From now on no camera starts, and one that is starting stops once started; `stop_camera()` stops
        the running one (the caller picks the thread that waits for it)."""
        self._closing.set()

    # ------------------------------------------------------------------ settings and downloads
    def save_setting(self, key: str, value: Any) -> bool:
        """Remember a menu choice in the config file, so the next start uses it; False (notified) on failure."""
        from vcam.config import update_config

        try:
            config = update_config({key: value}, path=self.config_path)
        except Exception as error:
            log.warning("cannot save %s = %r: %s", key, value, error)
            self._notify(f"could not save {key} = {value!r} in the config file: {error}")
            return False
        with self._lock:
            self._config = config
        self._on_change()
        return True

    def set_segment(self, mode: str) -> bool:
        """Send segmentation `mode` to the camera and save it once accepted; True when it was."""
        camera = self.camera()
        if camera is None:
            log.warning("cannot set segmentation to %r: the camera is not running", mode)
            return False
        try:
            camera.set_segment(mode)
        except Exception as error:  # the camera's status says why (the watcher notifies it)
            log.warning("the camera refused segmentation %r: %s", mode, error)
            return False
        return self.save_setting("segment.mode", mode)

    def replace_background(self) -> None:
        """ "Replace the background": switch at once when the config names a usable image; otherwise ask for
        one in the background, save it, restart the camera with it, then switch (saved once accepted)."""
        with self._lock:
            config = self._config
        problem = background_image_problem(config.segment.background_image if config is not None else "")
        if problem is None:
            self.set_segment("replace")
            return
        self.spawn(lambda: self._choose_background(problem), "choose-background")

    def _choose_background(self, problem: str) -> None:
        chosen = self._ask_image(problem)
        if chosen is None:
            log.info("no background image chosen: segmentation stays as it is")
            return
        chosen_problem = background_image_problem(str(chosen))
        if chosen_problem is not None:
            self._notify(f"cannot replace the background: {chosen_problem}")
            return
        if not self.save_setting("segment.background_image", str(chosen)):
            return
        log.info("background image: %s; restarting the camera with it", chosen)
        self.stop_camera()  # the camera reads the image when it starts
        self.start_camera()
        self.set_segment("replace")

    def download_style(self, name: str) -> None:
        """Download the weights of style `name` in the background; the state shows the progress."""
        with self._lock:
            if name in self._downloads:
                return
            self._downloads[name] = 0.0
            self._download_errors.pop(name, None)
        self._on_change()
        self.spawn(lambda: self._download(name), f"download-{name}")

    def _download(self, name: str) -> None:
        title = style_title(self.state(), name)
        self._notify(f"downloading the weights of {title}; the Style menu shows the progress")
        last_percent = -1

        def progress(message: str, fraction: float) -> None:
            nonlocal last_percent
            fraction = min(max(float(fraction), 0.0), 1.0)
            with self._lock:
                self._downloads[name] = fraction
            if int(fraction * 100) != last_percent:
                last_percent = int(fraction * 100)
                log.info("download %s: %d%% %s", name, last_percent, message)
                self._on_change()

        try:
            from vcam.store.download import download_style

            config = self._config if self._config is not None else self._load_config()
            download_style(name, config, progress)
        except Exception as error:
            log.exception("downloading style %r failed", name)
            with self._lock:
                self._downloads.pop(name, None)
                self._download_errors[name] = str(error)
            self._on_change()
            self._notify(f"downloading {title} failed: {error}")
            return
        styles = self._list_styles(config)
        with self._lock:
            self._downloads.pop(name, None)
            self._styles = styles or self._styles
        self._on_change()
        self._notify(f"{title} is downloaded; switching to it")
        camera = self.camera()
        if camera is not None:
            camera.set_style(name)
            self.save_setting("style.name", name)

    # ------------------------------------------------------------------ diagnostics
    def last_crash(self) -> CrashReport | None:
        """The camera process's last crash (of this camera or the one before a restart), if any."""
        camera = self._camera
        report = camera.last_crash() if isinstance(camera, CrashReporting) else None
        return report or self._last_crash

    def log_path(self) -> Path | None:
        """The log file of the camera process now (or of the last one); None for an in-process camera."""
        camera = self._camera
        path = camera.log_path() if isinstance(camera, CrashReporting) else None
        return path or self._last_log

    def diagnostics_text(self, backend: BackendChoice) -> str:
        """The About / diagnostics report: versions, the tray's `backend`, the camera, and what `vcam doctor`
        checks."""
        from vcam import __version__

        state = self.state()
        lines = [
            f"{APP_TITLE} {__version__}",
            f"Python {platform.python_version()} on {platform.platform()}",
            f"tray backend: {backend.name or 'pystray default'}"
            + ("" if backend.has_menu else " (no menu: see the warning in the log)"),
            f"config file: {self.config_path or 'the default one'}",
            f"camera: {tooltip(state)}",
        ]
        if state.status.latency_ms_p50 > 0:
            from vcam.latency import audio_delay_hint

            lines += ["", audio_delay_hint(state.status.audio_delay_ms), ""]
        if state.runtime_failed:
            lines.append(f"camera error: {state.runtime_failed}")
        if state.status.last_error:
            lines.append(f"last error: {state.status.last_error}")
        log_path = self.log_path()
        if log_path is not None:
            lines.append(f"camera log: {log_path}")
        crash = self.last_crash()
        if crash is not None:
            lines.append(f"last camera crash: {crash.reason} at {crash.when}; its log: {crash.log_path}")
            lines += [f"  | {line}" for line in crash.log_tail]
        lines += ["", "Checks (vcam doctor):"]
        try:
            from vcam.doctor import run_checks

            checks = run_checks(self._config) if self._config is not None else run_checks(config_path=self.config_path)
            for check in checks:
                mark = "ok" if check.ok else "FAIL" if check.required else "optional"
                lines.append(f"  [{mark}] {check.name}: {check.detail}")
                if not check.ok and check.fix:
                    lines.append(f"         fix: {check.fix}")
        except Exception as error:
            log.exception("the diagnostics failed")
            lines.append(f"  the checks could not run: {error}")
        return "\n".join(lines) + "\n"
