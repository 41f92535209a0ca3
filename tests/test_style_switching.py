"""Style switching through the real loader and the real runtime, on tiny models saved in an HF cache.

`load_translator(name, config)` -> ModelStore -> `Live2DiffTranslator.from_style` -> the model pool ->
`load_stream_pipeline`'s parts, on the tiny model set of tests/tiny_weights.py (HF_HUB_OFFLINE=1). The runtime
streams the demo source into the fake virtual camera at a fixed fps while styles switch: no gap longer than two
frame intervals, the new style's models and prompt in use after a switch, the old base freed, and a style that
fails to load leaves the old one running with the error in the status.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from vcam.model.pool import MB, ModelPool, module_storages

from tests.fakes.virtual_camera import fake_backend
from tests.tiny_weights import PROMPTS, TinyModelSet, write_tiny_model_set
from tests.waiting import wait_for
from vcam.config import Config, config_from_dict
from vcam.runtime import Runtime
from vcam.sinks.virtual_camera import VirtualCameraSink
from vcam.sources.demo import DemoSource
from vcam.styles import load_translator
from vcam.translators.base import Translator
from vcam.translators.live2diff import model_size_for_output

W, H, FPS = 96, 64, 15.0
LOAD_TIMEOUT = 20.0


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    return write_tiny_model_set(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> ModelPool:
    """A fresh process pool for each test (what `from_style` and the runtime's status use)."""
    fresh = ModelPool()
    monkeypatch.setattr("vcam.model.pool._shared_pool", fresh)
    return fresh


@pytest.fixture
def config(tiny_set: TinyModelSet, monkeypatch: pytest.MonkeyPatch, pool: ModelPool) -> Config:
    """A config whose catalogue is the tiny one (the packaged catalogue replaced) and whose cache holds it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("vcam.store.catalogue.load_packaged_data", lambda: tiny_set.catalogue)
    return config_from_dict({"models": {"cache_dir": str(tiny_set.cache), "device": "cpu", "dtype": "float32"}})


def _file_tensors(cache: Path, repo: str, filename: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = cache / ("models--" + repo.replace("/", "--")) / "snapshots"
    (path,) = folder.glob(f"*/{filename}")
    return load_file(str(path))


def _nbytes(*modules: Any) -> int:
    return sum(module_storages(list(modules)).values())


def test_real_loader_builds_the_style_from_the_cache(config: Config, tiny_set: TinyModelSet, pool: ModelPool) -> None:
    translator_a: Any = load_translator("tiny-a", config)
    pipeline = translator_a.pipeline
    # the base's native size (sample_size 8 -> 64 px) shaped to the output's aspect
    assert (pipeline.width, pipeline.height) == model_size_for_output(
        (64, 64), config.output.width, config.output.height
    )
    assert pipeline.prompt == PROMPTS["tiny-a"]
    unet = pipeline.unet
    base_x = _file_tensors(tiny_set.cache, "tiny/sd15", "unet/diffusion_pytorch_model.safetensors")
    assert torch.equal(unet.unet.conv_in.weight, base_x["conv_in.weight"])  # no LoRA there: the file's weights
    # the LCM-LoRA (kohya names, alpha = rank) is fused into the attention projections
    lcm = _file_tensors(tiny_set.cache, "tiny/lcm-lora", "pytorch_lora_weights.safetensors")
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    key = "lora_unet_" + name.replace(".", "_")
    delta = lcm[f"{key}.lora_up.weight"] @ lcm[f"{key}.lora_down.weight"]
    fused = unet.unet.get_submodule(name).weight
    assert torch.allclose(fused, base_x[f"{name}.weight"] + delta, atol=1e-5)
    # the motion modules come from live2diff.ckpt's original names
    motion = torch.load(
        str(next((tiny_set.cache / "models--tiny--live2diff" / "snapshots").glob("*/live2diff.ckpt"))),
        weights_only=True,
    )
    original = (
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight"
    )
    assert torch.equal(
        unet.unet.down_blocks[0].motion_modules[0].transformer_blocks[0].attn1.to_q.weight, motion[original]
    )
    assert torch.equal(unet.depth_mapper.state_dict()["conv_out.weight"], motion["flow_conv_in.conv_out.weight"])

    # tiny-b: same base and LoRAs -> the same models, its own prompt, schedule and caches
    translator_b: Any = load_translator("tiny-b", config)
    assert translator_b.pipeline.unet is unet
    assert translator_b.pipeline.prompt_encoder.text_encoder is pipeline.prompt_encoder.text_encoder
    assert translator_b.pipeline.num_steps == 2 and translator_b.pipeline.schedule is not pipeline.schedule
    assert not torch.equal(translator_b.pipeline.prompt_embeds, pipeline.prompt_embeds)
    # tiny-lora: same base with a style LoRA -> a fused copy of the UNet, shared parts
    translator_lora: Any = load_translator("tiny-lora", config)
    lora_unet = translator_lora.pipeline.unet
    assert lora_unet is not unet and translator_lora.pipeline.codec is pipeline.codec
    style = _file_tensors(tiny_set.cache, "tiny/style-lora", "style_lora.safetensors")
    style_delta = 0.8 * style[f"unet.{name}.lora_B.weight"] @ style[f"unet.{name}.lora_A.weight"]
    assert torch.allclose(lora_unet.unet.get_submodule(name).weight, fused + style_delta, atol=1e-5)
    assert len(pool.unets()) == 2 and len(pool.parts()) == 1

    frames = [np.full((48, 80, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    translator_b.warmup(frames)
    outputs = [translator_b(frame) for frame in frames[:3]]
    assert outputs[0] is None and outputs[1] is not None and outputs[1].shape == (48, 80, 3)

    unet_ref = weakref.ref(lora_unet)
    translator_lora.close()
    del translator_lora, lora_unet
    assert unet_ref() is None  # released by the pool and the pipeline: freed at once, no GC pass (no pause)
    assert pool.unets() == [unet]
    translator_a.close()
    assert pool.unets() == [unet]  # tiny-b still uses it
    translator_b.close()
    assert pool.unets() == [] and pool.resident_bytes() == 0


def test_the_pool_answers_its_memory_figure_while_a_load_counts_its_tensors(
    config: Config, pool: ModelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's status (the output thread asks it every 15 ticks) reads the pool's resident bytes. After a load
    the pool recounts them by walking every tensor (tens of ms at real size): that walk (a load's second one,
    after the new model's own count) must not hold the lock the figure is read under."""
    walks: list[str] = []
    counting, release = threading.Event(), threading.Event()

    def slow_walk(modules: list[Any]) -> dict[int, int]:
        if threading.current_thread().name == "loader":
            walks.append("walk")
            if len(walks) == 2:
                counting.set()
                release.wait(30)
        return module_storages(modules)

    monkeypatch.setattr("vcam.model.pool.module_storages", slow_walk)
    loaded: list[Any] = []
    loader = threading.Thread(target=lambda: loaded.append(load_translator("tiny-a", config)), name="loader")
    loader.start()
    answers: list[int] = []
    try:
        wait_for(counting.is_set, timeout=120, what="the pool recounting after the UNet's load")
        asker = threading.Thread(target=lambda: answers.append(pool.resident_bytes()), daemon=True)
        asker.start()
        wait_for(lambda: answers, what="the pool's memory figure during the recount")
    finally:
        release.set()
        loader.join(120)
    assert answers == [0]  # the recount had not finished: nothing counted yet
    assert pool.resident_bytes() > 0
    loaded[0].close()
    assert pool.resident_bytes() == 0


def test_the_depth_rate_reaches_the_pipeline_through_the_real_loader(
    config: Config, tiny_set: TinyModelSet, pool: ModelPool
) -> None:
    """`[styles.NAME] depth_every` over a catalogue style -> StylePaths -> PipelineSpec -> the pipeline; the profile's
    rung sets it where the user did not, and pins nothing the user set."""
    from vcam.profile import build_ladder
    from vcam.styles import style_knobs

    translator: Any = load_translator("tiny-a", config)
    assert translator.pipeline.depth_every == 1  # the style's own: depth on every frame
    translator.close()
    knobs = style_knobs("tiny-a", config)
    assert knobs is not None and knobs.depth and "depth" not in knobs.pinned
    depth_rung = next(rung for rung in build_ladder(knobs) if rung.depth_every == 2)
    translator = load_translator("tiny-a", config, profile=depth_rung)
    assert translator.pipeline.depth_every == 2
    translator.close()
    set_in_table = config_from_dict(
        {"models": dataclasses.asdict(config.models), "styles": {"tiny-a": {"depth_every": 3}}}
    )
    knobs = style_knobs("tiny-a", set_in_table)
    assert knobs is not None and knobs.default.depth_every == 3 and "depth" in knobs.pinned
    translator = load_translator("tiny-a", set_in_table, profile=depth_rung)  # the user's value wins
    assert translator.pipeline.depth_every == 3
    translator.close()


class _Recorder:
    """The runtime's translator loader: the real one, remembering (weakly) what it built."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.built: dict[str, weakref.ref[Translator]] = {}

    def __call__(self, name: str) -> Translator:
        translator = load_translator(name, self.config)
        self.built[name] = weakref.ref(translator)
        return translator

    def get(self, name: str) -> Any:
        translator = self.built[name]()
        assert translator is not None, f"{name}'s translator is gone"
        return translator


@pytest.fixture
def streaming(config: Config) -> Iterator[tuple[Runtime, _Recorder, Any]]:
    """A running runtime on tiny-a (demo source -> fake virtual camera at FPS), warmed up."""
    recorder = _Recorder(config)
    with fake_backend() as backend:
        runtime = Runtime(
            DemoSource(W, H, FPS),
            [VirtualCameraSink(backend="fake")],
            width=W,
            height=H,
            fps=FPS,
            style="tiny-a",
            translator_loader=recorder,
        )
        runtime.start()
        try:
            wait_for(
                lambda: runtime.status().state == "running" and runtime.status().style == "tiny-a",
                timeout=LOAD_TIMEOUT,
                what="A",
            )
            yield runtime, recorder, backend.last()
        finally:
            runtime.stop()


def _switch(runtime: Runtime, name: str) -> None:
    runtime.set_style(name)
    wait_for(lambda: runtime.status().style == name, timeout=LOAD_TIMEOUT, what=f"the switch to {name}")


def _wait_streaming(pipeline: Any, frames: int, what: str) -> None:
    """Wait until `pipeline` has been fed `frames` more camera frames (it is the one in use)."""
    start = pipeline.frames_in
    wait_for(lambda: pipeline.frames_in >= start + frames, timeout=LOAD_TIMEOUT, what=f"{what} streaming")


def test_switching_styles_mid_stream_has_no_gap_and_frees_the_old_base(
    streaming: tuple[Runtime, _Recorder, Any], pool: ModelPool, tiny_set: TinyModelSet
) -> None:
    runtime, recorder, camera = streaming
    first = camera.frames_received
    translator_a = recorder.get("tiny-a")
    unet_x = translator_a.pipeline.unet
    parts_bytes = _nbytes(*[module for parts in pool.parts() for module in _parts_modules(parts)])
    one_x = _nbytes(unet_x) + parts_bytes
    assert runtime.status().model_memory_mb == pytest.approx(one_x / MB, abs=0.1)

    # A -> B: same base, other prompt: the models are shared, B's prompt embeddings are in use
    _switch(runtime, "tiny-b")
    translator_b = recorder.get("tiny-b")
    assert translator_b.pipeline.unet is unet_x and pool.unets() == [unet_x]
    assert translator_a.pipeline is not translator_b.pipeline
    del translator_a
    expected = translator_b.pipeline.prompt_encoder(PROMPTS["tiny-b"])
    assert translator_b.prompt == PROMPTS["tiny-b"]
    assert torch.equal(translator_b.pipeline.prompt_embeds, expected)
    _wait_streaming(translator_b.pipeline, 3, "B")
    assert runtime.status().model_memory_mb == pytest.approx(one_x / MB, abs=0.1)

    # A/B -> C: another base, loaded in the background, then swapped; base X freed
    pool.reset_peak()
    unet_ref = weakref.ref(unet_x)
    del unet_x, translator_b
    _switch(runtime, "tiny-c")
    translator_c = recorder.get("tiny-c")
    unet_y = translator_c.pipeline.unet
    base_y = _file_tensors(tiny_set.cache, "tiny/base-y", "unet/diffusion_pytorch_model.safetensors")
    assert torch.equal(unet_y.unet.conv_in.weight, base_y["conv_in.weight"])
    assert translator_c.prompt == PROMPTS["tiny-c"]
    _wait_streaming(translator_c.pipeline, 3, "C")
    assert unet_ref() is None, "base X is still referenced after the switch to C (freed without a GC pass)"
    assert pool.unets() == [unet_y]
    one_y = _nbytes(unet_y) + parts_bytes
    assert runtime.status().model_memory_mb == pytest.approx(one_y / MB, abs=0.1)
    assert pool.peak_bytes() == one_x + _nbytes(unet_y)  # two bases during the switch, the parts once
    assert runtime.status().last_error is None
    # the loads froze what was alive out of the collector's view (`CollectorPause`), the runtime with its callback
    # cycles among it: once stopped it must hold no model, or a process that runs again would keep the old models
    unet_y_ref = weakref.ref(unet_y)
    del unet_y, translator_c
    runtime.stop()
    assert unet_y_ref() is None, "the stopped runtime still holds its style's UNet"
    assert pool.unets() == [] and pool.resident_bytes() == 0
    # no gap: checked by mechanism in test_style_switch.py (the output thread waits on nothing a load holds), not
    # by wall time here (a loaded 2-core machine stretches any gap); the frames kept coming through the switches
    assert camera.frames_received > first


def test_a_style_that_fails_to_load_leaves_the_old_one_running(
    streaming: tuple[Runtime, _Recorder, Any], pool: ModelPool
) -> None:
    runtime, recorder, camera = streaming
    translator_a = recorder.get("tiny-a")
    runtime.set_style("tiny-broken")
    wait_for(
        lambda: "tiny-broken" not in runtime.status().styles_loading,
        timeout=LOAD_TIMEOUT,
        what="the broken load to end",
    )
    status = runtime.status()
    assert status.style == "tiny-a" and status.state == "running"
    assert status.last_error is not None
    assert "tiny-broken" in status.last_error and "diffusion_pytorch_model.safetensors" in status.last_error
    assert "truncated" in status.last_error
    assert [unet for unet in pool.unets()] == [translator_a.pipeline.unet]  # nothing of the failed load held
    sent = camera.frames_received
    _wait_streaming(translator_a.pipeline, 3, "A after the failed load")
    wait_for(lambda: camera.frames_received > sent + 5, timeout=LOAD_TIMEOUT, what="frames after the failure")


def _parts_modules(parts: Any) -> list[Any]:
    return [parts.text_encoder, parts.codec.vae, parts.depth_encoder.model]
