"""Which settings the user set, and where: the one record of provenance.

The rule (issue 14, and the latency issue's automatic profile): a value the user set, in the config file, on
the command line, or through the control API (the preview page, the tray), is never changed automatically; an
automatic profile may change only what was left unset. `UserSettings` records the keys the user set:

- config keys as the file spells them, "section.key" (e.g. "models.vae", "style.prompt");
- per-style settings as "styles.NAME.key" (e.g. "styles.pixar.t_index_list"): a `[styles.NAME]` table's keys,
  and `[style] prompt` / `t_index_list` / `noise` / `depth_every`, which belong to the style being started.
"""

from __future__ import annotations

import threading
from typing import Literal

#: where a value came from
Origin = Literal["config", "cli", "api"]


class UserSettings:
    """The keys the user set, with where each was set last (thread-safe: the control API writes it)."""

    def __init__(self, origins: dict[str, Origin] | None = None) -> None:
        self._lock = threading.Lock()
        self._origins: dict[str, Origin] = dict(origins or {})

    def mark(self, key: str, origin: Origin) -> None:
        """Record that the user set `key` (a later origin replaces an earlier one: the CLI over the file)."""
        with self._lock:
            self._origins[key] = origin

    def is_set(self, key: str) -> bool:
        """Whether the user set `key`: an automatic profile must leave it alone."""
        with self._lock:
            return key in self._origins

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_set(key)

    def origin(self, key: str) -> Origin | None:
        with self._lock:
            return self._origins.get(key)

    def as_dict(self) -> dict[str, Origin]:
        """key -> origin, sorted by key (the control API's `GET /api/settings` shows it)."""
        with self._lock:
            return dict(sorted(self._origins.items()))

    def copy(self) -> UserSettings:
        return UserSettings(self.as_dict())

    def __repr__(self) -> str:
        return f"UserSettings({self.as_dict()!r})"
