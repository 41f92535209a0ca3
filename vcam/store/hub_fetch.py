"""Fetching Hub files: one file into the Hugging Face cache, resumable inside the file with HTTP Range requests,
and every Hub or network failure translated into a WeightsError that says what to do.

huggingface_hub (>= 1.x) writes each download to a process-unique temporary file that it deletes on failure,
so a 1.7 GB checkpoint cut off at 90 % starts over. Here huggingface_hub stays the source of truth for the
URL (`hf_hub_url`), the metadata (`get_hf_file_metadata`: etag, commit, size, CDN location), the auth headers
(`build_hf_headers`), the HTTP client (`get_session`, which also enforces HF_HUB_OFFLINE), the error types
(`hf_raise_for_status`) and the cache layout (vcam/store/cache_layout.py); only the bytes are fetched here,
into `blobs/<etag>.vcam-partial`.

The next run asks for `Range: bytes=<partial size>-` and appends when the server answers 206 with a matching
Content-Range; a 200 (Range ignored) or a mismatching Content-Range starts the file over, and a changed etag
means another blob name, so stale bytes are never mixed with new ones. A finished file is checked (size, and
sha256 when the catalogue pins it) before it is moved into place atomically; a file that fails the check is
deleted. Within one run a cut connection is resumed a few times while bytes keep arriving.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vcam.errors import (
    CorruptWeightsError,
    GatedModelError,
    OfflineError,
    PartialDownloadError,
    RemoteMissingError,
    WeightsError,
)
from vcam.store.cache_layout import (
    discard_partial,
    file_lock,
    find_partials,
    link_pointer,
    mode_of_new_files,
    partial_path,
    sha256_of,
    sidecar_path,
    storage_folder,
    tag_cache,
    write_ref,
)
from vcam.store.catalogue import HubFile

log = logging.getLogger(__name__)

#: resumes within one run after a cut connection, as long as each attempt brought new bytes
RETRIES = 3
RETRY_WAIT_S = 1.0
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
DEFAULT_PORTS = {"http": 80, "https": 443}
HUB_ORIGINS = ("https://huggingface.co", "https://hf.co")

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


# --- the download ---------------------------------------------------------------------------------------------


def _progress_bar(label: str, total: int, initial: int, quiet: bool) -> Any:
    from huggingface_hub.utils import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=quiet)


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
        tag_cache(self.cache_dir)
        write_ref(folder, remote.revision, remote.commit)
        with file_lock(self.cache_dir, remote.repo, remote.etag):
            if blob.is_file() and not replace and blob.stat().st_size == remote.size:
                link_pointer(blob, pointer, new_blob=False)
                return pointer
            partial = partial_path(self.cache_dir, remote.repo, remote.etag)
            self._forget_other_versions(remote)
            sidecar_path(partial).write_text(
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
            os.chmod(partial, mode_of_new_files(partial.parent))
            os.replace(partial, blob)
            sidecar_path(partial).unlink(missing_ok=True)
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


# --- what a failure means to the user -------------------------------------------------------------------------


def _file_not_on_hub(hub_file: HubFile) -> RemoteMissingError:
    return RemoteMissingError(
        f"{hub_file.filename} is not in {hub_file.repo} at revision {hub_file.revision}: the style catalogue"
        " is outdated; update live2diff-vcam, or add the style from local files in your config"
    )


def translate_hub_error(error: BaseException, hub_file: HubFile, command: str, cache_dir: Path) -> WeightsError:
    """The WeightsError (with what to do: `command` downloads again) for a failure fetching `hub_file`."""
    import httpx2
    from huggingface_hub import constants, errors

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
            f" and run `{command}`, or copy the files into {cache_dir}"
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
        return _file_not_on_hub(hub_file)
    if isinstance(error, (errors.LocalEntryNotFoundError, ConnectionError, httpx2.TransportError)):
        return OfflineError(
            f"{constants.ENDPOINT} cannot be reached ({type(error).__name__}: {error}) and {hub_file} is"
            f" missing: check your connection (and HF_ENDPOINT / proxy settings) and run `{command}`,"
            f" or copy the files into {cache_dir}"
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
