"""Loading a `StreamPipeline` from local weights: specs, device/dtype resolution, loading and assembling.

`PipelineSpec` names every file a style needs; `load_pipeline_unet` and `load_pipeline_parts` load the
models onto a device; `assemble_stream_pipeline` builds a pipeline on loaded models (several pipelines may
share them: `vcam.model.pool.ModelPool`); `load_stream_pipeline` does all three for one style.
Importing this module is cheap (the config reads `DEVICES` and `DTYPES` from it): torch, diffusers and
transformers are imported by the functions only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.model.noise import DEFAULT_NOISE
from vcam.model.pipeline import StreamPipeline
from vcam.model.similar_filter import SimilarFrameFilter

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from vcam.model.depth import DepthEncoder
    from vcam.model.text_lora import TextEncoderLora
    from vcam.model.unet import StreamUNet
    from vcam.model.vae import LatentCodec

log = logging.getLogger(__name__)

#: the device and dtype names a user may pick (`[models] device` / `dtype`); the config reads them from here
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16")
VAE_KINDS = ("taesd", "kl")


@dataclass(frozen=True)
class PipelineSpec:
    """Everything `load_stream_pipeline` needs, as local paths (the app maps its style paths onto it).

    base: a single-file SD1.5 checkpoint (.safetensors/.ckpt) or a diffusers folder with unet/ (and maybe
    text_encoder/, vae/); sd15: the SD1.5 diffusers folder (tokenizer/, text_encoder/, vae/, scheduler/);
    motion: live2diff.ckpt (or its safetensors conversion); lcm_lora, style_lora: LoRA files fused into the
    UNet (style_lora at lora_scale; its text-encoder half, if any, is applied while the style's prompts are
    encoded); taesd, depth: folders for AutoencoderTiny and DPTForDepthEstimation. clip_skip counts as in
    AUTOMATIC1111 (1 = the last CLIP layer; `vcam.model.text`).
    """

    base: Path
    sd15: Path
    motion: Path
    depth: Path
    prompt: str
    name: str = "live2diff"
    base_format: str = "single_file"
    lcm_lora: Path | None = None
    style_lora: Path | None = None
    lora_scale: float = 1.0
    taesd: Path | None = None
    t_index_list: tuple[int, ...] = (30, 40)
    clip_skip: int = 2
    width: int = 512
    height: int = 512
    seed: int = 0
    noise: str = DEFAULT_NOISE  # "fresh" (Live2Diff's reference) or "fixed" (StreamDiffusion's): vcam.model.noise
    vae: str = "taesd"  # "taesd" (fast, the default) or "kl" (SD's VAE)
    similar_filter: bool = False
    attention: str = "auto"  # temporal attention kernel: auto | math | sdpa | xformers | fused
    compile: bool = False  # torch.compile the UNet (CUDA; the first calls are slow)
    depth_every: int = 1  # estimate depth on every N-th frame, reuse it in between (`StreamPipeline`)
    overlap: bool = False  # encode the next frame during the UNet call (vcam.model.overlap; one more frame late)


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" is CUDA when available, else MPS when available, else the CPU."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"models.device {device!r} is not one of {DEVICES}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "models.device is 'cuda' but torch sees no CUDA GPU: install a CUDA build of torch or use 'cpu'"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("models.device is 'mps' but this torch has no MPS backend: use 'cpu'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto" is float16 on CUDA and MPS, float32 on the CPU."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"models.dtype {dtype!r} is not one of {DTYPES}")
    if dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return torch.float16 if dtype == "float16" else torch.float32


def _require_path(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist: run `vcam models download` or fix the path")
    return path


def _load_text_encoder(spec: PipelineSpec) -> Any:
    """The style's CLIP text encoder: base/text_encoder, a single file's own weights, or SD1.5's."""
    from transformers import CLIPTextModel

    if spec.base.is_dir() and (spec.base / "text_encoder" / "config.json").is_file():
        return CLIPTextModel.from_pretrained(spec.base / "text_encoder", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(spec.sd15 / "text_encoder", local_files_only=True)
    if spec.base.is_file():
        from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
        from vcam.model.weights import WeightsError, load_state_dict_file

        converted = convert_ldm_clip_checkpoint(load_state_dict_file(spec.base))
        if converted:
            expected = set(text_encoder.state_dict())
            if not any(key.startswith("text_model.") for key in expected):  # transformers 5 layout
                converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
            usable = {key: value for key, value in converted.items() if key in expected}
            missing = expected - set(usable) - {"text_model.embeddings.position_ids"}
            if missing:
                raise WeightsError(
                    f"{spec.base}: its text encoder lacks {len(missing)} weights (e.g. {sorted(missing)[:3]}): "
                    "use an SD1.5 checkpoint"
                )
            text_encoder.load_state_dict(usable, strict=False)
            log.info("text encoder weights taken from %s", spec.base)
    return text_encoder


def _load_vae(spec: PipelineSpec) -> Any:
    if spec.vae not in VAE_KINDS:
        raise ConfigError(f"vae {spec.vae!r} is not one of {VAE_KINDS}")
    if spec.vae == "taesd":
        from diffusers import AutoencoderTiny

        return AutoencoderTiny.from_pretrained(_require_path(spec.taesd, "TAESD folder"), local_files_only=True)
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(vae_source(spec), local_files_only=True)


def _scheduler_config(spec: PipelineSpec) -> dict[str, Any] | None:
    """SD1.5's scheduler_config.json, less what LCMScheduler does not take (its PNDM's `skip_prk_steps`, which
    diffusers would warn about on every load)."""
    import inspect
    import json

    from diffusers import LCMScheduler

    path = spec.sd15 / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return None
    accepted = set(inspect.signature(LCMScheduler.__init__).parameters)
    config = dict(json.loads(path.read_text(encoding="utf-8")))
    dropped = sorted(key for key in config if not key.startswith("_") and key not in accepted)
    if dropped:
        log.debug("%s: %s not used by the LCM scheduler", path, dropped)
    return {key: value for key, value in config.items() if key in accepted}


@dataclass(frozen=True)
class PipelineParts:
    """The models a pipeline uses besides its UNet; several pipelines (and UNets) may share one set."""

    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: Any  # transformers CLIPTextModel, on the device, eval
    codec: LatentCodec
    depth_encoder: DepthEncoder


def text_encoder_source(spec: PipelineSpec) -> Path:
    """Where the style's text encoder weights come from: the base (its text_encoder/ or single file), else SD1.5."""
    if spec.base.is_dir() and (spec.base / "text_encoder" / "config.json").is_file():
        return spec.base
    if spec.base.is_file():
        return spec.base
    return spec.sd15


def vae_source(spec: PipelineSpec) -> Path | None:
    """The folder the autoencoder is loaded from (TAESD's, or the base's / SD1.5's vae/)."""
    if spec.vae == "taesd":
        return spec.taesd
    return spec.base / "vae" if spec.base.is_dir() and (spec.base / "vae").is_dir() else spec.sd15 / "vae"


def _check_spec_paths(spec: PipelineSpec) -> None:
    for path, what in ((spec.base, "base model"), (spec.sd15, "SD1.5 folder"), (spec.motion, "motion checkpoint")):
        _require_path(path, what)
    _require_path(spec.depth, "depth model folder")


def load_pipeline_unet(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> StreamUNet:
    """The style's `StreamUNet`: base + motion weights, LCM-LoRA and style LoRA fused (in float32), on the device."""
    import torch
    from vcam.model.weights import fuse_lora, load_stream_unet

    _check_spec_paths(spec)
    unet = load_stream_unet(spec.base, spec.motion, torch_dtype=torch.float32, attention_backend=spec.attention)
    if spec.lcm_lora is not None:
        fuse_lora(unet, _require_path(spec.lcm_lora, "LCM-LoRA"), scale=1.0, adapter_name="lcm")
    if spec.style_lora is not None:
        fuse_lora(unet, _require_path(spec.style_lora, "style LoRA"), scale=spec.lora_scale, adapter_name="style")
    # nn.Module.to: ModelMixin.to warns about fp32 modules on every dtype cast, even when there are none
    unet = torch.nn.Module.to(unet, device=device, dtype=dtype).eval()
    if spec.compile:
        unet.unet = torch.compile(unet.unet)  # type: ignore[assignment]
    return unet


def load_pipeline_parts(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> PipelineParts:
    """Tokenizer, text encoder, autoencoder and depth estimator of a style, on the device."""
    import torch
    from transformers import CLIPTokenizer, DPTForDepthEstimation
    from vcam.model.depth import DPT_INPUT_SIZE, DepthEncoder
    from vcam.model.vae import LatentCodec

    _check_spec_paths(spec)
    tokenizer: Any = CLIPTokenizer.from_pretrained(spec.sd15 / "tokenizer", local_files_only=True)
    text_encoder = torch.nn.Module.to(_load_text_encoder(spec), device=device, dtype=dtype).eval()
    codec = LatentCodec(torch.nn.Module.to(_load_vae(spec), device=device, dtype=dtype).eval())
    depth_model: Any = DPTForDepthEstimation.from_pretrained(spec.depth, local_files_only=True)
    depth_size = int(getattr(depth_model.config, "image_size", DPT_INPUT_SIZE) or DPT_INPUT_SIZE)
    depth_model = torch.nn.Module.to(depth_model, device=device, dtype=dtype).eval()
    return PipelineParts(tokenizer, text_encoder, codec, DepthEncoder(depth_model, input_size=depth_size))


def load_text_lora(spec: PipelineSpec, text_encoder: Any) -> TextEncoderLora | None:
    """The style LoRA's text-encoder half at `lora_scale` (None without a style LoRA or when it has none)."""
    if spec.style_lora is None:
        return None
    from vcam.model.text_lora import text_encoder_lora
    from vcam.model.weights import load_state_dict_file

    path = _require_path(spec.style_lora, "style LoRA")
    return text_encoder_lora(load_state_dict_file(path), text_encoder, spec.lora_scale, str(path))


def assemble_stream_pipeline(
    spec: PipelineSpec, unet: StreamUNet, parts: PipelineParts, unet_lock: threading.Lock | None = None
) -> StreamPipeline:
    """A `StreamPipeline` for `spec` on already loaded models (the prompt, schedule and caches are its own).

    Pipelines sharing `unet` must share `unet_lock`.
    """
    from vcam.model.scheduler import build_lcm_scheduler, build_stream_schedule
    from vcam.model.text import PromptEncoder

    schedule = build_stream_schedule(spec.t_index_list, build_lcm_scheduler(_scheduler_config(spec)))
    text_lora = load_text_lora(spec, parts.text_encoder)
    return StreamPipeline(
        unet=unet,
        prompt_encoder=PromptEncoder(
            parts.tokenizer, parts.text_encoder, clip_skip=spec.clip_skip, text_lora=text_lora
        ),
        codec=parts.codec,
        depth_encoder=parts.depth_encoder,
        schedule=schedule,
        prompt=spec.prompt,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        noise=spec.noise,
        similar_filter=SimilarFrameFilter(seed=spec.seed) if spec.similar_filter else None,
        unet_lock=unet_lock,
        depth_every=spec.depth_every,
        overlap=spec.overlap,
    )


def load_stream_pipeline(spec: PipelineSpec, device: str = "auto", dtype: str = "auto") -> StreamPipeline:
    """Build a `StreamPipeline` from local weights (no network).

    The LCM-LoRA and the style LoRA are fused into the UNet in float32, then every model moves to the
    device and dtype ("auto": CUDA + float16 when there is a GPU, else CPU + float32). On CUDA the temporal
    attention uses xformers when installed, else SDPA; `spec.compile` wraps the UNet in `torch.compile`.
    `vcam.model.pool.ModelPool` does the same but shares models between styles.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    _check_spec_paths(spec)
    _check_t_index_list(spec)
    started = time.perf_counter()
    unet = load_pipeline_unet(spec, torch_device, torch_dtype)
    parts = load_pipeline_parts(spec, torch_device, torch_dtype)
    log.info(
        "loaded %s in %.1f s on %s (%s): steps %s, %dx%d",
        spec.name,
        time.perf_counter() - started,
        torch_device,
        torch_dtype,
        list(spec.t_index_list),
        spec.width,
        spec.height,
    )
    return assemble_stream_pipeline(spec, unet, parts)


def _check_t_index_list(spec: PipelineSpec) -> None:
    """Fail fast on a bad t_index_list, before any weights are read."""
    from vcam.model.scheduler import check_t_index_list

    check_t_index_list(spec.t_index_list)
