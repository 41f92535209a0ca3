"""A fake `vcam` camera process for the tray's supervisor tests: `python camera_process.py -v run [--config PATH]
--control-file PATH`, the command line `ChildCamera` gives `vcam`.

It serves a minimal control API that `vcam.control.client.ControlClient` speaks (bearer token, JSON, the same
endpoints and `Status` fields), writes its control file with the real writer (0600) and removes it when it
stops cleanly, and exits with `vcam run`'s codes. What each start does comes from the environment:

- FAKE_CAMERA_RUNS: a file to which each start appends its pid (the test reads the children's pids there);
- FAKE_CAMERA_STARTS: comma-separated behaviours, one per start in order (later starts: "serve"):
  "serve" (run until stopped), "exit:N" (exit with code N at once; 2 prints a `vcam: error:` line first),
  "stubborn" (serve, but take neither the stop request nor SIGTERM: only a kill ends it).

Cues for a running fake, as POSTs under /api/: `crash` {"code": N} (exit N now), `hang` (stop the whole process
with SIGSTOP: nothing answers any more, as a process stuck in native code).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from vcam.control.control_file import ControlEndpoint, remove_control_file, write_control_file
from vcam.status import Status

BAD_CONFIG_LINE = "vcam: error: camera.fps = 'fast' in the config file is not a number: write e.g. fps = 30"


def start_behaviour() -> str:
    """This start's behaviour (and record its pid)."""
    runs = Path(os.environ["FAKE_CAMERA_RUNS"])
    previous = runs.read_text(encoding="utf-8").split() if runs.exists() else []
    with runs.open("a", encoding="utf-8") as stream:
        stream.write(f"{os.getpid()}\n")
    behaviours = [part.strip() for part in os.environ.get("FAKE_CAMERA_STARTS", "").split(",") if part.strip()]
    return behaviours[len(previous)] if len(previous) < len(behaviours) else "serve"


class FakeCamera:
    def __init__(self, stubborn: bool) -> None:
        self.stubborn = stubborn
        self.status = Status(state="running", style="passthrough", segment="off", fps_out=30.0)
        self.frames = 0
        self.stop_requested = threading.Event()
        self.lock = threading.Lock()

    def change(self, **changes: Any) -> dict[str, Any]:
        with self.lock:
            self.status = Status(**{**self.status.to_dict(), **changes})
            return self.status.to_dict()


def make_handler(camera: FakeCamera, token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, code: int, data: Any) -> None:
            payload = json.dumps(data).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def authorized(self) -> bool:
            if self.headers.get("Authorization", "") != f"Bearer {token}":
                self.answer(401, {"error": "missing or wrong token"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if not self.authorized():
                return
            with camera.lock:
                camera.frames += 1
                status = camera.status
            if self.path == "/api/health":
                self.answer(200, {"ok": True, "pid": os.getpid(), "state": status.state, "frames_out": camera.frames})
            elif self.path == "/api/status":
                self.answer(200, status.to_dict())
            else:
                self.answer(404, {"error": f"no endpoint {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if not self.authorized():
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            name = self.path.removeprefix("/api/")
            if name == "style":
                if body["name"] == "missing":
                    self.answer(400, {"error": "unknown style 'missing'"})
                    return
                self.answer(200, camera.change(style=body["name"]))
            elif name == "segment":
                self.answer(200, camera.change(segment=body["mode"]))
            elif name == "pause":
                self.answer(200, camera.change(state="paused"))
            elif name == "resume":
                self.answer(200, camera.change(state="running"))
            elif name == "prompt":
                self.answer(200, {"prompt": body["prompt"]})
            elif name == "stop":
                self.answer(200, {"ok": True})
                if not camera.stubborn:
                    camera.stop_requested.set()
            elif name == "crash":
                self.answer(200, {"ok": True})
                os._exit(int(body.get("code", 1)))
            elif name == "hang":
                self.answer(200, {"ok": True})
                self.wfile.flush()
                os.kill(os.getpid(), signal.SIGSTOP)
            else:
                self.answer(404, {"error": f"no endpoint {self.path}"})

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", action="store_true")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--control-file", type=Path, required=True)
    args = parser.parse_args()
    behaviour = start_behaviour()
    print(f"fake camera pid {os.getpid()}: {behaviour}", file=sys.stderr, flush=True)
    if behaviour.startswith("exit:"):
        code = int(behaviour.split(":", 1)[1])
        if code == 2:
            print(BAD_CONFIG_LINE, file=sys.stderr, flush=True)
        return code
    camera = FakeCamera(stubborn=behaviour == "stubborn")
    signal.signal(signal.SIGTERM, signal.SIG_IGN if camera.stubborn else lambda *_: camera.stop_requested.set())
    token = f"token-{os.getpid()}-{time.monotonic_ns()}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(camera, token))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = ControlEndpoint(pid=os.getpid(), url=f"http://127.0.0.1:{server.server_address[1]}/", token=token)
    write_control_file(args.control_file, endpoint)
    try:
        while not camera.stop_requested.wait(0.1):
            pass
    finally:
        remove_control_file(args.control_file, endpoint)
        server.shutdown()
    print("fake camera: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
