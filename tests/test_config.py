"""The config: defaults, file overrides, CLI overrides, validation messages, atomic writes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vcam.config import Config, config_from_dict, load_config, update_config, write_config_atomically
from vcam.errors import ConfigError


def test_defaults_when_no_file_exists() -> None:
    config = load_config()
    assert config == Config()
    assert (config.output.width, config.output.height, config.output.fps) == (1280, 720, 30.0)
    assert config.output.sinks == ["auto"] and config.camera.source == "auto"
    assert config.segment.mode == "off" and config.style.name == "passthrough"


def test_file_values_override_defaults_and_keep_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[output]\nfps = 25\nsinks = ["preview:9000", "null"]\n[style]\nname = "cartoon"\n')
    config = load_config(path)
    assert config.output.fps == 25.0 and isinstance(config.output.fps, float)
    assert config.output.sinks == ["preview:9000", "null"]
    assert config.style.name == "cartoon"
    assert config.output.width == 1280  # untouched default
    assert config.path == path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[output]\nfps = 500\n", "output.fps = 500.0 is out of range: allowed 1 to 120"),
        ("[output]\nwidth = 1281\n", "must have an even width and height"),
        ('[segment]\nmode = "sparkles"\n', "segment.mode = 'sparkles' is not allowed: choose one of off, person"),
        ('[camera]\nfps = "fast"\n', "camera.fps = 'fast' must be of type float"),
        ("[camera]\nzoom = 2\n", "unknown config key camera.zoom: allowed keys are fps, height, source, width"),
        ("[cameras]\nfps = 2\n", "unknown config section [cameras]"),
        ("[output]\nsinks = []\n", "output.sinks = [] is empty"),
        ("[preview]\nport = 80\n", "preview.port = 80 is not allowed: ports under 1024 need administrator rights"),
        ("[output\n", "is not valid TOML"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_update_writes_only_the_change_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[camera]\nsource = "demo"\n[styles.mine]\nbase = "/models/mine.safetensors"\nprompt = "x"\n')
    config = update_config({"style.name": "sketch"}, path)
    data = tomllib.loads(path.read_text())
    assert data["style"] == {"name": "sketch"}
    assert data["camera"] == {"source": "demo"}
    assert data["styles"]["mine"]["base"] == "/models/mine.safetensors"
    assert config.style.name == "sketch"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_an_invalid_update_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    original = "[output]\nfps = 24\n"
    path.write_text(original)
    with pytest.raises(ConfigError, match="segment.mode"):
        update_config({"segment.mode": "glitter"}, path)
    assert path.read_text() == original


def test_an_unchanged_setting_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# my notes\n[style]\nname = "cartoon"\n')
    update_config({"style.name": "cartoon"}, path)
    assert path.read_text().startswith("# my notes")


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    path = tmp_path / "config.toml"
    path.write_text('[style]\nname = "cartoon"\n')

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_config_atomically({"style": {"name": "sketch"}}, path)
    assert path.read_text() == '[style]\nname = "cartoon"\n'
    assert list(tmp_path.iterdir()) == [path]


def test_user_styles_are_kept_raw() -> None:
    config = config_from_dict({"styles": {"mine": {"base": "/m.safetensors", "prompt": "p"}}})
    assert config.styles == {"mine": {"base": "/m.safetensors", "prompt": "p"}}
    with pytest.raises(ConfigError, match=r"\[styles.my-style\]"):
        config_from_dict({"styles": {"mine": "not a table"}})
