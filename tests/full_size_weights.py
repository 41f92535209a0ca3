"""A REAL-SIZE model set with random (seeded) weights, in a Hugging Face cache, for the packaged style `pixar`.

Nothing can be downloaded here, so `write_full_size_model_set(folder)` writes every file that `pixar` needs, under
the packaged catalogue's repositories, revisions and file names, at the real models' sizes and layouts:

- stable-diffusion-v1-5/stable-diffusion-v1-5: model_index.json, scheduler/, tokenizer/ (a CLIP-sized vocabulary
  of 49408 ids with the real BOS/EOS ids 49406/49407; the real BPE merges are not available), text_encoder/
  (CLIP ViT-L/14 text model: hidden 768, 12 layers, ``text_model.*`` names, fp32), vae/ (SD's AutoencoderKL, fp32)
  and unet/config.json;
- nitrosocke/mo-di-diffusion: moDi-v1-pruned.ckpt, an LDM single file (pickle ``{"state_dict": ...,
  "global_step": ...}``, fp16) with the SD1.5 UNet under ``model.diffusion_model.*`` (diffusers names converted
  back by `ldm_unet_state_dict`, the inverse of diffusers' ``convert_ldm_unet_checkpoint``) and its own CLIP text
  model under ``cond_stage_model.transformer.*``. Its VAE (``first_stage_model.*``) is left out: nothing loads it;
- Leoxing/Live2Diff: live2diff.ckpt, ``{"state_dict": {"module." + original AnimateDiff names, pos_encoder.pe
  tables, flow_conv_in.*}, "global_step": ...}`` in fp32, padded (a zip comment) to the catalogue's exact size:
  its natural size, in `natural_sizes`, is within 11 kB of the real 1676502737 bytes (the key layout is the real one);
- latent-consistency/lcm-lora-sdv1-5: kohya names, rank 64, fp16, on the layers the LCM-LoRA trains (attention
  projections, proj_in/out, feed-forwards, resnet convs and time projections, down/up samplers);
- madebyollin/taesd: AutoencoderTiny's default config, fp32: exactly the real file's 9793292 bytes, unpadded;
- Intel/dpt-hybrid-midas: DPTForDepthEstimation with ``is_hybrid=True`` (BiT backbone) as `DPT_HYBRID_CONFIG`
  describes (its real config.json could not be read: built from transformers' DPTConfig defaults for hybrid models
  and its hybrid conversion script), pytorch_model.bin (a pickled state dict, fp32), preprocessor_config.json.

Big modules are built on the meta device and filled with seeded random tensors (fan-in scaled, norms at 1), so a
set takes about a minute and 5 GB. A finished set has `COMPLETE_MARKER` in its folder and is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcam.model.random_full import (
    CLIP_VOCAB_SIZE,
    DPT_HYBRID_CONFIG,
    SD15_TEXT_ENCODER_CONFIG,
    SD15_VAE_CONFIG,
    TAESD_CONFIG,
)

from tests.tiny_weights import SD15_SCHEDULER_CONFIG

STYLE = "pixar"
COMPLETE_MARKER = "full-size-set-complete.json"
ZIP_END_RECORD = 22  # bytes of a zip end-of-central-directory record with no comment
ZIP_COMMENT_MAX = 65535
LCM_LORA_RANK = 64
#: modules of SD1.5's UNet the LCM-LoRA trains (diffusers names; the file uses kohya names)
LCM_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
DPT_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "ensure_multiple_of": 1,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "DPTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "keep_aspect_ratio": False,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}


@dataclass(frozen=True)
class FullSizeModelSet:
    """Where the set lies (a Hugging Face cache) and what writing it found (file sizes before padding)."""

    cache: Path
    natural_sizes: dict[str, int]


# -- random tensors ------------------------------------------------------------------------------------------


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, dtype: Any) -> dict[str, Any]:
    """Seeded random tensors for these shapes: fan-in scaled matrices/kernels, norm weights 1, small biases."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for key, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = 1
            for side in shape[1:]:
                fan_in *= side
            value = torch.randn(shape, generator=generator) * (fan_in**-0.5)
        elif re.search(r"(norm|ln|layernorm|layer_norm)[^.]*\.weight$", key, re.IGNORECASE):
            value = torch.ones(shape)
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        tensors[key] = value.to(dtype).contiguous()
    return tensors


def _shapes(module: Any) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def meta_stream_unet() -> Any:
    """The SD1.5-size `StreamUNet` (motion modules and depth mapper included) on the meta device."""
    import torch
    from vcam.model.unet import StreamUNet
    from vcam.model.weights import SD15_UNET_CONFIG, stream_unet_config

    with torch.device("meta"):
        return StreamUNet(**stream_unet_config(SD15_UNET_CONFIG))


def clip_text_shapes() -> dict[str, tuple[int, ...]]:
    """SD1.5's CLIP text model tensors under the names of its files (``text_model.*``), no position_ids."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG))
    shapes = {}
    for key, shape in _shapes(model).items():
        if key.endswith("position_ids"):
            continue
        shapes[key if key.startswith("text_model.") else "text_model." + key] = shape
    return shapes


# -- the LDM (single-file) UNet names ------------------------------------------------------------------------

_RESNET_TO_LDM = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)


def _ldm_resnet(rest: str) -> str:
    for new, old in _RESNET_TO_LDM:
        if rest.startswith(new):
            return old + rest[len(new) :]
    raise ValueError(f"unknown resnet tensor {rest!r}")


def ldm_unet_key(key: str, layers_per_block: int = 2) -> str:
    """A diffusers SD1.5 UNet key -> its original LDM name (without ``model.diffusion_model.``); test data only."""
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for new, old in fixed.items():
        if key.startswith(new):
            return old + key[len(new) :]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        block = int(parts[1])
        kind, index, rest = parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv.* -> input_blocks.N.0.op.*
            return f"input_blocks.{(layers_per_block + 1) * (block + 1)}.0.op." + rest.removeprefix("conv.")
        slot = (layers_per_block + 1) * block + index + 1
        if kind == "resnets":
            return f"input_blocks.{slot}.0." + _ldm_resnet(rest)
        return f"input_blocks.{slot}.1." + rest
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * index}." + _ldm_resnet(rest)
        return "middle_block.1." + rest
    if parts[0] == "up_blocks":
        block = int(parts[1])
        kind, index, rest = parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "upsamplers":  # the last layer of the block; after its attention when there is one
            slot = (layers_per_block + 1) * block + layers_per_block
            position = 2 if block > 0 else 1  # SD1.5: up block 0 has no attentions
            return f"output_blocks.{slot}.{position}." + rest
        slot = (layers_per_block + 1) * block + index
        if kind == "resnets":
            return f"output_blocks.{slot}.0." + _ldm_resnet(rest)
        return f"output_blocks.{slot}.1." + rest
    raise ValueError(f"unknown SD1.5 UNet tensor {key!r}")


def ldm_unet_state_dict(diffusers_state: dict[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel tensors (SD1.5 layout) under ``model.diffusion_model.*`` LDM names."""
    return {"model.diffusion_model." + ldm_unet_key(key): value for key, value in diffusers_state.items()}


# -- files ---------------------------------------------------------------------------------------------------


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _save_safetensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})


def _save_safetensors_of_size(tensors: dict[str, Any], path: Path, size: int | None) -> int:
    """Save; the file must be exactly the catalogue's `size` bytes when given (same tensors, names and header)."""
    _save_safetensors(tensors, path)
    natural = path.stat().st_size
    if size is not None and natural != size:
        raise ValueError(f"{path.name} is {natural} bytes, the real file {size}: its tensors or names differ")
    return natural


def _torch_save_of_size(checkpoint: dict[str, Any], path: Path, size: int | None) -> int:
    """torch.save, padded to exactly `size` bytes when given (a zip comment, which readers skip); the natural size."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, str(path))
    natural = path.stat().st_size
    if size is None or size == natural:
        return natural
    padding = size - natural
    if not 0 < padding <= ZIP_COMMENT_MAX:
        raise ValueError(f"{path.name} is {natural} bytes; a zip comment cannot pad it to the catalogue's {size}")
    with path.open("r+b") as stream:
        stream.seek(natural - ZIP_END_RECORD)
        end_record = stream.read(ZIP_END_RECORD)
        if end_record[:4] != b"PK\x05\x06" or end_record[-2:] != b"\x00\x00":
            raise ValueError(f"{path.name} does not end in a zip end record without a comment")
        stream.seek(natural - 2)
        stream.write(padding.to_bytes(2, "little") + b" " * padding)
    return natural


def _write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer with SD1.5's vocabulary size and special-token ids (byte symbols, then fillers)."""
    from vcam.model.tiny import BOS_TOKEN, EOS_TOKEN, _byte_symbols

    vocab: dict[str, int] = {}
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)
    for symbol in _byte_symbols():
        vocab[symbol + "</w>"] = len(vocab)
    while len(vocab) < CLIP_VOCAB_SIZE - 2:
        vocab[f"filler{len(vocab)}</w>"] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
    _write_json(special, folder / "special_tokens_map.json")
    _write_json(
        {
            **special,
            "add_prefix_space": False,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": 77,
            "tokenizer_class": "CLIPTokenizer",
        },
        folder / "tokenizer_config.json",
    )


def _lcm_lora(unet_shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Any]:
    """The LCM-LoRA in kohya names (``lora_unet_<module>.lora_down/lora_up/alpha``), rank 64, fp16."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    alphas: list[str] = []
    for key, shape in unet_shapes.items():
        module = key.removesuffix(".weight")
        if not key.endswith(".weight") or ".motion_modules." in key or not module.endswith(LCM_LORA_TARGETS):
            continue
        if not module.startswith(("down_blocks.", "mid_block.", "up_blocks.")) or len(shape) < 2:
            continue
        name = "lora_unet_" + module.replace(".", "_")
        if len(shape) == 4:  # conv: down is a k x k conv to the rank, up a 1x1 conv
            shapes[f"{name}.lora_down.weight"] = (LCM_LORA_RANK, shape[1], shape[2], shape[3])
            shapes[f"{name}.lora_up.weight"] = (shape[0], LCM_LORA_RANK, 1, 1)
        else:
            shapes[f"{name}.lora_down.weight"] = (LCM_LORA_RANK, shape[1])
            shapes[f"{name}.lora_up.weight"] = (shape[0], LCM_LORA_RANK)
        alphas.append(f"{name}.alpha")
    tensors = random_state_dict(shapes, seed, torch.float16)
    for key in tensors:
        if key.endswith(".lora_up.weight"):
            tensors[key] = (tensors[key].float() * 0.1).to(torch.float16)
    for key in alphas:
        tensors[key] = torch.tensor(float(LCM_LORA_RANK), dtype=torch.float16)
    return tensors


def _write_sd15(folder: Path, seed: int) -> None:
    import torch
    from diffusers import AutoencoderKL
    from vcam.model.weights import SD15_UNET_CONFIG

    _write_json(
        {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        folder / "model_index.json",
    )
    _write_json(SD15_SCHEDULER_CONFIG, folder / "scheduler" / "scheduler_config.json")
    _write_tokenizer(folder / "tokenizer")
    _write_json(SD15_TEXT_ENCODER_CONFIG, folder / "text_encoder" / "config.json")
    text = random_state_dict(clip_text_shapes(), seed, torch.float32)
    _save_safetensors(text, folder / "text_encoder" / "model.safetensors")
    _write_json(
        {
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "center_input_sample": False,
            "downsample_padding": 1,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            **SD15_UNET_CONFIG,
        },
        folder / "unet" / "config.json",
    )
    _write_json(SD15_VAE_CONFIG, folder / "vae" / "config.json")
    with torch.device("meta"):
        vae = AutoencoderKL(**{key: value for key, value in SD15_VAE_CONFIG.items() if key != "_class_name"})
    vae_tensors = random_state_dict(_shapes(vae), seed + 1, torch.float32)
    _save_safetensors(vae_tensors, folder / "vae" / "diffusion_pytorch_model.safetensors")


def _write_repos(staging: Path, repos: dict[str, dict[str, Any]], seed: int) -> dict[str, int]:
    """Every file of the style, under staging/<org>/<name>/; returns the natural sizes of the padded files."""
    import torch
    from diffusers import AutoencoderTiny
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding
    from transformers import DPTConfig, DPTForDepthEstimation

    from tests.model_helpers import to_live2diff_names

    natural: dict[str, int] = {}
    _write_sd15(staging / repos["sd15"]["repo"], seed)

    unet = meta_stream_unet()
    shapes = _shapes(unet)
    spatial = {key[len("unet.") :]: shape for key, shape in shapes.items() if key.startswith("unet.")}
    spatial = {key: shape for key, shape in spatial.items() if ".motion_modules." not in key}
    base = random_state_dict(spatial, seed + 10, torch.float16)
    checkpoint = ldm_unet_state_dict(base)
    del base
    clip = random_state_dict(clip_text_shapes(), seed + 11, torch.float16)
    checkpoint.update({"cond_stage_model.transformer." + key: value for key, value in clip.items()})
    checkpoint["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    base_source = repos["base"]
    _torch_save_of_size(
        {"state_dict": checkpoint, "global_step": 1},
        staging / base_source["repo"] / base_source["files"][0],
        None,
    )
    del checkpoint, clip

    motion_shapes = {
        key: shape
        for key, shape in shapes.items()
        if (".motion_modules." in key or key.startswith("depth_mapper.")) and not key.endswith(".pe")
    }
    motion = random_state_dict(motion_shapes, seed + 20, torch.float32)
    for key, shape in shapes.items():
        if key.endswith(".pe"):  # AnimateDiff's sinusoidal table [1, max_len, dim]
            motion[key] = SinusoidalPositionalEmbedding(shape[2], shape[1]).get_buffer("pe").clone()
    original = {"module." + key: value for key, value in to_live2diff_names(motion).items()}
    del motion
    motion_source = repos["motion"]
    natural["live2diff.ckpt"] = _torch_save_of_size(
        {"state_dict": original, "global_step": 1},
        staging / motion_source["repo"] / "live2diff.ckpt",
        motion_source.get("sizes", {}).get("live2diff.ckpt"),
    )
    del original

    lora_source = repos["lcm_lora"]
    _save_safetensors(_lcm_lora(spatial, seed + 30), staging / lora_source["repo"] / lora_source["files"][0])

    taesd_source = repos["taesd"]
    taesd_folder = staging / taesd_source["repo"]
    _write_json(TAESD_CONFIG, taesd_folder / "config.json")
    with torch.device("meta"):
        taesd: Any = AutoencoderTiny(**{key: value for key, value in TAESD_CONFIG.items() if key != "_class_name"})
    taesd_tensors = random_state_dict(_shapes(taesd), seed + 41, torch.float32)
    weights_name = "diffusion_pytorch_model.safetensors"
    natural["taesd"] = _save_safetensors_of_size(
        taesd_tensors, taesd_folder / weights_name, taesd_source.get("sizes", {}).get(weights_name)
    )

    depth_source = repos["depth"]
    depth_folder = staging / depth_source["repo"]
    with torch.device("meta"):
        depth: Any = DPTForDepthEstimation(DPTConfig(**DPT_HYBRID_CONFIG))
    depth.config.save_pretrained(str(depth_folder))
    depth_tensors = random_state_dict(_shapes(depth), seed + 50, torch.float32)
    torch.save(depth_tensors, str(depth_folder / "pytorch_model.bin"))
    _write_json(DPT_PREPROCESSOR_CONFIG, depth_folder / "preprocessor_config.json")
    return natural


def _put_repo(cache: Path, repo: str, revision: str, folder: Path) -> None:
    """Move one repository folder into the cache as huggingface_hub lays it out (blobs + snapshot symlinks)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    for path in sorted(item for item in folder.rglob("*") if item.is_file()):
        name = path.relative_to(folder).as_posix()
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        blob = root / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, blob)
        pointer = root / "snapshots" / revision / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision, encoding="utf-8")


def style_repos(catalogue: dict[str, Any], style: str = STYLE) -> dict[str, dict[str, Any]]:
    """The catalogue tables of the style's base and of every shared part, by role."""
    repos = {role: dict(catalogue["shared"][role]) for role in ("sd15", "lcm_lora", "taesd", "motion", "depth")}
    base = dict(catalogue["styles"][style]["base"])
    if base.get("format") != "single_file":
        raise ValueError(f"style {style!r} has a {base.get('format')!r} base: this set writes single-file bases")
    repos["base"] = base
    return repos


def write_full_size_model_set(folder: Path, seed: int = 0) -> FullSizeModelSet:
    """Write (or reuse, when `COMPLETE_MARKER` is there) the full-size set for `STYLE` under `folder`/hub."""
    from vcam.store.catalogue import load_packaged_data

    cache = folder / "hub"
    marker = folder / COMPLETE_MARKER
    if marker.is_file():
        return FullSizeModelSet(cache=cache, natural_sizes=json.loads(marker.read_text(encoding="utf-8")))
    if cache.exists():
        shutil.rmtree(cache)
    staging = folder / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    repos = style_repos(load_packaged_data())
    natural = _write_repos(staging, repos, seed)
    for source in repos.values():
        _put_repo(cache, source["repo"], source["revision"], staging / source["repo"])
    shutil.rmtree(staging)
    marker.write_text(json.dumps(natural), encoding="utf-8")
    return FullSizeModelSet(cache=cache, natural_sizes=natural)


def read_pickle_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a pickled checkpoint (``state_dict`` unwrapped), read as the loader reads them."""
    import torch

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} is not a weights-only pickle: {error}") from error
    return dict(loaded.get("state_dict", loaded))
