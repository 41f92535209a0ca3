"""Loading StreamUNet weights: Live2Diff's original names, diffusers MotionAdapter, SD1.5 folders, LoRA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import MotionAdapter
from safetensors.torch import save_file
from vcam.model.unet import StreamUNet, tiny_stream_unet
from vcam.model.weights import (
    convert_live2diff_motion_state_dict,
    fuse_lora,
    load_lora_adapter,
    load_motion_weights,
    load_state_dict_file,
    load_stream_unet,
)

from tests.model_helpers import LOADED_OUTPUT_TOLERANCE, assert_same_weights, random_clip, to_live2diff_names
from vcam.errors import WeightsError

SIZE = 8
TINY_OVERRIDES = {"motion_num_attention_heads": 2, "depth_mapper_channels": (8, 16)}


def predict(unet: StreamUNet, depth: bool = True) -> torch.Tensor:
    clip = random_clip(8, SIZE, seed=11)
    with torch.no_grad():
        return unet.warmup(
            clip["latents"], 600, clip["prompt"], clip["depth"] if depth else None, unet.create_caches(1), 0
        )


def motion_state(unet: StreamUNet) -> dict[str, torch.Tensor]:
    return {k: v for k, v in unet.state_dict().items() if ".motion_modules." in k or k.startswith("depth_mapper.")}


def scrambled(seed: int) -> StreamUNet:
    """The source's spatial weights with random motion modules and depth mapper: what loading must fix."""
    model = tiny_stream_unet(seed=0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".motion_modules." in name or name.startswith("depth_mapper."):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def source() -> StreamUNet:
    return tiny_stream_unet(seed=0)


@pytest.fixture(scope="module")
def live2diff_ckpt(source: StreamUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live2diff") / "live2diff.ckpt"
    # as Live2Diff saved it: data-parallel "module." names, a training-only grid buffer, the global step
    weights = {"module." + key: value for key, value in to_live2diff_names(motion_state(source)).items()}
    weights["module.down_blocks.0.motion_modules.0.temporal_transformer.grid"] = torch.zeros(2, 2)
    torch.save({"state_dict": weights, "global_step": 12000}, path)
    return path


@pytest.fixture(scope="module")
def adapter_folder(source: StreamUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    adapter = MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_max_seq_length=32,  # diffusers' default: longer than ours, the loader adapts
        use_motion_mid_block=False,
    )
    adapter_state = {k[len("unet.") :]: v for k, v in motion_state(source).items() if k.startswith("unet.")}
    adapter_state = {k: v for k, v in adapter_state.items() if not k.endswith("pos_embed.pe")}
    missing, unexpected = adapter.load_state_dict(adapter_state, strict=False)
    assert not unexpected and all(key.endswith("pos_embed.pe") for key in missing)
    folder = tmp_path_factory.mktemp("adapter")
    adapter.save_pretrained(folder)
    return folder


def test_live2diff_names_convert_to_diffusers_names(source: StreamUNet) -> None:
    original = to_live2diff_names(motion_state(source))
    block = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0"
    assert f"{block}.attention_blocks.1.to_k.weight" in original
    assert f"{block}.attention_blocks.0.pos_encoder.pe" in original
    assert "flow_conv_in.blocks.1.weight" in original
    converted = convert_live2diff_motion_state_dict(original)
    assert set(converted) == set(motion_state(source))


def test_live2diff_checkpoint_and_motion_adapter_load_identically(
    source: StreamUNet, live2diff_ckpt: Path, adapter_folder: Path
) -> None:
    from_live2diff = scrambled(5)
    assert not torch.allclose(predict(from_live2diff, depth=False), predict(source, depth=False))
    load_motion_weights(from_live2diff, live2diff_ckpt)
    assert_same_weights(from_live2diff, source)
    torch.testing.assert_close(predict(from_live2diff), predict(source), **LOADED_OUTPUT_TOLERANCE)

    from_adapter = scrambled(6)
    load_motion_weights(from_adapter, adapter_folder)
    assert_same_weights(from_adapter.unet, from_live2diff.unet)  # an adapter has no depth mapper
    torch.testing.assert_close(
        predict(from_adapter, depth=False), predict(from_live2diff, depth=False), **LOADED_OUTPUT_TOLERANCE
    )


def test_converted_safetensors_loads(source: StreamUNet, tmp_path: Path) -> None:
    path = tmp_path / "live2diff.safetensors"
    save_file(to_live2diff_names(motion_state(source)), path)
    model = scrambled(7)
    load_motion_weights(model, path)
    assert_same_weights(model, source)
    torch.testing.assert_close(predict(model), predict(source), **LOADED_OUTPUT_TOLERANCE)


def test_missing_key_is_named(source: StreamUNet, tmp_path: Path) -> None:
    state = to_live2diff_names(motion_state(source))
    gone = "up_blocks.1.motion_modules.1.temporal_transformer.proj_in.weight"
    del state[gone]
    path = tmp_path / "missing.safetensors"
    save_file(state, path)
    with pytest.raises(WeightsError, match=r"1 missing keys: unet\.up_blocks\.1\.motion_modules\.1\.proj_in\.weight"):
        load_motion_weights(tiny_stream_unet(), path)


def test_extra_key_is_named(source: StreamUNet, tmp_path: Path) -> None:
    state = to_live2diff_names(motion_state(source))
    state["down_blocks.0.motion_modules.0.temporal_transformer.extra_gate.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    save_file(state, path)
    with pytest.raises(WeightsError, match=r"1 unexpected keys: unet\.down_blocks\.0\.motion_modules\.0\.extra_gate"):
        load_motion_weights(tiny_stream_unet(), path)


@pytest.mark.parametrize("name", ["motion.safetensors", "motion.ckpt"])
def test_truncated_file_is_named(source: StreamUNet, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    state = to_live2diff_names(motion_state(source))
    if name.endswith(".safetensors"):
        save_file(state, path)
    else:
        torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"cannot read weights file .*{name}.*corrupt or truncated"):
        load_state_dict_file(path)
    with pytest.raises(WeightsError, match="weights file not found: .*absent.ckpt"):
        load_state_dict_file(tmp_path / "absent.ckpt")


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"weights": torch.zeros(2), "object": Path("x")}, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_state_dict_file(path)


def test_load_stream_unet_from_diffusers_folder(source: StreamUNet, live2diff_ckpt: Path, base_folder: Path) -> None:
    loaded = load_stream_unet(base_folder, live2diff_ckpt, **TINY_OVERRIDES)
    assert loaded.dtype == torch.float32
    assert_same_weights(loaded, source)
    torch.testing.assert_close(predict(loaded), predict(source), **LOADED_OUTPUT_TOLERANCE)
    half = load_stream_unet(base_folder, live2diff_ckpt, torch_dtype=torch.float16, **TINY_OVERRIDES)
    assert half.dtype == torch.float16


def test_lora_fused_equals_adapter(source: StreamUNet, tmp_path: Path) -> None:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = tiny_stream_unet(seed=0)
    spatial = [n for n, _ in model.unet.named_modules() if ".attentions." in n and n.endswith(("to_q", "to_v"))]
    config = LoraConfig(r=4, lora_alpha=4, target_modules=spatial, init_lora_weights=False)
    torch.manual_seed(3)
    model.unet.add_adapter(config, adapter_name="style")
    lora = {
        "unet." + k: v.contiguous() for k, v in get_peft_model_state_dict(model.unet, adapter_name="style").items()
    }
    path = tmp_path / "style_lora.safetensors"
    save_file(lora, path)

    # the same LoRA under kohya/A1111 names (lora_unet_*.lora_down/lora_up/alpha), as many style LoRAs ship
    kohya = {}
    for key, value in lora.items():
        module, kind = key.removeprefix("unet.").rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(4.0)
    kohya_path = tmp_path / "style_kohya.safetensors"
    save_file(kohya, kohya_path)

    as_adapter = tiny_stream_unet(seed=0)
    load_lora_adapter(as_adapter, path, "style", scale=0.5)
    fused = tiny_stream_unet(seed=0)
    fuse_lora(fused, path, scale=0.5)
    assert not any("lora" in name for name in fused.state_dict())
    torch.testing.assert_close(predict(fused), predict(as_adapter), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(predict(fused), predict(source))
    from_kohya = tiny_stream_unet(seed=0)
    fuse_lora(from_kohya, kohya_path, scale=0.5)
    torch.testing.assert_close(predict(from_kohya), predict(fused), rtol=1e-4, atol=1e-5)


@pytest.mark.weights
def test_real_live2diff_checkpoint_loads() -> None:
    """With the real live2diff.ckpt: every key converts and loads into the SD1.5-sized model."""
    path = os.environ.get("VCAM_LIVE2DIFF_CKPT", "")
    if not path or not Path(path).is_file():
        pytest.skip("set VCAM_LIVE2DIFF_CKPT to the path of live2diff.ckpt to run")
    model = StreamUNet()
    load_motion_weights(model, path)
    assert model.depth_mapper is not None and model.depth_mapper.conv_out.weight.any()


# -- what a load costs: no init thrown away, memory-mapped files, owned weights --------------------------------

INIT_FUNCTIONS = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "xavier_uniform_", "zeros_", "ones_")


@pytest.fixture(scope="module")
def base_folder(source: StreamUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source's spatial weights as a diffusers UNet folder (``unet/``)."""
    spatial = {k: v for k, v in source.unet.state_dict().items() if ".motion_modules." not in k}
    base = UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    )
    base.load_state_dict(spatial)
    folder = tmp_path_factory.mktemp("base")
    base.save_pretrained(folder / "unet")
    return folder


@pytest.fixture(scope="module")
def lcm_lora_file(source: StreamUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rank-4 LoRA on the spatial attention projections, in fp16 (as the LCM-LoRA ships), diffusers names."""
    generator = torch.Generator().manual_seed(21)
    lora = {}
    for name, module in source.unet.named_modules():
        if ".attentions." in name and name.endswith(("to_q", "to_v")):
            lora[f"unet.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator)
            lora[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.1
    path = tmp_path_factory.mktemp("lora") / "lcm_lora.safetensors"
    save_file({key: value.half() for key, value in lora.items()}, path)
    return path


def _initialised_then_copied(base_folder: Path, motion: Path, lora: Path) -> StreamUNet:
    """The UNet as loads built it before: initialised at random, then the files' tensors copied in, the LoRA's
    layers initialised by PEFT, then the LoRA's tensors copied in and fused."""
    from vcam.model.weights import (
        base_unet_config,
        convert_live2diff_motion_state_dict,
        load_base_state_dict,
        lora_unet_state_dict,
        stream_unet_config,
    )

    unet = StreamUNet(**stream_unet_config(base_unet_config(base_folder), **TINY_OVERRIDES))
    unet.unet.load_state_dict(load_base_state_dict(base_folder), strict=False)
    motion_tensors = convert_live2diff_motion_state_dict(load_state_dict_file(motion))
    unet.load_state_dict({k: v for k, v in motion_tensors.items() if not k.endswith(".pe")}, strict=False)
    state_dict, alphas = lora_unet_state_dict(lora)
    unet.unet.load_lora_adapter(state_dict, network_alphas=alphas, prefix="unet", adapter_name="lcm")
    unet.unet.fuse_lora(lora_scale=0.5, adapter_names=["lcm"])
    unet.unet.unload_lora()
    return unet.eval()


def test_a_load_runs_no_parameter_init_and_gives_the_same_weights(
    base_folder: Path, live2diff_ckpt: Path, lcm_lora_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNet and the LoRA's layers are built empty and given the files' tensors: no random init runs on real
    tensors (at SD1.5 size it was seconds of CPU), and every tensor equals what init-then-copy gave."""
    initialised: list[str] = []
    for name in INIT_FUNCTIONS:
        original = getattr(torch.nn.init, name)

        def counting(
            tensor: torch.Tensor, *args: object, _name: str = name, _original: object = original, **kwargs: object
        ) -> object:
            if not tensor.is_meta:
                initialised.append(f"{_name}{tuple(tensor.shape)}")
            return _original(tensor, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(torch.nn.init, name, counting)
    loaded = load_stream_unet(base_folder, live2diff_ckpt, **TINY_OVERRIDES)
    fuse_lora(loaded, lcm_lora_file, scale=0.5, adapter_name="lcm")
    assert initialised == []
    monkeypatch.undo()

    reference = _initialised_then_copied(base_folder, live2diff_ckpt, lcm_lora_file)
    assert_same_weights(loaded, reference)
    for name, tensor in loaded.state_dict().items():  # contiguous, in memory of their own, not views of a file
        assert tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes, name


def test_a_zip_checkpoint_is_memory_mapped_and_a_legacy_pickle_still_loads(
    source: StreamUNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = to_live2diff_names(motion_state(source))
    zipped, legacy = tmp_path / "zip.ckpt", tmp_path / "legacy.ckpt"
    torch.save({"state_dict": weights}, zipped)
    torch.save({"state_dict": weights}, legacy, _use_new_zipfile_serialization=False)
    mmap_flags: list[bool] = []
    original_load = torch.load

    def recording_load(*args: object, **kwargs: object) -> object:
        mmap_flags.append(bool(kwargs.get("mmap")))
        return original_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", recording_load)
    from_zip = load_state_dict_file(zipped)
    from_legacy = load_state_dict_file(legacy)
    assert mmap_flags == [True, False]  # unpickling a zip checkpoint reads no tensor data
    assert set(from_zip) == set(from_legacy) == set(weights)
    for key, value in weights.items():
        assert torch.equal(from_zip[key], value) and torch.equal(from_legacy[key], value), key


def test_a_motion_file_without_depth_mapper_leaves_it_initialised(base_folder: Path, adapter_folder: Path) -> None:
    """The depth mapper (not in a MotionAdapter) gets its own init: its zero last layer keeps the prior off."""
    from vcam.model.materialize import meta_tensor_names

    loaded = load_stream_unet(base_folder, adapter_folder, **TINY_OVERRIDES)
    assert meta_tensor_names(loaded) == []
    assert loaded.depth_mapper is not None and not loaded.depth_mapper.conv_out.weight.any()
    assert loaded.depth_mapper.conv_in.weight.any()
