"""A tiny on-disk model set in the real repositories' layouts, in a Hugging Face cache, with its catalogue.

Written once per test session (`write_tiny_model_set`), it lets the real loading path run end to end:
`load_translator(name, config)` -> `ModelStore` -> `Live2DiffTranslator.from_style` -> `load_stream_pipeline`.

Repositories (each `models--org--name/{blobs,snapshots/<commit>,refs/main}` as huggingface_hub writes them):
- tiny/sd15: SD1.5's diffusers layout (model_index.json, scheduler/, tokenizer/, text_encoder/, vae/, unet/),
  its unet/ is base model X;
- tiny/base-y: another diffusers base (unet/ only), base model Y;
- tiny/broken: a diffusers base whose unet weights file is truncated;
- tiny/live2diff: live2diff.ckpt, a pickle (torch.save) with the ORIGINAL AnimateDiff / Live2Diff key names
  (``...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``,
  ``flow_conv_in.*``);
- tiny/lcm-lora: pytorch_lora_weights.safetensors in kohya names (``lora_unet_*.lora_down.weight``, ``.alpha``);
- tiny/style-lora: a style LoRA in diffusers/PEFT names (``unet.*.lora_A.weight``);
- tiny/taesd, tiny/dpt: AutoencoderTiny and DPTForDepthEstimation folders.

Styles: tiny-a and tiny-b share base X (different prompts and t_index_list), tiny-lora is base X with the
style LoRA, tiny-c uses base Y, tiny-broken has the truncated base. Models run at 64x64 (unet sample_size 8).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMITS = {
    "tiny/sd15": "a" * 40,
    "tiny/base-y": "b" * 40,
    "tiny/broken": "c" * 40,
    "tiny/live2diff": "d" * 40,
    "tiny/lcm-lora": "e" * 40,
    "tiny/style-lora": "f" * 40,
    "tiny/taesd": "1" * 40,
    "tiny/dpt": "2" * 40,
}
PROMPTS = {
    "tiny-a": "a watercolour portrait, style a",
    "tiny-b": "an oil painting, style b",
    "tiny-lora": "a pencil sketch, style lora",
    "tiny-c": "a neon poster, style c",
    "tiny-broken": "never loads",
}
#: diffusers UNet2DConditionModel config of the tiny bases (64x64 pixels: latent sample_size 8)
TINY_BASE_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "use_linear_projection": False,
}
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
LORA_RANK = 4
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_ANIMATEDIFF_INVERSE = (
    (".attn1.", ".attention_blocks.0."),
    (".attn2.", ".attention_blocks.1."),
    (".norm1.", ".norms.0."),
    (".norm2.", ".norms.1."),
    (".norm3.", ".ff_norm."),
)


@dataclass(frozen=True)
class TinyModelSet:
    """Where the tiny model set lies: the HF cache folder and the catalogue data describing it."""

    cache: Path
    catalogue: dict[str, Any]


# -- the models --------------------------------------------------------------------------------------------


def tiny_base_unet(seed: int) -> Any:
    """A `StreamUNet` of the tiny base layout with every weight random (seeded), proj_out included."""
    import torch
    from vcam.model.unet import StreamUNet
    from vcam.model.weights import stream_unet_config

    torch.manual_seed(seed)
    unet = StreamUNet(**stream_unet_config(TINY_BASE_UNET_CONFIG))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, parameter in unet.named_parameters():
            if parameter.abs().sum() == 0 and parameter.ndim > 1:  # zero-initialised proj_out / conv_out
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return unet.eval()


def spatial_state_dict(unet: Any) -> dict[str, Any]:
    """The base (UNet2DConditionModel) weights of a StreamUNet, diffusers names."""
    return {
        key: value.detach().clone().contiguous()
        for key, value in unet.unet.state_dict().items()
        if ".motion_modules." not in key
    }


def original_motion_state_dict(unet: Any) -> dict[str, Any]:
    """A StreamUNet's motion modules and depth mapper under Live2Diff's original checkpoint names."""
    original: dict[str, Any] = {}
    for key, value in unet.state_dict().items():
        if key.startswith("depth_mapper."):
            original["flow_conv_in." + key[len("depth_mapper.") :]] = value.detach().clone()
            continue
        if ".motion_modules." not in key or key.endswith(".pe"):
            continue
        name = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key.removeprefix("unet."))
        for new, old in _ANIMATEDIFF_INVERSE:
            name = name.replace(new, old)
        original[name] = value.detach().clone().contiguous()
    return original


def _lora_modules(unet: Any) -> list[tuple[str, Any]]:
    """The spatial attention projections a SD1.5 LoRA targets (diffusers module names, no motion modules)."""
    return [
        (name, module)
        for name, module in unet.unet.named_modules()
        if ".attentions." in name and ".motion_modules." not in name and name.endswith(LORA_TARGETS)
    ]


def kohya_lora(unet: Any, seed: int) -> dict[str, Any]:
    """A LoRA in kohya names with diffusers block names (as the SD1.5 LCM-LoRA file): lora_down/up + alpha."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, module in _lora_modules(unet):
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = torch.randn(LORA_RANK, module.in_features, generator=generator) * 0.1
        tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, LORA_RANK, generator=generator) * 0.1
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))
    return tensors


def peft_lora(unet: Any, seed: int) -> dict[str, Any]:
    """A LoRA in diffusers/PEFT names (``unet.<module>.lora_A.weight`` / ``lora_B.weight``)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, module in _lora_modules(unet):
        tensors[f"unet.{name}.lora_A.weight"] = torch.randn(LORA_RANK, module.in_features, generator=generator) * 0.1
        tensors[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, LORA_RANK, generator=generator) * 0.1
    return tensors


# -- writing the repositories ------------------------------------------------------------------------------


def _save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _write_repos(staging: Path) -> None:
    """Every repository's files, in the real layouts, under staging/<org>/<name>/."""
    import torch
    from vcam.model.tiny import tiny_autoencoder_kl, tiny_clip_tokenizer, tiny_dpt, tiny_taesd, tiny_text_encoder

    sd15 = staging / "tiny/sd15"
    tokenizer = tiny_clip_tokenizer()
    tokenizer.save_pretrained(str(sd15 / "tokenizer"))
    text_encoder: Any = tiny_text_encoder(tokenizer, hidden_size=TINY_BASE_UNET_CONFIG["cross_attention_dim"], seed=3)
    text_encoder.save_pretrained(str(sd15 / "text_encoder"))
    vae: Any = tiny_autoencoder_kl(seed=4)
    vae.save_pretrained(str(sd15 / "vae"))
    _write_json(SD15_SCHEDULER_CONFIG, sd15 / "scheduler" / "scheduler_config.json")
    _write_json(
        {
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        sd15 / "model_index.json",
    )
    base_x = tiny_base_unet(seed=10)
    base_y = tiny_base_unet(seed=20)
    for repo, unet in (("tiny/sd15", base_x), ("tiny/base-y", base_y), ("tiny/broken", base_x)):
        _write_json(TINY_BASE_UNET_CONFIG, staging / repo / "unet" / "config.json")
        _save_safetensors(spatial_state_dict(unet), staging / repo / "unet" / "diffusion_pytorch_model.safetensors")
    weights = staging / "tiny/broken" / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # cut short, as an interrupted copy would leave it
    motion_file = staging / "tiny/live2diff" / "live2diff.ckpt"
    motion_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(original_motion_state_dict(tiny_base_unet(seed=30)), str(motion_file))
    _save_safetensors(kohya_lora(base_x, seed=40), staging / "tiny/lcm-lora" / "pytorch_lora_weights.safetensors")
    _save_safetensors(peft_lora(base_x, seed=50), staging / "tiny/style-lora" / "style_lora.safetensors")
    taesd: Any = tiny_taesd(seed=5)
    taesd.save_pretrained(str(staging / "tiny/taesd"))
    depth: Any = tiny_dpt(seed=6)
    depth.save_pretrained(str(staging / "tiny/dpt"))


def _put_repo(cache: Path, repo: str, folder: Path) -> list[str]:
    """Copy one repository folder into the cache as huggingface_hub does (blobs + snapshot symlinks)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = COMMITS[repo]
    names: list[str] = []
    for path in sorted(item for item in folder.rglob("*") if item.is_file()):
        name = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = root / "snapshots" / commit / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        names.append(name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit, encoding="utf-8")
    return names


def _source(repo: str, files: list[str]) -> dict[str, Any]:
    return {"repo": repo, "revision": COMMITS[repo], "files": files}


def _catalogue(files: dict[str, list[str]]) -> dict[str, Any]:
    def shared(repo: str, title: str) -> dict[str, Any]:
        return {"title": title, "licence": "mit", **_source(repo, files[repo])}

    def style(name: str, repo: str, t_index_list: list[int], lora: bool = False) -> dict[str, Any]:
        unet_files = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
        table: dict[str, Any] = {
            "title": name,
            "prompt": PROMPTS[name],
            "t_index_list": t_index_list,
            "clip_skip": 1,
            "licence": "mit",
            "base": {"format": "diffusers", **_source(repo, unet_files)},
        }
        if lora:
            table["lora"] = {**_source("tiny/style-lora", ["style_lora.safetensors"]), "scale": 0.8}
        return table

    return {
        "schema": 1,
        "shared": {
            "sd15": shared("tiny/sd15", "tiny SD1.5 parts"),
            "lcm_lora": shared("tiny/lcm-lora", "tiny LCM-LoRA"),
            "taesd": shared("tiny/taesd", "tiny TAESD"),
            "motion": shared("tiny/live2diff", "tiny Live2Diff motion"),
            "depth": shared("tiny/dpt", "tiny DPT"),
        },
        "styles": {
            "tiny-a": style("tiny-a", "tiny/sd15", [30, 40]),
            "tiny-b": style("tiny-b", "tiny/sd15", [25, 40]),
            "tiny-lora": style("tiny-lora", "tiny/sd15", [30, 40], lora=True),
            "tiny-c": style("tiny-c", "tiny/base-y", [30, 40]),
            "tiny-broken": style("tiny-broken", "tiny/broken", [30, 40]),
        },
    }


def write_tiny_model_set(folder: Path) -> TinyModelSet:
    """Write every tiny repository into a Hugging Face cache under `folder`; returns it with its catalogue."""
    staging = folder / "staging"
    cache = folder / "hub"
    _write_repos(staging)
    files = {repo: _put_repo(cache, repo, staging / repo) for repo in COMMITS}
    shutil.rmtree(staging)
    return TinyModelSet(cache=cache, catalogue=_catalogue(files))
