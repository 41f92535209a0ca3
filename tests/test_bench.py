"""The benchmarks run from their documented commands and print the JSON fields the README quotes.

Smoke runs with tiny arguments: a benchmark reports, these tests only check that it runs and says
what it promises (the figures themselves are not asserted).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from vcam.cli import main


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main(["bench", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_runtime_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "runtime", "--seconds", "0.5", "--repeats", "1", "--size", "320x180")
    for key in (
        "cpu_ms_per_frame_total",
        "cpu_ms_per_frame_demo_source",
        "cpu_ms_per_frame_loop",
        "output_fps_over_target",
        "dropped_frames",
        "repeated_frames",
    ):
        assert key in result
    assert result["output_fps_over_target"] > 0  # a figure, measured on wall time: the test checks its presence


def test_unet_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(
        capsys,
        "unet",
        "--sizes",
        "8",
        "--frames",
        "2",
        "--recompute-repeats",
        "1",
        "--attention-rows",
        "64",
        "--attention-repeats",
        "1",
        "--threads",
        "1",
    )
    (size,) = result["unet"]
    for key in ("cached_ms_per_frame", "recompute_window_ms_per_frame", "speedup", "cache_bytes_per_step"):
        assert key in size
    assert {row["state"] for row in result["cached_attention"]} >= {"steady", "filling"}


def test_unet_benchmark_attention_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "attention.jsonl"
    shapes = ["--attention-shapes", "12x64", "--attention-repeats", "1", "--threads", "1", "--out", str(out)]
    result = bench(capsys, "unet", "--attention-only", *shapes)
    assert result["unet"] == []
    rows = result["cached_attention"]
    assert [(row["rows"], row["head_dim"], row["state"]) for row in rows] == [
        (12, 8, "steady"),
        (12, 8, "filling"),
        (12, 8, "warmup 8x8"),
    ]
    assert rows[0]["math_static_kernel_ms"] > 0 and "fused_layer_ms" not in rows[0]  # the CPU: no fused kernel
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("benchmark", "device")} for line in lines] == rows
    assert main(["bench", "unet", "--attention-shapes", "64x30"]) == 2
    assert "--attention-shapes '64x30' is not ROWSxCHANNELS" in capsys.readouterr().err


def test_model_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "model", "--model", "tiny", "--frames", "3", "--repeats", "2", "--t-index-list", "30,40")
    assert result["repeats"] == 2 and result["t_index_list"] == [30, 40]
    assert result["pipelined"]["latency_frames"] == 1 and result["sequential"]["latency_frames"] == 0
    assert set(result["pipelined"]["breakdown_ms"]) == {"encode", "depth", "unet", "decode"}
    assert result["speedup"] > 0


def test_a_bad_benchmark_argument_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--repeats", "0"]) == 2
    assert "--repeats 0 must be 1 or more" in capsys.readouterr().err


def test_lora_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "lora", "--calls", "2", "--repeats", "1")
    assert result["fused_copy_ms_per_call"] > 0 and result["peft_adapter_ms_per_call"] > 0
    assert "adapter_over_fused" in result


def test_classic_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("skimage", reason="scikit-image (dev extra) provides the sample photograph")
    result = bench(capsys, "classic", "--frames", "3")
    assert set(result["looks"]) == {"cartoon", "sketch", "posterize", "thermal"}
    for figures in result["looks"].values():
        assert figures["warp_error_stable"] > 0 and figures["input_warp_error"] > 0


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg package) is not installed")
def test_preview_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "preview", "--seconds", "1", "--size", "320x180", "--fps", "15")
    assert result["stream.ts"]["ffprobe"]["r_frame_rate"] == "15/1"
    for name in ("stream.ts", "stream.mjpg"):
        assert result[name]["player_low_delay"]["frames_shown"] > 0


@pytest.mark.slow
def test_switch_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "switch", "--runs", "1", "--size", "160x96", "--baseline-seconds", "0.5")
    assert result["style"] == "tiny-random" and result["runs"] == 1
    for case in ("startup", "switch"):
        figures = result[case]
        assert figures["longest_gap_ms_median"] > 0 and figures["load_s_median"] > 0
        assert figures["longest_gap_frame_intervals_median"] == pytest.approx(
            figures["longest_gap_ms_median"] / (1000 / 30), abs=0.01
        )
        if sys.platform.startswith("linux"):  # the hypervisor's share while it ran (0 on bare metal)
            assert figures["cpu_steal_s"] >= 0
            assert len(figures["steal_in_longest_gap_ms"]) == 1
            assert figures["longest_steal_free_gap_ms_median"] <= figures["longest_gap_ms_median"]
    assert result["baseline_no_load_longest_gap_ms_median"] > 0
    assert main(["bench", "switch", "--runs", "0"]) == 2


def test_switch_gaps_say_what_the_hypervisor_stole_during_them() -> None:
    """Sends at 0, 33, 133 (20 ms stolen meanwhile) and 183 ms: the longest gap is 100 ms with 20 ms stolen; the
    longest in which nothing was stolen, 50 ms. Without steal counts (off Linux) only the longest gap."""
    from vcam.bench.switch import _gap_figures

    sends = [(0.0, 5.0), (0.033, 5.0), (0.133, 5.02), (0.183, 5.02)]
    figures = _gap_figures(sends)
    assert figures["longest_gap_ms"] == pytest.approx(100.0)
    assert figures["steal_in_longest_gap_ms"] == pytest.approx(20.0)
    assert figures["longest_steal_free_gap_ms"] == pytest.approx(50.0)
    assert _gap_figures([(time, None) for time, _ in sends]) == {"longest_gap_ms": pytest.approx(100.0)}
