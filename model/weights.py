"""Loading ``StreamUNet`` weights from local files: SD1.5, Live2Diff / AnimateDiff motion modules, LoRAs.

- Base (spatial) weights: an SD1.5 diffusers folder (``unet/`` subfolder, or the unet folder itself) or a
  single-file checkpoint (original LDM key names, ``.safetensors`` or ``.ckpt``).
- Motion weights: Live2Diff's ``live2diff.ckpt`` (original AnimateDiff key names plus the depth mapping
  network ``flow_conv_in``; converted by ``convert_live2diff_motion_state_dict``, every key checked), the same
  converted to ``.safetensors``, or a diffusers ``MotionAdapter`` folder / file.
- LoRAs (LCM-LoRA, style LoRAs; diffusers, PEFT or kohya key names): fused into the weights, or kept as a
  PEFT adapter.

safetensors are preferred; pickles are read only with ``torch.load(weights_only=True)``. A missing, corrupt or
truncated file raises ``WeightsError`` naming the file.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.errors import WeightsError

from .materialize import assign_weights, empty_parameters, meta_tensor_names, owned_copy

if TYPE_CHECKING:
    import torch

    from .unet import StreamUNet

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_FILE_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
MAX_NAMED_KEYS = 8

# diffusers' config of the SD1.5 UNet (runwayml/stable-diffusion-v1-5 unet/config.json), for single files.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "use_linear_projection": False,
}

# Original AnimateDiff motion-module names -> diffusers' MotionAdapter names (applied in order).
_ANIMATEDIFF_RENAMES = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)
_PE_KEY = re.compile(r"\.(pos_encoder|pos_embed)\.pe$")


# -- files ---------------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file, or a pickle with ``torch.load(weights_only=True)``, onto the CPU.

    Both are memory-mapped (safetensors always; a pickle when it is a zip archive, as every ``torch.save`` since
    torch 1.6 writes): the tensors are private views of the file's pages (a write copies the page, never touches
    the file), read when first used; `vcam.model.materialize.assign_weights` copies them into memory of their own.
    A checkpoint wrapping its weights in ``state_dict`` is unwrapped. Raises ``WeightsError`` naming the file when
    it is missing, truncated, corrupt or of an unknown kind.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}: check the path or download the weights again")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types for truncation and bad headers
            raise WeightsError(
                f"cannot read weights file {path} ({path.stat().st_size} bytes): {error}; "
                "the file is corrupt or truncated: download it again"
            ) from error
    if suffix not in PICKLE_SUFFIXES:
        raise WeightsError(
            f"unknown weights file type {path.name!r}: expected one of {SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}"
        )
    try:
        # a zip checkpoint (every torch.save since 1.6) is memory-mapped: unpickling reads no tensor data, so the
        # loader never holds the GIL for a long read (the tensors' pages are read by later kernels, GIL released)
        mmap = zipfile.is_zipfile(path)
        loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # zip/pickle errors (truncation) and weights_only refusals
        raise WeightsError(
            f"cannot read weights file {path} ({path.stat().st_size} bytes) with torch.load(weights_only=True): "
            f"{error}; the file is corrupt or truncated, or holds more than tensors: download it again "
            "or convert it to .safetensors"
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # training checkpoints: {"state_dict": ..., "global_step": ...}
    if not isinstance(loaded, dict):
        raise WeightsError(f"weights file {path} does not hold a dict of tensors (found {type(loaded).__name__})")
    tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"weights file {path} holds no tensors (keys: {_name_keys([str(k) for k in loaded])})")
    if len(tensors) != len(loaded):
        logger.debug("%s: ignoring non-tensor entries %s", path, sorted(set(map(str, loaded)) - set(tensors)))
    return tensors


def _folder_weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILE_NAMES)}")


def _name_keys(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:MAX_NAMED_KEYS])
    more = f" and {len(keys) - MAX_NAMED_KEYS} more" if len(keys) > MAX_NAMED_KEYS else ""
    return f"{shown}{more}"


# -- key conversion ------------------------------------------------------------------------------------------


def convert_live2diff_motion_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Live2Diff checkpoint keys -> ``StreamUNet`` keys.

    Motion modules use the original AnimateDiff names (``down_blocks.0.motion_modules.0.temporal_transformer.
    transformer_blocks.0.attention_blocks.0.to_q.weight``); they become diffusers' ``MotionAdapter`` names under
    ``unet.`` (``unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight``). The depth mapping
    network ``flow_conv_in.*`` becomes ``depth_mapper.*``. Sinusoidal PE tables (``pos_encoder.pe``) are kept
    under the diffusers name ``pos_embed.pe`` of their block so the loader can check them. As Live2Diff's own
    loader does, ``module.`` (data-parallel wrapping) is removed and training-only ``grid`` buffers are
    dropped; a leading ``unet.`` is dropped; other keys pass through unchanged (the loader rejects them).
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if "grid" in key:
            continue
        name = key.replace("module.", "")  # AnimateDiff names never contain "module." ("motion_modules.")
        name = name.removeprefix("unet.")
        if name.startswith("flow_conv_in."):
            name = "depth_mapper." + name[len("flow_conv_in.") :]
        elif ".motion_modules." in name:
            pe_match = re.search(r"\.attention_blocks\.\d+\.pos_encoder\.pe$", name)
            if pe_match:  # one table per attention in AnimateDiff, one per block in diffusers
                name = name[: pe_match.start()] + ".pos_embed.pe"
            for old, new in _ANIMATEDIFF_RENAMES:
                name = name.replace(old, new)
            name = "unet." + name
        if name in converted and not _PE_KEY.search(name):
            raise WeightsError(f"two checkpoint keys convert to the same name {name!r} (one is {key!r})")
        converted[name] = value
    return converted


def convert_motion_adapter_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ``MotionAdapter`` keys (``down_blocks.0.motion_modules...``) -> ``StreamUNet`` keys (``unet.``)."""
    return {
        key if key.startswith(("unet.", "depth_mapper.")) else "unet." + key: value
        for key, value in state_dict.items()
    }


def is_original_animatediff(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when the keys are the original AnimateDiff / Live2Diff ones rather than diffusers'."""
    return any(".temporal_transformer." in key or key.startswith("flow_conv_in.") for key in state_dict)


# -- loading into a model ------------------------------------------------------------------------------------


def load_motion_state_dict(
    unet: StreamUNet, state_dict: dict[str, torch.Tensor], source: str, *, require_depth_mapper: bool
) -> None:
    """Load converted motion weights (``unet.*motion_modules*`` and ``depth_mapper.*``), checking every key.

    Missing and unexpected keys and shape mismatches raise ``WeightsError`` naming them. PE tables are checked
    against the model's sinusoidal table (over their common length) and not loaded. A mid-block motion module
    (AnimateDiff v2 adapters) is dropped with a warning: AnimateDiff's layout here has none.
    """

    model_state = unet.state_dict()
    expected = {
        key
        for key in model_state
        if (".motion_modules." in key and not _PE_KEY.search(key))
        or (require_depth_mapper and key.startswith("depth_mapper."))
    }
    mid_block = [key for key in state_dict if key.startswith("unet.mid_block.motion_modules.")]
    if mid_block:
        logger.warning("%s: dropping %d mid-block motion-module tensors (this UNet has none)", source, len(mid_block))
    to_load: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state_dict.items():
        if key in mid_block:
            continue
        if _PE_KEY.search(key):
            _check_pe_table(model_state, key, value, source)
            continue
        if key not in model_state or not (key in expected or key.startswith("depth_mapper.")):
            unexpected.append(key)
            continue
        to_load[key] = value
    _check_keys(
        source,
        to_load,
        model_state,
        unexpected,
        sorted(expected - set(to_load)),
        "keys",
        unexpected_hint="; this is not a Live2Diff/AnimateDiff motion checkpoint for this UNet layout",
        missing_hint="; the file is incomplete",
    )
    assign_weights(unet, to_load)
    logger.info("%s: loaded %d motion tensors", source, len(to_load))


def _check_keys(
    source: str,
    to_load: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    unexpected: list[str],
    missing: list[str],
    what: str,
    unexpected_hint: str = "",
    missing_hint: str = "",
) -> None:
    """Raise WeightsError naming the unexpected, missing or wrongly shaped keys of a state dict."""
    if unexpected:
        raise WeightsError(f"{source}: {len(unexpected)} unexpected {what}: {_name_keys(unexpected)}{unexpected_hint}")
    if missing:
        raise WeightsError(f"{source}: {len(missing)} missing {what}: {_name_keys(missing)}{missing_hint}")
    mismatched = [
        f"{key} {tuple(value.shape)} != {tuple(model_state[key].shape)}"
        for key, value in to_load.items()
        if value.shape != model_state[key].shape
    ]
    if mismatched:
        raise WeightsError(f"{source}: {len(mismatched)} {what} of the wrong shape: {_name_keys(mismatched)}")


def _check_pe_table(model_state: dict[str, torch.Tensor], key: str, value: torch.Tensor, source: str) -> None:
    import torch

    ours = model_state.get(key)
    if ours is None:
        return  # a table of a dropped or unexpected block; that block's weights are judged instead
    length = min(ours.shape[-2], value.shape[-2])
    if value.shape[-1] != ours.shape[-1] or not torch.allclose(
        value.reshape(-1, value.shape[-1])[:length].float(), ours[0, :length].float(), atol=1e-4
    ):
        raise WeightsError(f"{source}: {key} is not AnimateDiff's sinusoidal positional table")


def load_motion_weights(unet: StreamUNet, motion: str | Path) -> None:
    """Load Live2Diff's checkpoint (original names, with the depth mapper) or a diffusers MotionAdapter."""
    path = Path(motion)
    file = _folder_weights_file(path) if path.is_dir() else path
    state_dict = load_state_dict_file(file)
    if is_original_animatediff(state_dict):
        converted = convert_live2diff_motion_state_dict(state_dict)
        has_mapper = any(key.startswith("depth_mapper.") for key in converted)
        load_motion_state_dict(unet, converted, str(file), require_depth_mapper=has_mapper)
        if not has_mapper:
            logger.warning("%s has no depth mapping network: the depth prior stays off (zero)", file)
    else:
        converted = convert_motion_adapter_state_dict(state_dict)
        has_mapper = any(key.startswith("depth_mapper.") for key in converted)
        load_motion_state_dict(unet, converted, str(file), require_depth_mapper=has_mapper)


def base_unet_config(base: str | Path) -> dict[str, Any]:
    """The diffusers UNet2DConditionModel config of an SD1.5 folder, or SD1.5's own for a single file."""
    path = Path(base)
    if path.is_dir():
        for folder in (path / "unet", path):
            config_file = folder / "config.json"
            if config_file.is_file():
                try:
                    return dict(json.loads(config_file.read_text()))
                except (OSError, ValueError) as error:
                    raise WeightsError(f"cannot read UNet config {config_file}: {error}") from error
        raise WeightsError(f"{path} is not a diffusers model folder: no unet/config.json or config.json")
    return dict(SD15_UNET_CONFIG)


def stream_unet_config(unet_config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``StreamUNet`` config from a diffusers UNet2DConditionModel config (block types become motion ones)."""
    heads = unet_config.get("num_attention_heads") or unet_config.get("attention_head_dim", 8)
    config: dict[str, Any] = {
        "sample_size": unet_config.get("sample_size", 64),
        "in_channels": unet_config.get("in_channels", 4),
        "out_channels": unet_config.get("out_channels", 4),
        "down_block_types": tuple(
            "CrossAttnDownBlockMotion" if "CrossAttn" in kind else "DownBlockMotion"
            for kind in unet_config["down_block_types"]
        ),
        "up_block_types": tuple(
            "CrossAttnUpBlockMotion" if "CrossAttn" in kind else "UpBlockMotion"
            for kind in unet_config["up_block_types"]
        ),
        "block_out_channels": tuple(unet_config["block_out_channels"]),
        "layers_per_block": unet_config.get("layers_per_block", 2),
        "norm_num_groups": unet_config.get("norm_num_groups", 32),
        "cross_attention_dim": unet_config.get("cross_attention_dim", 768),
        "num_attention_heads": tuple(heads) if isinstance(heads, list) else heads,
        "use_linear_projection": unet_config.get("use_linear_projection", False),
        "time_cond_proj_dim": unet_config.get("time_cond_proj_dim"),
    }
    config.update(overrides)
    return config


def load_base_state_dict(base: str | Path) -> dict[str, torch.Tensor]:
    """The SD1.5 UNet weights in diffusers names, from a diffusers folder or a single-file checkpoint."""
    path = Path(base)
    if path.is_dir():
        folder = path / "unet" if (path / "unet").is_dir() else path
        return load_state_dict_file(_folder_weights_file(folder))
    checkpoint = load_state_dict_file(path)
    if not any(key.startswith("model.diffusion_model.") for key in checkpoint):
        if any(key.startswith("down_blocks.") for key in checkpoint):
            return checkpoint  # already a diffusers UNet state dict
        raise WeightsError(f"{path} is not a Stable Diffusion checkpoint: no model.diffusion_model.* keys")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return dict(convert_ldm_unet_checkpoint(checkpoint, SD15_UNET_CONFIG))


def load_base_weights(unet: StreamUNet, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load spatial UNet weights (diffusers UNet2DConditionModel names) into ``unet.unet``; checks every key."""

    model_state = unet.unet.state_dict()
    spatial = {key for key in model_state if ".motion_modules." not in key}
    unexpected = [key for key in state_dict if key not in spatial]
    _check_keys(source, state_dict, model_state, unexpected, sorted(spatial - set(state_dict)), "UNet keys")
    assign_weights(unet.unet, state_dict)


def _finish_depth_mapper(unet: StreamUNet, motion: Path) -> None:
    """A motion file without the depth mapper leaves it unloaded: it gets its own init (its zero last layer keeps
    the depth prior off). Any other tensor still without data is a loader fault, named."""
    from .depth_mapper import DepthMapper

    empty = meta_tensor_names(unet)
    if empty and unet.depth_mapper is not None and all(name.startswith("depth_mapper.") for name in empty):
        config = unet.config
        unet.depth_mapper = DepthMapper(
            config["in_channels"], config["block_out_channels"][0], tuple(config["depth_mapper_channels"])
        )
        empty = meta_tensor_names(unet)
    if empty:
        raise WeightsError(f"{motion}: {len(empty)} UNet tensors were given no weights: {_name_keys(empty)}")


def load_stream_unet(
    base: str | Path,
    motion: str | Path | None,
    *,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    **config_overrides: Any,
) -> StreamUNet:
    """Build a ``StreamUNet`` from SD1.5 weights and (optionally) motion weights, all from local paths.

    base: an SD1.5 diffusers folder (with ``unet/``), a UNet folder, or a single-file checkpoint.
    motion: Live2Diff's ``live2diff.ckpt`` (or its ``.safetensors`` conversion) or a diffusers MotionAdapter
    folder/file; None leaves the motion modules random (tests only). torch_dtype defaults to float16 on CUDA,
    float32 elsewhere.
    ``config_overrides`` go to the ``StreamUNet`` config (e.g. ``attention_backend``, ``window``).
    """
    import torch

    from .unet import StreamUNet

    overrides = dict(config_overrides)
    motion_path = Path(motion) if motion is not None else None
    if motion_path is not None and motion_path.is_dir() and (motion_path / "config.json").is_file():
        adapter_config = json.loads((motion_path / "config.json").read_text())
        overrides.setdefault("motion_max_seq_length", adapter_config.get("motion_max_seq_length", 32))
        overrides.setdefault("motion_num_attention_heads", adapter_config.get("motion_num_attention_heads", 8))
    base_state = load_base_state_dict(base)
    config = stream_unet_config(base_unet_config(base), **overrides)
    if motion_path is None:
        logger.warning("no motion weights given: the motion modules of the UNet are random")
        unet = StreamUNet(**config)
    else:
        with empty_parameters():  # every parameter comes from the files: no random init to throw away
            unet = StreamUNet(**config)
    load_base_weights(unet, base_state, str(base))
    del base_state
    if motion_path is not None:
        load_motion_weights(unet, motion_path)
        _finish_depth_mapper(unet, motion_path)
    # nn.Module.to: ModelMixin.to warns about fp32 modules on every dtype cast, even when there are none
    if torch_dtype is None:
        torch_dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return torch.nn.Module.to(unet, device=device, dtype=torch_dtype).eval()


# -- LoRA ----------------------------------------------------------------------------------------------------


def lora_unet_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, float] | None]:
    """A LoRA file in diffusers names (UNet keys under ``unet.``) and its network alphas, if any.

    Accepts diffusers/PEFT names and kohya/A1111 names (``lora_unet_*``), which diffusers converts. Text-encoder
    keys are kept in the dict; ``load_lora_adapter`` uses only the UNet's (``vcam.model.text_lora`` applies the
    text-encoder half while a style's prompts are encoded).
    """
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    state_dict = load_state_dict_file(path)
    try:
        converted, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(state_dict)
    except Exception as error:  # diffusers raises ValueError/KeyError for foreign key layouts
        raise WeightsError(f"{path} is not a LoRA for an SD1.5 UNet: {error}") from error
    if not any(key.startswith("unet.") for key in converted):
        raise WeightsError(f"{path} holds no UNet LoRA weights (found e.g. {_name_keys(list(converted)[:3])})")
    text_keys = [key for key in converted if not key.startswith("unet.")]
    if text_keys:  # applied per prompt encode by vcam.model.text_lora, not here
        logger.debug("%s: %d text-encoder LoRA tensors left to the prompt encoder", path, len(text_keys))
    return converted, alphas


def load_lora_adapters(unet: StreamUNet, loras: Sequence[tuple[str | Path, str, float]]) -> None:
    """Attach LoRAs as PEFT adapters, ``(path, adapter_name, scale)`` each, and activate exactly these.

    The weights stay unchanged (the LoRA runs beside them on every call); ``set_lora_scales`` changes scales.
    """
    dtype = unet.dtype
    for path, adapter_name, _ in loras:
        state_dict, alphas = lora_unet_state_dict(path)
        # at the UNet's dtype, copied one tensor at a time: PEFT then assigns them to LoRA layers built empty
        # (low_cpu_mem_usage: no kaiming init of layers whose weights are read next), the values PEFT would copy
        state_dict = {key: owned_copy(value, dtype) for key, value in state_dict.items()}
        try:
            unet.unet.load_lora_adapter(
                state_dict, network_alphas=alphas, prefix="unet", adapter_name=adapter_name, low_cpu_mem_usage=True
            )
        except Exception as error:  # PEFT raises ValueError/RuntimeError for names or shapes that do not fit
            raise WeightsError(f"cannot apply LoRA {path} to this UNet: {error}") from error
    set_lora_scales(unet, [name for _, name, _ in loras], [scale for _, _, scale in loras])


def load_lora_adapter(unet: StreamUNet, path: str | Path, adapter_name: str, scale: float = 1.0) -> None:
    """Attach one LoRA as a PEFT adapter and make it the only active one (see ``load_lora_adapters``)."""
    load_lora_adapters(unet, [(path, adapter_name, scale)])


def set_lora_scales(unet: StreamUNet, adapter_names: list[str], scales: list[float]) -> None:
    """Activate exactly these PEFT adapters, with their scales."""
    if len(adapter_names) != len(scales):
        raise ValueError(f"{len(adapter_names)} adapters need {len(adapter_names)} scales, got {scales}")
    unet.unet.set_adapters(adapter_names, weights=scales)


def fuse_lora(unet: StreamUNet, path: str | Path, scale: float = 1.0, adapter_name: str = "fused") -> None:
    """Fuse a LoRA into the UNet's weights at ``scale`` and drop the adapter (no per-call LoRA cost)."""
    load_lora_adapter(unet, path, adapter_name, scale=1.0)
    unet.unet.fuse_lora(lora_scale=scale, adapter_names=[adapter_name])
    unet.unet.unload_lora()
