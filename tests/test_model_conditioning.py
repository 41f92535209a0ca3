"""Conditioning as Live2Diff's reference does it, on tiny models: clip_skip indexing, a style LoRA's text-encoder
half, depth normalised over the warmup batch, the noise modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel
from vcam.model.noise import DEFAULT_NOISE, NOISE_MODES, StreamNoise, check_noise_mode
from vcam.model.text import PromptEncoder, from_reference_clip_skip
from vcam.model.text_lora import text_encoder_lock, text_encoder_lora
from vcam.model.tiny import BOS_TOKEN, EOS_TOKEN, build_tiny_pipeline, tiny_clip_tokenizer

from tests.pipeline_helpers import moving_frames
from vcam.errors import ConfigError, WeightsError

PROMPT = "a person talking to the camera"
HIDDEN = 32
LAYERS = 4
RANK = 4


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_clip(seed: int = 0, layers: int = LAYERS) -> tuple[Any, CLIPTextModel]:
    """A byte-level tokenizer and a `layers`-layer CLIP text model with random weights."""
    tokenizer = tiny_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=int(tokenizer.convert_tokens_to_ids(BOS_TOKEN)),
        eos_token_id=int(tokenizer.convert_tokens_to_ids(EOS_TOKEN)),
        pad_token_id=int(tokenizer.convert_tokens_to_ids(EOS_TOKEN)),
    )
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config).eval()


def reference_embedding(tokenizer: Any, encoder: CLIPTextModel, prompt: str, clip_skip: int) -> torch.Tensor:
    """Live2Diff's `_encode_prompt`: `hidden_states[-(clip_skip + 1)]`, then the final layer norm."""
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        output = encoder(ids, output_hidden_states=True)
        text_model = getattr(encoder, "text_model", encoder)
        return text_model.final_layer_norm(output.hidden_states[-(clip_skip + 1)])  # [1, 77, d]


# -- clip_skip ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference_clip_skip", [1, 2, 3])
def test_clip_skip_picks_the_layer_the_reference_picks(reference_clip_skip: int) -> None:
    tokenizer, encoder = tiny_clip()
    ours = PromptEncoder(tokenizer, encoder, clip_skip=from_reference_clip_skip(reference_clip_skip))(PROMPT)
    torch.testing.assert_close(ours, reference_embedding(tokenizer, encoder, PROMPT, reference_clip_skip))


def test_clip_skip_counts_layers_from_the_end() -> None:
    """1 is the last layer (the encoder's own output), 2 the penultimate one: layers differ, so embeddings do."""
    tokenizer, encoder = tiny_clip()
    ids = tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        last = encoder(ids).last_hidden_state
    embeddings = [PromptEncoder(tokenizer, encoder, clip_skip=k)(PROMPT) for k in range(1, LAYERS + 1)]
    torch.testing.assert_close(embeddings[0], last)
    for shallower, deeper in zip(embeddings[1:], embeddings[:-1], strict=True):
        assert not torch.allclose(shallower, deeper)
    assert from_reference_clip_skip(None) == 1 and from_reference_clip_skip(2) == 3
    with pytest.raises(ValueError, match="clip_skip 5 is not in"):
        PromptEncoder(tokenizer, encoder, clip_skip=LAYERS + 1)


# -- the text-encoder half of a style LoRA ---------------------------------------------------------------------


def kohya_lora(encoder: CLIPTextModel, seed: int = 1, alpha: float | None = 2.0) -> dict[str, torch.Tensor]:
    """A kohya-named LoRA for the text encoder's attention and MLP layers of layers 0 and 2, plus one UNet pair."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    modules = dict(encoder.named_modules())
    for layer in (0, 2):
        for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.fc1"):
            name = f"encoder.layers.{layer}.{part}"
            weight = modules[name].weight
            key = "lora_te_text_model_" + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = torch.randn(RANK, weight.shape[1], generator=generator) * 0.3
            tensors[f"{key}.lora_up.weight"] = torch.randn(weight.shape[0], RANK, generator=generator) * 0.3
            if alpha is not None:
                tensors[f"{key}.alpha"] = torch.tensor(alpha)
    tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = torch.randn(RANK, 8)
    tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"] = torch.randn(8, RANK)
    return tensors


def kohya_stems(encoder: CLIPTextModel) -> list[tuple[str, str]]:
    """(kohya stem, module name) for every Linear layer of the encoder."""
    return [
        ("lora_te_text_model_" + name.replace(".", "_"), name)
        for name, module in encoder.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]


def manually_fused(encoder: CLIPTextModel, lora: dict[str, torch.Tensor], scale: float) -> CLIPTextModel:
    """A copy of `encoder` with the LoRA's text layers fused by hand: W += scale * alpha / rank * up @ down."""
    fused = CLIPTextModel(encoder.config).eval()
    fused.load_state_dict(encoder.state_dict())
    modules = dict(fused.named_modules())
    with torch.no_grad():
        for key, down in lora.items():
            if not key.startswith("lora_te_") or not key.endswith(".lora_down.weight"):
                continue
            stem = key.removesuffix(".lora_down.weight")
            name = dict(kohya_stems(encoder))[stem]
            alpha = float(lora[f"{stem}.alpha"]) if f"{stem}.alpha" in lora else float(RANK)
            modules[name].weight += scale * alpha / RANK * (lora[f"{stem}.lora_up.weight"] @ down)
    return fused


@pytest.mark.parametrize("alpha", [2.0, None], ids=["alpha2", "no-alpha"])
def test_text_lora_embedding_equals_a_manually_fused_encoder(alpha: float | None) -> None:
    tokenizer, encoder = tiny_clip()
    lora = kohya_lora(encoder, alpha=alpha)
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    text_lora = text_encoder_lora(lora, encoder, scale=0.7, source="moxin.safetensors")
    assert text_lora is not None and len(text_lora.deltas) == 6
    styled = PromptEncoder(tokenizer, encoder, clip_skip=2, text_lora=text_lora)(PROMPT)
    expected = PromptEncoder(tokenizer, manually_fused(encoder, lora, 0.7), clip_skip=2)(PROMPT)
    torch.testing.assert_close(styled, expected, atol=1e-6, rtol=1e-5)
    plain = PromptEncoder(tokenizer, encoder, clip_skip=2)(PROMPT)
    assert (styled - plain).abs().max() > 1e-3  # the LoRA changes the conditioning
    # the shared encoder is left exactly as it was: another style sharing it is unaffected
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name]), name
    torch.testing.assert_close(plain, reference_embedding(tokenizer, encoder, PROMPT, 1))


def test_two_styles_on_one_text_encoder_keep_their_own_conditioning() -> None:
    tokenizer, encoder = tiny_clip()
    first_lora, second_lora = kohya_lora(encoder, seed=1), kohya_lora(encoder, seed=2)
    first = PromptEncoder(tokenizer, encoder, text_lora=text_encoder_lora(first_lora, encoder, 1.0, "a"))
    second = PromptEncoder(tokenizer, encoder, text_lora=text_encoder_lora(second_lora, encoder, 1.0, "b"))
    plain = PromptEncoder(tokenizer, encoder)
    prompts = [f"{PROMPT} {index}" for index in range(3)]
    interleaved = [(first(p), second(p), plain(p)) for p in prompts]
    for prompt, (a, b, c) in zip(prompts, interleaved, strict=True):
        torch.testing.assert_close(a, PromptEncoder(tokenizer, manually_fused(encoder, first_lora, 1.0))(prompt))
        torch.testing.assert_close(b, PromptEncoder(tokenizer, manually_fused(encoder, second_lora, 1.0))(prompt))
        torch.testing.assert_close(c, reference_embedding(tokenizer, encoder, prompt, 0))
    assert text_encoder_lock(encoder) is text_encoder_lock(encoder)


def test_peft_named_text_lora_is_read_too() -> None:
    tokenizer, encoder = tiny_clip()
    kohya = kohya_lora(encoder, alpha=None)
    peft: dict[str, torch.Tensor] = {}
    for key, value in kohya.items():
        if key.startswith("lora_te_") and key.endswith("lora_down.weight"):
            stem = key.removesuffix(".lora_down.weight")
            module = dict(kohya_stems(encoder))[stem]
            peft[f"text_encoder.text_model.{module}.lora_A.weight"] = value
            peft[f"text_encoder.text_model.{module}.lora_B.weight"] = kohya[f"{stem}.lora_up.weight"]
    from_kohya = text_encoder_lora(kohya, encoder, 1.0, "kohya")
    from_peft = text_encoder_lora(peft, encoder, 1.0, "peft")
    assert from_kohya is not None and from_peft is not None
    assert set(from_kohya.deltas) == set(from_peft.deltas)
    for name in from_kohya.deltas:
        torch.testing.assert_close(from_kohya.delta(name), from_peft.delta(name))


def test_text_lora_for_another_model_is_refused() -> None:
    _, encoder = tiny_clip()
    assert text_encoder_lora({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, encoder, 1.0, "unet-only") is None
    wrong = {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(RANK, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, RANK),
    }
    with pytest.raises(WeightsError, match="do not fit the text encoder's encoder.layers.0.self_attn.q_proj"):
        text_encoder_lora(wrong, encoder, 1.0, "sdxl.safetensors")
    missing = {"lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight": torch.zeros(RANK, HIDDEN)}
    with pytest.raises(WeightsError, match="names no Linear layer"):
        text_encoder_lora(missing, encoder, 1.0, "deep.safetensors")


def test_pipeline_spec_loads_the_text_half_of_its_style_lora(tmp_path: Path) -> None:
    from vcam.model.loading import PipelineSpec, load_text_lora

    _, encoder = tiny_clip()
    path = tmp_path / "style.safetensors"
    save_file(kohya_lora(encoder), str(path))
    spec = PipelineSpec(
        base=tmp_path, sd15=tmp_path, motion=tmp_path, depth=tmp_path, prompt=PROMPT, style_lora=path, lora_scale=0.5
    )
    text_lora = load_text_lora(spec, encoder)
    assert text_lora is not None and text_lora.source == str(path)
    down, up, factor = next(iter(text_lora.deltas.values()))
    assert factor == pytest.approx(0.5 * 2.0 / RANK)
    assert (
        load_text_lora(
            PipelineSpec(base=tmp_path, sd15=tmp_path, motion=tmp_path, depth=tmp_path, prompt=PROMPT), encoder
        )
        is None
    )


# -- depth over the warmup batch --------------------------------------------------------------------------------


def test_warmup_depth_is_normalised_over_the_warmup_batch() -> None:
    pipeline = build_tiny_pipeline(noise="fixed")
    assert pipeline.depth_encoder is not None
    seen: list[torch.Tensor] = []
    original = pipeline.unet.warmup

    def recording(
        sample: torch.Tensor, timestep: Any, embeds: Any, depth: torch.Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        seen.append(depth.clone())
        return original(sample, timestep, embeds, depth, *args, **kwargs)

    pipeline.unet.warmup = recording  # type: ignore[method-assign]
    # frames of very different brightness, so per-frame and per-batch min-max differ
    frames = [
        (frame.astype(np.float32) * (0.2 + 0.1 * index)).astype(np.uint8)
        for index, frame in enumerate(moving_frames(8))
    ]
    for frame in frames:
        pipeline.step(frame)
    assert pipeline.warmed_up and len(seen) == pipeline.num_steps
    pixels = torch.cat([pipeline._to_tensor(frame) for frame in frames])  # [8, 3, H, W]
    raw = pipeline.depth_encoder.predict(pixels)  # [8, 1, d, d]
    batch = pipeline.depth_encoder.encode(raw, pipeline.codec, pipeline.height, pipeline.width, batch=True)
    per_frame = pipeline.depth_encoder.encode(raw, pipeline.codec, pipeline.height, pipeline.width, batch=False)
    torch.testing.assert_close(seen[0], batch, atol=1e-5, rtol=1e-4)
    assert (batch - per_frame).abs().max() > 1e-3
    side = int(raw.shape[-1])
    normalised = pipeline.depth_encoder.normalise(raw, side, side, batch=True)
    assert float(normalised.min()) == pytest.approx(-1.0, abs=1e-3) and float(normalised.max()) == pytest.approx(
        1.0, abs=1e-3
    )
    # after the warmup each frame is normalised on its own, as in the reference
    frame = frames[0]
    plan = pipeline.begin_step(frame)
    assert plan.depth is not None
    alone = pipeline.depth_encoder(pipeline._to_tensor(frame), pipeline.codec)  # [1, 4, h, w]
    torch.testing.assert_close(plan.depth[0:1], alone, atol=1e-5, rtol=1e-4)


# -- noise -------------------------------------------------------------------------------------------------------


def test_noise_modes_default_to_the_references_fresh_noise() -> None:
    assert DEFAULT_NOISE == "fresh" and set(NOISE_MODES) == {"fresh", "fixed"}
    with pytest.raises(ConfigError, match="noise = 'random' is not allowed: use one of fresh, fixed"):
        check_noise_mode("random")
    fresh = StreamNoise(
        "fresh", seed=5, num_steps=2, latent_shape=(4, 2, 2), device=torch.device("cpu"), dtype=torch.float32
    )
    fixed = StreamNoise(
        "fixed", seed=5, num_steps=2, latent_shape=(4, 2, 2), device=torch.device("cpu"), dtype=torch.float32
    )
    first, second = fresh.draw(1, 1), fresh.draw(1, 1)
    assert not torch.equal(first, second)  # a new draw every time
    assert torch.equal(fixed.draw(1, 1), fixed.draw(1, 1))  # one tensor per step
    assert not torch.equal(fixed.draw(0, 1), fixed.draw(1, 1))
    fresh.reset()
    assert torch.equal(fresh.draw(1, 1), first)  # seeded: the same draws after a reset


def test_fresh_and_fixed_noise_give_different_streams() -> None:
    frames = moving_frames(11)

    def latents(noise: str) -> list[torch.Tensor]:
        pipeline = build_tiny_pipeline(noise=noise)
        return [result.latent for frame in frames for result in pipeline.step(frame) if result.latent is not None]

    fresh, fixed = latents("fresh"), latents("fixed")
    assert len(fresh) == len(fixed) == 10
    assert any(not torch.allclose(a, b) for a, b in zip(fresh, fixed, strict=True))
    torch.testing.assert_close(latents("fresh")[-1], fresh[-1])  # deterministic for one seed
