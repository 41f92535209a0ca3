"""The Hugging Face cache on disk, as huggingface_hub lays it out, plus this app's resumable partial files.

    models--org--name/
        blobs/<etag>                    the finished file (what huggingface_hub writes)
        blobs/<etag>.vcam-partial       bytes fetched so far; kept when the download is interrupted
        blobs/<etag>.vcam-partial.json  which repository file the partial belongs to (no network needed)
        snapshots/<commit>/<filename>   relative symlink to the blob (a moved or copied file without symlinks)
        refs/<branch>                   the commit a branch or tag pointed at

Reading it never touches the network: the store (vcam/store/store.py) reads it, the Hub fetcher
(vcam/store/hub_fetch.py) writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".vcam-partial"
SIDECAR_SUFFIX = ".vcam-partial.json"
HASH_CHUNK = 8 * 1024 * 1024
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see: https://bford.info/cachedir/\n"
)


@dataclass(frozen=True)
class PartialFile:
    """An interrupted download on disk."""

    path: Path
    etag: str
    have: int
    size: int


def storage_folder(cache_dir: Path, repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache_dir / repo_folder_name(repo_id=repo, repo_type="model")


# --- partial files --------------------------------------------------------------------------------------------


def partial_path(cache_dir: Path, repo: str, etag: str) -> Path:
    return storage_folder(cache_dir, repo) / "blobs" / (etag + PARTIAL_SUFFIX)


def sidecar_path(partial: Path) -> Path:
    return partial.with_name(partial.name[: -len(PARTIAL_SUFFIX)] + SIDECAR_SUFFIX)


def _readsidecar_path(sidecar: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_partials(cache_dir: Path, repo: str, filename: str, revision: str | None = None) -> list[PartialFile]:
    """Interrupted downloads of `filename` in `repo` (of `revision`, a branch or commit, when given); offline."""
    blobs = storage_folder(cache_dir, repo) / "blobs"
    if not blobs.is_dir():
        return []
    found: list[PartialFile] = []
    for sidecar in sorted(blobs.glob("*" + SIDECAR_SUFFIX)):
        data = _readsidecar_path(sidecar)
        if data is None or data.get("filename") != filename:
            continue
        if revision is not None and revision not in (data.get("revision"), data.get("commit")):
            continue
        etag = sidecar.name[: -len(SIDECAR_SUFFIX)]
        partial = blobs / (etag + PARTIAL_SUFFIX)
        have = partial.stat().st_size if partial.is_file() else 0
        found.append(PartialFile(partial, etag, have, int(data.get("size", 0))))
    return found


def discard_partial(partial: Path) -> list[Path]:
    """Delete a partial file and its sidecar; return what was deleted."""
    removed: list[Path] = []
    for path in (partial, sidecar_path(partial)):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


# --- the cache layout, as huggingface_hub writes it -----------------------------------------------------------


def write_ref(folder: Path, revision: str, commit: str) -> None:
    """refs/<revision> holds the commit when the revision is a branch or tag (written atomically)."""
    if revision == commit or COMMIT_HASH.match(revision):
        return
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    if ref.is_file() and ref.read_text(encoding="utf-8") == commit:
        return
    staged = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
    staged.write_text(commit, encoding="utf-8")
    os.replace(staged, ref)


def link_pointer(blob: Path, pointer: Path, new_blob: bool) -> None:
    """snapshots/<commit>/<file> -> blob as a relative symlink; where symlinks are not supported (Windows without
    developer mode, some mounts, HF_HUB_DISABLE_SYMLINKS) the file itself: moved when the blob is new, copied
    when other snapshots may use it. The same rules as huggingface_hub's `_create_symlink`."""
    from huggingface_hub.file_download import are_symlinks_supported

    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    source = os.path.abspath(blob)
    target = os.path.abspath(pointer)
    try:
        relative: str | None = os.path.relpath(source, os.path.dirname(target))
    except ValueError:  # Windows: another drive
        relative = None
    try:
        symlinks = are_symlinks_supported(os.path.commonpath([source, target]))
    except ValueError:
        symlinks = are_symlinks_supported(os.path.dirname(target))
    if symlinks:
        try:
            os.symlink(relative or source, target)
            return
        except PermissionError:
            log.debug("no symlink from %s to %s allowed; copying", target, source)
    if new_blob:
        shutil.move(source, target)
    else:
        shutil.copyfile(source, target)


def mode_of_new_files(folder: Path) -> int:
    """The permissions a new file in `folder` gets (umask applied), as huggingface_hub sets on its blobs."""
    probe = folder / f"tmp_{uuid.uuid4()}"
    try:
        probe.touch()
        return stat.S_IMODE(probe.stat().st_mode)
    finally:
        probe.unlink(missing_ok=True)


def tag_cache(cache_dir: Path) -> None:
    tag = cache_dir / "CACHEDIR.TAG"
    if not tag.exists():
        try:
            tag.write_text(CACHEDIR_TAG, encoding="utf-8")
        except OSError:
            log.debug("could not write %s", tag)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def file_lock(cache_dir: Path, repo: str, etag: str) -> Iterator[None]:
    """The lock huggingface_hub takes for this blob, so `hf_hub_download` and this never write it at once."""
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock

    lock = cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model") / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        yield
