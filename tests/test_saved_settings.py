"""A saved setting never locks the user out: a style or segmentation mode from the config file that cannot be
used starts the camera without it and says so once (log + status); the same value given on the command line
is still an error (exit 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.waiting import wait_for
from vcam.assemble import build_runtime
from vcam.cli import main
from vcam.config import load_config
from vcam.runtime import FALLBACK_STYLE


def write_config(path: Path, text: str) -> Path:
    path.write_text('[camera]\nsource = "demo"\n[output]\nsinks = ["null"]\nwidth = 320\nheight = 180\n' + text)
    return path


def start_and_stop(config_path: Path) -> tuple[str, str, str | None]:
    """Run until the style the runtime started with (the config's, or the fallback) is shown; its status then."""
    config = load_config(config_path)
    runtime = build_runtime(config)
    runtime.start()
    try:
        runtime.wait(frames=2, timeout=30)
        wait_for(lambda: runtime.status().style == config.style.name, timeout=30, what="the start-up style")
        status = runtime.status()
    finally:
        runtime.stop()
    return status.style, status.segment, status.last_error


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ('mode = "replace"\n', "background_image is empty"),
        ('mode = "replace"\nbackground_image = "/no/such/beach.jpg"\n', "no such file: '/no/such/beach.jpg'"),
    ],
    ids=["replace-without-image", "image-gone"],
)
def test_a_saved_replace_that_cannot_be_used_starts_with_segmentation_off(
    tmp_path: Path, segment: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = write_config(tmp_path / "config.toml", "[segment]\n" + segment)
    before = config_path.read_text()
    with caplog.at_level(logging.WARNING, logger="vcam.assemble"):
        style, mode, error = start_and_stop(config_path)
    assert mode == "off"
    assert error is not None and reason in error and "segmentation off" in error
    assert [r.message for r in caplog.records if r.name == "vcam.assemble"] == [error]  # said once
    assert config_path.read_text() == before  # the user's file is never rewritten unasked


def test_a_saved_style_that_no_longer_exists_starts_with_the_fallback_look(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = write_config(tmp_path / "config.toml", '[style]\nname = "deleted-style"\n')
    with caplog.at_level(logging.WARNING, logger="vcam.assemble"):
        style, mode, error = start_and_stop(config_path)
    assert style == FALLBACK_STYLE
    assert error is not None and "the saved style 'deleted-style' cannot be used" in error
    assert "unknown style 'deleted-style'" in error
    assert len([r for r in caplog.records if r.name == "vcam.assemble"]) == 1


def test_both_problems_are_one_message(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "config.toml", '[style]\nname = "gone"\n[segment]\nmode = "replace"\n')
    style, mode, error = start_and_stop(config_path)
    assert (style, mode) == (FALLBACK_STYLE, "off")
    assert error is not None and "'gone'" in error and "'replace'" in error


def test_vcam_run_starts_despite_a_saved_setting_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path / "config.toml", '[style]\nname = "gone"\n[segment]\nmode = "replace"\n')
    assert main(["run", "--config", str(config_path), "--frames", "2"]) == 0
    err = capsys.readouterr().err
    assert f"-> style {FALLBACK_STYLE!r} ->" in err
    assert err.count("the saved segmentation mode 'replace' cannot be used") == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--segment", "replace"], "background_image is empty"),
        (["--background", "/no/such/beach.jpg"], "no such file: '/no/such/beach.jpg'"),
        (["--style", "gone"], "unknown style 'gone'"),
    ],
)
def test_the_same_value_on_the_command_line_is_still_exit_2(
    tmp_path: Path, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path / "config.toml", '[segment]\nmode = "replace"\n')
    assert main(["run", "--config", str(config_path), "--frames", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
