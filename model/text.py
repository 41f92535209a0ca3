"""The prompt encoder: CLIP tokenizer + text model, `clip_skip`, a style LoRA's text half, one embedding per prompt.

`clip_skip` counts as AUTOMATIC1111 and civitai model cards do: 1 = the last CLIP layer, 2 = the penultimate
one, k = `hidden_states[-k]`; the final layer norm is applied to whichever layer is used. diffusers' and
Live2Diff's own `clip_skip` count the layers skipped instead (`hidden_states[-(clip_skip + 1)]`), so their
`clip_skip: 2` is this project's 3: `from_reference_clip_skip` converts.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer
    from vcam.model.text_lora import TextEncoderLora

log = logging.getLogger(__name__)

#: how many prompts' embeddings are kept (a style switch back and forth costs no encode)
PROMPT_CACHE_SIZE = 8


def from_reference_clip_skip(reference: int | None) -> int:
    """Live2Diff's / diffusers' `clip_skip` (layers skipped; None or 0: the last layer) -> this project's count."""
    return (reference or 0) + 1


class PromptEncoder:
    """Encodes prompts into the UNet's `encoder_hidden_states` [1, 77, d], cached per prompt.

    `clip_skip`: 1 uses the last CLIP layer, 2 the penultimate one (the usual choice for anime/cartoon
    checkpoints), k the k-th from the end (see the module's docstring for the reference's count).
    `text_lora`: a style LoRA's text-encoder half, fused into the (shared) text encoder only while this
    encoder's prompts are encoded (`vcam.model.text_lora`).
    """

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        clip_skip: int = 1,
        text_lora: TextEncoderLora | None = None,
    ) -> None:
        num_layers = int(text_encoder.config.num_hidden_layers)
        if not 1 <= clip_skip <= num_layers:
            raise ValueError(f"clip_skip {clip_skip} is not in [1, {num_layers}]: use 1 (last layer) or 2")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.clip_skip = clip_skip
        self.text_lora = text_lora
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def __call__(self, prompt: str) -> torch.Tensor:
        """The embedding of `prompt`: [1, 77, d] on the text encoder's device and dtype."""
        with self._lock:
            cached = self._cache.get(prompt)
            if cached is not None:
                self._cache.move_to_end(prompt)
                return cached
        embeds = self._encode(prompt)
        with self._lock:
            self._cache[prompt] = embeds
            while len(self._cache) > PROMPT_CACHE_SIZE:
                self._cache.popitem(last=False)
        return embeds

    def _encode(self, prompt: str) -> torch.Tensor:
        import torch
        from vcam.model.text_lora import text_encoder_lock

        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        input_ids = tokens.input_ids.to(self.device)  # [1, 77]
        with text_encoder_lock(self.text_encoder), self._lora_applied(), torch.inference_mode():
            if self.clip_skip == 1:
                embeds = self.text_encoder(input_ids).last_hidden_state  # [1, 77, d]
            else:
                output = self.text_encoder(input_ids, output_hidden_states=True)
                hidden = output.hidden_states[-self.clip_skip]  # [1, 77, d]
                # transformers 5 keeps the layers on the model itself, 4.x under `.text_model`
                text_model = getattr(self.text_encoder, "text_model", self.text_encoder)
                embeds = text_model.final_layer_norm(hidden)  # [1, 77, d]
        log.debug("encoded prompt %r (clip_skip %d)", prompt, self.clip_skip)
        return embeds.clone()

    def _lora_applied(self) -> AbstractContextManager[None]:
        return self.text_lora.applied(self.text_encoder) if self.text_lora is not None else nullcontext()
