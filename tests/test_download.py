"""`vcam models download` end to end against a local fake Hub (tests/fakes/hub.py) with the tiny catalogue of
tests/fakes/weights.py: files land where huggingface_hub finds them, shared parts are fetched once, a cut
download resumes inside the file with a Range request, and gated / missing / corrupt / full-disk / offline
each give their error. HF_HUB_OFFLINE is unset only inside these tests (monkeypatch restores it)."""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import hub as fake_hub
from tests.fakes import weights as fakes
from vcam.commands import models as models_command
from vcam.errors import (
    CorruptWeightsError,
    DiskSpaceError,
    GatedModelError,
    OfflineError,
    PartialDownloadError,
    RemoteMissingError,
)
from vcam.store.cache_layout import PARTIAL_SUFFIX, SIDECAR_SUFFIX, find_partials
from vcam.store.catalogue import load_catalogue
from vcam.store.download import download
from vcam.store.store import ModelStore

ALPHA = ("tiny/alpha", "alpha.safetensors")
LORA = ("tiny/lora", "beta.safetensors")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[fake_hub.FakeHub]:
    state = fake_hub.FakeHub(content=dict(fakes.CONTENT), commits=dict(fakes.COMMITS))
    with fake_hub.running(state):
        fake_hub.use_fake_hub(state, monkeypatch, tmp_path / "hf-home")
        monkeypatch.setattr("vcam.store.hub_fetch.RETRY_WAIT_S", 0.0)
        yield state


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub-cache"


@pytest.fixture
def store(cache: Path) -> ModelStore:
    return ModelStore(load_catalogue(data=fakes.catalogue_data()), cache)


def run_cli(store: ModelStore, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(models_command, "build_store", lambda args: store)
    parser = argparse.ArgumentParser(prog="vcam")
    models_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", *argv])
    result: int = args.handler(args)
    return result


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and path.name != "CACHEDIR.TAG"]


def test_download_places_files_where_huggingface_hub_finds_them(
    hub: fake_hub.FakeHub,
    store: ModelStore,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    assert run_cli(store, monkeypatch, "download", "beta") == 0
    assert "downloaded 9 file(s)" in capsys.readouterr().out
    assert store.is_downloaded("beta")
    for hub_file in store.required_files("beta"):
        found = try_to_load_from_cache(
            hub_file.repo, hub_file.filename, cache_dir=str(cache), revision=hub_file.revision
        )
        assert isinstance(found, str), hub_file
        assert Path(found).read_bytes() == fakes.CONTENT[(hub_file.repo, hub_file.filename)]
        assert Path(found).is_symlink()
        local = hf_hub_download(
            hub_file.repo, hub_file.filename, revision=hub_file.revision, cache_dir=str(cache), local_files_only=True
        )
        assert local == found
    lora_folder = fakes.repo_folder(cache, LORA[0])
    assert (lora_folder / "refs" / "main").read_text() == fakes.COMMIT_LORA  # the catalogue names a branch
    blob = (lora_folder / "snapshots" / fakes.COMMIT_LORA / LORA[1]).resolve()
    assert blob.parent.name == "blobs" and blob.name == hashlib.sha256(fakes.CONTENT[LORA]).hexdigest()
    assert not list(cache.rglob("*" + PARTIAL_SUFFIX)) and not list(cache.rglob("*" + SIDECAR_SUFFIX))
    hub_requests = [entry for entry in hub.requests if entry.server == "hub" and "/resolve/" in entry.path]
    cdn_requests = [entry for entry in hub.requests if entry.server == "cdn"]
    assert cdn_requests, "LFS-like files are fetched from the CDN address the Hub redirects to"
    assert [entry for entry in hub_requests if entry.headers.get("authorization") != "Bearer hf_fake_token"] == []
    assert all("authorization" not in entry.headers for entry in cdn_requests)  # the token stays on the Hub


def test_shared_parts_are_fetched_once_for_two_styles(hub: fake_hub.FakeHub, store: ModelStore) -> None:
    assert download(store, ["alpha", "gamma"], quiet=True) == len(fakes.SHARED_FILES) + 2
    assert download(store, ["beta"], quiet=True) == 1  # only the LoRA: the SD1.5 UNet came with gamma
    for repo, filename in [*fakes.SHARED_FILES, ("tiny/sd15", "unet/diffusion_pytorch_model.safetensors")]:
        assert len(hub.gets(repo, filename)) == 1, filename
    before = len(hub.requests)
    assert download(store, ["alpha", "beta", "gamma"], quiet=True) == 0
    assert len(hub.requests) == before  # everything on disk: no request at all


def test_interrupted_download_resumes_inside_the_file(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vcam.store.hub_fetch.RETRIES", 0)  # no resume within the run: the next run must do it
    hub.cuts[ALPHA] = [500]
    with pytest.raises(PartialDownloadError) as caught:
        download(store, ["alpha"], quiet=True)
    assert "500 bytes so far are kept" in str(caught.value) and "`vcam models download alpha` again" in str(
        caught.value
    )
    [partial] = find_partials(cache, *ALPHA)
    assert partial.have == 500 and partial.path.read_bytes() == fakes.CONTENT[ALPHA][:500]
    [report] = [report for report in store.missing_files("alpha") if report.file.filename == ALPHA[1]]
    assert report.state == "partial" and "500 bytes" in report.detail
    seen: list[float] = []
    download(store, ["alpha"], progress=lambda label, fraction: seen.append(fraction), quiet=True)
    [first, second] = hub.gets(*ALPHA)
    assert first.range_start is None and second.range_start == 500
    path = store.cached_path(store.own_files("alpha")[0])
    assert path is not None and hashlib.sha256(path.read_bytes()).hexdigest() == fakes.sha(*ALPHA)
    assert store.is_downloaded("alpha") and not find_partials(cache, *ALPHA)
    assert seen[0] > 0 and seen[-1] == 1.0 and seen == sorted(seen)  # resumed bytes count as done


def test_cut_connection_is_resumed_within_the_run(hub: fake_hub.FakeHub, store: ModelStore) -> None:
    hub.cuts[ALPHA] = [300, 300]
    download(store, ["alpha"], quiet=True)
    assert [entry.range_start for entry in hub.gets(*ALPHA)] == [None, 300, 600]
    assert store.verify(["alpha"])["alpha"][0].state == "ok"


def test_server_that_ignores_range_starts_the_file_over(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vcam.store.hub_fetch.RETRIES", 0)
    hub.cuts[ALPHA] = [400]
    with pytest.raises(PartialDownloadError):
        download(store, ["alpha"], quiet=True)
    hub.ignore_range = True
    download(store, ["alpha"], quiet=True)
    assert hub.gets(*ALPHA)[-1].range_start == 400  # asked, got a 200, kept the full body only
    path = store.cached_path(store.own_files("alpha")[0])
    assert path is not None and path.read_bytes() == fakes.CONTENT[ALPHA]


def test_partial_of_an_older_version_is_dropped(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vcam.store.hub_fetch.RETRIES", 0)
    hub.cuts[LORA] = [50]
    with pytest.raises(PartialDownloadError):
        download(store, ["beta"], quiet=True)
    [old] = find_partials(cache, *LORA)
    hub.content[LORA] = b"new-beta-lora-" * 20  # a new version on the branch: another etag
    download(store, ["beta"], quiet=True)
    assert not old.path.exists()
    assert hub.gets(*LORA)[-1].range_start is None  # the old bytes were not continued
    path = store.cached_path(store.catalogue.style("beta").hub_files()[1])
    assert path is not None and path.read_bytes() == b"new-beta-lora-" * 20


def test_gated_repository_says_to_accept_the_licence_and_log_in(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path
) -> None:
    hub.gated.add(ALPHA[0])
    with pytest.raises(GatedModelError) as caught:
        download(store, ["alpha"], quiet=True)
    message = str(caught.value)
    assert "tiny/alpha is gated" in message and "accept its licence" in message and "hf auth login" in message
    assert "vcam models download alpha" in message
    assert not hub.gets() and not files_under(cache)  # refused before any byte


def test_missing_file_and_missing_repository(hub: fake_hub.FakeHub, store: ModelStore) -> None:
    del hub.content[ALPHA]
    with pytest.raises(RemoteMissingError, match=r"alpha.safetensors is not in tiny/alpha.*catalogue is outdated"):
        download(store, ["alpha"], quiet=True)
    del hub.commits[LORA[0]]
    with pytest.raises(RemoteMissingError, match=r"tiny/lora at revision main is not on the Hub"):
        download(store, ["beta"], quiet=True)
    assert not hub.gets()


def test_wrong_sha256_is_refused_and_not_left_in_place(hub: fake_hub.FakeHub, cache: Path) -> None:
    data = fakes.catalogue_data()
    data["styles"]["alpha"]["base"]["sha256"][ALPHA[1]] = "0" * 64
    store = ModelStore(load_catalogue(data=data), cache)
    with pytest.raises(CorruptWeightsError, match=r"alpha.safetensors has sha256 .*the bad file was deleted"):
        download(store, ["alpha"], quiet=True)
    [report] = [report for report in store.missing_files("alpha") if report.file.filename == ALPHA[1]]
    assert report.state == "missing"
    sha = hashlib.sha256(fakes.CONTENT[ALPHA]).hexdigest()
    assert not [path for path in files_under(fakes.repo_folder(cache, ALPHA[0])) if path.name.startswith(sha)]


def test_not_enough_disk_space_stops_before_any_byte(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vcam.store.download._free_bytes", lambda folder: 10_000)
    with pytest.raises(DiskSpaceError, match=r"not enough free disk space.*\[models\] cache_dir"):
        download(store, ["alpha"], quiet=True)
    assert not hub.gets() and not files_under(cache)


def test_offline_mode_sends_no_request(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = io.StringIO()
    with pytest.raises(OfflineError, match=r"HF_HUB_OFFLINE is set.*vcam models download alpha"):
        models_command.download_styles(store, ["alpha"], False, out)
    assert hub.requests == []


def test_without_symlinks_the_snapshot_holds_the_file(
    hub: fake_hub.FakeHub, store: ModelStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_SYMLINKS", True)
    download(store, ["alpha"], quiet=True)
    found = try_to_load_from_cache(*ALPHA, cache_dir=str(cache), revision=fakes.COMMIT_ALPHA)
    assert isinstance(found, str) and not Path(found).is_symlink()
    assert Path(found).read_bytes() == fakes.CONTENT[ALPHA]
    assert store.is_downloaded("alpha")
