"""A local stand-in for the Hugging Face Hub: the endpoints huggingface_hub calls to download a file.

A threaded HTTP server on 127.0.0.1 (port 0) answers HEAD and GET `/{repo}/resolve/{revision}/{filename}`
as the Hub does: `X-Repo-Commit`, `ETag` (git sha1 for small files), and for LFS-like files (.safetensors,
.ckpt, .bin) a 302 to a second server standing for the CDN (another origin, so the token must not follow)
with `X-Linked-Etag` (the sha256) and `X-Linked-Size`. GETs honour `Range: bytes=N-` with 206 and
`Content-Range`. Errors carry the headers `hf_raise_for_status` maps: 401/403 `X-Error-Code: GatedRepo`,
404 `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`.

Knobs for the tests: `cuts[(repo, filename)]` a list of byte counts, one per GET, after which the body is
cut off (the connection closes mid-file); `gated` repos; `ignore_range`; `content` can be changed between
runs (a new version of a file gets a new etag). Every request is logged in `requests`.

huggingface_hub reads HF_ENDPOINT once at import (`constants.ENDPOINT` and the URL template built from it),
so `use_fake_hub` patches those constants rather than the environment variable.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

POLL_S = 0.02  # how often serve_forever looks for shutdown (tests stop a server each)
LFS_SUFFIXES = (".safetensors", ".ckpt", ".bin")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    server: str  # "hub" or "cdn"

    @property
    def range_start(self) -> int | None:
        match = RANGE.match(self.headers.get("range", ""))
        return int(match.group(1)) if match else None


@dataclass
class FakeHub:
    """Repositories (`content[(repo, filename)]`, `commits[repo]`) served over HTTP; see the module docstring."""

    content: dict[tuple[str, str], bytes]
    commits: dict[str, str]
    gated: set[str] = field(default_factory=set)
    cuts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    ignore_range: bool = False
    requests: list[LoggedRequest] = field(default_factory=list)
    hub_url: str = ""
    cdn_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def next_cut(self, repo: str, filename: str) -> int | None:
        with self._lock:
            queue = self.cuts.get((repo, filename))
            return queue.pop(0) if queue else None

    def gets(self, repo: str | None = None, filename: str | None = None) -> list[LoggedRequest]:
        """The GETs that fetched file bytes (of `filename` in `repo` when given), from the Hub or its CDN."""
        found = [
            entry
            for entry in self.requests
            if entry.method == "GET" and (RESOLVE.match(entry.path) or CDN.match(entry.path))
        ]
        if repo is None or filename is None:
            return found
        sha = hashlib.sha256(self.content[(repo, filename)]).hexdigest() if (repo, filename) in self.content else ""
        return [
            entry
            for entry in found
            if entry.path.startswith(f"/{repo}/resolve/")
            and entry.path.endswith("/" + filename)
            or entry.path == f"/cdn/{sha}"
        ]

    @staticmethod
    def is_lfs(filename: str) -> bool:
        return filename.endswith(LFS_SUFFIXES)

    def etag(self, data: bytes, filename: str) -> str:
        if self.is_lfs(filename):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub sends

    def find_sha(self, sha: str) -> tuple[str, str, bytes] | None:
        for (repo, filename), data in self.content.items():
            if hashlib.sha256(data).hexdigest() == sha:
                return repo, filename, data
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    hub: FakeHub
    role: str

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(with_body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.log(LoggedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, self.role))
        if self.role == "cdn":
            found = CDN.match(path)
            entry = self.hub.find_sha(found.group("sha")) if found else None
            if entry is None:
                self._error(404, {"X-Error-Code": "EntryNotFound"})
                return
            self._send_bytes(entry[0], entry[1], entry[2], {}, with_body)
            return
        resolve = RESOLVE.match(path)
        if resolve is None:
            self._error(404, {})
            return
        repo, revision, filename = resolve.group("repo"), resolve.group("revision"), resolve.group("filename")
        if repo not in self.hub.commits:
            self._error(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return
        if repo in self.hub.gated:
            status = 403 if "authorization" in {key.lower() for key in self.headers} else 401
            message = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            self._error(status, {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
            return
        commit = self.hub.commits[repo]
        if revision not in ("main", commit):
            self._error(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return
        data = self.hub.content.get((repo, filename))
        if data is None:
            self._error(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            return
        if self.hub.is_lfs(filename):
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/cdn/{sha}")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", '"' + self.hub.etag(b"version lfs\n" + sha.encode(), "pointer") + '"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_bytes(repo, filename, data, {"X-Repo-Commit": commit}, with_body)

    def _send_bytes(self, repo: str, filename: str, data: bytes, extra: dict[str, str], with_body: bool) -> None:
        start = 0
        wanted = RANGE.match(self.headers.get("Range", ""))
        partial = wanted is not None and not self.hub.ignore_range and with_body
        if partial and wanted is not None:
            start = int(wanted.group(1))
            if start >= len(data):
                self._error(416, {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        self.send_response(206 if partial else 200)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("ETag", f'"{self.hub.etag(data, filename)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not with_body:
            return
        cut = self.hub.next_cut(repo, filename)
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # the client gets fewer bytes than Content-Length
            return
        self.wfile.write(body)

    def _error(self, status: int, headers: dict[str, str]) -> None:
        body = b'{"error": "fake hub error"}'
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _serve(hub: FakeHub, role: str) -> ThreadingHTTPServer:
    handler = type(f"{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(POLL_S,), name=f"fake-{role}", daemon=True).start()
    return server


@contextmanager
def running(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve `hub` (the Hub and its CDN on two ports) until the block ends."""
    servers = [_serve(hub, "hub"), _serve(hub, "cdn")]
    hub.hub_url = f"http://127.0.0.1:{servers[0].server_address[1]}"
    hub.cdn_url = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield hub
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def use_fake_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, token_folder: Path) -> None:
    """Point huggingface_hub at `hub`, online, with no token or file of the machine's user (tests set HF_TOKEN)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.hub_url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.hub_url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.hub_url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_folder / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(token_folder / "stored_tokens"))
    # huggingface_hub fetches `/api/agent-harnesses` when it runs under a coding agent; keep its cache file here
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(token_folder / "agent_harnesses.json"))
