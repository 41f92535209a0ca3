"""Real tray icons under Xvfb, each in its own process (pystray picks its backend at import):
the xorg backend runs and stops cleanly (Quit and SIGTERM); with Debian's python3-gi, the GTK and
AppIndicator backends (under dbus-run-session) build the real Gtk menu and its items activate.

Needs `Xvfb` (apt: xvfb); the GTK tests also python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1
dbus-x11. Skipped with the reason when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vcam.tray.backend import system_gi_abi_problem

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import faulthandler, json, re, sys, threading, time
faulthandler.dump_traceback_later(20, exit=True)  # a hung tray shows where it hangs, then ends
from tests.test_tray_fakes import FakeCamera
from vcam.tray.app import run_tray

mode = sys.argv[1]
runtimes = []


def factory(config):
    runtimes.append(FakeCamera(config))
    return runtimes[-1]


def text(item):
    # the item's label without markup (GTK shows the default item in bold: <b>Pause camera</b>)
    return re.sub("<[^>]+>", "", item.get_label() or "")


def walk(menu, path):
    # the Gtk.MenuItem reached by a path of label prefixes
    for depth, label in enumerate(path):
        children = [child for child in menu.get_children() if hasattr(child, "get_label")]
        item = next(child for child in children if text(child).startswith(label))
        if depth == len(path) - 1:
            return item
        menu = item.get_submenu()


def activate_in_gtk(icon, paths):
    from gi.repository import GLib

    done = threading.Event()
    labels = []

    def run():
        try:
            top = icon._menu_handle
            labels.extend(label for label in (text(child) for child in top.get_children()) if label)
            for path in paths:
                walk(icon._menu_handle, path).activate()
        finally:
            done.set()
        return False

    GLib.idle_add(run)
    done.wait(10)
    return labels


def on_ready(app):
    icon = app.icon
    report = {"backend": type(icon).__module__, "has_menu": icon.HAS_MENU, "title": icon.title}
    if mode == "activate":
        paths = [("Pause camera",), ("Style", "Cartoon"), ("Segmentation", "Blur the background")]
        report["menu"] = activate_in_gtk(icon, paths)
    if mode == "click":
        report["window"] = icon._window.id
    report["calls"] = [list(call) for call in runtimes[0].calls]
    print("REPORT " + json.dumps(report), flush=True)
    if mode == "click":  # the test clicks the icon: wait for the pause it sends
        deadline = time.monotonic() + 20
        while ("pause",) not in runtimes[0].calls and time.monotonic() < deadline:
            time.sleep(0.05)
    if mode != "wait":
        app.quit()


code = run_tray(camera_factory=factory, on_ready=on_ready)
print("EXIT " + json.dumps({"code": code, "calls": [list(c) for c in runtimes[0].calls]}), flush=True)
sys.exit(code)
"""


def free_display() -> int:
    for number in range(90, 400):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :399")


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private Xvfb server; its DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    number = free_display()
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"Xvfb :{number} did not start (exit code {server.poll()})")
            time.sleep(0.05)
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def child_env(display: str, tmp_path: Path, backend: str | None) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("PYSTRAY_BACKEND", "DBUS_SESSION_BUS_ADDRESS")
    }
    env.update(
        DISPLAY=display,
        HOME=str(tmp_path / "home"),
        VCAM_HOME=str(tmp_path / "vcam"),
        PYTHONPATH=str(REPO),
        NO_AT_BRIDGE="1",  # no accessibility bus for GTK
        HF_HUB_OFFLINE="1",
    )
    if backend is not None:
        env["PYSTRAY_BACKEND"] = backend
    return env


def run_child(env: dict[str, str], mode: str, dbus: bool = False) -> tuple[subprocess.CompletedProcess[str], Any]:
    command = [sys.executable, "-c", CHILD, mode]
    if dbus:
        command = ["dbus-run-session", "--", *command]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    reports = [line[len("REPORT ") :] for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert reports, f"no report; exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result, json.loads(reports[0])


def exit_report(result: subprocess.CompletedProcess[str]) -> Any:
    lines = [line[len("EXIT ") :] for line in result.stdout.splitlines() if line.startswith("EXIT ")]
    assert lines, f"the tray did not return\nstderr:\n{result.stderr}"
    return json.loads(lines[0])


def needs_gtk() -> None:
    problem = system_gi_abi_problem()
    if problem is not None:
        pytest.skip(f"no usable python3-gi: {problem}")
    if shutil.which("dbus-run-session") is None:
        pytest.skip("dbus-run-session is not installed (apt-get install dbus)")
    typelibs = Path("/usr/lib/x86_64-linux-gnu/girepository-1.0")
    for name in ("Gtk-3.0.typelib", "AyatanaAppIndicator3-0.1.typelib"):
        if not (typelibs / name).exists() and not list(Path("/usr/lib").glob(f"*/girepository-1.0/{name}")):
            pytest.skip(f"{name} is missing (apt-get install gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1)")


def test_xorg_icon_runs_and_stops_cleanly(xvfb: str, tmp_path: Path) -> None:
    result, report = run_child(child_env(xvfb, tmp_path, "xorg"), "quit")
    assert result.returncode == 0, result.stderr
    assert report["backend"] == "pystray._xorg"
    assert report["has_menu"] is False
    assert report["title"] == "Live2Diff Camera: Camera (no style), 30 fps"
    assert exit_report(result) == {"code": 0, "calls": [["start"], ["stop"]]}
    assert result.stderr.count("the tray icon has no menu") == 1  # said once
    # bare Xvfb has no system tray to dock into: pystray logs that with a traceback; nothing else may fail
    assert result.stderr.count("Traceback") == result.stderr.count("Failed to dock icon")


def test_xorg_icon_quits_cleanly_on_sigterm(xvfb: str, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "wait"],
        env=child_env(xvfb, tmp_path, "xorg"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("REPORT "), line
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    assert '"calls": [["start"], ["stop"]]' in stdout


@pytest.mark.parametrize("backend", ["gtk", None], ids=["gtk", "auto-appindicator"])
def test_gtk_menu_is_built_and_its_items_activate(xvfb: str, tmp_path: Path, backend: str | None) -> None:
    needs_gtk()
    result, report = run_child(child_env(xvfb, tmp_path, backend), "activate", dbus=True)
    assert result.returncode == 0, result.stderr
    assert report["backend"] == ("pystray._gtk" if backend == "gtk" else "pystray._appindicator")
    assert report["has_menu"] is True
    assert report["menu"][0] == "Live2Diff Camera: running (Camera (no style))"
    assert report["menu"][1:] == [
        "Style",
        "Segmentation",
        "Pause camera",
        "Open preview",
        "Open settings folder",
        "Start at login",
        "About / diagnostics",
        "Quit",
    ]
    assert report["calls"] == [["start"], ["pause"], ["set_style", "cartoon"], ["set_segment", "blur"]]
    assert exit_report(result)["calls"][-1] == ["stop"]
    assert "the tray icon has no menu" not in result.stderr


@pytest.fixture
def xembed_tray(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`trayer`, a real XEmbed system tray, on the Xvfb display; the display."""
    from vcam.tray.host import xembed_tray_present

    if shutil.which("trayer") is None:
        pytest.skip("trayer is not installed (apt-get install trayer)")
    monkeypatch.setenv("DISPLAY", xvfb)
    tray = subprocess.Popen(["trayer"], env={**os.environ, "NO_AT_BRIDGE": "1"}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not xembed_tray_present():
            if tray.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"trayer did not take the tray selection (exit code {tray.poll()})")
            time.sleep(0.05)
        yield xvfb
    finally:
        tray.terminate()
        tray.wait(timeout=10)


def test_a_click_on_the_xorg_icon_pauses_the_camera(xembed_tray: str, tmp_path: Path) -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool)")
    env = child_env(xembed_tray, tmp_path, "xorg")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "click"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("REPORT "), line + (child.stderr.read() if child.stderr else "")
        window = json.loads(line[len("REPORT ") :])["window"]
        # a real pointer click (XTEST) on the docked icon's window
        subprocess.run(
            ["xdotool", "mousemove", "--sync", "--window", str(window), "4", "4", "click", "1"],
            env=env,
            check=True,
            timeout=20,
        )
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    assert exit_report(subprocess.CompletedProcess([], 0, stdout, stderr))["calls"] == [["start"], ["pause"], ["stop"]]


def run_child_with_notifications(env: dict[str, str], tmp_path: Path) -> tuple[str, list[Any]]:
    """The tray child in a private session bus that has a notification server; its stderr and notifications."""
    if shutil.which("dbus-run-session") is None:
        pytest.skip("dbus-run-session is not installed (apt-get install dbus)")
    if system_gi_abi_problem() is not None or not Path("/usr/bin/python3").exists():
        pytest.skip("the notification server needs Debian's python3-gi")
    notes = tmp_path / "notifications.jsonl"
    server = Path(__file__).with_name("notification_server.py")
    script = (
        f"/usr/bin/python3 {server} {notes} & server=$!; i=0; while [ ! -e {notes}.ready ] && [ $i -lt 200 ]; "
        f'do sleep 0.05; i=$((i+1)); done; "$@"; code=$?; kill $server; exit $code'
    )
    command = ["dbus-run-session", "--", "sh", "-c", script, "sh", sys.executable, "-c", CHILD, "quit"]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert exit_report(result)["code"] == 0, result.stderr
    lines = notes.read_text().splitlines() if notes.exists() else []
    return result.stderr, [json.loads(line) for line in lines]


def test_without_a_tray_host_the_tray_says_what_to_install_and_the_camera_runs(xvfb: str, tmp_path: Path) -> None:
    stderr, notifications = run_child_with_notifications(child_env(xvfb, tmp_path, "xorg"), tmp_path)
    assert stderr.count("no system tray to show the icon in") == 1
    assert notifications == [
        {"summary": "Live2Diff Camera: the tray icon cannot appear", "body": notifications[0]["body"]}
    ]
    assert "gnome-shell-extension-appindicator" in notifications[0]["body"]


def test_with_an_xembed_tray_nothing_is_said(xembed_tray: str, tmp_path: Path) -> None:
    stderr, notifications = run_child_with_notifications(child_env(xembed_tray, tmp_path, "xorg"), tmp_path)
    assert "no system tray" not in stderr
    assert notifications == []
