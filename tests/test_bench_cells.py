"""`vcam bench model` in grid mode: the cells, their order, their files and the errors for bad selections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcam.bench.cells import Cell, plan_cells
from vcam.cli import main


def test_gpu_plan_is_in_priority_order() -> None:
    cells = plan_cells("gpu", [(512, 512), (512, 288)], [1, 2, 4], ["float32"], ["eager"])
    names = [cell.name for cell in cells]
    assert names[:6] == [f"{size}-T{steps}-float16-eager" for size in ("512x512", "512x288") for steps in (1, 2, 4)]
    assert names[6:] == [
        "512x512-T2-float16-eager-overlap",
        "512x512-T2-float16-compiled",
        "512x288-T2-float16-compiled",
        "512x512-T2-float32-eager",
    ]


def test_grid_is_dtype_major() -> None:
    cells = plan_cells("grid", [(64, 32)], [1, 2], ["float32", "float16"], ["eager"])
    assert cells == [
        Cell(64, 32, 1, "float32", "eager"),
        Cell(64, 32, 2, "float32", "eager"),
        Cell(64, 32, 1, "float16", "eager"),
        Cell(64, 32, 2, "float16", "eager"),
    ]


def test_overlap_cells_follow_the_same_cell_without(capsys: pytest.CaptureFixture[str]) -> None:
    cells = plan_cells("grid", [(64, 32)], [1, 2], ["float32"], ["eager"], (False, True))
    assert [cell.name for cell in cells] == [
        "64x32-T1-float32-eager",
        "64x32-T1-float32-eager-overlap",
        "64x32-T2-float32-eager",
        "64x32-T2-float32-eager-overlap",
    ]
    argv = ["bench", "model", "--model", "tiny", "--sizes", "64x32", "--steps", "2", "--frames", "3", "--settle", "0"]
    assert main([*argv, "--overlap", "off,on"]) == 0
    plain, overlapped = json.loads(capsys.readouterr().out)["cells"]
    assert (plain["overlap"], overlapped["overlap"]) == (False, True)
    assert (plain["latency_frames"], overlapped["latency_frames"]) == (1, 2)
    # the same calls are timed: the batch filling (no output), then one output each; the overlap's warmup call
    # is not among them
    assert plain["outputs"] == overlapped["outputs"] == 2
    assert overlapped["stage_timing"] == "wall" and overlapped["breakdown_ms"]["unet"] > 0
    assert main([*argv, "--overlap", "maybe"]) == 2
    assert "--overlap: 'maybe' is not one of off, on" in capsys.readouterr().err


def test_each_cell_is_written_when_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "model", "--model", "tiny", "--sizes", "64x32", "--steps", "1,2", "--frames", "2"]
    assert main([*argv, "--settle", "1", "--modes", "eager,static", "--out", str(tmp_path / "cells")]) == 0
    printed = json.loads(capsys.readouterr().out)
    files = {path.name for path in (tmp_path / "cells").iterdir()}
    assert files == {f"cell-64x32-T{t}-float32-{m}.json" for m in ("eager", "static") for t in (1, 2)}
    for cell in printed["cells"]:
        assert json.loads((tmp_path / "cells" / f"cell-{cell['cell']}.json").read_text()) == cell
        assert cell["latency_frames"] == cell["steps"] - 1 and cell["outputs"] == 2 and cell["finite"]
    assert (
        main([*argv[:-4], "--steps", "1", "--frames", "1", "--settle", "0", "--out", str(tmp_path / "c.jsonl")]) == 0
    )
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert [json.loads(line)["cell"] for line in lines] == ["64x32-T1-float32-eager"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--sizes", "500x288", "not a positive multiple of 8"),
        ("--steps", "3,5", "'5' is not one of [1, 2, 3, 4]"),
        ("--modes", "tensorrt", "'tensorrt' is not one of eager, static, compiled, cudagraph, onnx"),
        ("--dtypes", "bfloat16", "'bfloat16' is not one of float16, float32"),
        ("--only", "1x1-T9", "matches no cell of the plan"),
        ("--plan", "all", "--plan 'all' is not one of grid, gpu"),
        ("--vae", "vq", "--vae 'vq' is not one of taesd, kl"),
    ],
)
def test_bad_selections_are_exit_code_2(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "model", "--model", "tiny", "--sizes", "64x32", option, value]) == 2
    assert message in capsys.readouterr().err


def test_onnx_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    assert main(["bench", "onnx", "--size", "32x32", "--calls", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["median_ms"]) == {"torch", "static", "onnx"} and result["onnx_over_torch"] > 0
    assert result["providers"] == [["CPUExecutionProvider"]]
