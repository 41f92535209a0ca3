"""One Hub file into the Hugging Face cache, resumable inside the file with HTTP Range requests.

huggingface_hub (>= 1.x) writes each download to a process-unique temporary file that it deletes on failure,
so a 1.7 GB checkpoint cut off at 90 % starts over. Here huggingface_hub stays the source of truth for the
URL (`hf_hub_url`), the metadata (`get_hf_file_metadata`: etag, commit, size, CDN location), the auth headers
(`build_hf_headers`), the HTTP client (`get_session`, which also enforces HF_HUB_OFFLINE), the error types
(`hf_raise_for_status`) and the cache layout; only the bytes are fetched here:

    models--org--name/
        blobs/<etag>                    the finished file (what huggingface_hub writes)
        blobs/<etag>.vcam-partial       bytes fetched so far; kept when the download is interrupted
        blobs/<etag>.vcam-partial.json  which repository file the partial belongs to (no network needed)
        snapshots/<commit>/<filename>   relative symlink to the blob (a moved or copied file without symlinks)
        refs/<branch>                   the commit a branch or tag pointed at

The next run asks for `Range: bytes=<partial size>-` and appends when the server answers 206 with a matching
Content-Range; a 200 (Range ignored) or a mismatching Content-Range starts the file over, and a changed etag
means another blob name, so stale bytes are never mixed with new ones. A finished file is checked (size, and
sha256 when the catalogue pins it) before it is moved into place atomically; a file that fails the check is
deleted. Within one run a cut connection is resumed a few times while bytes keep arriving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".vcam-partial"
SIDECAR_SUFFIX = ".vcam-partial.json"
HASH_CHUNK = 8 * 1024 * 1024
#: resumes within one run after a cut connection, as long as each attempt brought new bytes
RETRIES = 3
RETRY_WAIT_S = 1.0
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
DEFAULT_PORTS = {"http": 80, "https": 443}
HUB_ORIGINS = ("https://huggingface.co", "https://hf.co")
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see: https://bford.info/cachedir/\n"
)

#: called with the number of bytes just written (negative when a download starts over)
BytesCallback = Callable[[int], None]


class DownloadInterrupted(Exception):
    """The connection stopped before the file was complete; the bytes so far are kept in `partial`."""

    def __init__(self, message: str, partial: Path, have: int, size: int) -> None:
        super().__init__(message)
        self.partial = partial
        self.have = have
        self.size = size


class ChecksumMismatch(Exception):
    """A finished download does not have the expected sha256 or size; it has been deleted."""


class BadMetadata(Exception):
    """The server's answer lacks what a Hub endpoint always sends (commit, etag, size)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a Hub repository as the server describes it now."""

    repo: str
    revision: str
    filename: str
    url: str  # where the bytes are (the Hub itself, or a signed CDN address it redirects to)
    etag: str
    commit: str
    size: int
    send_token: bool  # False when `url` is off the Hub (a CDN must not get the user's token)


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


def fetch_metadata(repo: str, revision: str, filename: str) -> RemoteFile:
    """HEAD the file on the Hub (auth as huggingface_hub sends it); Hub errors are raised as huggingface_hub's."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision)
    metadata = get_hf_file_metadata(url)
    where = f"{repo}@{revision}:{filename} ({url})"
    if metadata.commit_hash is None:
        raise BadMetadata(
            f"the answer for {where} has no X-Repo-Commit header, so it is not a Hugging Face Hub endpoint:"
            " check HF_ENDPOINT, your proxy and firewall"
        )
    if metadata.etag is None:
        raise BadMetadata(f"the answer for {where} has no ETag: the server is not a Hub endpoint (check HF_ENDPOINT)")
    if metadata.size is None:
        raise BadMetadata(f"the answer for {where} has no size (X-Linked-Size / Content-Length): check HF_ENDPOINT")
    return RemoteFile(
        repo=repo,
        revision=revision,
        filename=filename,
        url=metadata.location,
        etag=metadata.etag,
        commit=metadata.commit_hash,
        size=metadata.size,
        send_token=_on_the_hub(url, metadata.location),
    )


def _origin(url: str) -> tuple[str, str, int]:
    parsed = urlsplit(url)
    return (parsed.scheme, (parsed.hostname or "").lower(), parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0))


def _on_the_hub(url: str, location: str) -> bool:
    """The token goes to the Hub only: the resolve URL's own origin or huggingface.co, never a CDN."""
    return _origin(location) in {_origin(url), *(_origin(hub) for hub in HUB_ORIGINS)}


# --- partial files --------------------------------------------------------------------------------------------


def partial_path(cache_dir: Path, repo: str, etag: str) -> Path:
    return storage_folder(cache_dir, repo) / "blobs" / (etag + PARTIAL_SUFFIX)


def _sidecar(partial: Path) -> Path:
    return partial.with_name(partial.name[: -len(PARTIAL_SUFFIX)] + SIDECAR_SUFFIX)


def _read_sidecar(sidecar: Path) -> dict[str, Any] | None:
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
        data = _read_sidecar(sidecar)
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
    for path in (partial, _sidecar(partial)):
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


def _mode_of_new_files(folder: Path) -> int:
    """The permissions a new file in `folder` gets (umask applied), as huggingface_hub sets on its blobs."""
    probe = folder / f"tmp_{uuid.uuid4()}"
    try:
        probe.touch()
        return stat.S_IMODE(probe.stat().st_mode)
    finally:
        probe.unlink(missing_ok=True)


def _tag_cache(cache_dir: Path) -> None:
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


# --- the download ---------------------------------------------------------------------------------------------


def _progress_bar(label: str, total: int, initial: int, quiet: bool) -> Any:
    from huggingface_hub.utils import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=quiet)


@contextmanager
def _file_lock(cache_dir: Path, remote: RemoteFile) -> Iterator[None]:
    """The lock huggingface_hub takes for this blob, so `hf_hub_download` and this never write it at once."""
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock

    lock = cache_dir / ".locks" / repo_folder_name(repo_id=remote.repo, repo_type="model") / f"{remote.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        yield


class FileDownloader:
    """Fetches Hub files into a Hugging Face cache folder, resuming interrupted files with Range requests."""

    def __init__(self, cache_dir: Path, retries: int | None = None, retry_wait_s: float | None = None) -> None:
        self.cache_dir = cache_dir
        self.retries = RETRIES if retries is None else retries
        self.retry_wait_s = RETRY_WAIT_S if retry_wait_s is None else retry_wait_s

    def pointer(self, remote: RemoteFile) -> Path:
        return storage_folder(self.cache_dir, remote.repo) / "snapshots" / remote.commit / remote.filename

    def blob(self, remote: RemoteFile) -> Path:
        return storage_folder(self.cache_dir, remote.repo) / "blobs" / remote.etag

    def bytes_on_disk(self, remote: RemoteFile) -> int:
        """Bytes of this file already fetched (a finished blob counts whole, a partial by its size)."""
        if self.blob(remote).is_file():
            return remote.size
        partial = partial_path(self.cache_dir, remote.repo, remote.etag)
        return min(partial.stat().st_size, remote.size) if partial.is_file() else 0

    def fetch(
        self,
        remote: RemoteFile,
        sha256: str | None = None,
        replace: bool = False,
        on_bytes: BytesCallback | None = None,
        label: str | None = None,
        quiet: bool = False,
    ) -> Path:
        """Make `remote` available in the cache and return its snapshot path.

        `replace`: fetch again even when a blob with this etag exists (it failed a size check). Raises
        DownloadInterrupted (partial kept), ChecksumMismatch (download deleted), huggingface_hub's HTTP errors.
        """
        folder = storage_folder(self.cache_dir, remote.repo)
        blob = self.blob(remote)
        pointer = self.pointer(remote)
        blob.parent.mkdir(parents=True, exist_ok=True)
        _tag_cache(self.cache_dir)
        write_ref(folder, remote.revision, remote.commit)
        with _file_lock(self.cache_dir, remote):
            if blob.is_file() and not replace and blob.stat().st_size == remote.size:
                link_pointer(blob, pointer, new_blob=False)
                return pointer
            partial = partial_path(self.cache_dir, remote.repo, remote.etag)
            self._forget_other_versions(remote)
            _sidecar(partial).write_text(
                json.dumps(
                    {
                        "repo": remote.repo,
                        "revision": remote.revision,
                        "commit": remote.commit,
                        "filename": remote.filename,
                        "size": remote.size,
                    }
                ),
                encoding="utf-8",
            )
            self._fill(remote, partial, on_bytes or (lambda count: None), label or remote.filename, quiet)
            self._check(remote, partial, sha256)
            os.chmod(partial, _mode_of_new_files(partial.parent))
            os.replace(partial, blob)
            _sidecar(partial).unlink(missing_ok=True)
            link_pointer(blob, pointer, new_blob=True)
        return pointer

    def _forget_other_versions(self, remote: RemoteFile) -> None:
        """Partials of the same repository file under another etag hold bytes of an older version: delete them."""
        for stale in find_partials(self.cache_dir, remote.repo, remote.filename):
            if stale.etag != remote.etag:
                log.info(
                    "%s changed on the Hub (etag %s -> %s); dropping its partial",
                    remote.filename,
                    stale.etag,
                    remote.etag,
                )
                discard_partial(stale.path)

    def _fill(self, remote: RemoteFile, partial: Path, on_bytes: BytesCallback, label: str, quiet: bool) -> None:
        """Append to `partial` until it has `remote.size` bytes, resuming after cut connections."""
        have = partial.stat().st_size if partial.is_file() else 0
        if have > remote.size:
            log.warning("%s has %d bytes, more than the %d expected; starting over", partial, have, remote.size)
            partial.write_bytes(b"")
            have = 0
        if have:
            log.info("resuming %s at %d of %d bytes", remote.filename, have, remote.size)
        with _progress_bar(f"{label} (resumed)" if have else label, remote.size, have, quiet) as bar:

            def count(written: int) -> None:
                bar.update(written)
                on_bytes(written)

            retries = self.retries
            while have < remote.size:
                try:
                    have = self._transfer(remote, partial, have, count)
                except DownloadInterrupted as interrupted:
                    progressed = interrupted.have > have
                    have = interrupted.have
                    if not progressed or retries <= 0:
                        raise
                    retries -= 1
                    log.warning("%s; resuming at byte %d", interrupted, have)
                    time.sleep(self.retry_wait_s)

    def _transfer(self, remote: RemoteFile, partial: Path, have: int, count: BytesCallback) -> int:
        """One GET from byte `have` on; returns the partial's size after it. Cut connection: DownloadInterrupted."""
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"  # byte ranges of the stored file, not of a compressed stream
        if not remote.send_token:
            headers.pop("authorization", None)
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with get_session().stream(
                "GET", remote.url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT, follow_redirects=True
            ) as response:
                if response.status_code >= 400:
                    response.read()  # the error mapping reads the body
                if response.status_code == 416:
                    log.warning("%s: the server refused range %s; starting over", remote.filename, headers["Range"])
                    return self._restart(partial, have, count)
                hf_raise_for_status(response)
                if have and response.status_code == 200:
                    log.warning("%s: the server ignored the Range request; starting over", remote.filename)
                    have = self._restart(partial, have, count)
                elif have and not self._range_matches(response.headers.get("Content-Range"), have, remote.size):
                    log.warning(
                        "%s: Content-Range %r does not continue byte %d of %d; starting over",
                        remote.filename,
                        response.headers.get("Content-Range"),
                        have,
                        remote.size,
                    )
                    return self._restart(partial, have, count)
                overflow = False
                with partial.open("r+b" if partial.exists() else "wb") as stream:
                    stream.seek(have)
                    stream.truncate()
                    for chunk in response.iter_bytes():  # as it arrives: a cut loses no received byte
                        if have + len(chunk) > remote.size:
                            overflow = True
                            break
                        stream.write(chunk)
                        have += len(chunk)
                        count(len(chunk))
                if overflow:
                    discard_partial(partial)
                    raise ChecksumMismatch(
                        f"{remote.repo}:{remote.filename}: the server sent more than the {remote.size} bytes it"
                        " announced; the download was deleted"
                    )
        except httpx2.TransportError as error:  # cut connection, timeout, server gone
            raise DownloadInterrupted(
                f"the download of {remote.repo}:{remote.filename} stopped at {have} of {remote.size} bytes"
                f" ({type(error).__name__}: {error})",
                partial,
                have,
                remote.size,
            ) from error
        if have < remote.size:
            raise DownloadInterrupted(
                f"the server ended {remote.repo}:{remote.filename} at {have} of {remote.size} bytes",
                partial,
                have,
                remote.size,
            )
        return have

    @staticmethod
    def _range_matches(content_range: str | None, have: int, size: int) -> bool:
        match = CONTENT_RANGE.match(content_range or "")
        if match is None:
            return False
        total = match.group(3)
        return int(match.group(1)) == have and (total == "*" or int(total) == size)

    @staticmethod
    def _restart(partial: Path, have: int, count: BytesCallback) -> int:
        partial.write_bytes(b"")
        count(-have)
        return 0

    @staticmethod
    def _check(remote: RemoteFile, partial: Path, sha256: str | None) -> None:
        size = partial.stat().st_size
        if size != remote.size:
            discard_partial(partial)
            raise ChecksumMismatch(
                f"{remote.repo}:{remote.filename} has {size} bytes after the download, the Hub says {remote.size}"
            )
        if sha256:
            actual = sha256_of(partial)
            if actual != sha256.lower():
                discard_partial(partial)
                raise ChecksumMismatch(
                    f"{remote.repo}:{remote.filename} has sha256 {actual}, the catalogue expects {sha256}"
                )
