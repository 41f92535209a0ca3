"""The tray's supervisor of the camera process (`ChildCamera`, `RestartPolicy`) against a fake camera process
(tests/fakes/camera_process.py: a minimal control API that crashes, hangs or exits on cue) with a manual clock
for the restart delays; then a real `vcam run` child under the real controller (the tray loads no torch).

Assertions are on states, restart counts, delays asked of the clock and process ids, never on elapsed time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from vcam.tray.backend import BackendChoice
from vcam.tray.child_camera import (
    KEEP_LOGS,
    ChildCamera,
    error_line,
    exit_reason,
    is_crash,
    log_tail,
    open_run_log,
)
from vcam.tray.controller import TrayController
from vcam.tray.restart_policy import RestartPolicy

from tests.fakes.clock import ManualClock
from tests.test_tray_fakes import FAKE_STYLES
from tests.test_tray_xvfb import child_env, exit_report, xvfb  # noqa: F401  (xvfb: the fixture `display` uses)
from tests.waiting import wait_for
from vcam.config import Config
from vcam.control.client import ControlClient
from vcam.control.control_file import process_alive
from vcam.errors import CameraProcessError, ControlError
from vcam.status import Status

REPO = Path(__file__).resolve().parent.parent
FAKE_CAMERA = Path(__file__).resolve().parent / "fakes" / "camera_process.py"
BAD_LINE = "camera.fps = 'fast' in the config file is not a number: write e.g. fps = 30"
needs_posix = pytest.mark.skipif(os.name == "nt", reason="the fake hangs with SIGSTOP (POSIX)")


@dataclass
class Fake:
    """Builds `ChildCamera`s over the fake camera process; records what they told their listeners."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    clock: ManualClock = field(default_factory=lambda: ManualClock(auto_advance=True))
    statuses: list[Status] = field(default_factory=list)
    cameras: list[ChildCamera] = field(default_factory=list)

    @property
    def runs(self) -> Path:
        return self.tmp_path / "runs.txt"

    @property
    def control_file(self) -> Path:
        return self.tmp_path / "run" / "camera.json"

    def pids(self) -> list[int]:
        return [int(line) for line in self.runs.read_text(encoding="utf-8").split()] if self.runs.exists() else []

    def camera(self, starts: str = "", config: Any = None, **options: Any) -> ChildCamera:
        self.monkeypatch.setenv("FAKE_CAMERA_RUNS", str(self.runs))
        self.monkeypatch.setenv("FAKE_CAMERA_STARTS", starts)
        settings: dict[str, Any] = {
            "program": (sys.executable, str(FAKE_CAMERA)),
            "clock": self.clock,
            "log_folder": self.tmp_path / "log",
            "control_file": self.control_file,
            "health_interval_s": 0.05,
            "request_timeout_s": 2.0,
            "hang_timeout_s": 60.0,  # no false hang on a loaded machine; the hang test sets a short one
            "stop_timeout_s": 10.0,
            **options,
        }
        camera = ChildCamera(config if config is not None else Config(), **settings)
        camera.add_status_listener(self.statuses.append)
        self.cameras.append(camera)
        return camera

    def cue(self, name: str, body: dict[str, Any] | None = None) -> None:
        """Send a cue to the fake that runs now."""
        ControlClient.from_file(self.control_file).request("POST", name, body or {})


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    harness = Fake(tmp_path, monkeypatch)
    try:
        yield harness
    finally:
        for camera in harness.cameras:
            camera.stop()
        assert [pid for pid in harness.pids() if process_alive(pid)] == []  # nothing left behind, ever


def supervisor_ended(camera: ChildCamera) -> bool:
    """The supervisor thread ended (after a final exit it must not spin on the dead child)."""
    return camera._supervisor is not None and not camera._supervisor.is_alive()


def wait_up(camera: ChildCamera, starts: int) -> None:
    wait_for(lambda: camera.starts == starts and camera.phase == "up", timeout=30, what=f"child {starts} up")


# ---------------------------------------------------------------------- the policy and the helpers
def test_the_policy_doubles_the_delay_and_stops_after_five_restarts_in_ten_minutes() -> None:
    clock = ManualClock()
    policy = RestartPolicy(clock)
    assert [policy.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, None]
    assert policy.restarts_in_window() == 5
    clock.advance(599.0)
    assert policy.next_delay() is None  # still within the window of the first restart
    clock.advance(1.0)  # the first restarts leave the window
    assert policy.restarts_in_window() == 0
    assert policy.next_delay() == 0.5
    policy.reset()
    assert policy.restarts_in_window() == 0


def test_the_policy_caps_the_delay_and_refuses_nonsense() -> None:
    policy = RestartPolicy(ManualClock(), max_restarts=8, max_delay_s=3.0)
    assert [policy.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="max_restarts=-1"):
        RestartPolicy(ManualClock(), max_restarts=-1)


def test_exit_codes_and_signals_in_words() -> None:
    assert [is_crash(code) for code in (0, 2, 1, 3, -9, -11)] == [False, False, True, True, True, True]
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert exit_reason(-signal.SIGSEGV) == "killed by signal SIGSEGV"
    assert error_line(["vcam: -> null", f"vcam: error: {BAD_LINE}", "x"]) == BAD_LINE
    assert error_line(["Traceback", "boom"]) is None


def test_run_logs_are_per_run_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    paths = []
    for number in range(KEEP_LOGS + 3):
        path, stream = open_run_log(tmp_path)
        with stream:
            stream.write(f"run {number}\n".encode())
        paths.append(path)
    assert len(set(paths)) == KEEP_LOGS + 3
    assert sorted(tmp_path.iterdir()) == paths[-KEEP_LOGS:]
    assert all(path.name.startswith("camera-") and path.suffix == ".log" for path in paths)
    assert log_tail(paths[-1]) == (f"run {KEEP_LOGS + 2}",)
    assert log_tail(tmp_path / "missing.log") == ()


# ---------------------------------------------------------------------- the supervisor over the fake camera
def test_start_commands_and_status_go_through_the_control_api(fake: Fake) -> None:
    camera = fake.camera()
    camera.start()
    assert camera.phase == "up" and camera.pid == fake.pids()[0]
    camera.set_style("cartoon")
    camera.set_segment("blur")
    camera.set_prompt("a watercolour")
    camera.pause()
    status = camera.status()
    assert (status.state, status.style, status.segment) == ("paused", "cartoon", "blur")
    camera.resume()
    assert camera.status().state == "running"
    with pytest.raises(ControlError, match="unknown style 'missing'"):
        camera.set_style("missing")
    assert fake.statuses[-1].state == "running"  # the listeners heard every change
    log_text = camera.log_path().read_text(encoding="utf-8")  # type: ignore[union-attr]
    assert f"fake camera pid {camera.pid}: serve" in log_text
    assert "token" not in " ".join(Path(f"/proc/{camera.pid}/cmdline").read_text().split("\0"))


@pytest.mark.parametrize("how", ["exit 1", "exit 3", "SIGKILL", "SIGSEGV"])
def test_a_crash_is_restarted_and_the_status_returns_to_running(fake: Fake, how: str) -> None:
    camera = fake.camera()
    camera.start()
    camera.set_style("cartoon")
    camera.pause()  # a restarted camera must not show what the pause hid
    first = camera.pid
    assert first is not None
    if how.startswith("exit"):
        fake.cue("crash", {"code": int(how.split()[1])})
    else:
        os.kill(first, getattr(signal, how))
    wait_up(camera, starts=2)
    assert camera.restarts == 1 and fake.clock.waits == [0.5]
    assert camera.pid == fake.pids()[1] != first and not process_alive(first)
    status = camera.status()
    assert (status.state, status.style, status.last_error) == ("paused", "cartoon", None)
    reason = f"exit code {how.split()[1]}" if how.startswith("exit") else f"killed by signal {how}"
    crash = camera.last_crash()
    assert crash is not None and crash.reason == reason
    assert crash.log_path is not None and crash.log_path != camera.log_path()  # each run has its own log
    assert f"fake camera pid {first}: serve" in crash.log_tail
    restarting = [s for s in fake.statuses if s.state == "restarting"]
    assert restarting and restarting[0].last_error == f"the camera crashed ({reason}); restarting it"
    with pytest.raises(ControlError, match="restarting"):  # commands while down say why
        camera._phase = "restarting"
        camera.set_segment("off")
    camera._phase = "up"


def test_a_crash_loop_stops_after_five_restarts_with_the_error_state_and_the_log(fake: Fake) -> None:
    listener: list[str] = []
    controller = TrayController(None, lambda config: fake.camera("serve" + ",exit:1" * 10), notify=listener.append)
    controller._list_styles = lambda config: FAKE_STYLES  # type: ignore[method-assign]
    controller.start_camera()
    camera = fake.cameras[0]
    fake.cue("crash", {"code": 1})
    wait_for(lambda: camera.phase == "failed", timeout=60, what="the crash loop's end")
    assert (camera.starts, camera.restarts) == (6, 5)
    wait_for(lambda: supervisor_ended(camera), what="the supervisor's end")
    assert [status.state for status in fake.statuses].count("error") == 1  # said once
    assert fake.clock.waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    state = controller.check()
    log_path = camera.log_path()
    assert log_path is not None and log_path.exists()
    assert state.runtime_failed == (
        f"the camera crashed 6 times within 10 minutes (last: exit code 1); see its log: {log_path}"
    )
    assert state.status.state == "error"
    assert listener[-1] == f'{state.runtime_failed}. Use "Restart camera" in the menu after fixing it.'
    assert controller.check().runtime_failed == state.runtime_failed and listener.count(listener[-1]) == 1
    assert controller.log_path() == log_path
    fake.monkeypatch.setattr("vcam.doctor.run_checks", lambda *args, **kwargs: [])  # the report, not the checks
    text = controller.diagnostics_text(BackendChoice("xorg", False))
    assert f"camera log: {log_path}" in text
    assert "last camera crash: exit code 1 at " in text
    assert f"  | fake camera pid {fake.pids()[-1]}: exit:1" in text
    # "Restart camera" starts afresh: a new child, a new count
    controller.restart_camera()
    wait_for(lambda: len(fake.cameras) == 2 and fake.cameras[1].phase == "up", timeout=30, what="the restart")
    assert controller.check().runtime_failed is None
    assert controller.last_crash() is not None  # the old camera's crash is still in the diagnostics
    controller.close()
    controller.stop_camera()


@needs_posix
def test_a_hang_is_killed_and_restarted(fake: Fake) -> None:
    camera = fake.camera(hang_timeout_s=1.0, request_timeout_s=0.3)
    camera.start()
    first = camera.pid
    assert first is not None
    fake.cue("hang")  # the fake stops itself: nothing answers, the process is still there
    wait_up(camera, starts=2)
    assert camera.restarts == 1 and not process_alive(first)
    crash = camera.last_crash()
    assert crash is not None and crash.reason == "hung: no answer to its health check for 1 s"
    assert camera.status().state == "running"


def test_a_child_that_never_writes_its_control_file_is_a_hang(fake: Fake, tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import time\nwhile True:\n    time.sleep(1)\n", encoding="utf-8")
    camera = fake.camera(program=(sys.executable, str(silent)), startup_timeout_s=0.5)
    camera.policy = RestartPolicy(fake.clock, max_restarts=1)
    with pytest.raises(CameraProcessError, match=r"crashed 2 times .*last: hung: no control API within 0.5 s"):
        camera.start()
    assert camera.starts == 2
    wait_for(lambda: supervisor_ended(camera), what="the supervisor's end")


def test_a_log_folder_that_cannot_be_written_does_not_stop_the_camera(fake: Fake, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be\n", encoding="utf-8")
    camera = fake.camera(log_folder=blocker)
    camera.start()
    assert camera.phase == "up" and camera.log_path() is None


@pytest.mark.parametrize("how", ["stop request", "SIGTERM"])
def test_a_clean_exit_is_not_restarted(fake: Fake, how: str) -> None:
    camera = fake.camera()
    camera.start()
    pid = camera.pid
    assert pid is not None
    if how == "SIGTERM":
        os.kill(pid, signal.SIGTERM)
    else:
        ControlClient.from_file(fake.control_file).stop()
    wait_for(lambda: camera.phase == "exited", timeout=30, what="the clean exit")
    assert (camera.starts, camera.restarts, fake.clock.waits) == (1, 0, [])
    wait_for(lambda: supervisor_ended(camera), what="the supervisor's end")
    assert [status.state for status in fake.statuses].count("stopped") == 1
    status = camera.status()
    assert (status.state, status.last_error) == ("stopped", "the camera was stopped (by a stop request or a signal)")
    assert not fake.control_file.exists()  # the fake removed its control file as `vcam run` does


def test_bad_input_exit_2_is_shown_as_its_line_and_not_retried(fake: Fake) -> None:
    listener: list[str] = []
    controller = TrayController(None, lambda config: fake.camera("exit:2"), notify=listener.append)
    controller._list_styles = lambda config: FAKE_STYLES  # type: ignore[method-assign]
    controller.start_camera()
    camera = fake.cameras[0]
    assert (camera.starts, camera.restarts, camera.phase) == (1, 0, "failed")
    wait_for(lambda: supervisor_ended(camera), what="the supervisor's end")
    assert [status.state for status in fake.statuses].count("error") == 1
    assert controller.state().runtime_failed == f"the camera could not start: {BAD_LINE}"
    assert camera.last_crash() is None  # not a crash
    assert listener == [f'the camera could not start: {BAD_LINE}. Use "Restart camera" in the menu after fixing it.']


def test_quit_stops_the_child_over_the_control_api_and_leaves_no_process(fake: Fake) -> None:
    camera = fake.camera()
    camera.start()
    pid = camera.pid
    assert pid is not None and process_alive(pid)
    camera.stop()
    assert not process_alive(pid) and camera.phase == "stopped" and camera.pid is None
    assert "fake camera: stopped" in camera.log_path().read_text(encoding="utf-8")  # type: ignore[union-attr]
    assert camera.status().state == "stopped"


def test_quit_kills_a_child_that_takes_neither_the_stop_request_nor_sigterm(fake: Fake) -> None:
    camera = fake.camera("stubborn", stop_timeout_s=0.2, terminate_timeout_s=0.2)
    camera.start()
    pid = camera.pid
    assert pid is not None
    camera.stop()
    assert not process_alive(pid)
    assert "fake camera: stopped" not in camera.log_path().read_text(encoding="utf-8")  # type: ignore[union-attr]


def test_quit_while_a_restart_waits_starts_nothing(fake: Fake) -> None:
    fake.clock = ManualClock()  # the restart delay waits until the test moves the clock: it never does
    camera = fake.camera()
    camera.start()
    fake.cue("crash", {"code": 1})
    wait_for(lambda: camera.phase == "restarting" and fake.clock.waits == [0.5], timeout=30, what="the delay")
    assert camera.status().state == "restarting"
    camera.stop()
    assert camera.starts == 1 and camera.phase == "stopped"


# ---------------------------------------------------------------------- a real `vcam run` child
REAL_CHILD = r"""
import json, sys
from pathlib import Path
from tests.waiting import wait_for
from vcam.tray.backend import BackendChoice
from vcam.tray.controller import TrayController
from vcam.control.control_file import process_alive

controller = TrayController(Path(sys.argv[1]))
controller.start_camera()
camera = controller.camera()
assert camera is not None, controller.state().runtime_failed
wait_for(lambda: controller.check().status.state == "running", timeout=60, what="running")
camera.set_style("cartoon")
camera.set_segment("blur")
wait_for(lambda: controller.check().status.style == "cartoon", timeout=60, what="the cartoon style")
status = controller.check().status
pid = camera.pid
report = {"pid": pid, "torch": "torch" in sys.modules, "status": [status.state, status.style, status.segment]}
controller.close()
controller.stop_camera()
report["alive_after_quit"] = process_alive(pid)
report["log"] = str(controller.log_path())
print("REPORT " + json.dumps(report), flush=True)
"""


def write_demo_config(path: Path) -> None:
    path.write_text(
        '[camera]\nsource = "demo"\nwidth = 160\nheight = 96\nfps = 30\n'
        '[output]\nsinks = ["null"]\nwidth = 160\nheight = 96\nfps = 30\n',
        encoding="utf-8",
    )


def test_the_tray_commands_a_real_camera_child_and_loads_no_torch(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    write_demo_config(config_path)
    env = {**os.environ, "VCAM_HOME": str(tmp_path / "vcam"), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REAL_CHILD, str(config_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    reports = [line[len("REPORT ") :] for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and reports, result.stderr
    report = json.loads(reports[0])
    assert report["status"] == ["running", "cartoon", "blur"]
    assert report["torch"] is False  # the camera's process has it (if anything does), never the tray's
    assert report["alive_after_quit"] is False
    log = Path(report["log"])
    assert log.parent == tmp_path / "vcam" / "log" and log.name.startswith("camera-")
    assert "vcam: demo" in log.read_text(encoding="utf-8") or "control API" in log.read_text(encoding="utf-8")


# ---------------------------------------------------------------------- the real tray under Xvfb
RESTORE_CHILD = r"""
import faulthandler, json, os, signal, sys, time
from pathlib import Path
faulthandler.dump_traceback_later(170, exit=True)  # a hung tray shows where it hangs, then ends
from tests.waiting import wait_until
from vcam.control.control_file import process_alive
from vcam.tray.app import run_tray


def on_ready(app):
    report = {}
    try:
        controller = app.controller
        camera = controller.camera()
        report["running"] = wait_until(lambda: controller.check().status.state == "running", timeout=60)
        first = camera.pid
        report["first"] = first
        states = []

        def restored():
            status = controller.check().status
            states.append(status.state)
            return camera.pid not in (None, first) and status.state == "running" and status.frames_out > 0

        os.kill(first, signal.SIGKILL)
        report["restored"] = wait_until(restored, timeout=90, interval=0.02)
        report["second"] = camera.pid
        report["states"] = sorted(set(states))
        report["first_alive"] = process_alive(first)
        report["restarts"] = camera.restarts
        report["crash"] = camera.last_crash().reason
        report["failed"] = controller.state().runtime_failed
    finally:
        print("REPORT " + json.dumps(report), flush=True)
        app.quit()


code = run_tray(Path(sys.argv[1]), on_ready=on_ready)
print("EXIT " + json.dumps({"code": code}), flush=True)
sys.exit(code)
"""


@pytest.fixture
def display(request: pytest.FixtureRequest) -> str:
    """The DISPLAY of tests/test_tray_xvfb.py's private Xvfb server (skips where Xvfb is missing)."""
    return str(request.getfixturevalue("xvfb"))


def test_the_real_tray_restores_a_camera_killed_with_sigkill(display: str, tmp_path: Path) -> None:
    """The tray under Xvfb (xorg backend) with a real `vcam run --source demo --sink null` child: kill -9 of
    the child; the tray starts a new one (a new pid, running, sending frames) and Quit leaves neither."""
    config_path = tmp_path / "config.toml"
    write_demo_config(config_path)
    env = child_env(display, tmp_path, "xorg")
    result = subprocess.run(
        [sys.executable, "-c", RESTORE_CHILD, str(config_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
    )
    reports = [line[len("REPORT ") :] for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert reports, f"no report; exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    report = json.loads(reports[0])
    assert report["running"] and report["restored"], report
    assert report["second"] != report["first"] and not report["first_alive"]
    assert "restarting" in report["states"]
    assert (report["restarts"], report["crash"], report["failed"]) == (1, "killed by signal SIGKILL", None)
    assert exit_report(result) == {"code": 0}
    assert not process_alive(report["second"])  # Quit left no camera behind
    logs = sorted((tmp_path / "vcam" / "log").glob("camera-*.log"))
    assert len(logs) == 2  # one per run
