"""Start at login, each OS flavour written and removed in a temporary home."""

from __future__ import annotations

import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
from vcam.tray.autostart import (
    LAUNCH_AGENT_LABEL,
    RUN_VALUE_NAME,
    autostart_path,
    default_command,
    disable_autostart,
    enable_autostart,
    is_autostart_enabled,
)

from tests.test_tray_fakes import FakeRunKey

COMMAND = ["/opt/live2diff vcam/bin/vcam", "tray"]


def test_linux_writes_and_removes_an_xdg_autostart_entry(tmp_path: Path) -> None:
    path = tmp_path / ".config" / "autostart" / "live2diff-vcam.desktop"
    assert not is_autostart_enabled(tmp_path, "linux")
    assert enable_autostart(tmp_path, "linux", COMMAND) == str(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("[Desktop Entry]\n")
    assert 'Exec="/opt/live2diff vcam/bin/vcam" tray\n' in text  # quoted per the Desktop Entry spec
    assert "X-GNOME-Autostart-enabled=true" in text
    assert is_autostart_enabled(tmp_path, "linux")
    enable_autostart(tmp_path, "linux", COMMAND)  # idempotent
    assert disable_autostart(tmp_path, "linux") is True
    assert not path.exists()
    assert not is_autostart_enabled(tmp_path, "linux")
    assert disable_autostart(tmp_path, "linux") is False


def test_linux_entry_hidden_by_the_desktop_counts_as_off(tmp_path: Path) -> None:
    enable_autostart(tmp_path, "linux", COMMAND)
    path = autostart_path(tmp_path, "linux")
    assert path is not None
    path.write_text(path.read_text(encoding="utf-8") + "Hidden=true\n", encoding="utf-8")
    assert not is_autostart_enabled(tmp_path, "linux")


def test_xdg_config_home_is_used_without_an_explicit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert autostart_path(None, "linux") == tmp_path / "xdg" / "autostart" / "live2diff-vcam.desktop"
    assert autostart_path(tmp_path, "linux") == tmp_path / ".config" / "autostart" / "live2diff-vcam.desktop"


def test_macos_writes_and_removes_a_launch_agent(tmp_path: Path) -> None:
    path = tmp_path / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
    assert enable_autostart(tmp_path, "darwin", COMMAND) == str(path)
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == LAUNCH_AGENT_LABEL
    assert plist["ProgramArguments"] == COMMAND
    assert plist["RunAtLoad"] is True
    assert is_autostart_enabled(tmp_path, "darwin")
    assert not is_autostart_enabled(tmp_path, "linux")  # flavours do not mix
    assert disable_autostart(tmp_path, "darwin") is True
    assert not path.exists()
    assert not is_autostart_enabled(tmp_path, "darwin")


def test_windows_writes_and_removes_the_run_value(tmp_path: Path) -> None:
    run_key = FakeRunKey()
    command = [r"C:\Program Files\Live2Diff\Scripts\vcam-tray.exe"]
    where = enable_autostart(tmp_path, "win32", command, registry=run_key)
    assert where.endswith(rf"CurrentVersion\Run\{RUN_VALUE_NAME}")
    assert run_key.values == {RUN_VALUE_NAME: r'"C:\Program Files\Live2Diff\Scripts\vcam-tray.exe"'}
    assert is_autostart_enabled(tmp_path, "win32", registry=run_key)
    assert list(tmp_path.iterdir()) == []  # nothing written in the home
    assert disable_autostart(tmp_path, "win32", registry=run_key) is True
    assert run_key.values == {}
    assert not is_autostart_enabled(tmp_path, "win32", registry=run_key)


def test_empty_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with the program"):
        enable_autostart(tmp_path, "linux", [])


def test_default_command_starts_the_tray_of_this_environment() -> None:
    command = default_command("linux")
    assert command[-1] == "tray"
    assert Path(command[0]).parent == Path(sys.executable).parent
    windows = default_command("win32")
    assert windows[0].endswith(("vcam-tray.exe", "pythonw.exe", Path(sys.executable).name))


def test_cli_turns_autostart_on_and_off(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "VCAM_HOME": str(tmp_path / "vcam")}
    path = tmp_path / ".config" / "autostart" / "live2diff-vcam.desktop"
    code = "import sys; from vcam.cli import main; sys.exit(main(sys.argv[1:]))"
    on = subprocess.run(
        [sys.executable, "-c", code, "tray", "--autostart", "on"], env=env, capture_output=True, text=True
    )
    assert on.returncode == 0, on.stderr
    assert str(path) in on.stdout
    assert path.is_file()
    off = subprocess.run(
        [sys.executable, "-c", code, "tray", "--autostart", "off"], env=env, capture_output=True, text=True
    )
    assert off.returncode == 0, off.stderr
    assert "no longer starts at login" in off.stdout
    assert not path.exists()
