"""The style catalogue: the packaged styles.toml loads whole, and a bad entry names the style and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import weights as fakes
from vcam.errors import ConfigError, UnknownStyleError
from vcam.store.catalogue import (
    COMMIT,
    SHARED_PART_NAMES,
    HubSource,
    load_catalogue,
    parse_catalogue,
    parse_user_style,
)


def test_packaged_catalogue_has_six_complete_styles_and_the_shared_parts() -> None:
    catalogue = load_catalogue()
    assert set(catalogue.shared) == set(SHARED_PART_NAMES)
    assert len(catalogue.styles) >= 6
    for name, style in catalogue.styles.items():
        assert style.kind == "catalogue"
        assert style.title and style.prompt and style.licence, name
        assert 1 <= len(style.t_index_list) <= 4 and 1 <= style.clip_skip <= 12, name
        assert isinstance(style.base, HubSource) and style.base.files, name
        assert style.size_mb > 0, name
        if not style.verified:
            sources = [style.base, style.lora]
            assert style.note or any(isinstance(s, HubSource) and s.note for s in sources), name
    for part in catalogue.shared.values():
        source = part.source
        assert COMMIT.match(source.revision) or (not source.checked and source.note), part.name
        assert part.licence and source.files
    motion = catalogue.shared["motion"].source
    assert motion.repo == "Leoxing/Live2Diff" and motion.files == ("live2diff.ckpt",)
    assert catalogue.shared["lcm_lora"].source.repo == "latent-consistency/lcm-lora-sdv1-5"
    assert catalogue.shared["depth"].source.repo == "Intel/dpt-hybrid-midas"


def _broken(path: list[str], value: Any, delete: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(fakes.catalogue_data())
    table = data
    for key in path[:-1]:
        table = table[key]
    if delete:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "delete", "expected"),
    [
        (["styles", "alpha", "prompt"], None, True, r"\[styles.alpha\]: missing field 'prompt'"),
        (["styles", "alpha", "t_index_list"], [40, 30], False, r"\[styles.alpha\]: t_index_list = \[40, 30\]"),
        (["styles", "alpha", "t_index_list"], [10, 20, 30, 40, 45], False, r"\[styles.alpha\]: t_index_list"),
        (
            ["styles", "alpha", "clip_skip"],
            13,
            False,
            r"\[styles.alpha\]: clip_skip = 13 .*1 .*12, counted as in AUTOMATIC1111",
        ),
        (["styles", "alpha", "colour"], "red", False, r"\[styles.alpha\]: unknown field 'colour'"),
        (["styles", "alpha", "base", "revision"], "main", False, r"\[styles.alpha\].base: revision = 'main'"),
        (["styles", "alpha", "base", "repo"], "noslash", False, r"\[styles.alpha\].base: repo = 'noslash'"),
        (["styles", "alpha", "base", "format"], "zip", False, r"\[styles.alpha\].base: format = 'zip'"),
        (["styles", "alpha", "base", "sha256"], {"alpha.safetensors": "abc"}, False, r"sha256.alpha.safetensors"),
        (["styles", "beta", "lora", "note"], None, True, r"\[styles.beta\].lora: .*needs a note"),
        (["styles", "beta", "lora", "scale"], 5, False, r"\[styles.beta\].lora: scale = 5"),
        (["shared", "taesd"], None, True, r"missing shared part \[shared.taesd\]"),
        (["shared", "motion", "licence"], None, True, r"\[shared.motion\]: missing field 'licence'"),
    ],
)
def test_bad_catalogue_entry_names_the_style_and_the_field(
    path: list[str], value: Any, delete: bool, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_catalogue(_broken(path, value, delete))


def test_fake_catalogue_parses() -> None:
    catalogue = parse_catalogue(fakes.catalogue_data())
    beta = catalogue.style("beta")
    assert not beta.verified  # its LoRA is on a branch
    assert beta.lora_scale == pytest.approx(0.7)
    assert catalogue.style("alpha").sha256 == {"alpha.safetensors": fakes.sha("tiny/alpha", "alpha.safetensors")}
    with pytest.raises(UnknownStyleError, match="alpha, beta, gamma"):
        catalogue.style("nope")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"prompt": "x"}, r"\[styles.mine\]: missing field 'base'"),
        ({"base": "model.txt", "prompt": "x"}, r"\[styles.mine\]: base = 'model.txt' is not allowed"),
        ({"base": "a.safetensors"}, r"\[styles.mine\]: missing field 'prompt'"),
        ({"base": "a.safetensors", "prompt": " "}, r"\[styles.mine\]: prompt = ' '"),
        ({"base": "a.safetensors", "prompt": "x", "lora_scale": 5}, r"\[styles.mine\]: lora_scale = 5"),
        ({"base": "a.safetensors", "prompt": "x", "lora": "l.zip"}, r"\[styles.mine\]: lora = 'l.zip'"),
        ({"base": "a.safetensors", "prompt": "x", "t_index_list": []}, r"\[styles.mine\]: t_index_list = \[\]"),
        ({"base": "a.safetensors", "prompt": "x", "clip_skip": True}, r"\[styles.mine\]: clip_skip = True"),
        ({"base": "a.safetensors", "prompt": "x", "steps": 4}, r"\[styles.mine\]: unknown field 'steps'"),
    ],
)
def test_bad_user_style_names_the_style_and_the_field(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_user_style("mine", table)


def test_user_style_paths_formats_and_defaults(tmp_path: Path) -> None:
    single = parse_user_style("mine", {"base": "ckpt/m.safetensors", "prompt": "p", "lora": "l.safetensors"}, tmp_path)
    assert single.base == tmp_path / "ckpt" / "m.safetensors" and single.base_format == "single_file"
    assert single.lora == tmp_path / "l.safetensors" and single.lora_scale == 1.0
    assert single.t_index_list == (30, 40) and single.clip_skip == 2 and single.kind == "user"
    folder = parse_user_style("folder", {"base": "/models/my-diffusers", "prompt": "p", "clip_skip": 1}, tmp_path)
    assert folder.base == Path("/models/my-diffusers") and folder.base_format == "diffusers"
    with pytest.raises(ConfigError, match=r"\[styles.Bad Name\]: the name is not allowed"):
        parse_user_style("Bad Name", {"base": "a.safetensors", "prompt": "p"})


def test_user_style_can_replace_a_catalogue_style() -> None:
    catalogue = load_catalogue({"alpha": {"base": "/x/a.ckpt", "prompt": "mine"}}, data=fakes.catalogue_data())
    assert catalogue.style("alpha").kind == "user" and catalogue.style("alpha").prompt == "mine"
    assert catalogue.style("beta").kind == "catalogue"
