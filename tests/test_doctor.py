"""`vcam doctor`: the checks (against fake /sys trees and fake system tools), the table, --json and --strict."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from vcam import doctor
from vcam.commands import doctor as doctor_command
from vcam.config import Config
from vcam.doctor import Check

NO_DRIVER_HERE = not Path("/sys/module/v4l2loopback").is_dir()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCAM_HOME", str(tmp_path / "vcam-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fake_sys(root: Path, exclusive_caps: str | None, devices: dict[str, str]) -> Path:
    module = root / "sys/module/v4l2loopback"
    (module / "parameters").mkdir(parents=True)
    if exclusive_caps is not None:
        (module / "parameters/exclusive_caps").write_text(f"{exclusive_caps},N,N,N\n")
    (root / "sys/class/video4linux").mkdir(parents=True)
    for node, label in devices.items():
        folder = root / "sys/devices/virtual/video4linux" / node
        folder.mkdir(parents=True)
        (folder / "name").write_text(label + "\n")
        (root / "sys/class/video4linux" / node).symlink_to(folder)  # as sysfs lists every video node
    return root


def _write_tool(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


# --- on this machine ---------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2loopback check is Linux-only")
@pytest.mark.skipif(not NO_DRIVER_HERE, reason="this machine has v4l2loopback loaded")
def test_doctor_here_reports_the_missing_driver_with_the_linux_fix() -> None:
    checks = _by_name(doctor.run_checks())
    driver = checks["virtual camera driver"]
    assert driver.ok is False
    assert "v4l2loopback" in driver.detail and "not loaded" in driver.detail
    assert driver.fix is not None
    assert driver.fix.startswith("sudo ") and driver.fix.endswith("installers/linux/setup-virtual-camera.sh")
    script = Path(driver.fix.removeprefix("sudo "))
    assert script.is_file()  # the command names the real script of this checkout
    assert "virtual camera" not in checks  # the same problem is not reported twice
    assert checks["python"].ok and checks["config"].ok and checks["log folder"].ok


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not NO_DRIVER_HERE, reason="needs Linux without v4l2loopback"
)
def test_cli_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from vcam.cli import main

    assert main(["doctor", "--json"]) == 0  # a report: problems do not fail it
    rows = json.loads(capsys.readouterr().out)
    assert all(set(row) == {"name", "ok", "detail", "fix", "required"} for row in rows)
    driver = next(row for row in rows if row["name"] == "virtual camera driver")
    assert driver["ok"] is False and "setup-virtual-camera.sh" in driver["fix"]

    assert main(["doctor", "--strict"]) == 1
    table = capsys.readouterr().out
    assert "missing  virtual camera driver" in table
    assert "fix: sudo " in table and "setup-virtual-camera.sh" in table


# --- the v4l2loopback check -----------------------------------------------------------------------------


def test_driver_loaded_with_exclusive_caps(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path, "Y", {"video10": "Live2Diff Camera"})
    check = doctor.check_v4l2loopback(sys_root=root, secure_boot=lambda: "disabled")
    assert check.ok and check.fix is None
    assert "/dev/video10 'Live2Diff Camera'" in check.detail
    assert "exclusive_caps=1" in check.detail


def test_driver_loaded_without_exclusive_caps_says_what_it_means(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path, "N", {"video10": "Live2Diff Camera", "video11": "Other"})
    check = doctor.check_v4l2loopback(sys_root=root)
    assert check.ok
    assert "/dev/video11 'Other'" in check.detail
    assert "exclusive_caps=0" in check.detail and "Chrome" in check.detail


def test_driver_loaded_without_devices(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path, "Y", {})
    check = doctor.check_v4l2loopback(sys_root=root)
    assert not check.ok and "no device" in check.detail
    assert check.fix is not None and "setup-virtual-camera.sh" in check.fix


def test_driver_installed_but_blocked_by_secure_boot(tmp_path: Path) -> None:
    key = tmp_path / "var/lib/shim-signed/mok/MOK.der"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"key")
    check = doctor.check_v4l2loopback(
        sys_root=tmp_path, secure_boot=lambda: "enabled", module_installed=lambda _: True
    )
    assert not check.ok
    assert "installed, not loaded" in check.detail and "Secure Boot is enabled" in check.detail
    assert check.fix is not None
    assert check.fix.startswith("sudo mokutil --import /var/lib/shim-signed/mok/MOK.der")
    assert "setup-virtual-camera.sh" in check.fix


def test_driver_not_installed(tmp_path: Path) -> None:
    check = doctor.check_v4l2loopback(
        sys_root=tmp_path, secure_boot=lambda: "unknown", module_installed=lambda _: False
    )
    assert not check.ok and "(not installed)" in check.detail
    assert check.fix == doctor.linux_driver_fix()


@pytest.mark.parametrize(
    ("output", "state"),
    [
        ("SecureBoot enabled", "enabled"),
        ("SecureBoot disabled", "disabled"),
        ("EFI variables are not supported", "unknown"),
    ],
)
def test_secure_boot_state_from_mokutil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, state: str
) -> None:
    _write_tool(tmp_path / "bin", "mokutil", f'#!/bin/sh\necho "{output}"\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert doctor.secure_boot_state() == state


def test_secure_boot_unknown_without_mokutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert doctor.secure_boot_state() == "unknown"


# --- the other checks ---------------------------------------------------------------------------------------


def test_python_version_check() -> None:
    assert doctor.check_python((3, 11, 2)).ok
    old = doctor.check_python((3, 9, 18))
    assert not old.ok and "3.9.18 is too old" in old.detail and old.fix


def test_torch_check_here() -> None:
    checks = _by_name(doctor.check_torch())
    import torch

    assert checks["torch"].ok and checks["torch"].detail == torch.__version__
    assert "gpu" in checks


def test_invalid_config_is_reported_and_the_rest_still_runs(tmp_path: Path) -> None:
    config_file = tmp_path / "vcam-home/config/config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text("[camera\nwidth = ")
    checks = doctor.run_checks()
    config = _by_name(checks)["config"]
    assert not config.ok and "not valid TOML" in config.detail
    assert config.fix is not None and str(config_file) in config.fix
    assert "python" in _by_name(checks) and "free disk" in _by_name(checks)


def test_valid_config_file_is_named(tmp_path: Path) -> None:
    config_file = tmp_path / "vcam-home/config/config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text('[style]\nname = "passthrough"\n')
    check, config = doctor.check_config()
    assert check.ok and str(config_file) in check.detail and config.path == config_file


def test_disk_check_against_the_cache_dir(tmp_path: Path) -> None:
    config = Config()
    config.models.cache_dir = str(tmp_path / "not/yet/made")
    assert doctor.models_cache_dir(config) == tmp_path / "not/yet/made"
    assert doctor.check_disk(config, min_free=1).ok
    full = doctor.check_disk(config, min_free=10**18)
    assert not full.ok and "GB wanted" in full.detail
    assert full.fix is not None and "cache_dir" in full.fix


def test_log_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "vcam-home").mkdir()
    (tmp_path / "vcam-home/log").write_text("a file where the folder should be")
    check = doctor.check_log_dir()
    assert not check.ok and "not writable" in check.detail
    (tmp_path / "vcam-home/log").unlink()
    assert doctor.check_log_dir().ok


def test_segmentation_checks_a_missing_model_file(tmp_path: Path) -> None:
    config = Config()
    config.segment.model = str(tmp_path / "missing.tflite")
    checks = _by_name(doctor.check_segmentation(config))
    assert not checks["segmentation model"].ok
    assert "missing.tflite" in checks["segmentation model"].detail
    assert 'model = ""' in (checks["segmentation model"].fix or "")


def test_a_broken_check_becomes_a_failed_line() -> None:
    def broken() -> Check:
        raise RuntimeError("boom")

    def missing() -> Check:
        raise ImportError("no module named vcam.nothing")

    assert doctor._guarded("x", broken) == [Check("x", False, "the check failed: RuntimeError: boom")]
    (line,) = doctor._guarded("y", missing)
    assert not line.ok and "cannot check" in line.detail and line.fix == doctor.app_install_fix()


def test_commands_are_quoted_for_the_shell() -> None:
    assert (
        doctor.format_command(["vcam", "models", "download", "my style"], "linux") == "vcam models download 'my style'"
    )
    assert doctor.format_command(["C:\\a b\\python.exe", "-m", "pip"], "win32") == '"C:\\a b\\python.exe" -m pip'
    assert doctor.app_install_fix("win32").startswith("powershell -ExecutionPolicy Bypass -File ")
    assert doctor.app_install_fix("darwin").endswith("macos/install.sh")


# --- the report -----------------------------------------------------------------------------------------


def test_table_and_json_rendering() -> None:
    checks = [
        Check("python", True, "3.11.2"),
        Check("virtual camera driver", False, "v4l2loopback module not loaded", "sudo setup-virtual-camera.sh"),
        Check("webcam", False, "no webcam", None),
    ]
    table = doctor_command.render_table(checks).splitlines()
    assert table[1].split() == ["ok", "python", "3.11.2"]
    assert table[2].startswith("missing  virtual camera driver  v4l2loopback")
    assert table[3].strip() == "fix: sudo setup-virtual-camera.sh"
    assert table[4].startswith("missing  webcam")
    assert "2 problems" in table[-1]
    assert json.loads(doctor_command.render_json(checks))[1]["fix"] == "sudo setup-virtual-camera.sh"
    assert "everything the app needs is in place" in doctor_command.render_table(checks[:1])


def test_handler_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    results = [Check("a", True, "fine"), Check("b", False, "broken", "do x")]
    monkeypatch.setattr(doctor, "run_checks", lambda config_path=None: results)
    parser = argparse.ArgumentParser()
    doctor_command.add_parser(parser.add_subparsers())
    for argv, code in ((["doctor"], 0), (["doctor", "--strict"], 1), (["doctor", "--json"], 0)):
        out = io.StringIO()
        assert doctor_command.run_doctor(parser.parse_args(argv), out=out) == code
    results[1] = Check("b", True, "fixed")
    assert doctor_command.run_doctor(parser.parse_args(["doctor", "--strict"]), out=io.StringIO()) == 0


def test_diffusion_styles_are_a_section_apart_and_never_fail_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Here no style's weights are downloaded: they are listed apart, counted in their own line, and
    `--strict` fails only for what the app needs."""
    from vcam.config import Config

    styles = doctor.check_styles(Config())
    optional = [check for check in styles if not check.required]
    assert optional and all(check.name.startswith("style ") and not check.ok for check in optional)
    assert [check.required for check in styles if check.name == "classic styles"] == [True]
    app = [Check("python", True, "3.11.2")]
    table = doctor_command.render_table(app + styles)
    required_part, styles_part = table.split("Diffusion styles (optional")
    assert "everything the app needs is in place" in required_part and "style " not in required_part
    assert f"styles: 0 of {len(optional)} downloaded; `vcam models download NAME` gets one." in styles_part
    assert "fix: vcam models download " in styles_part
    monkeypatch.setattr(doctor, "run_checks", lambda config_path=None: app + styles)
    parser = argparse.ArgumentParser()
    doctor_command.add_parser(parser.add_subparsers())
    assert doctor_command.run_doctor(parser.parse_args(["doctor", "--strict"]), out=io.StringIO()) == 0
    records = json.loads(doctor_command.render_json(app + styles))
    assert {record["name"]: record["required"] for record in records}["python"] is True
    assert all(record["required"] is False for record in records if record["name"].startswith("style "))


def test_the_tray_host_check_uses_the_trays_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    from vcam.tray import host

    monkeypatch.setattr(host, "status_notifier_watcher_present", lambda: False)
    monkeypatch.setattr(host, "xembed_tray_present", lambda: False)
    check = doctor.check_tray_host()
    assert (check.name, check.ok, check.required) == ("tray host", False, True)
    assert check.detail == host.NO_HOST and "gnome-shell-extension-appindicator" in (check.fix or "")
    monkeypatch.setattr(host, "xembed_tray_present", lambda: True)
    assert doctor.check_tray_host() == Check("tray host", True, "an XEmbed system tray on the display")
    monkeypatch.setattr(host, "status_notifier_watcher_present", lambda: None)
    monkeypatch.setattr(host, "xembed_tray_present", lambda: None)
    assert doctor.check_tray_host().ok  # no desktop session to ask (a server, CI): not a problem
