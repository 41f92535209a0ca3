"""Logging set-up, done once by the CLI: a rotating file in the user log dir, warnings on the console."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from vcam.paths import log_dir

LOG_FILE_NAME = "vcam.log"


def setup_logging(verbose: bool = False, directory: Path | None = None) -> Path | None:
    """Configure the root logger; returns the log file path (None if the log dir is not writable)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_vcam", False):
            root.removeHandler(handler)
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("vcam: %(levelname)s: %(message)s"))
    console._vcam = True  # type: ignore[attr-defined]
    root.addHandler(console)
    path: Path | None = None
    try:
        folder = directory or log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOG_FILE_NAME
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    except OSError as error:
        logging.getLogger(__name__).warning("cannot write the log file (%s); logging to the console only", error)
        return None
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s: %(message)s"))
    file_handler._vcam = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    for noisy in ("PIL", "urllib3", "httpx", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
