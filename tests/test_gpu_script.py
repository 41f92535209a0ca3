"""benchmarks/gpu.sh, run as on a GPU machine but on the CPU with the tiny model (`--device cpu --tiny`).

The same steps as the real run: the carried wheels and the project installed into a temporary folder, the
versions printed, the phases in priority order (fp16 eager, compiled, fp32) each writing its cells to
cells.jsonl as soon as they are done, and the summary table last.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_dry_run_prints_the_plan_in_priority_order() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True, env={**os.environ, "OUT": "/x"}
    )
    phases = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert phases == ["fp16-eager", "fp16-attention", "fp16-overlap", "fp16-compiled", "fp32-eager", "fp16-cudagraph"]
    assert "--sizes 512x512 --steps 2 --overlap on" in result.stdout  # against the same cell of fp16-eager
    assert "--model sd15-random" in result.stdout and "--sizes 512x512,512x288 --steps 1,2,4" in result.stdout
    assert "--out /x/cells.jsonl" in result.stdout
    attention = result.stdout.splitlines()[2]
    assert "bench unet --attention-only --device cuda --attention-shapes 4096x320 1024x640" in attention
    assert "--out /x/attention.jsonl" in attention


def test_bad_options_are_exit_code_2() -> None:
    result = subprocess.run([str(SCRIPT), "--device", "tpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "--device tpu is not cuda or cpu" in result.stderr
    result = subprocess.run([str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five tiny cells, a torch.compile trace among them: minutes on a loaded 2-core machine
def test_tiny_cpu_run_writes_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    result = subprocess.run(
        [str(SCRIPT), "--device", "cpu", "--tiny", "--budget", "1500", "--python", sys.executable, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr + (out / "gpu.log").read_text()
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert [cell["cell"] for cell in cells] == [
        "64x32-T1-float16-eager",
        "64x32-T2-float16-eager",
        "64x32-T2-float16-eager-overlap",
        "64x32-T2-float16-compiled",
        "64x32-T2-float32-eager",
    ], (out / "gpu.log").read_text()
    for cell in cells:
        assert "error" not in cell, cell
        assert cell["ms_per_frame"] > 0 and set(cell["breakdown_ms"]) == {"encode", "depth", "unet", "decode"}
        assert cell["kv_cache_mb"] > 0 and cell["model"] == "tiny" and cell["device"] == "cpu"
    attention = [json.loads(line) for line in (out / "attention.jsonl").read_text().splitlines()]
    assert [row["state"] for row in attention] == ["steady", "filling", "warmup 8x8"]
    assert all(row["math_layer_ms"] > 0 and row["sdpa_layer_ms"] > 0 for row in attention)
    assert "fused_layer_ms" not in attention[0]  # no CUDA: the fused kernel does not run
    summary = (out / "summary.txt").read_text()
    assert "64 x 40, steady" in summary and "fused kernel not run here (it needs CUDA and triton)" in summary
    versions = (out / "versions.txt").read_text()
    assert "torch:" in versions and "vcam: 0.1.0" in versions and str(ROOT / "vcam") not in versions
    assert "5 cells" in summary
    assert [cell["overlap"] for cell in cells] == [False, False, True, False, False]
