"""A catalogue style's settings overridden by the user's `[styles.NAME]` table (no `base`), validated as user
styles are."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcam.errors import ConfigError
from vcam.store.catalogue import HubSource, load_catalogue
from vcam.store.store import StylePaths
from vcam.translators.live2diff import pipeline_spec


def test_an_override_merges_over_the_catalogue_entry() -> None:
    packaged = load_catalogue().style("inkwash")
    table = {"prompt": "  ink wash portrait  ", "noise": "fixed", "t_index_list": [20, 35], "clip_skip": 2}
    style = load_catalogue({"inkwash": table}).style("inkwash")
    assert style.kind == "catalogue" and style.overrides == ("prompt", "t_index_list", "clip_skip", "noise")
    assert (style.prompt, style.noise, style.t_index_list, style.clip_skip) == (
        "ink wash portrait",
        "fixed",
        (20, 35),
        2,
    )
    # what was not overridden, and every file, stays the catalogue's
    assert style.base == packaged.base and style.lora == packaged.lora and style.lora_scale == packaged.lora_scale
    assert style.licence == packaged.licence and style.note == packaged.note
    other = load_catalogue({"inkwash": table}).style("toon")
    assert other == load_catalogue().style("toon") and other.overrides == ()


def test_the_depth_rate_can_be_set_per_style() -> None:
    assert load_catalogue().style("inkwash").depth_every == 1  # depth on every frame unless the user says
    style = load_catalogue({"inkwash": {"depth_every": 2}}).style("inkwash")
    assert style.depth_every == 2 and style.overrides == ("depth_every",)
    mine = load_catalogue({"mine": {"base": "m.safetensors", "prompt": "p", "depth_every": 3}}).style("mine")
    assert mine.depth_every == 3


def test_lora_scale_title_and_description_can_be_overridden() -> None:
    style = load_catalogue({"clay": {"lora_scale": 0.5, "title": "Soft clay", "description": "less clay"}}).style(
        "clay"
    )
    assert (style.lora_scale, style.title, style.description) == (0.5, "Soft clay", "less clay")
    assert isinstance(style.lora, HubSource)


@pytest.mark.parametrize(
    ("name", "table", "message"),
    [
        ("pixel", {"noise": "random"}, r"\[styles.pixel\]: noise = 'random' is not allowed: use one of fresh, fixed"),
        ("pixel", {"depth_every": 0}, r"\[styles.pixel\]: depth_every = 0 is not allowed: a whole number from 1"),
        ("pixel", {"depth_every": "x"}, r"\[styles.pixel\]: depth_every = 'x' is not allowed: a whole number"),
        ("pixel", {"depth_every": 2.0}, r"\[styles.pixel\]: depth_every = 2.0 is not allowed: a whole number"),
        ("pixel", {"t_index_list": [40, 30]}, r"\[styles.pixel\]: t_index_list = \[40, 30\]"),
        ("pixel", {"clip_skip": 0}, r"\[styles.pixel\]: clip_skip = 0 is not allowed"),
        ("pixel", {"prompt": " "}, r"\[styles.pixel\]: prompt = ' ' is not allowed"),
        ("pixel", {"lora_scale": 3}, r"\[styles.pixel\]: lora_scale = 3 is not allowed"),
        (
            "pixar",
            {"lora_scale": 0.5},
            r"\[styles.pixar\]: lora_scale is not allowed: the catalogue style 'pixar' has no LoRA",
        ),
        ("pixar", {"lora": "x.safetensors"}, r"\[styles.pixar\]: 'lora' cannot be overridden .* give base = \.\.\."),
        ("pixar", {"title": 3}, r"\[styles.pixar\]: title = 3 is not allowed"),
    ],
)
def test_a_bad_override_names_the_style_and_the_field(name: str, table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_catalogue({name: table})
    catalogue = load_catalogue({name: table}, strict=False)  # a listing: the error kept, the packaged style shown
    assert catalogue.invalid[name].startswith(f"[styles.{name}]")
    assert catalogue.styles[name] == load_catalogue().style(name)


def test_a_table_with_base_replaces_the_catalogue_style(tmp_path: Path) -> None:
    style = load_catalogue({"pixar": {"base": "mine.safetensors", "prompt": "mine"}}, relative_to=tmp_path).style(
        "pixar"
    )
    assert style.kind == "user" and style.base == tmp_path / "mine.safetensors" and style.noise == "fresh"
    fixed = load_catalogue({"mine": {"base": "m.safetensors", "prompt": "p", "noise": "fixed"}}).style("mine")
    assert fixed.noise == "fixed" and fixed.clip_skip == 2


def test_the_noise_mode_and_the_depth_rate_reach_the_pipeline_spec(tmp_path: Path) -> None:
    paths = StylePaths(
        name="inkwash",
        base=tmp_path / "base.safetensors",
        base_format="single_file",
        sd15=tmp_path,
        motion=tmp_path / "live2diff.ckpt",
        lcm_lora=tmp_path / "lcm.safetensors",
        style_lora=None,
        lora_scale=1.0,
        taesd=tmp_path,
        depth=tmp_path,
        prompt="p",
        t_index_list=(30, 40),
        clip_skip=3,
        noise="fixed",
        depth_every=2,
    )
    spec = pipeline_spec(paths)
    assert (spec.noise, spec.clip_skip, spec.depth_every) == ("fixed", 3, 2)
