"""Bad configuration files get one line, never a traceback; saving keeps symlinks and modes, and cleans up."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.processes import dead_pid
from tests.waiting import wait_for
from vcam.cli import main
from vcam.config import update_config
from vcam.runtime import Runtime
from vcam.sinks.null import NullSink
from vcam.sources.demo import DemoSource
from vcam.translators.base import Translator
from vcam.translators.classic import ClassicTranslator


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (bytes(range(256)) * 4, "is not UTF-8 text"),
        ('[style]\nname = "cartoon"\n'.encode("utf-16"), "is not UTF-8 text"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests tables or arrays too deeply"),
        (b"x = " + b"{a = " * 5000 + b"1" + b"}" * 5000 + b"\n", "nests tables or arrays too deeply"),
    ],
)
def test_an_unreadable_config_is_one_line_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    assert main(["styles", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expected in err, err[:500]
    assert main(["run", "--save", "--style", "cartoon", "--config", str(path), "--sink", "null", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err, err[:500]


def test_saving_writes_through_a_symlink_and_keeps_the_mode(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "vcam.toml"
    target.write_text('# mine\n[style]\nname = "cartoon"\n')
    target.chmod(0o644)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    update_config({"style.name": "pencil"}, link)
    assert link.is_symlink() and link.resolve() == target
    assert 'name = "pencil"' in target.read_text() and "# mine" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o640)
    update_config({"style.name": "thermal"}, link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in dotfiles.iterdir()) == ["vcam.toml"]


def test_a_new_config_is_not_private_only(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    umask = os.umask(0o022)
    try:
        update_config({"style.name": "pencil"}, path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_temporary_left_by_a_killed_save_is_removed_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[style]\nname = "cartoon"\n')
    leftover = tmp_path / f".config.toml.{dead_pid()}.tmp"
    leftover.write_text("[style]\nna")
    update_config({"style.name": "pencil"}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_fifo_given_as_a_video_is_named_a_fifo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    assert main(["run", "--source", f"file:{fifo}", "--sink", "null", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "FIFO" in err and "not found" not in err and err.count("\n") == 1, err
    out = tmp_path / "out.mp4"
    assert main(["translate", str(fifo), str(out), "--style", "cartoon", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "FIFO" in err and "does not exist" not in err and err.count("\n") == 1, err


def test_cache_dir_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "weights.bin"
    plain.write_bytes(b"x")
    assert main(["models", "--cache-dir", str(plain), "list"]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and str(plain) in err and err.count("\n") == 1, err


def test_a_style_that_loads_clears_the_error_of_one_that_did_not() -> None:
    def loader(name: str) -> Translator:
        if name == "broken":
            raise RuntimeError("weights are corrupt")
        return ClassicTranslator(name)

    runtime = Runtime(DemoSource(64, 64, 30), [NullSink()], width=64, height=64, fps=30, translator_loader=loader)
    runtime.start()
    try:
        runtime.set_style("broken")
        wait_for(lambda: runtime.status().last_error is not None, what="the failed load")
        runtime.set_style("posterize")
        wait_for(lambda: runtime.status().style == "posterize", what="the switch")
        status = runtime.status()
    finally:
        runtime.stop()
    assert status.last_error is None, status.last_error
