"""The real-size random-weight preset ("sd15-random"): the whole pipeline at SD1.5 size, nothing read from disk.

A real-size model with random weights costs exactly what the real one costs, so speed is measured on it with
no download: the SD1.5 UNet with the 20 AnimateDiff motion modules (40 streaming temporal attentions) and
Live2Diff's depth mapper, TAESD and SD's full AutoencoderKL, DPT-Hybrid (MiDaS, BiT backbone) and the CLIP
ViT-L/14 text encoder, each built from its config with seeded random weights directly on the device. The
tokenizer is the tiny preset's byte-level CLIP tokenizer (the prompt is encoded once; its cost does not
matter). The configs below are also what the full-size weight-file tests write (tests/full_size_weights.py).

Its outputs are noise; its figures (ms per frame, memory, KV cache size) are the real model's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from vcam.model.depth import DepthEncoder
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.unet import StreamUNet
    from vcam.model.vae import LatentCodec

log = logging.getLogger(__name__)

#: the name `vcam bench model --model` uses for this preset
SD15_RANDOM_NAME = "sd15-random"
RANDOM_FULL_VAES = ("taesd", "kl")
RANDOM_FULL_PROMPT = "a portrait, flat colours, random weights"
#: the denoising steps a stream of T steps uses (the README's T = 1..4 rows; the cost does not depend on them)
T_INDEX_LISTS: dict[int, tuple[int, ...]] = {1: (30,), 2: (30, 40), 3: (20, 30, 40), 4: (10, 20, 30, 40)}
CLIP_VOCAB_SIZE = 49408
SD15_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "vocab_size": CLIP_VOCAB_SIZE,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: madebyollin/taesd's config.json (AutoencoderTiny's defaults)
TAESD_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderTiny",
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}
#: the closest DPTConfig to Intel/dpt-hybrid-midas that could be built offline (its config.json is not readable)
DPT_HYBRID_CONFIG: dict[str, Any] = {
    "is_hybrid": True,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 384,
    "patch_size": 16,
    "qkv_bias": True,
    "backbone_out_indices": [2, 5, 8, 11],
    "backbone_featmap_shape": [1, 1024, 24, 24],
    "neck_hidden_sizes": [256, 512, 768, 768],
    "neck_ignore_stages": [0, 1],
    "reassemble_factors": [1, 1, 1, 0.5],
    "readout_type": "project",
    "fusion_hidden_size": 256,
    "head_in_index": -1,
    "use_batch_norm_in_fusion_residual": False,
}


def _without_class_name(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "_class_name"}


@dataclass
class RandomFullModels:
    """The real-size random models on one device and dtype; `pipeline()` assembles a stream on them."""

    unet: StreamUNet
    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: Any  # transformers CLIPTextModel
    codecs: dict[str, LatentCodec]  # "taesd" / "kl"
    depth_encoder: DepthEncoder
    build_seconds: float

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def parameter_count(self) -> dict[str, int]:
        """Parameters per model, e.g. {"unet": 1.3e9, ...}."""
        counts = {
            "unet": sum(p.numel() for p in self.unet.parameters()),
            "text_encoder": sum(p.numel() for p in self.text_encoder.parameters()),
            "depth": sum(p.numel() for p in self.depth_encoder.model.parameters()),
        }
        for name, codec in self.codecs.items():
            counts[f"vae_{name}"] = sum(p.numel() for p in codec.vae.parameters())
        return counts

    def pipeline(
        self,
        width: int = 512,
        height: int = 512,
        t_index_list: Sequence[int] = T_INDEX_LISTS[2],
        vae: str = "taesd",
        seed: int = 0,
        stream_batch: bool = True,
        overlap: bool = False,
    ) -> StreamPipeline:
        """A `StreamPipeline` on these models (its own prompt embedding, schedule and KV caches)."""
        from vcam.model.pipeline import StreamPipeline
        from vcam.model.scheduler import build_stream_schedule
        from vcam.model.text import PromptEncoder

        if vae not in self.codecs:
            raise ValueError(f"vae {vae!r} was not built: these models have {sorted(self.codecs)}")
        return StreamPipeline(
            unet=self.unet,
            prompt_encoder=PromptEncoder(self.tokenizer, self.text_encoder, clip_skip=2),
            codec=self.codecs[vae],
            depth_encoder=self.depth_encoder,
            schedule=build_stream_schedule(t_index_list),
            prompt=RANDOM_FULL_PROMPT,
            width=width,
            height=height,
            seed=seed,
            stream_batch=stream_batch,
            overlap=overlap,
        )


def build_random_full_models(
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    vaes: Sequence[str] = RANDOM_FULL_VAES,
    attention: str = "auto",
) -> RandomFullModels:
    """Every real-size model with seeded random weights, built on `device` (float32 init), cast to `dtype`.

    Building on the GPU takes seconds; on a CPU about half a minute and 6 GB of memory in float32.
    """
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny
    from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation
    from vcam.model.depth import DPT_INPUT_SIZE, DepthEncoder
    from vcam.model.tiny import BOS_TOKEN, EOS_TOKEN, tiny_clip_tokenizer
    from vcam.model.unet import StreamUNet
    from vcam.model.vae import LatentCodec
    from vcam.model.weights import SD15_UNET_CONFIG, stream_unet_config

    for vae in vaes:
        if vae not in RANDOM_FULL_VAES:
            raise ValueError(f"vae {vae!r} is not one of {RANDOM_FULL_VAES}")
    torch_device = torch.device(device)
    torch_dtype = torch.float32 if dtype is None else dtype
    started = time.perf_counter()
    tokenizer: Any = tiny_clip_tokenizer()
    text_config = dict(SD15_TEXT_ENCODER_CONFIG)
    text_config["bos_token_id"] = int(tokenizer.convert_tokens_to_ids(BOS_TOKEN))
    text_config["eos_token_id"] = text_config["pad_token_id"] = int(tokenizer.convert_tokens_to_ids(EOS_TOKEN))

    def finish(module: Any) -> Any:
        # nn.Module.to: ModelMixin.to warns about every dtype cast
        return torch.nn.Module.to(module, dtype=torch_dtype).eval()

    with torch_device:
        torch.manual_seed(seed)
        unet: Any = finish(StreamUNet(**stream_unet_config(SD15_UNET_CONFIG), attention_backend=attention))
        torch.manual_seed(seed + 1)
        text_encoder = finish(CLIPTextModel(CLIPTextConfig(**text_config)))
        codecs: dict[str, LatentCodec] = {}
        for vae in vaes:
            torch.manual_seed(seed + 2)
            if vae == "taesd":
                codecs[vae] = LatentCodec(finish(AutoencoderTiny(**_without_class_name(TAESD_CONFIG))))
            else:
                codecs[vae] = LatentCodec(finish(AutoencoderKL(**_without_class_name(SD15_VAE_CONFIG))))
        torch.manual_seed(seed + 3)
        depth_model = finish(DPTForDepthEstimation(DPTConfig(**DPT_HYBRID_CONFIG)))
    models = RandomFullModels(
        unet=unet,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        codecs=codecs,
        depth_encoder=DepthEncoder(depth_model, input_size=DPT_INPUT_SIZE),
        build_seconds=time.perf_counter() - started,
    )
    log.info(
        "real-size random models on %s (%s) built in %.1f s: %s",
        torch_device,
        torch_dtype,
        models.build_seconds,
        models.parameter_count(),
    )
    return models
