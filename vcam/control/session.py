"""`ControlSession`: serves one run's control API, on the preview's port when the run has a preview sink,
else on its own loopback port (`[control] port`, 0 = any free one), and writes the control file.

Use: build it before `runtime.start()` (it attaches to the preview sink, which opens with the runtime), call
`start()` once the runtime has started, `close()` when the run ends (the control file goes with it).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vcam.control.api import ControlApi, new_token
from vcam.control.control_file import (
    ControlEndpoint,
    check_control_file,
    default_control_file,
    remove_control_file,
    write_control_file,
)
from vcam.control.controller import Controller
from vcam.errors import ConfigError

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.run_settings import RunSettings
    from vcam.runtime import Runtime
    from vcam.sinks.preview_http import PreviewHttpServer, Router

log = logging.getLogger(__name__)

#: the control API's own server binds here (never another address)
CONTROL_HOST = "127.0.0.1"


class ControlSession:
    """The control API of one run (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        settings: RunSettings,
        request_stop: Callable[[], None],
        control_file: Path | None = None,
    ) -> None:
        from vcam.sinks.preview import PreviewSink

        self.token = new_token()
        self.controller = Controller(runtime, config, settings, request_stop)
        self.api = ControlApi(self.controller, self.token)
        self.path = control_file if control_file is not None else default_control_file()
        check_control_file(self.path)  # a file that is not ours is refused before the camera opens
        self._port = config.control.port
        self._preview = next((sink for sink in runtime.sinks if isinstance(sink, PreviewSink)), None)
        if self._preview is not None:
            self._preview.attach_control(self.api.route, self.token)
        self._server: PreviewHttpServer | None = None
        self.endpoint: ControlEndpoint | None = None

    def start(self) -> ControlEndpoint:
        """Listen (unless the preview does) and write the control file; returns where the API is."""
        if self._preview is not None:
            url = self._preview.url
        else:
            self._server = _own_server(self._port, self.api.route)
            url = f"http://{CONTROL_HOST}:{self._server.port}/"
        self.endpoint = ControlEndpoint(pid=os.getpid(), url=url, token=self.token)
        write_control_file(self.path, self.endpoint)
        log.info("control API at %sapi/ (token in %s)", url, self.path)
        return self.endpoint

    def close(self) -> None:
        """Remove the control file and stop the API's own server (the preview's stops with the preview)."""
        if self.endpoint is not None:
            remove_control_file(self.path, self.endpoint)
        server, self._server = self._server, None
        if server is not None:
            server.close()


def _own_server(port: int, router: Router) -> PreviewHttpServer:
    """A server for the API alone (the preview server's class: the same Host, Fetch-Metadata and size rules)."""
    from vcam.sinks.preview_http import PreviewHttpServer

    try:
        server = PreviewHttpServer(CONTROL_HOST, port, router)
    except OSError as error:
        reason = "is already in use" if error.errno in (errno.EADDRINUSE, 10048) else f"cannot be used: {error}"
        raise ConfigError(f"control.port = {port} {reason}: choose another port, or 0 for any free one") from error
    server.start()
    return server
