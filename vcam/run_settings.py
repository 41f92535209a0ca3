"""`RunSettings`: the settings a user may change while the camera runs, shared by the loader, the translators
and the control API.

Per style (the style being started gets `[style] prompt / t_index_list / noise / depth_every` and `--prompt`
etc.; the control API changes the selected style's): the prompt, the strength (`t_index_list`), the noise mode
and the depth rate (`depth_every`).
For every diffusion style: the decoding VAE, `torch.compile`, the similar-frame filter and its threshold.
Every change is validated exactly as the config file is (`vcam.config.with_changes`) and recorded in
`UserSettings` (a value the user set is never changed automatically).

How a change takes effect: the prompt and the similar-frame filter change in place (the translator sees
`version` move and applies them on its next frame: the prompt through the pipeline's background prompt
switch, so the camera never stalls); the others need the style rebuilt, which the runtime's style switch
does in the background (`SettingsChange.reload`).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vcam.config import PER_STYLE_KEYS, with_changes
from vcam.errors import ConfigError
from vcam.user_settings import Origin

if TYPE_CHECKING:
    from vcam.config import Config, ModelsConfig

#: the settings' names (the control API's keys) -> the config keys they are validated as
SETTING_KEYS: dict[str, str] = {
    "prompt": "style.prompt",
    "t_index_list": "style.t_index_list",
    "noise": "style.noise",
    "depth_every": "style.depth_every",
    "vae": "models.vae",
    "compile": "models.compile",
    "similar_filter": "models.similar_filter",
    "similar_threshold": "models.similar_threshold",
}
#: settings that apply in place on the running style (no reload)
LIVE_SETTINGS = ("prompt", "similar_filter", "similar_threshold")


@dataclass(frozen=True)
class StyleSettings:
    """One style's own settings as the user set them; empty values mean "the style's own"."""

    prompt: str = ""
    t_index_list: tuple[int, ...] = ()
    noise: str = ""
    depth_every: int | None = None


@dataclass(frozen=True)
class SettingsChange:
    """What a change did: the settings whose value changed, and whether the style must be rebuilt."""

    changed: tuple[str, ...] = ()
    reload: bool = False
    values: dict[str, Any] = field(default_factory=dict)


class RunSettings:
    """The run's changeable settings (thread-safe); `version` increments with every change."""

    def __init__(self, config: Config) -> None:
        self._lock = threading.Lock()
        self._config = config  # validated; the base every change is checked against
        self._models: ModelsConfig = copy.deepcopy(config.models)
        depth_every = config.style.depth_every if "style.depth_every" in config.user_set else None
        self._styles: dict[str, StyleSettings] = {
            config.style.name: StyleSettings(
                config.style.prompt, tuple(config.style.t_index_list), config.style.noise, depth_every
            )
        }
        self.user_set = config.user_set.copy()
        for key in PER_STYLE_KEYS:  # [style] prompt etc. belong to the style being started
            origin = self.user_set.origin(f"style.{key}")
            if origin is not None:
                self.user_set.mark(f"styles.{config.style.name}.{key}", origin)
        self._version = 0

    @property
    def version(self) -> int:
        """Increments with every change (a translator compares it to apply live settings)."""
        return self._version

    def style(self, name: str) -> StyleSettings:
        with self._lock:
            return self._styles.get(name, StyleSettings())

    def similar_filter(self) -> tuple[bool, float]:
        """(on, threshold) of the similar-frame filter."""
        with self._lock:
            return self._models.similar_filter, self._models.similar_threshold

    def spec_overrides(self, name: str) -> dict[str, Any]:
        """The `PipelineSpec` fields the user set for style `name` (the rest stay the style's own)."""
        with self._lock:
            style = self._styles.get(name, StyleSettings())
            models = self._models
        overrides: dict[str, Any] = {}
        if style.prompt:
            overrides["prompt"] = style.prompt
        if style.t_index_list:
            overrides["t_index_list"] = style.t_index_list
        if style.noise:
            overrides["noise"] = style.noise
        if style.depth_every is not None:
            overrides["depth_every"] = style.depth_every
        for key in ("vae", "compile"):
            if self.user_set.is_set(f"models.{key}"):
                overrides[key] = getattr(models, key)
        return overrides

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: the models' settings, each style's, and which keys the user set."""
        with self._lock:
            models = self._models
            styles = {
                name: {
                    "prompt": s.prompt,
                    "t_index_list": list(s.t_index_list),
                    "noise": s.noise,
                    "depth_every": s.depth_every,
                }
                for name, s in sorted(self._styles.items())
            }
        return {
            "models": {
                "vae": models.vae,
                "compile": models.compile,
                "similar_filter": models.similar_filter,
                "similar_threshold": models.similar_threshold,
            },
            "styles": styles,
            "user_set": self.user_set.as_dict(),
        }

    def change(self, style: str, changes: dict[str, Any], origin: Origin = "api") -> SettingsChange:
        """Apply `changes` (names of `SETTING_KEYS` -> values) for `style` (the per-style ones) after
        validating them all exactly as the config file is; nothing changes when one is invalid (ConfigError)."""
        unknown = [name for name in changes if name not in SETTING_KEYS]
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}: the settings are {', '.join(SETTING_KEYS)}")
        with self._lock:
            current = self._styles.get(style, StyleSettings())
            base = copy.copy(self._config)
            base.style = copy.deepcopy(self._config.style)
            base.style.name = style
            base.style.prompt = current.prompt
            base.style.t_index_list = list(current.t_index_list)
            base.style.noise = current.noise
            base.style.depth_every = current.depth_every or 1
            base.models = copy.deepcopy(self._models)
            checked = with_changes(base, {SETTING_KEYS[name]: value for name, value in changes.items()}, origin)
            updated = StyleSettings(
                checked.style.prompt.strip(),
                tuple(checked.style.t_index_list),
                checked.style.noise,
                checked.style.depth_every if "depth_every" in changes else current.depth_every,
            )
            changed = tuple(
                name
                for name in changes
                if (getattr(updated, name) if name in PER_STYLE_KEYS else getattr(checked.models, name))
                != (getattr(current, name) if name in PER_STYLE_KEYS else getattr(self._models, name))
            )
            self._styles[style] = updated
            self._models = checked.models
            if changed:
                self._version += 1
        for name in changes:
            key = f"styles.{style}.{name}" if name in PER_STYLE_KEYS else SETTING_KEYS[name]
            self.user_set.mark(key, origin)
        return SettingsChange(changed, any(name not in LIVE_SETTINGS for name in changed), self.values(style))

    def _values(self, style: str) -> dict[str, Any]:
        with self._lock:
            current = self._styles.get(style, StyleSettings())
            models = self._models
        return {
            "prompt": current.prompt,
            "t_index_list": current.t_index_list,
            "noise": current.noise,
            "depth_every": current.depth_every,
            "vae": models.vae,
            "compile": models.compile,
            "similar_filter": models.similar_filter,
            "similar_threshold": models.similar_threshold,
        }

    def values(self, style: str) -> dict[str, Any]:
        """The settings as they apply to `style` (the control API's flat view; empty or None: the style's own)."""
        return {name: (list(v) if isinstance(v, tuple) else v) for name, v in self._values(style).items()}
