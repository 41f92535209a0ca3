"""`Controller`: the running camera's commands as its control API offers them, each checked as the config is.

The page, the tray and a supervising tray process all change the same runtime state through here. Every
value goes through `vcam.config.with_changes` (the config file's own types and validators) before anything
changes, so a bad value gets exactly the message the config file would get. Settings that need the style
rebuilt (VAE, compile, strength, noise, depth rate) go through the runtime's style switch (load in the background, then
swap between two frames): the camera never stalls for them. `health()` takes no runtime lock: it answers
while a style loads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vcam.config import with_changes
from vcam.errors import UserError
from vcam.run_settings import SETTING_KEYS
from vcam.status import State, Status

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.run_settings import RunSettings
    from vcam.runtime import Runtime

log = logging.getLogger(__name__)

#: the settings that belong to one style (the others apply to every diffusion style)
PER_STYLE_SETTINGS = ("prompt", "t_index_list", "noise", "depth_every")
#: the style kinds whose model takes a prompt and the other settings
MODEL_KINDS = ("diffusion", "test")


class Controller:
    """Commands on one runtime (thread-safe: the HTTP server calls it from its worker threads)."""

    def __init__(
        self, runtime: Runtime, config: Config, settings: RunSettings, request_stop: Callable[[], None]
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.settings = settings
        self._request_stop = request_stop
        self._selected = config.style.name  # the style the user chose last (the runtime may show a fallback)
        self._state: State = "starting"
        runtime.add_status_listener(self._remember)

    def _remember(self, status: Status) -> None:
        self._state = status.state

    # ------------------------------------------------------------------ reads
    def health(self) -> dict[str, Any]:
        """Alive or not, without any runtime lock (a style load never delays it): the state at its last change
        and the frames sent so far (a supervisor sees them grow)."""
        return {
            "ok": self.runtime.running,
            "pid": os.getpid(),
            "state": self._state,
            "frames_out": self.runtime.frames_sent,
        }

    def status(self) -> dict[str, Any]:
        return self.runtime.status().to_dict()

    def settings_view(self) -> dict[str, Any]:
        """The selected style and the settings as they apply to it, plus everything (`all`)."""
        return {"style": self._selected, **self.settings.values(self._selected), "all": self.settings.as_dict()}

    def styles(self) -> list[dict[str, Any]]:
        from vcam.styles import list_styles

        return [
            {"name": info.name, "title": info.title, "kind": info.kind, "ready": info.ready, "detail": info.detail}
            for info in list_styles(self.config)
        ]

    # ------------------------------------------------------------------ commands
    def set_style(self, name: Any) -> dict[str, Any]:
        from vcam.styles import find_style

        with_changes(self.config, {"style.name": name}, "api")  # type and emptiness, as in the file
        info = find_style(name, self.config)  # UnknownStyleError names the styles
        if not info.ready:
            raise UserError(f"style {name!r} is {info.detail}")
        self._selected = name
        self.runtime.set_style(name)
        return self.status()

    def set_segment(self, mode: Any) -> dict[str, Any]:
        with_changes(self.config, {"segment.mode": mode}, "api")
        self.runtime.set_segment(mode)
        return self.status()

    def set_profile(self, mode: Any) -> dict[str, Any]:
        """Pin a profile ("auto", "off" or a rung such as "t1-448x256-taesd"), checked as `[style] profile` is."""
        with_changes(self.config, {"style.profile": mode}, "api")
        self.runtime.set_profile(mode)
        return self.status()

    def pause(self) -> dict[str, Any]:
        self.runtime.pause()
        return self.status()

    def resume(self) -> dict[str, Any]:
        self.runtime.resume()
        return self.status()

    def set_prompt(self, prompt: Any) -> dict[str, Any]:
        """The selected style's prompt ("" = its own), changed while it runs: the translator starts the
        pipeline's background prompt switch on its next frame; nothing here waits for it."""
        return self.change_settings({"prompt": prompt})

    def change_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change settings (`vcam.run_settings.SETTING_KEYS`); the ones that need it reload the style without a
        stall. Per-style settings apply to the selected style, which must be a diffusion style."""
        if not changes:
            raise UserError(f"no setting given: send one or more of {', '.join(SETTING_KEYS)}")
        per_style = [name for name in changes if name in PER_STYLE_SETTINGS]
        model_style = self._is_model_style(self._selected)
        if per_style and not model_style:
            raise UserError(
                f"{per_style[0]} applies to diffusion styles; the style {self._selected!r} has none: pick a "
                "diffusion style first"
            )
        if self.config.remote.url and model_style:
            raise UserError("the style runs on the remote server (--remote): its settings are the server's")
        change = self.settings.change(self._selected, changes, "api")
        if change.reload and model_style:
            log.info(
                "settings %s changed: reloading style %r in the background", ", ".join(change.changed), self._selected
            )
            self.runtime.set_style(self._selected)
        return {**self.settings_view(), "changed": list(change.changed), "reloading": change.reload and model_style}

    def stop(self) -> dict[str, Any]:
        """Ask the run to stop cleanly (the run exits 0)."""
        log.info("stop requested through the control API")
        self._request_stop()
        return {"ok": True}

    def _is_model_style(self, name: str) -> bool:
        from vcam.styles import find_style

        try:
            return find_style(name, self.config).kind in MODEL_KINDS
        except UserError:
            return False
