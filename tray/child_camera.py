"""`ChildCamera`: the camera as a `vcam run` child process, commanded over its local control API and supervised:
a crash is restarted with backoff (`RestartPolicy`), a hang is killed and restarted, a clean stop is not.

The tray's process then loads no torch, CUDA or native camera library: a native crash in the camera (a CUDA
error, a segfault, the out-of-memory killer) ends the child, never the icon.

The child: `python -m vcam -v run [--config PATH] --control-file PATH`, in its own process group (a Ctrl-C
in the tray's terminal reaches the tray, which stops the child), its stdout and stderr in a per-run log
file `camera-<timestamp>.log` in the user log folder (the newest KEEP_LOGS are kept). It writes its control
API's address and token into the 0600 control file (never on a command line); every command and status goes
through `ControlClient`, Quit's stop request included: the graceful path on every system (Windows has no
SIGTERM: there `terminate()` and `kill()` are both TerminateProcess). Every restart runs the same command with
the same config file, so the new child opens the same virtual camera with the same name (the meeting app keeps
it selected); while the child is down the virtual camera gets no frames and the status says "restarting".

What ends a child, by `vcam run`'s exit codes:
- 0 (a clean stop: `POST /api/stop` from a script, SIGTERM): not a crash, not restarted (state "stopped");
- 2 (bad input or config): not a crash, not retried: its one line from stderr is the error;
- anything else, death by a signal, or a health check left unanswered for longer than the hang timeout (far
  longer than any GIL hold while running; longer still while it reports loading or warming up): a crash,
  restarted after the policy's delay, up to its limit; then the state is "error", naming the reason and the log.

Threads: `vcam-tray-camera` (the supervisor: health and status every HEALTH_INTERVAL_S, restarts) and one
`vcam-tray-camera-wait` per child (wakes the supervisor the moment its child exits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, Protocol, runtime_checkable

from vcam.tray.restart_policy import RestartPolicy

from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.control.client import ControlClient
from vcam.control.control_file import read_control_file
from vcam.errors import CameraProcessError, ControlError
from vcam.status import State, Status

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

#: the program that runs the camera (`vcam` of this Python), before its arguments
CAMERA_PROGRAM: tuple[str, ...] = (sys.executable, "-m", "vcam")
#: exit codes of `vcam run` that are not crashes: a clean stop, bad input (documented in `vcam run --help`)
EXIT_CLEAN = 0
EXIT_BAD_INPUT = 2
#: seconds between health (and status) checks of a running child
HEALTH_INTERVAL_S = 1.0
#: seconds one health or status request may take
REQUEST_TIMEOUT_S = 2.0
#: seconds without a health answer after which a running child counts as hung (no GIL hold lasts this long)
HANG_TIMEOUT_S = 20.0
#: the same while its last answer said it is starting or loading (large loads hold the GIL in long pieces)
LOADING_HANG_TIMEOUT_S = 120.0
LOADING_STATES = ("starting", "warming_up", "loading_style")
#: seconds a new child may take to write its control file (imports, opening the camera and the sinks)
STARTUP_TIMEOUT_S = 120.0
#: Quit: seconds the child has to stop after the stop request, then after terminate()
STOP_TIMEOUT_S = 10.0
TERMINATE_TIMEOUT_S = 5.0
#: per-run log files: their names, how many are kept, how many of the last lines a crash report shows
LOG_PREFIX = "camera-"
LOG_SUFFIX = ".log"
KEEP_LOGS = 10
TAIL_LINES = 20
TAIL_BYTES = 16_384

Phase = Literal["starting", "up", "restarting", "failed", "exited", "stopped"]
#: what the status says while there is no child to ask ("up": the child's own state)
PHASE_STATES: dict[Phase, State] = {
    "starting": "starting",
    "up": "running",
    "restarting": "restarting",
    "failed": "error",
    "exited": "stopped",
    "stopped": "stopped",
}


@dataclass(frozen=True)
class CrashReport:
    """One crash of the camera's process: why, when (wall time), and its log."""

    reason: str
    when: str
    log_path: Path | None
    log_tail: tuple[str, ...]


@runtime_checkable
class CrashReporting(Protocol):
    """A camera that can say why it last crashed and where its log is (`ChildCamera`)."""

    def last_crash(self) -> CrashReport | None: ...

    def log_path(self) -> Path | None: ...


def exit_reason(code: int) -> str:
    """What an exit code means, in words ("exit code 1", "killed by signal SIGKILL")."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def is_crash(code: int) -> bool:
    """Any exit but a clean stop (0) and bad input (2) is a crash, death by a signal included."""
    return code not in (EXIT_CLEAN, EXIT_BAD_INPUT)


def open_run_log(folder: Path, keep: int = KEEP_LOGS) -> tuple[Path, IO[bytes]]:
    """A new `camera-<timestamp>.log` in `folder`, opened for the child's output; older ones beyond the newest
    `keep` (this one included) are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = folder / f"{LOG_PREFIX}{stamp}{LOG_SUFFIX}"
    stream = path.open("xb")
    logs = sorted(folder.glob(f"{LOG_PREFIX}*{LOG_SUFFIX}"))
    for old in logs[: max(0, len(logs) - keep)]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path, stream


def log_tail(path: Path | None, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last `lines` non-empty lines of a log file (none when it cannot be read)."""
    if path is None:
        return ()
    try:
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - TAIL_BYTES))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return ()
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


def error_line(tail: Sequence[str]) -> str | None:
    """The one line `vcam` prints for bad input ("vcam: error: ..."), without its prefix."""
    prefix = "vcam: error: "
    for line in reversed(tail):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


def _process_options() -> dict[str, object]:
    """Popen options: the child in its own process group, and no console window on Windows."""
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined,unused-ignore]
        return {"creationflags": flags}
    return {"start_new_session": True}


class ChildCamera:
    """The tray's `CameraHandle` over a supervised `vcam run` child (see the module docstring).

    Args:
        config: the user's config; its file (`config.path`) is what every child reads.
        program: the command before `run ...` (default: this Python's `vcam`; tests give a fake camera).
        clock: the clock of the restart delays and their window (tests inject one).
        policy: when to restart (default: `RestartPolicy(clock)`).
        log_folder: where the per-run logs go (default: the user log folder).
        control_file: the control file every child writes (default: one per tray in the runtime folder).
        The timeouts default to the module's constants.
    """

    def __init__(
        self,
        config: Config,
        *,
        program: Sequence[str] = CAMERA_PROGRAM,
        clock: Clock = SYSTEM_CLOCK,
        policy: RestartPolicy | None = None,
        log_folder: Path | None = None,
        control_file: Path | None = None,
        health_interval_s: float = HEALTH_INTERVAL_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        hang_timeout_s: float = HANG_TIMEOUT_S,
        loading_hang_timeout_s: float = LOADING_HANG_TIMEOUT_S,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        terminate_timeout_s: float = TERMINATE_TIMEOUT_S,
    ) -> None:
        from vcam.paths import log_dir, runtime_dir

        self.config_path = config.path
        self.program = tuple(program)
        self.clock = clock
        self.policy = policy if policy is not None else RestartPolicy(clock)
        self.log_folder = log_folder if log_folder is not None else log_dir()
        self.control_file = control_file or runtime_dir() / f"tray-camera-{os.getpid()}.json"
        self.health_interval_s = health_interval_s
        self.request_timeout_s = request_timeout_s
        self.hang_timeout_s = hang_timeout_s
        self.loading_hang_timeout_s = loading_hang_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.terminate_timeout_s = terminate_timeout_s
        self.starts = 0  # children started so far
        self.restarts = 0  # automatic restarts so far
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._phase: Phase = "starting"
        self._message: str | None = None  # why the camera is restarting, failed or stopped
        self._status = Status(style=config.style.name, segment=config.segment.mode)
        self._process: subprocess.Popen[bytes] | None = None
        self._client: ControlClient | None = None
        self._log_path: Path | None = None
        self._log_stream: IO[bytes] | None = None
        self._last_crash: CrashReport | None = None
        self._listeners: list[Callable[[Status], None]] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()  # a child exited, or stop() was called
        self._supervisor: threading.Thread | None = None
        # what the user commanded, replayed into a restarted child (a crash must not undo a pause)
        self._wanted: dict[str, str] = {}
        self._paused = False

    # ------------------------------------------------------------------ what the tray reads
    @property
    def phase(self) -> Phase:
        with self._lock:
            return self._phase

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first and between children)."""
        with self._lock:
            process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def status(self) -> Status:
        """The last status the child reported (refreshed every HEALTH_INTERVAL_S and after each command), or
        while it is down: "restarting" / "error" / "stopped" with the reason in `last_error`."""
        with self._lock:
            phase, status, message = self._phase, self._status, self._message
        if phase == "up":
            return status
        state = PHASE_STATES[phase]
        return dataclasses.replace(status, state=state, last_error=message, fps_in=0.0, fps_out=0.0, fps_model=0.0)

    def last_crash(self) -> CrashReport | None:
        with self._lock:
            return self._last_crash

    def log_path(self) -> Path | None:
        """The log file of the current (or last) child."""
        with self._lock:
            return self._log_path

    def add_status_listener(self, fn: Callable[[Status], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _changed_now(self) -> None:
        with self._lock:
            self._changed.notify_all()
            listeners = list(self._listeners)
        status = self.status()
        for listener in listeners:
            try:
                listener(status)
            except Exception:
                log.exception("a camera status listener failed")

    def _set_phase(self, phase: Phase, message: str | None = None) -> None:
        with self._lock:
            self._phase, self._message = phase, message
        self._changed_now()

    # ------------------------------------------------------------------ commands
    def _command(self, description: str, command: Callable[[ControlClient], object]) -> None:
        with self._lock:
            client, phase, message = self._client, self._phase, self._message
        if phase != "up" or client is None:
            words = {"starting": "still starting", "restarting": "restarting"}.get(phase, "not running")
            raise ControlError(f"cannot {description}: the camera is {words}" + (f" ({message})" if message else ""))
        try:
            command(client)
        except OSError as error:
            raise ControlError(f"cannot {description}: the camera did not answer ({error})") from error
        self._refresh_status(client)

    def set_style(self, name: str) -> None:
        self._command(f"switch to style {name!r}", lambda client: client.set_style(name))
        self._wanted["style"] = name

    def set_segment(self, mode: str) -> None:
        self._command(f"set segmentation to {mode!r}", lambda client: client.set_segment(mode))
        self._wanted["segment"] = mode

    def set_prompt(self, prompt: str) -> None:
        self._command("change the prompt", lambda client: client.set_prompt(prompt))
        self._wanted["prompt"] = prompt

    def set_profile(self, mode: str) -> None:
        self._command(f"set the profile to {mode!r}", lambda client: client.set_profile(mode))
        self._wanted["profile"] = mode

    def pause(self) -> None:
        self._command("pause the camera", lambda client: client.pause())
        self._paused = True

    def resume(self) -> None:
        self._command("resume the camera", lambda client: client.resume())
        self._paused = False

    def _refresh_status(self, client: ControlClient) -> bool:
        """Read the child's status into the cache; False when it did not answer."""
        try:
            status = client.status()
        except (OSError, ControlError) as error:
            log.debug("the camera's status did not come: %s", error)
            return False
        with self._lock:
            if self._client is not client:
                return False
            changed = status != self._status
            self._status = status
        if changed:
            self._changed_now()
        return True

    # ------------------------------------------------------------------ start and stop
    def start(self) -> None:
        """Start the first child and its supervisor; return once it answers its health check. Raises
        CameraProcessError when it exits with bad input, stops by itself, or crashes more than the policy
        allows before it ever answered."""
        with self._lock:
            if self._supervisor is not None:
                raise RuntimeError("the camera was already started")
            self._spawn()
            self._supervisor = threading.Thread(target=self._supervise, name="vcam-tray-camera", daemon=True)
            self._supervisor.start()
            while self._phase in ("starting", "restarting") and not self._stopping.is_set():
                self._changed.wait(0.5)
            phase, message = self._phase, self._message
        if phase in ("failed", "exited"):
            raise CameraProcessError(message or "the camera stopped")

    def _spawn(self) -> None:
        """Start a child (caller holds the lock)."""
        with contextlib.suppress(FileNotFoundError):
            self.control_file.unlink()  # the previous child's (ours): never read it as the new one's
        if self._log_stream is not None:
            self._log_stream.close()
        try:
            self._log_path, self._log_stream = open_run_log(self.log_folder)
        except OSError as error:  # the camera matters more than its log
            log.warning("cannot write the camera's log in %s (%s); running it without one", self.log_folder, error)
            self._log_path, self._log_stream = None, None
        command = [*self.program, "-v", "run"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        command += ["--control-file", str(self.control_file)]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._client = None
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_stream if self._log_stream is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=environment,
            **_process_options(),  # type: ignore[call-overload]
        )
        self.starts += 1
        log.info("camera started as pid %d (log: %s)", self._process.pid, self._log_path)
        process = self._process
        threading.Thread(
            target=self._wait_for_exit, args=(process,), name="vcam-tray-camera-wait", daemon=True
        ).start()

    def _remove_stale_control_file(self, pid: int) -> None:
        """Remove the control file a killed child `pid` left (one that stopped cleanly removed its own)."""
        try:
            if read_control_file(self.control_file).pid == pid:
                self.control_file.unlink()
        except (ControlError, OSError):
            pass

    def _wait_for_exit(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self._wake.set()

    def stop(self) -> None:
        """Quit: ask the child to stop over the control API, terminate it after STOP_TIMEOUT_S, kill it after
        TERMINATE_TIMEOUT_S more; returns once it is gone (no process left behind) and the supervisor ended."""
        with self._lock:
            self._stopping.set()
            self._wake.set()
            process, client = self._process, self._client
            self._changed.notify_all()
        if process is not None and process.poll() is None:
            asked = False
            if client is not None:
                try:
                    client.stop()
                    asked = True
                except (OSError, ControlError) as error:
                    log.info("the camera did not take the stop request (%s); terminating it", error)
            if not asked or not _wait(process, self.stop_timeout_s):
                if asked:
                    log.warning("the camera did not stop within %g s; terminating it", self.stop_timeout_s)
                process.terminate()  # SIGTERM: a clean stop for `vcam run`; TerminateProcess on Windows
                if not _wait(process, self.terminate_timeout_s):
                    log.warning(
                        "the camera did not end within %g s of terminate; killing it", self.terminate_timeout_s
                    )
                    process.kill()
                    process.wait()
            log.info("camera (pid %d) ended: %s", process.pid, exit_reason(process.returncode))
        if process is not None:
            self._remove_stale_control_file(process.pid)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        with self._lock:
            if self._log_stream is not None:
                self._log_stream.close()
                self._log_stream = None
            self._client = None
        self._set_phase("stopped")

    # ------------------------------------------------------------------ the supervisor
    def _supervise(self) -> None:
        try:
            while not self._stopping.is_set() and self._watch_child():
                pass
        except Exception:
            log.exception("the camera's supervisor failed")
            self._set_phase("failed", "the tray's camera supervisor failed: see the tray's log")

    def _watch_child(self) -> bool:
        """Watch the current child until it ends or hangs, then decide what happens next; True when a new child
        was started (to watch next)."""
        with self._lock:
            process = self._process
        if process is None:
            raise RuntimeError("no camera child to watch")
        started = last_answer = time.monotonic()
        last_state = "starting"
        hung: str | None = None
        while not self._stopping.is_set():
            self._wake.clear()
            if process.poll() is not None:
                break
            now = time.monotonic()
            client = self._client or self._connect(process)
            if client is None:
                if now - started > self.startup_timeout_s:
                    hung = f"hung: no control API within {self.startup_timeout_s:g} s of its start"
            else:
                answer = self._health(client)
                if answer is not None:
                    last_answer, last_state = now, str(answer.get("state", ""))
                    self._refresh_status(client)
                    if self.phase != "up":
                        self._came_up(client)
                else:
                    timeout = self.loading_hang_timeout_s if last_state in LOADING_STATES else self.hang_timeout_s
                    if now - last_answer > timeout:
                        hung = f"hung: no answer to its health check for {timeout:g} s"
            if hung is not None:
                log.warning("the camera (pid %d) %s: killing it", process.pid, hung)
                process.kill()
                process.wait()
                break
            self._wake.wait(self.health_interval_s)
        if self._stopping.is_set():
            return False
        code = process.wait()
        return self._child_ended(process.pid, code, hung)

    def _connect(self, process: subprocess.Popen[bytes]) -> ControlClient | None:
        """The new child's client once its control file names it (an older file is another child's)."""
        try:
            endpoint = read_control_file(self.control_file)
        except ControlError:
            return None
        if endpoint.pid != process.pid:
            return None
        client = ControlClient(endpoint, self.request_timeout_s)
        with self._lock:
            if self._process is process:
                self._client = client
        return client

    def _health(self, client: ControlClient) -> dict[str, object] | None:
        try:
            return client.health(timeout=self.request_timeout_s)
        except (OSError, ControlError) as error:
            log.debug("the camera's health check failed: %s", error)
            return None

    def _came_up(self, client: ControlClient) -> None:
        """The child answered: replay what the user commanded since the config was read, then it is up."""
        with self._lock:
            wanted, paused, status = dict(self._wanted), self._paused, self._status
        try:
            if paused:  # first: a restarted camera must not show what a pause hid
                client.pause()
            if "style" in wanted and wanted["style"] not in (status.style, *status.styles_loading):
                client.set_style(wanted["style"])
            if "segment" in wanted and wanted["segment"] != status.segment:
                client.set_segment(wanted["segment"])
            if "prompt" in wanted:
                client.set_prompt(wanted["prompt"])
            if "profile" in wanted and wanted["profile"] != status.profile:
                client.set_profile(wanted["profile"])
        except (OSError, ControlError) as error:
            log.warning("the restarted camera did not take the earlier commands: %s", error)
        self._refresh_status(client)  # before "up": nobody sees the status from before the replay as the child's
        log.info("camera (pid %d) is up", client.endpoint.pid)
        self._set_phase("up")

    def _child_ended(self, pid: int, code: int, hung: str | None) -> bool:
        """A child ended by itself (or was killed as hung): a clean stop, bad input, or a crash to restart; True
        when a new child was started."""
        with self._lock:
            self._client = None
            log_path = self._log_path
        tail = log_tail(log_path)
        if hung is None and code == EXIT_CLEAN:
            log.info("the camera (pid %d) stopped by itself (exit code 0): not restarting it", pid)
            self._set_phase("exited", "the camera was stopped (by a stop request or a signal)")
            return False
        if hung is None and code == EXIT_BAD_INPUT:
            line = error_line(tail) or f"the camera refused its settings (exit code 2): see {log_path}"
            log.warning("the camera (pid %d) refused its input: %s", pid, line)
            self._set_phase("failed", line)
            return False
        reason = hung if hung is not None else exit_reason(code)
        when = datetime.datetime.now().isoformat(timespec="seconds")
        with self._lock:
            self._last_crash = CrashReport(reason=reason, when=when, log_path=log_path, log_tail=tail)
        delay = self.policy.next_delay()
        if delay is None:
            window_minutes = self.policy.window_s / 60
            message = (
                f"the camera crashed {self.policy.max_restarts + 1} times within {window_minutes:g} minutes "
                f"(last: {reason}); see its log: {log_path}"
            )
            log.error("%s; not restarting it", message)
            self._set_phase("failed", message)
            return False
        log.warning("the camera (pid %d) crashed (%s); restarting it in %g s", pid, reason, delay)
        self._set_phase("restarting", f"the camera crashed ({reason}); restarting it")
        if self.clock.wait(delay, self._stopping):
            return False
        with self._lock:
            if self._stopping.is_set():
                return False
            self.restarts += 1
            self._spawn()
        self._changed_now()
        return True


def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `process` ended within `timeout` seconds."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True
