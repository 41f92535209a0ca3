"""The preview's HTTP server with real sockets: bursts, half-open clients, header rules, privacy headers."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import vcam.sinks.preview_http as preview_http
from tests.waiting import wait_for, wait_until
from vcam.config import Config, validate
from vcam.errors import ConfigError, SinkError
from vcam.sinks import parse_sink
from vcam.sinks.preview import PreviewSink

WIDTH, HEIGHT = 64, 48


@pytest.fixture
def preview() -> Iterator[PreviewSink]:
    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 30)
    yield sink
    sink.close()


def raw_request(port: int, head: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send `head` as is; the status, headers (lower-case names) and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    return parse_answer(data)


def parse_answer(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def get(port: int, path: str, *extra: str, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *extra, "", ""]
    return raw_request(port, "\r\n".join(lines).encode("latin-1"))


def preview_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("vcam-preview")]


def test_a_burst_of_connections_is_served(preview: PreviewSink) -> None:
    connections = [socket.create_connection(("127.0.0.1", preview.port), timeout=30) for _ in range(300)]
    try:
        for connection in connections:
            connection.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        statuses = []
        for connection in connections:
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
            statuses.append(parse_answer(data)[0])
    finally:
        for connection in connections:
            connection.close()
    assert statuses == [200] * 300


def test_half_open_connections_cost_no_threads_and_do_not_block_others(
    preview: PreviewSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview_http, "HEADER_TIMEOUT_S", 120.0)  # they stay open for the whole test
    threads_before = len(preview_threads())
    half_open = [socket.create_connection(("127.0.0.1", preview.port), timeout=10) for _ in range(200)]
    try:
        for connection in half_open[::2]:
            connection.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert get(preview.port, "/status.json")[0] == 200  # answered while all 200 still hang
        assert len(preview_threads()) == threads_before <= 1 + preview_http.REQUEST_WORKERS + 1
    finally:
        for connection in half_open:
            connection.close()


def test_a_client_that_never_finishes_its_request_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_http, "HEADER_TIMEOUT_S", 0.3)
    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 30)
    try:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=30) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\n")
            assert connection.recv(1024) == b""  # the server closed it
    finally:
        sink.close()


def test_request_heads_over_16_kb_get_431(preview: PreviewSink) -> None:
    assert get(preview.port, "/status.json", "X-Pad: " + "a" * 15_000)[0] == 200
    assert get(preview.port, "/status.json", "X-Pad: " + "a" * 17_000)[0] == 431
    status, _, _ = raw_request(preview.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200_000)
    assert status == 431  # a head that never ends is not read to its end


def test_every_answer_forbids_cross_origin_embedding_and_pages_forbid_framing(preview: PreviewSink) -> None:
    preview.send(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    for path in ("/", "/view", "/status.json", "/frame.jpg", "/nothing"):
        status, headers, _ = get(preview.port, path)
        assert headers["cross-origin-resource-policy"] == "same-origin", path
        if path in ("/", "/view"):
            assert status == 200 and "frame-ancestors 'self'" in headers["content-security-policy"]
    status, headers, _ = get(preview.port, "/", host="evil.example")
    assert status == 403 and headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.parametrize("site", ["same-site", "cross-site", "Cross-Site"])
def test_requests_made_by_other_sites_are_refused(preview: PreviewSink, site: str) -> None:
    for path in ("/", "/view", "/stream.mjpg", "/stream.ts", "/frame.jpg", "/status.json"):
        assert get(preview.port, path, f"Sec-Fetch-Site: {site}")[0] == 403, path


@pytest.mark.parametrize("site", [None, "none", "same-origin"])
def test_own_pages_address_bar_and_players_are_served(preview: PreviewSink, site: str | None) -> None:
    extra = [] if site is None else [f"Sec-Fetch-Site: {site}"]
    for path in ("/", "/view", "/status.json"):
        assert get(preview.port, path, *extra)[0] == 200, path


def test_absolute_request_uris_must_name_this_computer(preview: PreviewSink) -> None:
    assert get(preview.port, "http://evil.example/status.json")[0] == 403
    assert get(preview.port, "http://192.168.1.5:8765/")[0] == 403
    assert get(preview.port, f"http://127.0.0.1:{preview.port}/status.json")[0] == 200
    assert get(preview.port, "http://localhost/view")[0] == 200


def test_a_client_gone_before_its_403_leaves_no_error_on_the_console(
    preview: PreviewSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(50):
        connection = socket.create_connection(("127.0.0.1", preview.port), timeout=10)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        connection.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: evil.example\r\n\r\n" + b"x" * 64)
        connection.close()
    assert wait_until(lambda: get(preview.port, "/status.json")[0] == 200)
    loud = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not loud, [record.getMessage() for record in loud]


def test_other_methods_get_405(preview: PreviewSink) -> None:
    assert raw_request(preview.port, b"POST /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 405
    assert raw_request(preview.port, b"GARBAGE\r\n\r\n")[0] == 400


def test_streams_are_capped(preview: PreviewSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_http, "MAX_STREAMS", 2)
    streams = [socket.create_connection(("127.0.0.1", preview.port), timeout=10) for _ in range(2)]
    try:
        for connection in streams:
            connection.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: preview.status_dict()["preview"]["stream_clients"] == 2, what="two streams")
        assert get(preview.port, "/stream.mjpg")[0] == 503
        assert get(preview.port, "/status.json")[0] == 200
    finally:
        for connection in streams:
            connection.close()


@pytest.mark.parametrize("port", [1, 80, 1023, 65536, 70000])
def test_one_port_rule_for_the_sink_spec_and_the_config(port: int) -> None:
    with pytest.raises(SinkError) as from_spec:
        parse_sink(f"preview:{port}", 8765)
    config = Config()
    config.preview.port = port
    with pytest.raises(ConfigError) as from_config:
        validate(config)
    rule = "0 (any free port) or 1024..65535"
    assert rule in str(from_spec.value) and rule in str(from_config.value)


@pytest.mark.parametrize("port", [0, 1024, 8765, 65535])
def test_ports_the_rule_allows_pass_both(port: int) -> None:
    assert isinstance(parse_sink(f"preview:{port}", 8765), PreviewSink)
    config = Config()
    config.preview.port = port
    validate(config)
