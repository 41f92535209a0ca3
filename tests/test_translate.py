"""Live2DiffTranslator's latency contract, `vcam translate` on a generated clip, and the stability metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from vcam.model.metrics import VideoMetrics
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import count_frames, moving_frames, write_clip
from tests.processes import dead_pid
from vcam.cli import main
from vcam.translators.live2diff import FrameFitter, Live2DiffTranslator

WARMUP = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("t_index_list", [(30,), (30, 40), (20, 30, 40)], ids=lambda t: f"T{len(t)}")
def test_translator_output_of_call_c_is_input_c_minus_latency(t_index_list: tuple[int, ...]) -> None:
    camera = moving_frames(WARMUP + 6, width=96, height=64)
    translator = Live2DiffTranslator(build_tiny_pipeline(t_index_list=t_index_list), name="tiny")
    reference = translator.pipeline.sibling()  # same weights and noise, driven directly
    fitter = translator.fitter
    expected = {r.index: r.image for frame in camera for r in reference.step(fitter.to_model(frame))}
    latency = translator.latency_frames
    assert latency == len(t_index_list) - 1
    for call, frame in enumerate(camera):
        output = translator(frame)
        assert translator.warming_up == (call < WARMUP - 1)
        if call < WARMUP - 1:
            assert output is None
            continue
        assert output is not None and output.shape == frame.shape
        np.testing.assert_array_equal(output, fitter.from_model(expected[call - latency], 96, 64))


def test_translator_warmup_on_recent_frames_then_exact_latency() -> None:
    frames = moving_frames(WARMUP + 4, width=64, height=64)
    translator = Live2DiffTranslator(build_tiny_pipeline(t_index_list=(30, 40)))
    translator.warmup(frames[:WARMUP])
    assert not translator.warming_up
    assert translator(frames[WARMUP]) is None  # its translation comes one call later
    assert translator(frames[WARMUP + 1]) is not None
    translator.reset()
    assert translator.warming_up and translator(frames[0]) is None
    translator.close()


def test_frame_fitter_crops_to_the_model_aspect_and_maps_back_aligned() -> None:
    fitter = FrameFitter(64, 64, "crop")
    assert fitter.region(1280, 720) == (280, 0, 720, 720)
    assert fitter.region(640, 960) == (0, 160, 640, 640)
    image = np.full((72, 128, 3), 200, dtype=np.uint8)
    model_input = fitter.to_model(image)
    assert model_input.shape == (64, 64, 3)
    back = fitter.from_model(np.full((64, 64, 3), 90, dtype=np.uint8), 128, 72)
    assert back.shape == (72, 128, 3)
    assert (back[:, 28:100] == 90).all() and (back[:, :28] == 0).all() and (back[:, 100:] == 0).all()
    stretched = FrameFitter(64, 32, "stretch").from_model(np.zeros((32, 64, 3), np.uint8), 128, 72)
    assert stretched.shape == (72, 128, 3)


def test_vcam_translate_writes_every_frame_and_prints_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_clip(tmp_path / "in.mp4", moving_frames(11, width=80, height=48))
    output = tmp_path / "out.mp4"
    code = main(["translate", str(source), str(output), "--style", "tiny-random", "--metrics", "--no-progress"])
    assert code == 0
    assert count_frames(output) == count_frames(source) == 11
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames_read"] == summary["frames_written"] == summary["frames"] == 11
    for key in ("warp_error", "input_warp_error", "output_frame_diff", "input_frame_diff"):
        assert isinstance(summary[key], float) and summary[key] >= 0.0


def test_vcam_translate_frames_limit_and_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_clip(tmp_path / "in.mp4", moving_frames(10, width=64, height=64))
    output = tmp_path / "short.mp4"
    arguments = ["translate", str(source), str(output), "--style", "tiny-random", "--frames", "4", "--no-progress"]
    assert main(arguments) == 0
    assert count_frames(output) == 4  # fewer than the warmup: flushed, still one output per input
    assert main(["translate", str(tmp_path / "nope.mp4"), str(output), "--style", "tiny-random"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_warp_error_is_low_when_the_output_follows_the_motion() -> None:
    frames = moving_frames(6, width=64, height=48)
    following = VideoMetrics()
    flickering = VideoMetrics()
    rng = np.random.default_rng(1)
    for frame in frames:
        following.add(frame, frame)
        flickering.add(frame, rng.integers(0, 256, size=frame.shape, dtype=np.uint8))
    steady, noisy = following.summary(), flickering.summary()
    assert steady["frames"] == 6 and steady["visible_fraction"] > 0.5
    assert steady["warp_error"] < 0.2 * noisy["warp_error"]
    assert steady["output_frame_diff"] == pytest.approx(steady["input_frame_diff"])
    assert VideoMetrics().summary()["warp_error"] is None


# ---------------------------------------------------------------- never destroy a file
def _translate(source: Path, output: Path, *extra: str) -> int:
    return main(["translate", str(source), str(output), "--style", "cartoon", "--no-progress", *extra])


def test_translate_refuses_its_input_through_a_hard_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_clip(tmp_path / "a.mp4", moving_frames(4, width=32, height=32))
    before = source.read_bytes()
    (tmp_path / "b.mp4").hardlink_to(source)
    (tmp_path / "c.mp4").symlink_to(source)
    for output in (tmp_path / "b.mp4", tmp_path / "c.mp4", tmp_path / "." / "a.mp4"):
        assert _translate(source, output, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "is the input video" in err and err.count("\n") == 1, err
    assert source.read_bytes() == before


def test_translate_refuses_an_existing_output_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_clip(tmp_path / "in.mp4", moving_frames(4, width=32, height=32))
    output = tmp_path / "out.mp4"
    output.write_bytes(b"my holiday video")
    assert _translate(source, output) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and err.count("\n") == 1, err
    assert output.read_bytes() == b"my holiday video"
    assert _translate(source, output, "--overwrite") == 0
    assert count_frames(output) == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temporary left


def test_a_failed_translate_leaves_no_file_under_the_output_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vcam.commands import translate as translate_command

    source = write_clip(tmp_path / "in.mp4", moving_frames(6, width=32, height=32))
    output = tmp_path / "out.mp4"
    real_write = translate_command.VideoWriter.write

    def write_then_fail(self: translate_command.VideoWriter, image: np.ndarray) -> None:
        if self.frames_written == 3:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM/SIGHUP, which the CLI turns into the same) mid-write
        real_write(self, image)

    monkeypatch.setattr(translate_command.VideoWriter, "write", write_then_fail)
    assert _translate(source, output) == 0  # a stop that was asked for is not a failure
    assert "nothing written" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4"]  # no half file, no temporary
    output.write_bytes(b"keep")
    assert _translate(source, output, "--overwrite") == 0  # an interrupted replacement keeps the old file
    assert output.read_bytes() == b"keep"


def test_translate_to_an_unsupported_container_names_the_supported_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_clip(tmp_path / "in.mp4", moving_frames(3, width=32, height=32))
    assert _translate(source, tmp_path / "out.txt") == 2
    err = capsys.readouterr().err
    assert ".mp4" in err and ".mkv" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.txt").exists()


def test_translate_cleans_a_temporary_left_by_a_killed_run(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", moving_frames(3, width=32, height=32))
    leftover = tmp_path / f".out.mp4.{dead_pid()}.tmp"
    leftover.write_bytes(b"half")
    assert _translate(source, tmp_path / "out.mp4") == 0
    assert not leftover.exists()
