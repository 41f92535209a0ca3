"""The control API of a real `vcam run` (demo source, null sink), with a real HTTP client (http.client).

Status, each change, each validation error (400 with the config's own message), the token (401), the
cross-site rules (403), the body limits, the control file (0600, removed at exit) and a clean stop (exit 0).
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for
from vcam.control.client import ControlClient
from vcam.control.control_file import ControlEndpoint, read_control_file
from vcam.errors import ControlError


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    control_file: Path
    endpoint: ControlEndpoint

    @property
    def port(self) -> int:
        return int(self.endpoint.url.rstrip("/").rsplit(":", 1)[1])


def start_run(tmp_path: Path, *extra: str) -> Run:
    control_file = tmp_path / "control.json"
    env = {**os.environ, "VCAM_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "vcam", "run", "--source", "demo", "--sink", "null", "--size", "160x96"]
    command += ["--fps", "15", "--control-file", str(control_file), *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: control_file.exists() or process.poll() is not None, 60, "the control file")
    except AssertionError:
        process.kill()
        raise
    if process.poll() is not None:
        raise AssertionError(f"vcam run exited: {process.stderr.read().decode() if process.stderr else ''}")
    return Run(process, control_file, read_control_file(control_file))


def stop_run(run: Run) -> None:
    if run.process.poll() is None:
        run.process.kill()
        run.process.wait(10)
    if run.process.stderr is not None:
        run.process.stderr.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    started = start_run(tmp_path_factory.mktemp("control"))
    yield started
    stop_run(started)


def call(
    run: Run,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = "",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """One request; (status, decoded JSON or text). `token=""`: the run's own; None: no Authorization header."""
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=30)
    sent = {"Host": f"127.0.0.1:{run.port}"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token or run.endpoint.token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except json.JSONDecodeError:
        return response.status, payload.decode()


def status(run: Run) -> dict[str, Any]:
    code, answer = call(run, "GET", "/api/status")
    assert code == 200, answer
    return dict(answer)


def test_the_control_file_is_private_and_names_the_run(run: Run) -> None:
    assert stat.S_IMODE(run.control_file.stat().st_mode) == 0o600
    assert run.endpoint.pid == run.process.pid
    assert run.endpoint.url == f"http://127.0.0.1:{run.port}/"
    assert len(run.endpoint.token) >= 40


def test_status_and_health(run: Run) -> None:
    wait_for(lambda: status(run)["frames_out"] > 0, 30, "frames")
    answer = status(run)
    assert answer["source"].startswith("demo") and answer["sinks"] == ["null"]
    code, health = call(run, "GET", "/api/health")
    assert code == 200 and health["ok"] is True and health["pid"] == run.process.pid
    assert health["frames_out"] > 0


def test_style_segment_pause_and_resume_change_the_run(run: Run) -> None:
    code, _ = call(run, "POST", "/api/style", {"name": "cartoon"})
    assert code == 200
    wait_for(lambda: status(run)["style"] == "cartoon", 30, "the cartoon style")
    assert call(run, "POST", "/api/pause")[0] == 200
    assert status(run)["state"] == "paused"
    assert call(run, "POST", "/api/resume")[0] == 200
    assert status(run)["state"] != "paused"
    code, answer = call(run, "POST", "/api/segment", {"mode": "off"})
    assert code == 200 and answer["segment"] == "off"
    code, styles = call(run, "GET", "/api/styles")
    assert code == 200 and {"cartoon", "tiny-random"} <= {style["name"] for style in styles}


def test_settings_change_and_are_recorded_as_set_by_the_user(run: Run) -> None:
    code, answer = call(run, "POST", "/api/settings", {"similar_filter": True, "similar_threshold": 0.9})
    assert code == 200, answer
    assert answer["similar_filter"] is True and answer["similar_threshold"] == 0.9
    assert sorted(answer["changed"]) == ["similar_filter", "similar_threshold"]
    code, settings = call(run, "GET", "/api/settings")
    assert settings["all"]["models"]["similar_threshold"] == 0.9
    assert settings["all"]["user_set"]["models.similar_filter"] == "api"
    assert "models.vae" not in settings["all"]["user_set"]  # never set: an automatic profile may choose it


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/segment", {"mode": "sparkles"}, "segment.mode = 'sparkles' is not allowed: choose one of off, person"),
        ("/api/segment", {"mode": 3}, "segment.mode = 3 must be of type str"),
        ("/api/style", {"name": "nope"}, "unknown style 'nope': choose one of passthrough"),
        ("/api/style", {"name": ""}, "style.name = '' is empty"),
        ("/api/settings", {"vae": "big"}, "models.vae = 'big' is not allowed: choose one of taesd, kl"),
        ("/api/settings", {"similar_threshold": 1.5}, "models.similar_threshold = 1.5 is not allowed: a number above"),
        ("/api/settings", {"similar_filter": "yes"}, "models.similar_filter = 'yes' must be of type bool"),
        ("/api/settings", {"compile": 1}, "models.compile = 1 must be of type bool"),
        ("/api/settings", {"loudness": 3}, "unknown setting 'loudness': the settings are prompt"),
        ("/api/settings", {}, "no setting given"),
        ("/api/style", {}, '/api/style needs name: e.g. {"name": ...}'),
        ("/api/pause", {"now": True}, "/api/pause takes no fields"),
    ],
)
def test_a_bad_value_gets_400_with_the_configs_message(run: Run, path: str, body: Any, message: str) -> None:
    code, answer = call(run, "POST", path, body)
    assert code == 400, answer
    assert message in answer["error"]


def test_per_style_settings_are_checked_like_the_config_for_a_diffusion_style(run: Run) -> None:
    code, _ = call(run, "POST", "/api/style", {"name": "cartoon"})
    assert code == 200
    code, answer = call(run, "POST", "/api/prompt", {"prompt": "a watercolour"})
    assert code == 400 and "prompt applies to diffusion styles; the style 'cartoon' has none" in answer["error"]
    code, _ = call(run, "POST", "/api/style", {"name": "tiny-random"})
    assert code == 200
    code, answer = call(run, "POST", "/api/settings", {"t_index_list": [40, 30]})
    assert code == 400 and "style: t_index_list = [40, 30] is not allowed: a list of 1 to" in answer["error"]
    code, answer = call(run, "POST", "/api/settings", {"noise": "loud"})
    assert code == 400 and "style.noise = 'loud' is not allowed: use one of fresh, fixed" in answer["error"]
    code, answer = call(run, "POST", "/api/prompt", {"prompt": "x" * 1001})
    assert code == 400 and "style.prompt is 1001 characters long" in answer["error"]
    code, answer = call(run, "POST", "/api/prompt", {"prompt": "a watercolour portrait"})
    assert code == 200 and answer["style"] == "tiny-random" and answer["prompt"] == "a watercolour portrait"
    assert answer["reloading"] is False  # a prompt changes in place
    code, answer = call(run, "POST", "/api/settings", {"t_index_list": [20, 35]})
    assert code == 200 and answer["t_index_list"] == [20, 35] and answer["reloading"] is True
    assert answer["all"]["user_set"]["styles.tiny-random.t_index_list"] == "api"
    for bad, message in ((0, "style.depth_every = 0 is not allowed: a whole number from 1"), ("x", "must be of type")):
        code, answer = call(run, "POST", "/api/settings", {"depth_every": bad})
        assert code == 400 and message in answer["error"], answer
    code, answer = call(run, "POST", "/api/settings", {"depth_every": 2})
    assert code == 200 and answer["depth_every"] == 2 and answer["reloading"] is True
    assert answer["all"]["user_set"]["styles.tiny-random.depth_every"] == "api"


def test_requests_without_the_token_get_401(run: Run) -> None:
    assert call(run, "GET", "/api/status", token=None)[0] == 401
    assert call(run, "GET", "/api/status", token="wrong")[0] == 401
    assert call(run, "POST", "/api/pause", token="x" * 43)[0] == 401
    assert call(run, "GET", "/api/health", headers={"Authorization": run.endpoint.token})[0] == 401  # no scheme


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another local port is another origin
        {"Host": "evil.example"},
        {"Host": "attacker.test:80"},
    ],
)
def test_cross_site_requests_get_403_even_with_the_token(run: Run, headers: dict[str, str]) -> None:
    code, answer = call(run, "POST", "/api/pause", headers=headers)
    assert code == 403, answer
    assert status(run)["state"] != "paused"


def test_same_origin_page_requests_pass(run: Run) -> None:
    origin = {"Origin": f"http://127.0.0.1:{run.port}", "Sec-Fetch-Site": "same-origin"}
    assert call(run, "GET", "/api/status", headers=origin)[0] == 200


def test_bodies_are_bounded_and_json_only(run: Run) -> None:
    code, _ = call(
        run, "POST", "/api/prompt", raw=b"{" + b" " * (70 * 1024) + b"}", headers={"Content-Type": "application/json"}
    )
    assert code == 413
    code, answer = call(run, "POST", "/api/style", raw=b"name=cartoon", headers={"Content-Type": "text/plain"})
    assert code == 415
    code, answer = call(run, "POST", "/api/style", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert code == 400 and "not JSON" in answer["error"]
    code, answer = call(run, "GET", "/api/pause")
    assert code == 405
    assert call(run, "GET", "/api/nothing")[0] == 404


def test_stop_ends_the_run_cleanly_and_removes_the_control_file(tmp_path: Path) -> None:
    run = start_run(tmp_path)
    try:
        client = ControlClient.from_file(run.control_file)
        assert client.health()["ok"] is True
        client.stop()
        assert run.process.wait(30) == 0
        assert not run.control_file.exists()
        with pytest.raises(OSError):
            client.health(timeout=2)
    finally:
        stop_run(run)


def test_a_foreign_control_file_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "control.json"
    mine.write_text("my notes\n")
    env = {**os.environ, "VCAM_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "vcam", "run", "--source", "demo", "--sink", "null", "--frames", "3"]
    result = subprocess.run([*command, "--control-file", str(mine)], env=env, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert "is not a vcam control file: give another path" in result.stderr.decode()
    assert mine.read_text() == "my notes\n"


def test_the_client_reports_a_refusal_with_the_servers_message(run: Run) -> None:
    client = ControlClient.from_file(run.control_file)
    with pytest.raises(ControlError, match="segment.mode = 'glitter' is not allowed"):
        client.set_segment("glitter")
    assert client.status().source.startswith("demo")


def test_the_profile_is_pinned_through_the_api_and_checked_like_the_config(run: Run) -> None:
    code, answer = call(run, "POST", "/api/profile", {"mode": "fast"})
    assert code == 400 and "style.profile" in answer["error"]
    code, answer = call(run, "POST", "/api/profile", {"mode": "off"})
    assert code == 200 and answer["profile"] == "off"
    code, answer = call(run, "POST", "/api/profile", {})
    assert code == 400 and "/api/profile needs mode" in answer["error"]


def test_the_profile_shows_and_pins_a_depth_rate(run: Run) -> None:
    """The tiny model's rungs include depth on every 2nd frame (its own ladder's step, or on every rung when the
    settings test pinned depth_every = 2); the page's and the tray's list is the status's, and a rung with its
    depth rate is pinned through /api/profile."""
    code, _ = call(run, "POST", "/api/style", {"name": "tiny-random"})
    assert code == 200
    wait_for(lambda: status(run)["style"] == "tiny-random" and bool(status(run)["profiles"]), 60, "the tiny model")
    rungs = status(run)["profiles"]
    rung = next((rung for rung in rungs if rung.endswith("-d2")), None)
    assert rung is not None, rungs
    code, answer = call(run, "POST", "/api/profile", {"mode": rung})
    assert code == 200 and answer["profile"] == rung
    wait_for(lambda: status(run)["profile_settings"] == rung, 60, "the pinned rung")
    code, answer = call(run, "POST", "/api/profile", {"mode": "t1-64x64-kl-d1"})
    assert code == 400 and "optionally -dN for depth on every N-th frame" in answer["error"]
    assert call(run, "POST", "/api/profile", {"mode": "off"})[0] == 200
