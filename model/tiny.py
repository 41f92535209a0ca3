"""The tiny random-weight model preset: the whole pipeline with no files, seeded (the app's "tiny-random" style).

Every component is built from a small config with random weights: a byte-level CLIP tokenizer written in
code, a 2-layer CLIP text model, a tiny TAESD (AutoencoderTiny), a tiny DPT and `tiny_stream_unet()`.
It runs the real code path at 64x64 pixels in milliseconds on a CPU; its output is noise-like, which is
what tests, benchmarks and smoke runs need.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer, DPTForDepthEstimation
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.similar_filter import SimilarFrameFilter

log = logging.getLogger(__name__)

TINY_PROMPT = "a tiny random test pattern"
TINY_WIDTH = 64
TINY_HEIGHT = 64
TINY_T_INDEX_LIST = (30, 40)
TINY_VAES = ("kl", "taesd")
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """CLIP's byte-to-unicode table: the 256 printable symbols byte-level BPE works on."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            symbols.append(256 + extra)
            extra += 1
    return [chr(code) for code in symbols]


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges (514 tokens), written to a temp folder and loaded offline."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)
    for symbol in _byte_symbols():
        vocab[symbol + "</w>"] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="vcam-tiny-tokenizer-") as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True)
    return tokenizer


def tiny_text_encoder(tokenizer: CLIPTokenizer, hidden_size: int, seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIP text model over `tokenizer`'s vocabulary."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden_size,
        bos_token_id=int(tokenizer.convert_tokens_to_ids(BOS_TOKEN)),  # type: ignore[arg-type]
        eos_token_id=int(tokenizer.convert_tokens_to_ids(EOS_TOKEN)),  # type: ignore[arg-type]
        pad_token_id=int(tokenizer.convert_tokens_to_ids(EOS_TOKEN)),  # type: ignore[arg-type]
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def tiny_taesd(seed: int = 0) -> torch.nn.Module:
    """A tiny AutoencoderTiny (TAESD layout, 8 channels per block, one block per level)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae: Any = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    return vae.eval()


def tiny_autoencoder_kl(seed: int = 0) -> torch.nn.Module:
    """A tiny SD-layout AutoencoderKL (4 levels, 8-16 channels); its scaling factor makes latents about unit std.

    Unlike the tiny TAESD, its GroupNorms keep random activations alive, so the output visibly follows the
    latents (noise-like images that change with the input).
    """
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_WIDTH,
        scaling_factor=5.0,
    )
    return vae.eval()


def tiny_dpt(seed: int = 0) -> DPTForDepthEstimation:
    """A tiny non-hybrid DPT depth model taking 32x32 inputs."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8,
        reassemble_factors=[4, 2, 1, 0.5],
        is_hybrid=False,
        head_in_index=-1,
        initializer_range=0.2,  # the default 0.02 makes the random depth collapse to ~1e-9 everywhere
    )
    torch.manual_seed(seed)
    return DPTForDepthEstimation(config).eval()


def build_tiny_pipeline(
    seed: int = 0,
    t_index_list: Sequence[int] = TINY_T_INDEX_LIST,
    prompt: str = TINY_PROMPT,
    width: int = TINY_WIDTH,
    height: int = TINY_HEIGHT,
    noise: str = "fixed",
    stream_batch: bool = True,
    similar_filter: SimilarFrameFilter | None = None,
    clip_skip: int = 1,
    depth: bool = True,
    vae: str = "kl",
    depth_every: int = 1,
    overlap: bool = False,
) -> StreamPipeline:
    """The whole streaming pipeline with tiny random weights (seeded), on the CPU in float32.

    `vae` picks the tiny autoencoder: "kl" (SD's AutoencoderKL layout, the default) or "taesd" (AutoencoderTiny).
    """
    from vcam.model.depth import DepthEncoder
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.scheduler import build_stream_schedule
    from vcam.model.text import PromptEncoder
    from vcam.model.unet import tiny_stream_unet
    from vcam.model.vae import LatentCodec

    unet = tiny_stream_unet(seed=seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_text_encoder(tokenizer, hidden_size=int(unet.config.cross_attention_dim), seed=seed)
    if vae not in TINY_VAES:
        raise ValueError(f"tiny vae {vae!r} is not one of {TINY_VAES}")
    codec = LatentCodec(tiny_taesd(seed=seed) if vae == "taesd" else tiny_autoencoder_kl(seed=seed))
    depth_encoder = DepthEncoder(tiny_dpt(seed=seed), input_size=32) if depth else None
    return StreamPipeline(
        unet=unet,
        prompt_encoder=PromptEncoder(tokenizer, text_encoder, clip_skip=clip_skip),
        codec=codec,
        depth_encoder=depth_encoder,
        schedule=build_stream_schedule(t_index_list),
        prompt=prompt,
        width=width,
        height=height,
        seed=seed,
        noise=noise,
        stream_batch=stream_batch,
        similar_filter=similar_filter,
        depth_every=depth_every,
        overlap=overlap,
    )
