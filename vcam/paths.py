"""Per-user folders (platformdirs): config, logs, runtime (locks), cache. `VCAM_HOME` overrides all (tests)."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "live2diff-vcam"


def _home_override() -> Path | None:
    value = os.environ.get("VCAM_HOME")
    return Path(value) if value else None


def config_dir() -> Path:
    override = _home_override()
    if override:
        return override / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def config_file() -> Path:
    return config_dir() / "config.toml"


def log_dir() -> Path:
    override = _home_override()
    if override:
        return override / "log"
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def runtime_dir() -> Path:
    """Where locks and other per-session files live (created on demand)."""
    override = _home_override()
    if override:
        return override / "run"
    import platformdirs

    return Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    override = _home_override()
    if override:
        return override / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
