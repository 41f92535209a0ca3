"""What `vcam devices`, `vcam styles` and `vcam models list` print for a person: human lines, and markers
that say what they mean; and the preview stream is not suggested while it is what already runs."""

from __future__ import annotations

import json
import logging

import pytest

from vcam.cli import main
from vcam.commands.devices import describe_virtual_camera
from vcam.commands.models import UNVERIFIED_MARK
from vcam.commands.styles import CURRENT_MARK
from vcam.devices.virtual_cameras import VirtualCamera, probe_virtual_camera


def test_virtual_cameras_are_described_in_words() -> None:
    missing = VirtualCamera("v4l2loopback", None, "", False, "no v4l2loopback device (module not loaded?)")
    assert (
        describe_virtual_camera(missing) == "v4l2loopback: not available: no v4l2loopback device (module not loaded?)"
    )
    ready = VirtualCamera("v4l2loopback", "/dev/video10", "Live2Diff Camera", True, "v4l2loopback")
    assert describe_virtual_camera(ready) == (
        'v4l2loopback (/dev/video10, "Live2Diff Camera"): ready (v4l2loopback); use --sink vcam:/dev/video10'
    )
    obs = VirtualCamera("obs", None, "OBS Virtual Camera", True, "")
    assert describe_virtual_camera(obs) == 'obs ("OBS Virtual Camera"): ready'


def test_vcam_devices_prints_no_raw_fields_and_json_keeps_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "device: None" not in text and "available: False" not in text and "name: ," not in text
    assert main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"cameras", "virtual_cameras", "virtual_camera_ready", "virtual_camera_detail"}
    assert all(set(entry) == {"backend", "device", "name", "available", "detail"} for entry in data["virtual_cameras"])


def test_vcam_styles_marks_the_current_style_with_a_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["styles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if CURRENT_MARK in line]
    assert marked[0].split()[:2] == ["passthrough", CURRENT_MARK]  # the default config's style
    assert (
        marked[-1]
        == f"{CURRENT_MARK}: your current style; choose with `vcam run --style NAME` (add --save to keep it)"
    )
    assert len(marked) == 2 and not any(line.lstrip().startswith("*") for line in lines)


def test_vcam_models_list_marks_unverified_entries_with_a_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "*" not in out
    assert f"{UNVERIFIED_MARK}: its names or revisions could not be checked against the model card" in out
    assert CURRENT_MARK not in out


def test_the_preview_is_not_suggested_while_it_is_what_runs_instead(caplog: pytest.LogCaptureFixture) -> None:
    from vcam.assemble import resolve_auto_sinks

    available, reason = probe_virtual_camera()
    if available:
        pytest.skip("this machine has a virtual camera: `auto` picks it")
    assert "--sink preview" in reason  # where the preview is not running (vcam devices, a vcam sink that failed)
    with caplog.at_level(logging.WARNING, logger="vcam.assemble"):
        assert resolve_auto_sinks(["auto"]) == ["preview"]
    assert "serving the preview stream instead of the virtual camera" in caplog.text
    assert "--sink preview" not in caplog.text and "no virtual camera available" in caplog.text
