"""The `vcam` command: the run job end to end, and a clear message with exit code 2 for each bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vcam.cli import main


def read_video(path: Path) -> tuple[int, tuple[int, int]]:
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return len(frames), frames[0].shape[:2]


def test_help_is_instant_and_imports_nothing_heavy() -> None:
    code = (
        "import sys; from vcam.cli import build_parser; build_parser().format_help(); "
        "heavy = [m for m in ('torch', 'diffusers', 'cv2', 'av', 'mediapipe', 'pystray', 'transformers') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_demo_to_file_writes_exactly_the_frames_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    code = main(
        ["run", "--source", "demo", "--sink", f"file:{out}", "--frames", "90", "--size", "320x180", "--fps", "60"]
    )
    assert code == 0
    count, (height, width) = read_video(out)
    assert count == 90
    assert (width, height) == (320, 180)


def test_run_default_size_is_1280x720(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    assert main(["run", "--source", "demo", "--sink", f"file:{out}", "--frames", "3"]) == 0
    count, shape = read_video(out)
    assert (count, shape) == (3, (720, 1280))


def busy_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--source", "bogus"], "bogus"),
        (["--source", "file:/no/such/video.mp4"], "/no/such/video.mp4"),
        (["--source", "webcam:7"], "7"),
        (["--sink", "teleport"], "teleport"),
        (["--sink", "vcam"], "setup-virtual-camera.sh"),
        (["--size", "10x10"], "output.width = 10 is out of range"),
        (["--size", "wide"], "WIDTHxHEIGHT"),
        (["--fps", "500"], "output.fps = 500.0 is out of range: allowed 1 to 120"),
        (["--style", "no-such-style"], "unknown style 'no-such-style'"),
        (["--segment", "sparkles"], "segment.mode = 'sparkles' is not allowed"),
        (["--depth-every", "0"], "style.depth_every = 0 is not allowed: a whole number from 1"),
        (["--depth-every", "-1"], "style.depth_every = -1 is not allowed: a whole number from 1"),
        (["--depth-every", "x"], "invalid int value: 'x'"),
    ],
)
def test_bad_input_gives_a_message_and_exit_code_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["run", "--frames", "2"]
    if "--source" not in argv:
        base += ["--source", "demo"]
    if "--sink" not in argv:
        base += ["--sink", "null"]
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(base + argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_preview_port_in_use_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with busy_port() as listener:
        port = listener.getsockname()[1]
        code = main(["run", "--source", "demo", "--sink", f"preview:{port}", "--frames", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(port) in err and "in use" in err


def test_invalid_config_file_is_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[segment]\nmode = "glitter"\n')
    code = main(["run", "--config", str(path), "--source", "demo", "--sink", "null", "--frames", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "segment.mode = 'glitter'" in err and "off, person, background, blur, replace" in err


def test_save_stores_the_chosen_style_in_the_user_config(private_home: Path) -> None:
    import tomllib

    assert main(["run", "--source", "demo", "--sink", "null", "--frames", "2", "--style", "sketch", "--save"]) == 0
    saved = tomllib.loads((private_home / "config" / "config.toml").read_text())
    assert saved == {"style": {"name": "sketch"}}


def test_styles_lists_classic_and_test_styles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["styles"]) == 0
    out = capsys.readouterr().out
    for name in ("passthrough", "cartoon", "sketch", "posterize", "tiny-random"):
        assert name in out


def test_run_with_no_flags_serves_demo_to_preview_until_sigterm(private_home: Path) -> None:
    """The embedded default here: no webcam -> the demo scene; no driver -> the preview stream."""
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    with busy_port() as listener:
        port = listener.getsockname()[1]
    config = private_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[preview]\nport = {port}\n")
    env = {**os.environ, "VCAM_HOME": str(private_home)}
    process = subprocess.Popen([sys.executable, "-m", "vcam", "run"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline() if process.stderr else ""
            lines.append(line)
            if "press Ctrl-C" in line or not line:
                break
        text = "".join(lines)
        assert "demo" in text and f"http://127.0.0.1:{port}/" in text, text
        jpeg = b""
        for _ in range(100):  # the first frame is sent within a frame interval or two of start-up
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=10) as response:
                    jpeg = response.read()
                break
            except urllib.error.HTTPError:
                time.sleep(0.05)
        assert jpeg[:3] == b"\xff\xd8\xff"  # a JPEG
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        rest = process.stderr.read() if process.stderr else ""
        assert "sent" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()


def test_a_bad_user_style_is_listed_with_its_error_and_blocks_only_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[styles.broken]\nprompt = "no base"\n')
    assert main(["styles", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cartoon" in out and "pixar" in out  # every other style is still listed
    assert "broken" in out and "invalid" in out and "base" in out
    code = main(
        ["run", "--config", str(path), "--source", "demo", "--sink", "null", "--frames", "2", "--style", "broken"]
    )
    assert code == 2  # asked for explicitly: the config error, with the key
    err = capsys.readouterr().err
    assert "[styles.broken]" in err and "base" in err and str(path) in err
