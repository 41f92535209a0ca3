"""`vcam eval`: the metrics on synthetic clips with known motion, the offline stream, clips, reports and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from vcam.model.metrics import (
    FlowEstimator,
    occlusion_mask,
    streamv2v_occlusion,
    streamv2v_warp_error,
    warp_error,
)

from tests.full_size_weights import _put_repo
from tests.pipeline_helpers import moving_frames, write_clip
from vcam.cli import main
from vcam.eval.clips import ClipError, find_clips, read_clip
from vcam.eval.measure import METRIC_KEYS, Accumulator
from vcam.eval.models import EvalModels, eval_part, load_eval_models
from vcam.translators.classic import ClassicTranslator
from vcam.translators.offline import OfflineTranslation

STYLES = ["passthrough", "cartoon", "sketch", "posterize", "thermal", "tiny-random"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise), which optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 200, dtype=np.uint8)


def _shifted(texture: np.ndarray, count: int, step: int, width: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(texture[:, step * i : step * i + width]) for i in range(count)]


def _measure(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, Any]:
    accumulator = Accumulator(EvalModels(), prompt=None)
    for image, output in zip(inputs, outputs, strict=True):
        accumulator.add(image, output)
    return accumulator.result("s", "c", busy_s=None, latency_frames=None).values


# --- the metrics on known motion ---------------------------------------------------------------------------


def test_static_clip_has_no_warp_error() -> None:
    frame = _texture(48, 64)
    values = _measure([frame] * 5, [frame] * 5)
    assert values["warp_error"] == pytest.approx(0.0, abs=1e-9)
    assert values["warp_error_255"] == pytest.approx(0.0, abs=1e-9)


def test_independent_noise_per_frame_has_a_high_warp_error() -> None:
    frame = _texture(48, 64)
    rng = np.random.default_rng(3)
    noise = [rng.integers(0, 256, size=frame.shape, dtype=np.uint8) for _ in range(5)]
    values = _measure([frame] * 5, noise)
    # two independent uniform images: E[(a - b)^2] = 1/6 per channel in [0, 1], summed over 3 channels
    assert values["warp_error"] == pytest.approx(0.5, rel=0.05)
    assert values["warp_error_255"] == pytest.approx(127.5, rel=0.05)  # (a - b) mod 256 is uniform on 0..255


def test_a_global_shift_is_compensated_by_the_flow() -> None:
    frames = _shifted(_texture(64, 140, seed=1), count=5, step=3, width=96)
    flow = FlowEstimator()
    back = flow(frames[1], frames[0])
    assert np.median(back[8:-8, 8:-8, 0]) == pytest.approx(3.0, abs=0.25)  # frame 1 at x is frame 0 at x + 3
    values = _measure(frames, frames)
    height, width = frames[0].shape[:2]
    still = np.zeros((height, width, 2), np.float32)
    unwarped = warp_error(frames[0], frames[1], still, np.ones((height, width), bool))
    assert unwarped > 0.02
    assert values["warp_error"] < 0.05 * unwarped


def test_streamv2v_variant_equals_a_hand_computed_example_with_wrapped_pixels() -> None:
    previous = np.array([[[10, 200, 0], [100, 100, 100], [255, 0, 7]]], dtype=np.uint8)  # [1, 3, 3]
    current = np.array([[[30, 150, 0], [90, 110, 100], [0, 255, 7]]], dtype=np.uint8)
    still = np.zeros((1, 3, 2), np.float32)
    occluded = streamv2v_occlusion(still, still)
    assert not occluded.any()
    # previous - current per channel, uint8: a brighter later pixel (by d) counts 256 - d
    expected = [256 - 20, 50, 0, 10, 256 - 10, 0, 255, 256 - 255, 0]
    assert streamv2v_warp_error(previous, current, still, occluded) == pytest.approx(np.mean(expected))
    # a flow of +1 in x samples output t-1 one pixel to the right; the last column samples outside (zero)
    shift = np.zeros((1, 3, 2), np.float32)
    shift[..., 0] = 1.0
    warped = [[100, 100, 100], [255, 0, 7], [0, 0, 0]]
    expected_shifted = [
        (w - c) % 256
        for row_w, row_c in zip(warped, current[0].tolist(), strict=True)
        for w, c in zip(row_w, row_c, strict=True)
    ]
    assert streamv2v_warp_error(previous, current, shift, occluded) == pytest.approx(np.mean(expected_shifted))
    only_first = np.array([[False, True, True]])
    assert streamv2v_warp_error(previous, current, still, only_first) == pytest.approx(np.mean(expected[:3]))


def test_streamv2v_occlusion_flags_inconsistent_flow() -> None:
    forward = np.zeros((8, 8, 2), np.float32)
    back = np.zeros((8, 8, 2), np.float32)
    forward[..., 0] = 2.0
    back[..., 0] = -2.0
    assert not streamv2v_occlusion(forward, back)[:, :6].any()  # consistent where x + 2 stays in the frame
    back[..., 0] = 2.0  # not the inverse: everything is occluded
    assert streamv2v_occlusion(forward, back).all()
    assert occlusion_mask(back * -1.0, forward)[:, 2:].all()


# --- the offline stream ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_offline_translation_counts_translator_time_on_the_injected_clock() -> None:
    frames = moving_frames(4, width=32, height=24)
    translation = OfflineTranslation(frames, ClassicTranslator("cartoon"), clock=_Clock())
    out = list(translation)
    assert [frame.index for frame in out] == [0, 1, 2, 3]
    assert all(frame.latency_s == pytest.approx(0.5) and not frame.flushed for frame in out)
    assert translation.busy_s == pytest.approx(2.0) and translation.frames_read == 4
    assert translation.region(32, 24) == (0, 0, 32, 24)


def test_offline_translation_of_a_diffusion_style_gives_one_output_per_input() -> None:
    from vcam.translators.live2diff import build_tiny_translator

    translator = build_tiny_translator()
    frames = moving_frames(11, width=64, height=48)
    translation = OfflineTranslation(frames, translator, clock=_Clock())
    out = list(translation)
    assert [frame.index for frame in out] == list(range(11))
    assert all(frame.image is frames[frame.index] for frame in out)
    assert out[-1].flushed and not out[8].flushed
    assert translation.latency_frames == 1
    assert translation.region(64, 48) == (8, 0, 48, 48)  # the tiny model is square: the centred crop
    translator.close()


# --- clips -------------------------------------------------------------------------------------------------


def _write_frames(folder: Path, frames: list[np.ndarray], suffix: str = ".png") -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:05d}{suffix}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_folder_clips_in_the_davis_layout(tmp_path: Path) -> None:
    frames = moving_frames(12, width=32, height=24)
    root = tmp_path / "JPEGImages" / "480p"
    _write_frames(root / "bear", frames[:12])
    _write_frames(root / "alpha", frames[:3])
    (root / "empty").mkdir()
    clips = find_clips([root])
    assert [clip.name for clip in clips] == ["alpha", "bear"]
    read = list(read_clip(clips[1], max_frames=11))
    assert len(read) == 11
    np.testing.assert_array_equal(read[10], frames[10])  # PNG is lossless; name order, 00010 after 00009
    single = find_clips([root / "bear"])
    assert single[0].count() == 12


def test_bad_clips_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match="does not exist"):
        find_clips([tmp_path / "nope.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipError, match="holds no frames"):
        find_clips([tmp_path / "empty"])
    folder = _write_frames(tmp_path / "mixed", moving_frames(2, width=32, height=24))
    cv2.imwrite(str(folder / "00002.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ClipError, match="same size"):
        list(read_clip(find_clips([folder])[0]))


# --- the CLI -----------------------------------------------------------------------------------------------


def test_vcam_eval_prints_the_table_for_the_classic_looks_and_the_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "walk.mp4", moving_frames(10, width=64, height=48))
    config = str(_config(tmp_path))
    arguments = ["eval", str(clip), "--no-progress", "--out", str(tmp_path / "out"), "--config", config]
    for style in STYLES:
        arguments += ["--style", style]
    assert main(arguments) == 0
    captured = capsys.readouterr()
    table = captured.out
    for style in STYLES:
        assert f"style {style}" in table
    overall = table.split("overall")[1].splitlines()
    assert [line.split()[0] for line in overall[2 : 3 + len(STYLES)]] == ["input", *STYLES]
    assert "CLIP cons, CLIP text: not available: `vcam models download clip`" in table
    assert "depth MSE: not available: `vcam models download depth`" in table
    assert "StreamV2V" in table
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["not_available"]["clip_consistency"] == "not available: `vcam models download clip`"
    by_style = {row["style"]: row for row in report["overall"]}
    assert by_style["passthrough"]["warp_error"] == pytest.approx(by_style["input"]["warp_error"])
    assert by_style["tiny-random"]["latency_frames"] == 1 and by_style["cartoon"]["latency_frames"] == 0
    assert by_style["tiny-random"]["warp_error"] > by_style["passthrough"]["warp_error"]
    assert all(len(row["per_frame_warp_error"]) == 9 for row in report["results"])
    with (tmp_path / "out" / "eval.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 + len(STYLES) + 1 + len(STYLES)  # input, each (style, clip), overall rows
    assert "not available" in rows[1]["notes"]
    plot = cv2.imread(str(tmp_path / "out" / "warp_error.png"))
    assert plot is not None and plot.shape[1] == 1000
    assert main(arguments) == 2  # the files exist now: never overwritten unasked
    assert "exists" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0


def _config(tmp_path: Path, cache: Path | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[models]\ncache_dir = "{cache or tmp_path / "hub"}"\n', encoding="utf-8")
    return path


def _tiny_clip_and_dpt(cache: Path, staging: Path) -> None:
    """A tiny random CLIP and DPT written where the model cache has CLIP ViT-B/32 and DPT-Hybrid."""
    from transformers import CLIPConfig, CLIPModel
    from vcam.model.tiny import BOS_TOKEN, EOS_TOKEN, tiny_clip_tokenizer, tiny_dpt

    from vcam.store.store import ModelStore

    store = ModelStore.from_config(_load(cache))
    tokenizer = tiny_clip_tokenizer()
    special = {
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS_TOKEN),
        "eos_token_id": tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        "pad_token_id": tokenizer.convert_tokens_to_ids(EOS_TOKEN),
    }
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**text, "num_attention_heads": 2, "max_position_embeddings": 77, **special},
        vision_config={**vision, "num_attention_heads": 2},
        projection_dim=8,
    )
    clip = CLIPModel(config).eval()
    clip_part = eval_part("clip", store).source
    folder = staging / "clip"
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))
    torch.save(clip.state_dict(), folder / "pytorch_model.bin")
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 77}', encoding="utf-8")
    assert sorted(path.name for path in folder.iterdir()) == sorted(clip_part.files)
    _put_repo(cache, clip_part.repo, clip_part.revision, folder)
    depth_part = eval_part("depth", store).source
    folder = staging / "depth"
    folder.mkdir(parents=True)
    depth = tiny_dpt()
    depth.config.save_pretrained(str(folder))
    torch.save(depth.state_dict(), folder / "pytorch_model.bin")
    (folder / "preprocessor_config.json").write_text("{}", encoding="utf-8")
    assert sorted(path.name for path in folder.iterdir()) == sorted(depth_part.files)
    _put_repo(cache, depth_part.repo, depth_part.revision, folder)


def _load(cache: Path) -> Any:
    from vcam.config import Config

    config = Config()
    config.models.cache_dir = str(cache)
    return config


def test_with_tiny_clip_and_dpt_on_disk_the_table_has_every_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "hub"
    _tiny_clip_and_dpt(cache, tmp_path / "staging")
    models = load_eval_models(_load(cache))
    assert models.clip is not None and models.depth is not None and not models.missing
    clip = write_clip(tmp_path / "walk.mp4", moving_frames(9, width=64, height=48))
    json_path = tmp_path / "eval.json"
    arguments = ["eval", str(clip), "--style", "cartoon", "--style", "tiny-random", "--no-progress"]
    assert main([*arguments, "--json", str(json_path), "--config", str(_config(tmp_path, cache))]) == 0
    table = capsys.readouterr().out
    assert "n/a" not in table and "not available" not in table
    report = json.loads(json_path.read_text())
    assert report["not_available"] == {}
    tiny = next(row for row in report["overall"] if row["style"] == "tiny-random")
    assert all(tiny[key] is not None for key in METRIC_KEYS), tiny
    assert -100.0 <= tiny["clip_consistency"] <= 100.0 and tiny["depth_mse"] >= 0.0
    cartoon = next(row for row in report["overall"] if row["style"] == "cartoon")
    assert cartoon["clip_text"] is None and "no prompt" in cartoon["notes"]["clip_text"]
    floor = next(row for row in report["overall"] if row["style"] == "input")
    assert floor["clip_consistency"] is not None


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_clip(tmp_path / "walk.mp4", moving_frames(3, width=32, height=32))
    config = ["--config", str(_config(tmp_path))]
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    cases = [
        (["eval", str(tmp_path / "nope.mp4"), "--style", "cartoon"], "does not exist"),
        (["eval", str(clip), "--style", "no-such-style"], "unknown style 'no-such-style'"),
        (["eval", str(tmp_path / "empty"), "--style", "cartoon"], "holds no frames"),
        (["eval", str(broken), "--style", "tiny-random"], "cannot read video"),
        (["eval", str(clip), "--style", "cartoon", "--plot", str(tmp_path / "plot.jpg")], "must end in .png"),
        (["eval", str(clip), "--style", "cartoon", "--json", str(tmp_path / "no" / "e.json")], "does not exist"),
    ]
    for arguments, message in cases:
        assert main([*arguments, *config]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_models_download_clip_offline_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "--cache-dir", str(tmp_path), "download", "clip"]) == 2
    err = capsys.readouterr().err
    assert "openai/clip-vit-base-patch32" in err and "`vcam models download clip`" in err
