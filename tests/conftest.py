"""Test-wide set-up: no model hub, a private VCAM_HOME per test, seeded torch where it is used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYSTRAY_BACKEND", "dummy")


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Config, logs, locks and caches of each test live in a temporary VCAM_HOME."""
    home = tmp_path_factory.mktemp("vcam-home")
    monkeypatch.setenv("VCAM_HOME", str(home))
    yield home
