"""The control API's HTTP side: routes under `/api/`, its token and its Origin rule, JSON in and out.

Served by `vcam.sinks.preview_http.PreviewHttpServer` (on the preview's port, or on its own loopback port),
whose rules apply first: a Host naming this computer, no absolute URI naming another, `Sec-Fetch-Site` absent,
`none` or `same-origin`, request heads and bodies bounded. Then, here:

- `Origin`, when sent, must be this server's own (`http://` + the Host): a page from anywhere else is refused
  (403), whatever its browser says about Fetch Metadata;
- `Authorization: Bearer TOKEN` with the run's token (401 otherwise); the preview page has it embedded, other
  local clients read it from the control file (`vcam.control.control_file`);
- POST bodies are JSON objects sent as `application/json` (415 otherwise: a plain HTML form cannot send it);
- a value that the config would refuse gets 400 with the config's own message.

Endpoints: GET `health`, `status`, `settings`, `styles`; POST `style` {"name"}, `segment` {"mode"}, `pause`,
`resume`, `prompt` {"prompt"}, `settings` {any of `vcam.run_settings.SETTING_KEYS`}, `stop`.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from vcam.control.controller import Controller
from vcam.errors import UserError
from vcam.sinks.preview_http import TEXT, Body, Request

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
JSON_TYPE = "application/json"
#: bytes of randomness in a run's token
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh per-run token (URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _json(status: HTTPStatus, data: Any) -> Body:
    return Body(status, JSON_TYPE, json.dumps(data).encode("utf-8"))


def _error(status: HTTPStatus, message: str) -> Body:
    return _json(status, {"error": message})


def origin_refusal(request: Request) -> str | None:
    """Why the request's Origin is refused, or None: absent, or this server's own origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    host = request.headers.get("host", "")
    if origin.strip().lower() != f"http://{host.strip().lower()}":
        return f"Origin {origin!r} is not this server's"
    return None


class ControlApi:
    """Answers `/api/...` requests for one run; `route` is a `preview_http.Router`."""

    def __init__(self, controller: Controller, token: str) -> None:
        self.controller = controller
        self.token = token
        self._gets: dict[str, Callable[[], Any]] = {
            "health": controller.health,
            "status": controller.status,
            "settings": controller.settings_view,
            "styles": controller.styles,
        }
        self._posts: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], Any]]] = {
            "style": (("name",), lambda body: controller.set_style(body["name"])),
            "segment": (("mode",), lambda body: controller.set_segment(body["mode"])),
            "pause": ((), lambda body: controller.pause()),
            "resume": ((), lambda body: controller.resume()),
            "prompt": (("prompt",), lambda body: controller.set_prompt(body["prompt"])),
            "profile": (("mode",), lambda body: controller.set_profile(body["mode"])),
            "settings": ((), controller.change_settings),
            "stop": ((), lambda body: controller.stop()),
        }

    def route(self, request: Request) -> Body:
        """The answer to one request under `/api/` (every other path: 404)."""
        if not request.path.startswith(API_PREFIX):
            return Body(HTTPStatus.NOT_FOUND, TEXT, b"not found\n")
        why = origin_refusal(request)
        if why is not None:
            log.warning("control API: refused %s %s: %s", request.method, request.path, why)
            return _error(HTTPStatus.FORBIDDEN, f"forbidden: {why}")
        if not self._authorized(request):
            return _error(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send Authorization: Bearer TOKEN")
        name = request.path[len(API_PREFIX) :]
        if name not in self._gets and name not in self._posts:
            return _error(HTTPStatus.NOT_FOUND, f"no endpoint /api/{name}")
        try:
            if request.method in ("GET", "HEAD"):
                if name not in self._gets:
                    return _error(HTTPStatus.METHOD_NOT_ALLOWED, f"/api/{name} takes POST")
                return _json(HTTPStatus.OK, self._gets[name]())
            if name not in self._posts:
                return _error(HTTPStatus.METHOD_NOT_ALLOWED, f"/api/{name} takes GET")
            required, action = self._posts[name]
            body = self._body(request, required, name)
            if isinstance(body, Body):
                return body
            return _json(HTTPStatus.OK, action(body))
        except UserError as error:
            return _error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:
            log.exception("control API: %s %s failed", request.method, request.path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    @staticmethod
    def _body(request: Request, required: tuple[str, ...], name: str) -> dict[str, Any] | Body:
        """The JSON object a POST sent (empty: {}), or the error answer."""
        if not request.body.strip():
            body: Any = {}
        else:
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != JSON_TYPE:
                return _error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the body as {JSON_TYPE}")
            try:
                body = json.loads(request.body)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                return _error(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}")
        if not isinstance(body, dict):
            return _error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        missing = [key for key in required if key not in body]
        if missing:
            return _error(
                HTTPStatus.BAD_REQUEST, f'/api/{name} needs {", ".join(required)}: e.g. {{"{missing[0]}": ...}}'
            )
        extra = [key for key in body if key not in required] if required else []
        if extra:
            return _error(HTTPStatus.BAD_REQUEST, f"/api/{name} takes only {', '.join(required)}, not {extra[0]!r}")
        if not required and name != "settings" and body:
            return _error(HTTPStatus.BAD_REQUEST, f"/api/{name} takes no fields, got {next(iter(body))!r}")
        return body
