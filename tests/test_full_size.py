"""The real loading path at REAL model size, on random weights (tests/full_size_weights.py), through the style path.

Opt-in (minutes of CPU, about 5 GB of disk and 12 GB of memory): ``VCAM_FULL_SIZE=1 .venv/bin/python -m pytest
tests/test_full_size.py -q``; ``VCAM_FULL_SIZE_DIR=/some/folder`` keeps the written model set there and reuses it.
`load_translator("pixar", config)` with the packaged catalogue and a cache holding the set (HF_HUB_OFFLINE=1) must
load every tensor of every file (the UNet from the single-file checkpoint, the 40 temporal attentions and the depth
mapper from live2diff.ckpt, the LCM-LoRA fused, the text encoder from the checkpoint, TAESD, DPT-Hybrid), then a
small-size pipeline on the same models must stream frames with finite latents.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.full_size_weights import (
    STYLE,
    FullSizeModelSet,
    read_pickle_state_dict,
    write_full_size_model_set,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VCAM_FULL_SIZE") != "1",
        reason="full-size weights test: run with VCAM_FULL_SIZE=1 (optionally VCAM_FULL_SIZE_DIR=folder to keep the "
        "5 GB model set); takes minutes",
    ),
]

SMALL_SIZE = (128, 72)  # model width, height: latent 16x9, odd sides like the default 512x288 (latent 64x36)
CAMERA = (160, 120)
TEMPORAL_ATTENTIONS = 40


@pytest.fixture(scope="module")
def full_set() -> Iterator[FullSizeModelSet]:
    """The set in VCAM_FULL_SIZE_DIR (written once, kept), else in a temporary folder removed afterwards."""
    folder = os.environ.get("VCAM_FULL_SIZE_DIR")
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="vcam-full-size-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        model_set = write_full_size_model_set(root)
        print(f"full-size set ready in {time.perf_counter() - started:.1f} s; natural sizes {model_set.natural_sizes}")
        yield model_set
    finally:
        if not folder:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(full_set: FullSizeModelSet) -> Iterator[dict[str, Any]]:
    """The style loaded through `load_translator` (packaged catalogue, offline), with its store and config."""
    import vcam.model.pool
    from vcam.model.pool import ModelPool

    from vcam.config import config_from_dict
    from vcam.store.store import ModelStore
    from vcam.styles import load_translator

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(vcam.model.pool, "_shared_pool", ModelPool())
    config = config_from_dict({"models": {"cache_dir": str(full_set.cache), "device": "cpu", "dtype": "float32"}})
    store = ModelStore.from_config(config)
    assert store.is_downloaded(STYLE), store.missing_files(STYLE)
    started = time.perf_counter()
    translator: Any = load_translator(STYLE, config)
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    print(f"load_translator({STYLE!r}) took {seconds:.1f} s; peak resident memory so far {peak_gb:.1f} GB")
    yield {"translator": translator, "store": store, "config": config, "paths": store.path(STYLE)}
    translator.close()
    monkeypatch.undo()


def _assert_module_equals_file(module: Any, tensors: dict[str, Any], what: str) -> None:
    """Every tensor of `module` equals the file's (key names matched by suffix: files may carry a prefix)."""
    import torch

    state = {key: value for key, value in module.state_dict().items() if not key.endswith("position_ids")}
    by_suffix = {key.removeprefix("text_model."): value for key, value in tensors.items()}
    unmatched = []
    for key, value in state.items():
        source = tensors.get(key, by_suffix.get(key.removeprefix("text_model.")))
        if source is None:
            unmatched.append(key)
            continue
        assert torch.equal(value.float(), source.float()), f"{what}: {key} differs from the file"
    assert not unmatched, f"{what}: {len(unmatched)} tensors not in the file, e.g. {unmatched[:5]}"


def _assert_lora_fused(unet: Any, base: dict[str, Any], lora: dict[str, Any]) -> None:
    import torch

    modules = {"lora_unet_" + name.replace(".", "_"): name for name, _ in unet.unet.named_modules()}
    layers = [key.removesuffix(".lora_down.weight") for key in lora if key.endswith(".lora_down.weight")]
    assert len(layers) > 200, len(layers)
    for layer in layers:
        name = modules[layer]
        down = lora[f"{layer}.lora_down.weight"].float()  # [r, in] or [r, in, k, k]
        up = lora[f"{layer}.lora_up.weight"].float()  # [out, r] or [out, r, 1, 1]
        scale = float(lora[f"{layer}.alpha"]) / down.shape[0]
        weight = base[name + ".weight"].float()
        expected = weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * scale
        fused = unet.unet.get_submodule(name).weight
        assert torch.allclose(fused, expected, atol=1e-4, rtol=1e-3), f"LCM-LoRA layer {name} is not fused"


def test_every_file_loads_at_real_size(loaded: dict[str, Any]) -> None:
    import torch
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file
    from vcam.model.weights import SD15_UNET_CONFIG, convert_live2diff_motion_state_dict

    pipeline = loaded["translator"].pipeline
    paths = loaded["paths"]
    unet = pipeline.unet
    config = unet.unet.config
    assert tuple(config.block_out_channels) == tuple(SD15_UNET_CONFIG["block_out_channels"])
    assert config.cross_attention_dim == 768 and config.layers_per_block == 2 and config.sample_size == 64
    blocks = list(unet.temporal_transformer_blocks())
    assert 2 * len(blocks) == unet.num_temporal_layers == TEMPORAL_ATTENTIONS
    assert (pipeline.width, pipeline.height) == (512, 288)  # SD1.5's native side, shaped to the 1280x720 output

    # the base UNet from the single file: a tensor no LoRA touches is the file's, converted from its LDM name
    base = read_pickle_state_dict(paths.base)
    conv_in = base["model.diffusion_model.input_blocks.0.0.weight"]
    assert torch.equal(unet.unet.conv_in.weight, conv_in.float())
    # every layer of the LCM-LoRA was fused: weight == base + up @ down * alpha / rank (diffusers skips what it
    # cannot map with a warning only, so each layer is checked)
    _assert_lora_fused(unet, convert_ldm_unet_checkpoint(base, SD15_UNET_CONFIG), load_file(str(paths.lcm_lora)))
    # the text encoder is the single file's own (cond_stage_model), not SD1.5's
    clip = {
        key[len("cond_stage_model.transformer.") :]: value
        for key, value in base.items()
        if key.startswith("cond_stage_model.transformer.")
    }
    _assert_module_equals_file(pipeline.prompt_encoder.text_encoder, clip, "text encoder")
    del base, clip

    # every motion tensor and the depth mapper from live2diff.ckpt
    motion = convert_live2diff_motion_state_dict(read_pickle_state_dict(paths.motion))
    state = unet.state_dict()
    loaded_keys = [key for key in motion if not key.endswith(".pe")]
    expected = {key for key in state if ".motion_modules." in key or key.startswith("depth_mapper.")}
    assert set(loaded_keys) == {key for key in expected if not key.endswith(".pe")}
    for key in loaded_keys:
        assert torch.equal(state[key], motion[key].float()), key
    del motion, state

    _assert_module_equals_file(
        pipeline.codec.vae, load_file(str(Path(paths.taesd) / "diffusion_pytorch_model.safetensors")), "TAESD"
    )
    depth_model = pipeline.depth_encoder.model
    assert depth_model.config.is_hybrid and pipeline.depth_encoder.input_size == 384
    _assert_module_equals_file(depth_model, read_pickle_state_dict(Path(paths.depth) / "pytorch_model.bin"), "DPT")


def test_streams_frames_at_a_small_size_on_the_real_models(loaded: dict[str, Any]) -> None:
    import torch

    from vcam.translators.live2diff import Live2DiffTranslator

    config, paths = loaded["config"], loaded["paths"]
    unet = loaded["translator"].pipeline.unet
    small: Any = Live2DiffTranslator.from_style(paths, config, size=SMALL_SIZE)
    try:
        assert small.pipeline.unet is unet  # the pool shares the loaded UNet
        finite: list[bool] = []
        hook = unet.unet.register_forward_hook(  # the SD UNet inside: warmup and stream both call it
            lambda _module, _inputs, output: finite.append(bool(torch.isfinite(_sample(output)).all()))
        )
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (CAMERA[1], CAMERA[0], 3), dtype=np.uint8) for _ in range(14)]
        started = time.perf_counter()
        outputs = [small(frame) for frame in frames]
        seconds = time.perf_counter() - started
        hook.remove()
        shown = [output for output in outputs if output is not None]
        middle = np.stack(shown)[:, CAMERA[1] // 2]  # a row inside the model's region (crop mode letterboxes)
        print(
            f"{len(frames)} frames at {SMALL_SIZE}: {seconds:.1f} s;",
            f"mid-row mean {middle.mean():.1f}, std {middle.std():.1f}",
        )
        # nothing until the warmup has its frames; then the output of call c is the input of call c - latency
        first = small.pipeline.warmup_frames - 1
        assert all(output is None for output in outputs[:first]) and len(shown) == len(frames) - first
        assert all(output.shape == (CAMERA[1], CAMERA[0], 3) and output.dtype == np.uint8 for output in shown)
        assert finite and all(finite), f"{finite.count(False)} of {len(finite)} UNet calls gave non-finite output"
        assert not small.warming_up
    finally:
        small.close()


def _sample(output: Any) -> Any:
    return output.sample if hasattr(output, "sample") else output[0] if isinstance(output, tuple) else output
