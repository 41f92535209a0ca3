"""Downloading styles: which files are still to fetch, the Hub asked about all of them first, then each fetched.

Finished files are never fetched again, and the file being fetched at an interruption continues from its
last byte (vcam/store/hub_fetch.py). Files shared by several styles are fetched once. Every Hub or network
failure becomes a WeightsError that says what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vcam.errors import CorruptWeightsError, DiskSpaceError, NotDownloadedError, OfflineError
from vcam.store.catalogue import HubFile, StyleEntry
from vcam.store.hub_fetch import FileDownloader, RemoteFile, fetch_metadata, translate_hub_error
from vcam.store.store import FileReport, ModelStore, download_command

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

#: progress callback for the tray: (what is being fetched, overall fraction 0..1)
ProgressCallback = Callable[[str, float], None]
#: free space kept beyond what a download needs
DISK_MARGIN_BYTES = 512 * 1024 * 1024
#: values of HF_HUB_OFFLINE that mean offline (huggingface_hub's own)
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES


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


def _check_local(store: ModelStore, style: StyleEntry) -> None:
    missing = store.missing_local(style)
    if missing:
        listed = ", ".join(str(path) for path in missing)
        raise NotDownloadedError(
            f"style {style.name!r}: {listed} does not exist: fix base/lora in [styles.{style.name}] of your config"
        )


def _offline_error(store: ModelStore, names: Sequence[str], todo: Sequence[FileReport], reason: str) -> OfflineError:
    files = ", ".join(str(report.file) for report in todo[:4]) + (" ..." if len(todo) > 4 else "")
    return OfflineError(
        f"{reason}, and {len(todo)} file(s) are missing ({files}): connect and run"
        f" `{download_command(names)}`, or copy the files into {store.cache_dir}"
        " (Hugging Face cache layout, e.g. with `hf download REPO FILE` on another machine)"
    )


def _remote_files(
    store: ModelStore, todo: Sequence[FileReport], names: Sequence[str]
) -> dict[tuple[str, str, str], RemoteFile]:
    """Etag, commit, size and address of every file to fetch, from the Hub (one HEAD each) before any byte."""
    remote: dict[tuple[str, str, str], RemoteFile] = {}
    for report in todo:
        hub_file = report.file
        try:
            remote[hub_file.key] = fetch_metadata(hub_file.repo, hub_file.revision, hub_file.filename)
        except Exception as error:  # every Hub/network failure becomes a WeightsError with what to do
            raise translate_hub_error(error, hub_file, download_command(names), store.cache_dir) from error
        if hub_file.size is not None and remote[hub_file.key].size != hub_file.size:
            raise CorruptWeightsError(
                f"{hub_file} has {remote[hub_file.key].size} bytes on the Hub, the catalogue expects"
                f" {hub_file.size}: the catalogue is outdated; update live2diff-vcam"
            )
    return remote


def _check_disk(store: ModelStore, needed: int) -> None:
    free = _free_bytes(store.cache_dir)
    if free < needed + DISK_MARGIN_BYTES:
        raise DiskSpaceError(
            f"not enough free disk space in {store.cache_dir}: the download needs {_format_bytes(needed)}"
            f" (plus {_format_bytes(DISK_MARGIN_BYTES)} margin), {_format_bytes(free)} is free: free some space,"
            " or set [models] cache_dir in your config to a folder on a bigger disk"
        )


def _check_fetched(path: Path, hub_file: HubFile, names: Sequence[str]) -> None:
    """The size the catalogue expects (the fetcher has checked the sha256 of what it fetched)."""
    if hub_file.size is not None and path.stat().st_size != hub_file.size:
        raise CorruptWeightsError(
            f"{hub_file} has {path.stat().st_size} bytes, the catalogue expects {hub_file.size}: run"
            f" `vcam models remove {' '.join(names)} && {download_command(names)}`"
        )


def plan(store: ModelStore, names: Sequence[str]) -> list[FileReport]:
    """The files `download(store, names)` would fetch (not ok on disk), each once, shared parts included."""
    seen: dict[tuple[str, str, str], FileReport] = {}
    for name in names:
        _check_local(store, store.style(name))
        for hub_file in store.required_files(name):
            if hub_file.key not in seen:
                seen[hub_file.key] = store.file_report(hub_file)
    return [report for report in seen.values() if report.state != "ok"]


def download(
    store: ModelStore, names: Sequence[str], progress: ProgressCallback | None = None, quiet: bool = False
) -> int:
    """Fetch every missing, partial or corrupt file of the styles into `store`; return how many files were fetched.

    First the Hub is asked for every file's metadata (so gated, missing and offline errors come before any
    byte), then the free disk space is checked against what is still to fetch, then each file is fetched
    with a tqdm bar (hidden when `quiet`), resuming a partial file where it stopped; `progress(label,
    fraction)` gets the overall fraction by bytes. Raises OfflineError, GatedModelError, RemoteMissingError,
    PartialDownloadError (the partial is kept for the next run), CorruptWeightsError or DiskSpaceError.
    """
    return fetch_files(store, plan(store, names), names, progress, quiet)


def fetch_files(
    store: ModelStore,
    todo: Sequence[FileReport],
    names: Sequence[str],
    progress: ProgressCallback | None = None,
    quiet: bool = False,
) -> int:
    """Fetch the files of `todo` (reports of files not ok on disk) as `download` does; `names` name them in the
    commands that errors suggest (`vcam models download NAMES`)."""
    if not todo:
        if progress is not None:
            progress("all files are on disk", 1.0)
        return 0
    if hub_offline():
        raise _offline_error(store, names, todo, "you are offline (HF_HUB_OFFLINE is set)")
    remote = _remote_files(store, todo, names)
    downloader = FileDownloader(store.cache_dir)
    on_disk = {key: downloader.bytes_on_disk(file) for key, file in remote.items()}
    replace = {report.file.key for report in todo if report.state in ("partial", "corrupt") and report.path}
    for key in replace:
        on_disk[key] = 0
    total = max(1, sum(file.size for file in remote.values()))
    _check_disk(store, sum(file.size - on_disk[key] for key, file in remote.items()))
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
            raise translate_hub_error(error, hub_file, download_command(names), store.cache_dir) from error
        _check_fetched(fetched, hub_file, names)
    if progress is not None:
        progress("done", 1.0)
    return len(todo)


def download_style(name: str, config: Config, progress: ProgressCallback | None = None) -> None:
    """Download one style (and the shared parts) for the tray; call it from a background thread."""
    download(ModelStore.from_config(config), [name], progress=progress, quiet=True)
