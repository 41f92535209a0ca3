"""`ControlClient`: a local client of a run's control API (the tray's supervisor of a `vcam run` child, scripts).

It reads the endpoint and token from the run's control file (never from a command line) and sends JSON over
plain HTTP to 127.0.0.1. A refused command raises ControlError with the server's message; a run that does not
answer raises OSError (connection refused, timeout): a supervisor tells the two apart.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vcam.control.control_file import ControlEndpoint, read_control_file
from vcam.errors import ControlError
from vcam.status import Status

#: seconds a request may take by default (a command returns once accepted: a style loads in the background)
DEFAULT_TIMEOUT_S = 10.0


class ControlClient:
    """Commands for one run, by its endpoint (`from_file` reads the control file)."""

    def __init__(self, endpoint: ControlEndpoint, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        url = urlsplit(endpoint.url)
        if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
            raise ControlError(f"the control API must be on http://127.0.0.1, not {endpoint.url!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self._host = url.hostname
        self._port = url.port or 80

    @classmethod
    def from_file(cls, path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> ControlClient:
        return cls(read_control_file(path), timeout)

    def request(self, method: str, name: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Send one request to /api/NAME; the decoded JSON answer, or ControlError with the server's message."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self.timeout)
        headers = {"Authorization": f"Bearer {self.endpoint.token}", "Host": f"{self._host}:{self._port}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, f"/api/{name}", body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = {"error": payload.decode("utf-8", "replace").strip()}
        if response.status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise ControlError(f"the camera refused {method} /api/{name} ({response.status}): {message or answer}")
        return answer

    # the commands -------------------------------------------------------------------------------------------
    def health(self, timeout: float | None = None) -> dict[str, Any]:
        return dict(self.request("GET", "health", timeout=timeout))

    def status(self) -> Status:
        return Status.from_dict(self.request("GET", "status"))

    def settings(self) -> dict[str, Any]:
        return dict(self.request("GET", "settings"))

    def styles(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "styles"))

    def set_style(self, name: str) -> None:
        self.request("POST", "style", {"name": name})

    def set_segment(self, mode: str) -> None:
        self.request("POST", "segment", {"mode": mode})

    def pause(self) -> None:
        self.request("POST", "pause")

    def resume(self) -> None:
        self.request("POST", "resume")

    def set_prompt(self, prompt: str) -> None:
        self.request("POST", "prompt", {"prompt": prompt})

    def set_profile(self, mode: str) -> None:
        self.request("POST", "profile", {"mode": mode})

    def change_settings(self, **changes: Any) -> dict[str, Any]:
        return dict(self.request("POST", "settings", changes))

    def stop(self) -> None:
        """Ask the run to stop cleanly (it exits 0)."""
        self.request("POST", "stop")
