"""The stream step exported to ONNX and run by onnxruntime (CPU here) equals PyTorch on the tiny model.

float32, within 1e-4, over a stream longer than the 16-slot window, for T = 1, 2 and 4; the caches are bound
in place (never copied) and the graph returns only the new K/V rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames

pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'live2diff-vcam[onnx]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'live2diff-vcam[onnx]'")

FRAMES = 8 + 20  # warmup + more than the window


def _stream(t_index_list: tuple[int, ...], cache_dir: Path | None) -> tuple[list[torch.Tensor], object]:
    from vcam.model.step_backends import attach_step_backend

    pipeline = build_tiny_pipeline(t_index_list=t_index_list, noise="fresh")
    backend = attach_step_backend(pipeline.unet, "onnx", onnx_cache_dir=cache_dir) if cache_dir else None
    latents = []
    addresses: set[int] = set()
    for image in moving_frames(FRAMES):
        latents.extend(result.latent for result in pipeline.step(image) if result.latent is not None)
        kv = pipeline._prompt.caches.caches[0][0].kv
        if kv is not None:
            addresses.add(kv.data_ptr())
    assert len(addresses) == 1  # the ring is written in place: one cache tensor for the whole stream
    return latents, backend


@pytest.mark.parametrize("t_index_list", [(30,), (30, 40), (10, 20, 30, 40)])
def test_onnxruntime_equals_pytorch(t_index_list: tuple[int, ...], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    reference, _ = _stream(t_index_list, None)
    exported, backend = _stream(t_index_list, tmp_path)
    assert len(exported) == len(reference) == FRAMES - (len(t_index_list) - 1)
    worst = max(float((a - b).abs().max()) for a, b in zip(exported, reference, strict=True))
    assert worst < 1e-4, worst
    assert backend is not None and backend.providers_used == [["CPUExecutionProvider"]]  # type: ignore[attr-defined]
    for entry in backend._sessions.values():  # type: ignore[attr-defined]
        # idle workers sleep: a spinning pool took the CPU from PyTorch and the camera's threads
        options = entry.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    (graph,) = tmp_path.glob(f"*-b{len(t_index_list)}-float32-depth-*/stream_step.onnx")
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    inputs = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim] for value in model.graph.input}
    outputs = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim] for value in model.graph.output}
    layers = 12  # the tiny UNet: 6 motion modules x 2 temporal attentions
    assert sum(name.startswith("cache_") for name in inputs) == layers * len(t_index_list)
    assert sum(name.startswith("row_") for name in outputs) == layers * len(t_index_list)
    two, rows, heads, window, head_dim = inputs["cache_0_0"]
    assert window == 16 and outputs["row_0_0"] == [two, rows, heads, head_dim]  # only the new row comes back


def test_providers_best_first() -> None:
    from vcam.model.onnx_step import choose_providers

    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(available) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CoreMLExecutionProvider", "CPUExecutionProvider"]) == [
        "CoreMLExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(available, ["CUDAExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
