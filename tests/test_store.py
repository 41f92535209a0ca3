"""ModelStore on a pre-filled Hugging Face cache (real layout, tiny files): found, missing, partial, corrupt,
offline downloads, remove keeping shared files, and the `vcam models` output. No network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest

from tests.fakes import weights as fakes
from vcam.commands import models as models_command
from vcam.errors import NotDownloadedError, OfflineError, UnknownStyleError
from vcam.store.catalogue import load_catalogue
from vcam.store.download import download
from vcam.store.store import ModelStore


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "hub"
    folder.mkdir()
    return folder


@pytest.fixture
def store(cache: Path) -> ModelStore:
    return ModelStore(load_catalogue(data=fakes.catalogue_data()), cache)


def test_found_style_is_downloaded_and_paths_point_into_the_cache(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha", "beta")
    assert store.is_downloaded("alpha")
    assert store.missing_files("alpha") == []
    paths = store.path("alpha")
    assert paths.base_format == "single_file"
    assert paths.base.read_bytes() == fakes.CONTENT[("tiny/alpha", "alpha.safetensors")]
    assert (paths.sd15 / "text_encoder" / "config.json").is_file()
    assert paths.motion.name == "live2diff.ckpt" and paths.motion.is_file()
    assert (paths.taesd / "diffusion_pytorch_model.safetensors").is_file()
    assert (paths.depth / "config.json").is_file()
    assert paths.style_lora is None and paths.t_index_list == (30, 40) and paths.clip_skip == 2
    beta = store.path("beta")  # diffusers base from the SD1.5 repo + a LoRA on a branch (refs/main)
    assert beta.base_format == "diffusers"
    assert (beta.base / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert beta.style_lora is not None and beta.style_lora.name == "beta.safetensors"
    assert beta.lora_scale == pytest.approx(0.7)


def test_missing_style_lists_its_files_and_the_command(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache)  # shared parts only
    assert not store.is_downloaded("alpha")
    missing = store.missing_files("alpha")
    assert [(report.file.filename, report.state) for report in missing] == [("alpha.safetensors", "missing")]
    with pytest.raises(NotDownloadedError, match=r"vcam models download alpha"):
        store.path("alpha")
    empty = ModelStore(store.catalogue, cache / "elsewhere")
    assert len(empty.missing_files("gamma")) == len(fakes.SHARED_FILES) + 1


def test_unfinished_download_is_partial(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha")
    lcm = ("tiny/lcm", "pytorch_lora_weights.safetensors")
    folder = fakes.repo_folder(cache, lcm[0])
    pointer = folder / "snapshots" / fakes.COMMIT_LCM / lcm[1]
    (folder / "blobs" / fakes.sha(*lcm)).unlink()
    pointer.unlink()
    (folder / "blobs" / f"{fakes.sha(*lcm)}.1a2b3c4d.incomplete").write_bytes(b"lcm-")
    reports = store.missing_files("alpha")
    assert [(report.file.filename, report.state) for report in reports] == [(lcm[1], "partial")]
    assert "unfinished download" in reports[0].detail
    assert not store.is_downloaded("alpha")


def test_file_cut_short_is_partial(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha")
    motion = ("tiny/motion", "live2diff.ckpt")
    fakes.put(cache, *motion, content=fakes.CONTENT[motion][:-10])
    [report] = store.missing_files("alpha")
    assert report.state == "partial" and "cut short" in report.detail
    assert f"{fakes.size(*motion) - 10} of {fakes.size(*motion)} bytes" in report.detail


def test_wrong_sha256_is_corrupt_on_verify(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha")
    alpha = ("tiny/alpha", "alpha.safetensors")
    good = fakes.CONTENT[alpha]
    fakes.put(cache, *alpha, content=b"X" + good[1:])  # same size, other bytes
    assert store.is_downloaded("alpha")  # the quick check looks at sizes only
    results = store.verify(["alpha"])
    states = {report.file.filename: report.state for report in results["alpha"]}
    assert states["alpha.safetensors"] == "corrupt"
    assert all(state == "ok" for name, state in states.items() if name != "alpha.safetensors")
    out = io.StringIO()
    assert models_command.verify_styles(store, ["alpha"], out) == 1
    text = out.getvalue()
    assert "corrupt: tiny/alpha" in text and "vcam models remove alpha && vcam models download alpha" in text


def test_offline_download_of_missing_file_says_what_to_do(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache)
    with pytest.raises(OfflineError) as caught:
        download(store, ["alpha"], quiet=True)
    message = str(caught.value)
    assert "you are offline" in message
    assert "`vcam models download alpha`" in message and str(cache) in message


def test_download_uses_huggingface_hub_offline_mode(
    store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With our own check bypassed, huggingface_hub's offline mode refuses the fetch; we translate it."""
    from huggingface_hub import constants

    fakes.fill(cache)
    monkeypatch.setattr("vcam.store.download.hub_offline", lambda: False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match=r"offline.*vcam models download alpha"):
        download(store, ["alpha"], quiet=True)


def test_download_with_everything_on_disk_fetches_nothing(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha")
    seen: list[tuple[str, float]] = []
    assert download(store, ["alpha"], progress=lambda label, fraction: seen.append((label, fraction))) == 0
    assert seen == [("all files are on disk", 1.0)]


def test_remove_keeps_files_another_downloaded_style_uses(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "beta", "gamma")
    removed = store.remove("beta")
    assert any(path.name == "beta.safetensors" for path in removed)
    assert not fakes.repo_folder(cache, "tiny/lora").exists()  # nothing left: the repo folder goes too
    assert store.is_downloaded("gamma")  # shared parts and the SD1.5 UNet it shares with beta are kept
    assert store.cached_path(store.catalogue.style("gamma").hub_files()[0]) is not None
    assert not store.is_downloaded("beta")
    store.remove("gamma")  # the last style: its UNet and the shared parts go
    assert store.file_report(store.catalogue.style("gamma").hub_files()[0]).state == "missing"
    for repo, _ in fakes.SHARED_FILES:
        assert not fakes.repo_folder(cache, repo).exists(), repo
    assert not [path for path in cache.rglob("*") if path.is_file()]


def test_unknown_style_names_the_known_ones(store: ModelStore) -> None:
    with pytest.raises(UnknownStyleError, match=r"unknown style 'delta'.*alpha, beta, gamma"):
        store.is_downloaded("delta")


def test_user_style_with_local_files(cache: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "models" / "mine.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"local")
    user = {"mine": {"base": "models/mine.safetensors", "prompt": "my look"}}
    store = ModelStore(load_catalogue(user, relative_to=tmp_path, data=fakes.catalogue_data()), cache)
    assert not store.is_downloaded("mine")  # shared parts missing
    fakes.fill(cache)
    assert store.is_downloaded("mine")
    assert store.path("mine").base == checkpoint
    checkpoint.unlink()
    with pytest.raises(NotDownloadedError, match=r"mine.safetensors does not exist.*\[styles.mine\]"):
        store.path("mine")


def test_models_list_and_path_output(store: ModelStore, cache: Path) -> None:
    fakes.fill(cache, "alpha")
    out = io.StringIO()
    assert models_command.list_styles(store, out) == 0
    lines = out.getvalue().splitlines()
    alpha = next(line for line in lines if line.startswith("alpha"))
    beta = next(line for line in lines if line.startswith("beta"))
    assert "downloaded" in alpha and "not downloaded" not in alpha and "creativeml-openrail-m" in alpha
    assert "not downloaded" in beta and "Beta (unverified)" in beta  # unchecked revision flagged
    assert f"cache: {cache}" in out.getvalue()
    out = io.StringIO()
    assert models_command.print_path(store, None, out) == 0
    assert out.getvalue().strip() == str(cache)
    out = io.StringIO()
    assert models_command.print_path(store, "alpha", out) == 0
    assert f"base: {store.path('alpha').base}" in out.getvalue()


def test_models_verify_reports_ok_and_none(store: ModelStore, cache: Path) -> None:
    out = io.StringIO()
    assert models_command.verify_styles(store, [], out) == 0
    assert "no style is downloaded" in out.getvalue()
    fakes.fill(cache, "alpha")
    out = io.StringIO()
    assert models_command.verify_styles(store, [], out) == 0
    assert out.getvalue().startswith("alpha: ok")


def test_models_subcommand_parses_and_runs(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vcam.config import Config

    config = Config()
    config.models.cache_dir = str(cache)
    config.styles = {"mine": {"base": "/nowhere/mine.safetensors", "prompt": "my look", "clip_skip": 1}}
    monkeypatch.setattr(models_command, "_load_config", lambda: config)
    parser = argparse.ArgumentParser(prog="vcam")
    models_command.add_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["models", "list"]).handler(parser.parse_args(["models", "list"])) == 0
    listing = capsys.readouterr().out
    assert len([line for line in listing.splitlines() if "not downloaded" in line]) >= 7  # 6 catalogue + mine
    assert "mine" in listing and "local" in listing
    args = parser.parse_args(["models", "download", "pixar"])
    with pytest.raises(OfflineError, match=r"vcam models download pixar"):
        args.handler(args)
    assert not os.listdir(cache)  # offline: nothing written
