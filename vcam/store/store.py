"""The weights on disk: which styles are downloaded, verifying them, removing them, and their local paths.

Files live in the standard Hugging Face cache (`models--org--name/snapshots/<commit>/...`, blobs shared
between revisions), or in `[models] cache_dir`. Checking what is on disk never touches the network
(`try_to_load_from_cache`); only downloading (vcam/store/download.py) does. Files shared by several
styles (the SD1.5 parts, the LCM-LoRA, TAESD, the motion and depth checkpoints) are stored once.

A download interrupted mid-file leaves `blobs/<etag>.vcam-partial` (vcam/store/cache_layout.py): the status
reports it as partial and `remove` deletes it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vcam.errors import NotDownloadedError
from vcam.model.noise import DEFAULT_NOISE
from vcam.store.cache_layout import discard_partial, find_partials, sha256_of
from vcam.store.catalogue import Catalogue, HubFile, HubSource, StyleEntry, load_catalogue

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

FileState = Literal["ok", "missing", "partial", "corrupt"]


@dataclass(frozen=True)
class FileReport:
    """The state of one file on disk: ok, missing, partial (cut short / unfinished) or corrupt."""

    file: HubFile
    state: FileState
    path: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class StylePaths:
    """Local paths of everything a diffusion style needs; maps field by field onto the pipeline's spec.

    base: a single-file checkpoint (.safetensors / .ckpt) or a diffusers folder holding unet/ (and maybe
    text_encoder/); sd15: the SD1.5 diffusers folder (tokenizer/, text_encoder/, vae/, scheduler/,
    unet/config.json); motion: live2diff.ckpt; lcm_lora and style_lora: LoRA files; taesd and depth:
    folders loadable with `AutoencoderTiny.from_pretrained` and `DPTForDepthEstimation.from_pretrained`.
    """

    name: str
    base: Path
    base_format: Literal["single_file", "diffusers"]
    sd15: Path
    motion: Path
    lcm_lora: Path
    style_lora: Path | None
    lora_scale: float
    taesd: Path
    depth: Path
    prompt: str
    t_index_list: tuple[int, ...]
    clip_skip: int
    noise: str = DEFAULT_NOISE  # vcam.model.noise.NOISE_MODES
    depth_every: int = 1  # depth on every N-th frame (`vcam.model.depth.check_depth_every`)


def download_command(names: Iterable[str]) -> str:
    """The command that downloads the named styles (quoted in every message that tells the user to run it)."""
    return "vcam models download " + " ".join(names)


def _default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


class ModelStore:
    """What is on disk for each style of a catalogue, and the operations on it.

    `cache_dir` None means the standard Hugging Face cache (HF_HUB_CACHE / HF_HOME are respected).
    """

    def __init__(self, catalogue: Catalogue, cache_dir: Path | None = None) -> None:
        self.catalogue = catalogue
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()

    @classmethod
    def from_config(cls, config: Config, strict: bool = True) -> ModelStore:
        """The store for the config's catalogue; `strict=False` keeps bad user styles in `catalogue.invalid`."""
        relative_to = config.path.parent if config.path is not None else None
        catalogue = load_catalogue(config.styles, relative_to=relative_to, strict=strict)
        return cls(catalogue, Path(config.models.cache_dir) if config.models.cache_dir else None)

    # --- what a style needs -------------------------------------------------------------------------------

    def style(self, name: str) -> StyleEntry:
        return self.catalogue.style(name)

    def own_files(self, name: str) -> list[HubFile]:
        return self.style(name).hub_files()

    def required_files(self, name: str) -> list[HubFile]:
        """The style's own Hub files plus the shared parts, each file once."""
        seen: dict[tuple[str, str, str], HubFile] = {}
        for hub_file in [*self.own_files(name), *self.catalogue.shared_files()]:
            seen.setdefault(hub_file.key, hub_file)
        return list(seen.values())

    # --- the cache layout ---------------------------------------------------------------------------------

    def repo_folder(self, repo: str) -> Path:
        return self.cache_dir / ("models--" + repo.replace("/", "--"))

    def _commit(self, hub_file: HubFile) -> str | None:
        if len(hub_file.revision) == 40:
            return hub_file.revision
        ref = self.repo_folder(hub_file.repo) / "refs" / hub_file.revision
        return ref.read_text(encoding="utf-8").strip() if ref.is_file() else None

    def cached_path(self, hub_file: HubFile) -> Path | None:
        """The file's path in the cache (a snapshot entry), or None; never touches the network."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            hub_file.repo, hub_file.filename, cache_dir=str(self.cache_dir), revision=hub_file.revision
        )
        return Path(found) if isinstance(found, str) else None

    def _unfinished(self, hub_file: HubFile) -> Path | None:
        """A partial left by an interrupted download of this file (ours, or an old huggingface_hub `.incomplete`)."""
        partials = find_partials(self.cache_dir, hub_file.repo, hub_file.filename, hub_file.revision)
        if partials:
            return partials[0].path
        blobs = self.repo_folder(hub_file.repo) / "blobs"
        if not blobs.is_dir():
            return None
        leftovers = sorted(blobs.glob("*.incomplete"))
        if hub_file.sha256:
            own = [path for path in leftovers if path.name.startswith(hub_file.sha256)]
            return own[0] if own else None
        return leftovers[0] if leftovers else None

    def file_report(self, hub_file: HubFile, check_sha256: bool = False) -> FileReport:
        path = self.cached_path(hub_file)
        if path is None:
            leftover = self._unfinished(hub_file)
            if leftover is not None:
                have = leftover.stat().st_size if leftover.exists() else 0
                return FileReport(hub_file, "partial", None, f"unfinished download ({leftover.name}, {have} bytes)")
            return FileReport(hub_file, "missing")
        size = path.stat().st_size
        if hub_file.size is not None and size < hub_file.size:
            return FileReport(hub_file, "partial", path, f"cut short: {size} of {hub_file.size} bytes")
        if hub_file.size is not None and size > hub_file.size:
            return FileReport(hub_file, "corrupt", path, f"{size} bytes, expected {hub_file.size}")
        if check_sha256 and hub_file.sha256:
            actual = sha256_of(path)
            if actual != hub_file.sha256:
                return FileReport(
                    hub_file, "corrupt", path, f"sha256 {actual[:12]}..., expected {hub_file.sha256[:12]}..."
                )
        return FileReport(hub_file, "ok", path)

    # --- status -------------------------------------------------------------------------------------------

    def missing_local(self, style: StyleEntry) -> list[Path]:
        """A user style's local files (base, LoRA) that do not exist."""
        return [path for path in style.local_files() if not path.exists()]

    def missing_files(self, name: str) -> list[FileReport]:
        """Files of the style (shared parts included) that are not complete on disk (size checks only)."""
        reports = [self.file_report(hub_file) for hub_file in self.required_files(name)]
        return [report for report in reports if report.state != "ok"]

    def is_downloaded(self, name: str) -> bool:
        """All the style's files are on disk (local user files included); never touches the network."""
        style = self.style(name)
        return not self.missing_local(style) and not self.missing_files(name)

    def _has_own_files(self, name: str) -> bool:
        style = self.style(name)
        if self.missing_local(style):
            return False
        return all(self.file_report(hub_file).state == "ok" for hub_file in style.hub_files())

    def verify(self, names: Sequence[str] | None = None) -> dict[str, list[FileReport]]:
        """Every file of the named styles (default: those with their own files on disk), sha256 included."""
        chosen = list(names) if names else [name for name in self.catalogue.styles if self._has_own_files(name)]
        hashed: dict[tuple[str, str, str], FileReport] = {}
        results: dict[str, list[FileReport]] = {}
        for name in chosen:
            reports: list[FileReport] = []
            for hub_file in self.required_files(name):
                if hub_file.key not in hashed:
                    hashed[hub_file.key] = self.file_report(hub_file, check_sha256=True)
                reports.append(hashed[hub_file.key])
            results[name] = reports
        return results

    # --- remove -------------------------------------------------------------------------------------------

    def removable_files(self, name: str) -> list[HubFile]:
        """The style's files that no other style with its own files on disk still needs."""
        keep: set[tuple[str, str, str]] = set()
        for other in self.catalogue.styles:
            if other != name and self._has_own_files(other):
                keep.update(hub_file.key for hub_file in self.required_files(other))
        return [hub_file for hub_file in self.required_files(name) if hub_file.key not in keep]

    def remove(self, name: str) -> list[Path]:
        """Delete the style's files from the cache, keeping those another downloaded style uses; return them."""
        removed: list[Path] = []
        touched: set[str] = set()
        for hub_file in self.removable_files(name):
            removed.extend(self._remove_file(hub_file))
            touched.add(hub_file.repo)
        for repo in touched:
            self._prune_repo(repo)
        return removed

    def _remove_file(self, hub_file: HubFile) -> list[Path]:
        repo_folder = self.repo_folder(hub_file.repo)
        removed: list[Path] = []
        commit = self._commit(hub_file)
        if commit is not None:
            pointer = repo_folder / "snapshots" / commit / hub_file.filename
            if pointer.is_symlink():
                blob = (pointer.parent / os.readlink(pointer)).resolve()
                pointer.unlink()
                removed.append(pointer)
                if blob.exists() and not self._blob_referenced(repo_folder, blob):
                    blob.unlink()
                    removed.append(blob)
            elif pointer.exists():
                pointer.unlink()
                removed.append(pointer)
        if hub_file.sha256:
            for leftover in (repo_folder / "blobs").glob(f"{hub_file.sha256}*.incomplete"):
                leftover.unlink()
                removed.append(leftover)
        for partial in find_partials(self.cache_dir, hub_file.repo, hub_file.filename, hub_file.revision):
            removed.extend(discard_partial(partial.path))
        return removed

    @staticmethod
    def _blob_referenced(repo_folder: Path, blob: Path) -> bool:
        for entry in (repo_folder / "snapshots").rglob("*"):
            if entry.is_symlink() and (entry.parent / os.readlink(entry)).resolve() == blob:
                return True
        return False

    def _prune_repo(self, repo: str) -> None:
        """Remove empty snapshot folders; the whole repository folder once no snapshot file is left."""
        repo_folder = self.repo_folder(repo)
        snapshots = repo_folder / "snapshots"
        if not snapshots.is_dir():
            return
        for folder in sorted(
            (p for p in snapshots.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(path.is_file() or path.is_symlink() for path in snapshots.rglob("*")):
            shutil.rmtree(repo_folder)

    # --- paths for the pipeline ---------------------------------------------------------------------------

    def _source_root(self, source: HubSource) -> Path:
        """The snapshot folder of a source (where its files sit, relative paths kept)."""
        first = source.hub_files()[0]
        path = self.cached_path(first)
        if path is None:
            raise NotDownloadedError(f"{first} is not on disk: run `{download_command([first.repo])}`")
        root = path
        for _ in Path(first.filename).parts:
            root = root.parent
        return root

    def _file_path(self, source: HubSource) -> Path:
        return self._source_root(source) / source.files[0]

    def not_downloaded_message(self, name: str) -> str:
        style = self.style(name)
        missing_local = self.missing_local(style)
        if missing_local:
            listed = ", ".join(str(path) for path in missing_local)
            return f"style {name!r}: {listed} does not exist: fix base/lora in [styles.{name}] of your config"
        missing = self.missing_files(name)
        partial = sum(1 for report in missing if report.state == "partial")
        state = f"{len(missing)} of its files missing" + (f", {partial} partly downloaded" if partial else "")
        return f"style {name!r} is not downloaded ({state}): run `{download_command([name])}`"

    def path(self, name: str) -> StylePaths:
        """Local paths for the pipeline builder; NotDownloadedError (with the command) if anything is missing."""
        style = self.style(name)
        if not self.is_downloaded(name):
            raise NotDownloadedError(self.not_downloaded_message(name))
        shared = self.catalogue.shared
        if isinstance(style.base, Path):
            base = style.base
        elif style.base_format == "single_file":
            base = self._file_path(style.base)
        else:
            base = self._source_root(style.base)
        if isinstance(style.lora, HubSource):
            style_lora: Path | None = self._file_path(style.lora)
        else:
            style_lora = style.lora
        return StylePaths(
            name=name,
            base=base,
            base_format=style.base_format,
            sd15=self._source_root(shared["sd15"].source),
            motion=self._file_path(shared["motion"].source),
            lcm_lora=self._file_path(shared["lcm_lora"].source),
            style_lora=style_lora,
            lora_scale=style.lora_scale,
            taesd=self._source_root(shared["taesd"].source),
            depth=self._source_root(shared["depth"].source),
            prompt=style.prompt,
            t_index_list=style.t_index_list,
            clip_skip=style.clip_skip,
            noise=style.noise,
            depth_every=style.depth_every,
        )


def resolve_style_paths(style: str, config: Config) -> StylePaths:
    """Local paths of a downloaded style for the pipeline builder; NotDownloadedError says what to run."""
    return ModelStore.from_config(config).path(style)
