"""The run's changeable settings: config keys, CLI flags, validation as the config, and who set what."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from vcam.commands.run import add_parser, apply_overrides
from vcam.config import config_from_dict
from vcam.errors import ConfigError
from vcam.run_settings import RunSettings


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def test_the_file_and_the_cli_mark_what_the_user_set() -> None:
    config = config_from_dict({"style": {"name": "tiny-random", "prompt": "ink"}, "models": {"vae": "kl"}})
    assert config.user_set.origin("style.prompt") == "config" and config.user_set.origin("models.vae") == "config"
    apply_overrides(config, parsed("--t-index-list", "20,35", "--similar-filter", "--no-compile"))
    assert config.style.t_index_list == [20, 35] and config.models.similar_filter is True
    settings = RunSettings(config)
    assert settings.user_set.origin("styles.tiny-random.prompt") == "config"
    assert settings.user_set.origin("styles.tiny-random.t_index_list") == "cli"
    assert settings.user_set.origin("models.compile") == "cli"
    assert not settings.user_set.is_set("models.similar_threshold")  # left for an automatic profile
    assert settings.spec_overrides("tiny-random") == {
        "prompt": "ink",
        "t_index_list": (20, 35),
        "vae": "kl",
        "compile": False,
    }
    assert settings.spec_overrides("cartoon") == {"vae": "kl", "compile": False}  # per-style values stay per style


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"style": {"t_index_list": [10, 60]}}, "style: t_index_list = [10, 60] is not allowed"),
        ({"style": {"t_index_list": ["a"]}}, "style.t_index_list = ['a'] must be a list of whole numbers"),
        ({"style": {"noise": "pink"}}, "style.noise = 'pink' is not allowed: use one of fresh, fixed"),
        ({"style": {"depth_every": 0}}, "style.depth_every = 0 is not allowed: a whole number from 1"),
        ({"style": {"depth_every": -1}}, "style.depth_every = -1 is not allowed: a whole number from 1"),
        ({"style": {"depth_every": 31}}, "style.depth_every = 31 is not allowed: a whole number from 1"),
        ({"style": {"depth_every": "x"}}, "style.depth_every = 'x' must be of type int"),
        ({"style": {"depth_every": True}}, "style.depth_every = True must be of type int"),
        ({"models": {"vae": "tiny"}}, "models.vae = 'tiny' is not allowed: choose one of taesd, kl"),
        ({"models": {"similar_threshold": 0}}, "models.similar_threshold = 0.0 is not allowed: a number above 0"),
        ({"control": {"port": 80}}, "control.port = 80 is not allowed: ports under 1024"),
    ],
)
def test_bad_values_are_refused_with_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config_from_dict(table)


def test_a_change_is_all_or_nothing() -> None:
    settings = RunSettings(config_from_dict({"style": {"name": "tiny-random"}}))
    version = settings.version
    with pytest.raises(ConfigError, match="models.vae"):
        settings.change("tiny-random", {"prompt": "new", "vae": "huge"})
    assert settings.style("tiny-random").prompt == "" and settings.version == version
    change = settings.change("tiny-random", {"prompt": "  new  ", "similar_filter": True})
    assert change.changed == ("prompt", "similar_filter") and change.reload is False
    assert settings.style("tiny-random").prompt == "new" and settings.version == version + 1
    assert settings.change("tiny-random", {"noise": "fresh"}).reload is True


def test_the_depth_rate_is_a_per_style_setting_from_the_file_the_cli_and_the_api() -> None:
    config = config_from_dict({"style": {"name": "tiny-random"}})
    assert RunSettings(config).spec_overrides("tiny-random") == {}  # not set: the style's own (or the profile's)
    apply_overrides(config, parsed("--depth-every", "3"))
    settings = RunSettings(config)
    assert settings.user_set.origin("styles.tiny-random.depth_every") == "cli"
    assert settings.spec_overrides("tiny-random") == {"depth_every": 3}
    assert settings.spec_overrides("cartoon") == {} and settings.values("cartoon")["depth_every"] is None
    with pytest.raises(ConfigError, match="style.depth_every = 0 is not allowed"):
        settings.change("cartoon", {"depth_every": 0})
    change = settings.change("cartoon", {"depth_every": 2})
    assert change.changed == ("depth_every",) and change.reload is True
    assert (
        settings.spec_overrides("cartoon") == {"depth_every": 2}
        and settings.user_set.origin("styles.cartoon.depth_every") == "api"
    )
    assert settings.change("cartoon", {"prompt": "ink"}).changed == ("prompt",)  # the depth rate stays
    assert settings.style("cartoon").depth_every == 2 and settings.as_dict()["styles"]["cartoon"]["depth_every"] == 2


def test_a_bad_depth_rate_in_the_file_exits_2_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text("[styles.inkwash]\ndepth_every = 0\n")
    command = [sys.executable, "-m", "vcam", "run", "--config", str(path), "--style", "inkwash", "--frames", "2"]
    result = subprocess.run(
        [*command, "--source", "demo", "--sink", "null"],
        capture_output=True,
        timeout=60,
        env={"VCAM_HOME": str(tmp_path), "PATH": "", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.decode().strip().splitlines()[-1]
    assert "[styles.inkwash]: depth_every = 0 is not allowed: a whole number from 1" in last
    assert "Traceback" not in result.stderr.decode()


def test_a_bad_flag_exits_2_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "vcam", "run", "--source", "demo", "--sink", "null", "--frames", "2"]
    result = subprocess.run(
        [*command, "--vae", "huge"], capture_output=True, timeout=60, env={"VCAM_HOME": str(tmp_path), "PATH": ""}
    )
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        .strip()
        .splitlines()[-1]
        .endswith("models.vae = 'huge' is not allowed: choose one of taesd, kl")
    )
