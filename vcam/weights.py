"""Weights on disk: which styles are downloaded, downloading them, verifying, removing, and their local paths.

Files live in the standard Hugging Face cache (`models--org--name/snapshots/<commit>/...`, blobs shared
between revisions), or in `[models] cache_dir`. Checking what is on disk never touches the network
(`try_to_load_from_cache`); only `ModelStore.download` does, one file at a time with a progress bar per
file. Files shared by several styles (the SD1.5 parts, the LCM-LoRA, TAESD, the motion and depth
checkpoints) are stored once.

Resuming: finished files are never fetched again, and the file being fetched at an interruption continues
from its last byte (vcam/downloader.py: huggingface_hub's metadata, auth and cache layout, the bytes fetched
with HTTP Range requests into `blobs/<etag>.vcam-partial`). Files placed this way are found by
`try_to_load_from_cache` and `hf_hub_download(local_files_only=True)` like any other.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vcam.catalogue import Catalogue, HubFile, HubSource, StyleEntry, load_catalogue
from vcam.downloader import (
    BadMetadata,
    ChecksumMismatch,
    DownloadInterrupted,
    FileDownloader,
    RemoteFile,
    discard_partial,
    fetch_metadata,
    find_partials,
    sha256_of,
)
from vcam.errors import UserError

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

FileState = Literal["ok", "missing", "partial", "corrupt"]
#: progress callback for the tray: (what is being fetched, overall fraction 0..1)
ProgressCallback = Callable[[str, float], None]
DISK_MARGIN_BYTES = 512 * 1024 * 1024
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


class WeightsError(UserError):
    """A download, verification or look-up of model weights failed; the message says what to do."""


class OfflineError(WeightsError):
    """The Hub cannot be reached (HF_HUB_OFFLINE set, or no network) and files are missing."""


class GatedModelError(WeightsError):
    """The repository needs its licence accepted on its model page and a logged-in token."""


class RemoteMissingError(WeightsError):
    """A repository, revision or file of the catalogue is not on the Hub (the catalogue is outdated)."""


class PartialDownloadError(WeightsError):
    """A download stopped before the file was complete."""


class CorruptWeightsError(WeightsError):
    """A file on disk does not match the catalogue's sha256 or size."""


class NotDownloadedError(WeightsError):
    """A style's weights are not (all) on disk."""


class DiskSpaceError(WeightsError):
    """Not enough free disk space for a download."""


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


def hub_offline() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES


def download_command(names: Iterable[str]) -> str:
    return "vcam models download " + " ".join(names)


def _default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


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

    def _estimates(self) -> dict[tuple[str, str, str], int]:
        """Estimated size in bytes of every catalogue file (exact where the catalogue has it)."""
        sources: list[HubSource] = [part.source for part in self.catalogue.shared.values()]
        for style in self.catalogue.styles.values():
            for source in (style.base, style.lora):
                if isinstance(source, HubSource):
                    sources.append(source)
        estimates: dict[tuple[str, str, str], int] = {}
        for source in sources:
            known = sum(source.sizes.values())
            unknown = [name for name in source.files if name not in source.sizes]
            rest = max(0.0, source.size_mb * 1e6 - known)
            for hub_file in source.hub_files():
                share = hub_file.size if hub_file.size is not None else int(rest / max(1, len(unknown)))
                estimates.setdefault(hub_file.key, share)
        return estimates

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

    def _missing_local(self, style: StyleEntry) -> list[Path]:
        return [path for path in style.local_files() if not path.exists()]

    def missing_files(self, name: str) -> list[FileReport]:
        """Files of the style (shared parts included) that are not complete on disk (size checks only)."""
        reports = [self.file_report(hub_file) for hub_file in self.required_files(name)]
        return [report for report in reports if report.state != "ok"]

    def is_downloaded(self, name: str) -> bool:
        """All the style's files are on disk (local user files included); never touches the network."""
        style = self.style(name)
        return not self._missing_local(style) and not self.missing_files(name)

    def _has_own_files(self, name: str) -> bool:
        style = self.style(name)
        if self._missing_local(style):
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

    # --- download -----------------------------------------------------------------------------------------

    def _check_local(self, style: StyleEntry) -> None:
        missing = self._missing_local(style)
        if missing:
            listed = ", ".join(str(path) for path in missing)
            raise NotDownloadedError(
                f"style {style.name!r}: {listed} does not exist: fix base/lora in [styles.{style.name}] of your config"
            )

    def _offline_error(self, names: Sequence[str], todo: Sequence[FileReport], reason: str) -> OfflineError:
        files = ", ".join(str(report.file) for report in todo[:4]) + (" ..." if len(todo) > 4 else "")
        return OfflineError(
            f"{reason}, and {len(todo)} file(s) are missing ({files}): connect and run"
            f" `{download_command(names)}`, or copy the files into {self.cache_dir}"
            " (Hugging Face cache layout, e.g. with `hf download REPO FILE` on another machine)"
        )

    def _translate(self, error: BaseException, hub_file: HubFile, names: Sequence[str]) -> WeightsError:
        import httpx2
        from huggingface_hub import constants, errors

        command = download_command(names)
        if isinstance(error, DownloadInterrupted):
            return PartialDownloadError(
                f"{error}: the {error.have} bytes so far are kept in {error.partial}; run `{command}` again to"
                " resume from there (finished files are kept)"
            )
        if isinstance(error, ChecksumMismatch):
            return CorruptWeightsError(
                f"{error}; the bad file was deleted: run `{command}` again, and if it fails the same way the"
                " catalogue's checksum is outdated: update live2diff-vcam"
            )
        if isinstance(error, BadMetadata):
            return RemoteMissingError(f"{hub_file}: {error}")
        if isinstance(error, errors.OfflineModeIsEnabled):
            return OfflineError(
                f"you are offline (HF_HUB_OFFLINE is set) and {hub_file} is missing: connect, unset HF_HUB_OFFLINE"
                f" and run `{command}`, or copy the files into {self.cache_dir}"
            )
        if isinstance(error, errors.GatedRepoError):
            return GatedModelError(
                f"{hub_file.repo} is gated: accept its licence on https://huggingface.co/{hub_file.repo}, then log in"
                f" with `hf auth login` (or `huggingface-cli login`) and run `{command}` again"
            )
        if isinstance(error, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
            return RemoteMissingError(
                f"{hub_file.repo} at revision {hub_file.revision} is not on the Hub (moved, deleted or private):"
                " the style catalogue is outdated; update live2diff-vcam, or add the style from local files"
                " as a [styles.NAME] table in your config"
            )
        if isinstance(error, errors.RemoteEntryNotFoundError):
            return self._file_not_on_hub(hub_file)
        if isinstance(error, (errors.LocalEntryNotFoundError, ConnectionError, httpx2.TransportError)):
            return OfflineError(
                f"{constants.ENDPOINT} cannot be reached ({type(error).__name__}: {error}) and {hub_file} is"
                f" missing: check your connection (and HF_ENDPOINT / proxy settings) and run `{command}`,"
                f" or copy the files into {self.cache_dir}"
            )
        if isinstance(error, errors.HfHubHTTPError):
            return PartialDownloadError(
                f"the Hub answered with an error for {hub_file} ({error}): run `{command}` again later;"
                " finished and partial files are kept"
            )
        return PartialDownloadError(
            f"the download of {hub_file} stopped ({type(error).__name__}: {error}): run `{command}` again to"
            " continue; finished files are kept"
        )

    @staticmethod
    def _file_not_on_hub(hub_file: HubFile) -> RemoteMissingError:
        return RemoteMissingError(
            f"{hub_file.filename} is not in {hub_file.repo} at revision {hub_file.revision}: the style catalogue"
            " is outdated; update live2diff-vcam, or add the style from local files in your config"
        )

    def _remote_files(
        self, todo: Sequence[FileReport], names: Sequence[str]
    ) -> dict[tuple[str, str, str], RemoteFile]:
        """Etag, commit, size and address of every file to fetch, from the Hub (one HEAD each) before any byte."""
        remote: dict[tuple[str, str, str], RemoteFile] = {}
        for report in todo:
            hub_file = report.file
            try:
                remote[hub_file.key] = fetch_metadata(hub_file.repo, hub_file.revision, hub_file.filename)
            except Exception as error:  # every Hub/network failure becomes a WeightsError with what to do
                raise self._translate(error, hub_file, names) from error
            if hub_file.size is not None and remote[hub_file.key].size != hub_file.size:
                raise CorruptWeightsError(
                    f"{hub_file} has {remote[hub_file.key].size} bytes on the Hub, the catalogue expects"
                    f" {hub_file.size}: the catalogue is outdated; update live2diff-vcam"
                )
        return remote

    def _check_disk(self, needed: int) -> None:
        free = _free_bytes(self.cache_dir)
        if free < needed + DISK_MARGIN_BYTES:
            raise DiskSpaceError(
                f"not enough free disk space in {self.cache_dir}: the download needs {_format_bytes(needed)}"
                f" (plus {_format_bytes(DISK_MARGIN_BYTES)} margin), {_format_bytes(free)} is free: free some space,"
                " or set [models] cache_dir in your config to a folder on a bigger disk"
            )

    def plan(self, names: Sequence[str]) -> list[FileReport]:
        """The files `download(names)` would fetch (not ok on disk), each once, shared parts included."""
        seen: dict[tuple[str, str, str], FileReport] = {}
        for name in names:
            style = self.style(name)
            self._check_local(style)
            for hub_file in self.required_files(name):
                if hub_file.key not in seen:
                    seen[hub_file.key] = self.file_report(hub_file)
        return [report for report in seen.values() if report.state != "ok"]

    def download(self, names: Sequence[str], progress: ProgressCallback | None = None, quiet: bool = False) -> int:
        """Fetch every missing, partial or corrupt file of the styles; return how many files were fetched.

        First the Hub is asked for every file's metadata (so gated, missing and offline errors come before any
        byte), then the free disk space is checked against what is still to fetch, then each file is fetched
        with a tqdm bar (hidden when `quiet`), resuming a partial file where it stopped; `progress(label,
        fraction)` gets the overall fraction by bytes. Raises OfflineError, GatedModelError, RemoteMissingError,
        PartialDownloadError (the partial is kept for the next run), CorruptWeightsError or DiskSpaceError.
        """
        return self.fetch_files(self.plan(names), names, progress, quiet)

    def fetch_files(
        self,
        todo: Sequence[FileReport],
        names: Sequence[str],
        progress: ProgressCallback | None = None,
        quiet: bool = False,
    ) -> int:
        """Fetch the files of `todo` (reports of files not ok on disk) as `download` does; `names` name them in
        the commands that errors suggest (`vcam models download NAMES`)."""
        if not todo:
            if progress is not None:
                progress("all files are on disk", 1.0)
            return 0
        if hub_offline():
            raise self._offline_error(names, todo, "you are offline (HF_HUB_OFFLINE is set)")
        remote = self._remote_files(todo, names)
        downloader = FileDownloader(self.cache_dir)
        on_disk = {key: downloader.bytes_on_disk(file) for key, file in remote.items()}
        replace = {report.file.key for report in todo if report.state in ("partial", "corrupt") and report.path}
        for key in replace:
            on_disk[key] = 0
        total = max(1, sum(file.size for file in remote.values()))
        self._check_disk(sum(file.size - on_disk[key] for key, file in remote.items()))
        done = sum(on_disk.values())
        for index, report in enumerate(todo, start=1):
            hub_file = report.file
            label = f"[{index}/{len(todo)}] {hub_file.repo}/{hub_file.filename}"

            def on_bytes(count: int, label: str = label) -> None:
                nonlocal done
                done += count
                if progress is not None:
                    progress(label, min(1.0, max(0.0, done / total)))

            log.info("downloading %s", label)
            if progress is not None:
                progress(label, min(1.0, done / total))
            try:
                fetched = downloader.fetch(
                    remote[hub_file.key],
                    sha256=hub_file.sha256,
                    replace=hub_file.key in replace,
                    on_bytes=on_bytes,
                    label=label,
                    quiet=quiet,
                )
            except Exception as error:  # every Hub/network failure becomes a WeightsError with what to do
                raise self._translate(error, hub_file, names) from error
            self._check_fetched(fetched, hub_file, names)
        if progress is not None:
            progress("done", 1.0)
        return len(todo)

    def _check_fetched(self, path: Path, hub_file: HubFile, names: Sequence[str]) -> None:
        """The size the catalogue expects (the downloader has checked the sha256 of what it fetched)."""
        if hub_file.size is not None and path.stat().st_size != hub_file.size:
            raise CorruptWeightsError(
                f"{hub_file} has {path.stat().st_size} bytes, the catalogue expects {hub_file.size}: run"
                f" `vcam models remove {' '.join(names)} && {download_command(names)}`"
            )

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
        missing_local = self._missing_local(style)
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
        )


def download_style(name: str, config: Config, progress: ProgressCallback | None = None) -> None:
    """Download one style (and the shared parts) for the tray; call it from a background thread."""
    ModelStore.from_config(config).download([name], progress=progress, quiet=True)


def resolve_style_paths(style: str, config: Config) -> StylePaths:
    """Local paths of a downloaded style for the pipeline builder; NotDownloadedError says what to run."""
    return ModelStore.from_config(config).path(style)
