"""The text-encoder half of a style LoRA, applied to a shared CLIP text encoder only while that style encodes.

Style LoRAs (kohya/A1111 files: `lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`, or
PEFT names: `text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight`) carry low-rank deltas for
the CLIP text model as well as for the UNet. Live2Diff's reference fuses both. Here the UNet half is fused into
the style's UNet (`vcam.model.weights.fuse_lora`), while the text encoder is shared by every style of the model
pool, so its half is applied for the duration of one prompt encode:

    with text_encoder_lock(encoder), lora.applied(encoder): ...

The touched weights are replaced by `W + scale * alpha/rank * up @ down` (computed in float32, stored in the
weight's dtype), exactly what a fused encoder holds, and restored bit for bit afterwards. Prompts are encoded
once and cached (`vcam.model.text.PromptEncoder`), so this costs a few milliseconds per new prompt, where a
fused copy of the encoder per LoRA would hold another 246 MB (fp16) per style and PEFT adapters would wrap the
shared encoder's layers for every style. The lock (one per text encoder) keeps another style's encode from
running while the weights are changed.

Scaling: `scale * alpha / rank`, the kohya convention diffusers, A1111 and ComfyUI share (and this project's UNet
fusion uses). Live2Diff's converter ignores a file's `alpha` (it applies `scale * up @ down`); the two agree when
alpha equals the rank.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vcam.errors import WeightsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KOHYA_PREFIX = "lora_te_"
PEFT_PREFIX = "text_encoder."
_DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight")
_UP_FOR_DOWN = {
    ".lora_down.weight": ".lora_up.weight",
    ".lora_A.weight": ".lora_B.weight",
    ".lora.down.weight": ".lora.up.weight",
    ".lora_linear_layer.down.weight": ".lora_linear_layer.up.weight",
}

_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def text_encoder_lock(text_encoder: Any) -> threading.Lock:
    """The lock every prompt encode on `text_encoder` holds (one per encoder object, made on first use)."""
    with _locks_guard:
        lock = _locks.get(text_encoder)
        if lock is None:
            lock = threading.Lock()
            _locks[text_encoder] = lock
        return lock


def _linear_names(text_encoder: Any) -> dict[str, str]:
    """Flat LoRA names (`encoder_layers_0_self_attn_q_proj`) -> module names of the encoder's Linear layers.

    transformers 4.x keeps the layers under `text_model.`, 5.x on the model itself: the flat name never has it.
    """
    import torch

    names: dict[str, str] = {}
    for name, module in text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            names[name.removeprefix("text_model.").replace(".", "_")] = name
    return names


def _flat_name(key: str) -> str | None:
    """The flat layer name of a text-encoder LoRA key's layer part, or None for a key of another model."""
    if key.startswith(KOHYA_PREFIX):
        layer = key[len(KOHYA_PREFIX) :]
    elif key.startswith(PEFT_PREFIX):
        layer = key[len(PEFT_PREFIX) :].replace(".", "_")
    else:
        return None
    return layer.removeprefix("text_model_")


@dataclass(frozen=True)
class TextEncoderLora:
    """Low-rank deltas for a CLIP text model's Linear layers: module name -> (down [r, in], up [out, r], factor).

    `factor` is the LoRA scale times alpha / rank; the delta of a layer is `factor * up @ down`.
    """

    source: str
    deltas: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]

    def delta(self, name: str) -> torch.Tensor:
        """The float32 weight delta [out, in] of layer `name`."""
        down, up, factor = self.deltas[name]
        return factor * (up.float() @ down.float())

    def fuse(self, text_encoder: Any) -> None:
        """Add the deltas to the encoder's weights for good (a fused encoder, e.g. to compare against)."""
        import torch

        modules = dict(text_encoder.named_modules())
        with torch.no_grad():
            for name in self.deltas:
                weight = modules[name].weight
                weight.copy_((weight.float() + self.delta(name).to(weight.device)).to(weight.dtype))

    @contextmanager
    def applied(self, text_encoder: Any) -> Iterator[None]:
        """The encoder with the deltas fused while the body runs; every touched weight is restored exactly.

        Hold `text_encoder_lock(text_encoder)` around it when other threads may use the encoder.
        """
        import torch

        modules = dict(text_encoder.named_modules())
        saved = {name: modules[name].weight.detach().clone() for name in self.deltas}
        try:
            self.fuse(text_encoder)
            yield
        finally:
            with torch.no_grad():
                for name, weight in saved.items():
                    modules[name].weight.copy_(weight)


def text_encoder_lora(
    state_dict: Mapping[str, torch.Tensor], text_encoder: Any, scale: float, source: str
) -> TextEncoderLora | None:
    """The text-encoder half of a LoRA state dict for `text_encoder`, or None when it has none.

    Raises WeightsError naming a key whose layer the encoder lacks or whose shapes do not fit.
    """
    linears = _linear_names(text_encoder)
    modules = dict(text_encoder.named_modules())
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for key, down in state_dict.items():
        suffix = next((suffix for suffix in _DOWN_SUFFIXES if key.endswith(suffix)), None)
        flat = _flat_name(key[: -len(suffix)]) if suffix is not None else None
        if suffix is None or flat is None:
            continue
        module_name = linears.get(flat)
        if module_name is None:
            raise WeightsError(f"{source}: {key} names no Linear layer of this CLIP text encoder")
        up_key = key[: -len(suffix)] + _UP_FOR_DOWN[suffix]
        up = state_dict.get(up_key)
        if up is None:
            raise WeightsError(f"{source}: {key} has no matching {up_key}: the LoRA file is incomplete")
        weight = modules[module_name].weight
        down_2d, up_2d = down.reshape(down.shape[0], -1), up.reshape(up.shape[0], -1)  # [r, in], [out, r]
        if up_2d.shape[1] != down_2d.shape[0] or (up_2d.shape[0], down_2d.shape[1]) != tuple(weight.shape):
            raise WeightsError(
                f"{source}: {key} has shapes {tuple(down.shape)} / {tuple(up.shape)}, which do not fit the text "
                f"encoder's {module_name} {tuple(weight.shape)}: this LoRA is for another model"
            )
        rank = down_2d.shape[0]
        alpha_tensor = state_dict.get(key[: -len(suffix)] + ".alpha")
        alpha = float(alpha_tensor) if alpha_tensor is not None else float(rank)
        deltas[module_name] = (down_2d, up_2d, scale * alpha / rank)
    if not deltas:
        return None
    log.info(
        "%s: %d text-encoder LoRA layers, applied at scale %g while its prompts encode", source, len(deltas), scale
    )
    return TextEncoderLora(source=source, deltas=deltas)
