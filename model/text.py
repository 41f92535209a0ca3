"""The prompt encoder: CLIP tokenizer + text model, `clip_skip`, one cached embedding per prompt."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger(__name__)

#: how many prompts' embeddings are kept (a style switch back and forth costs no encode)
PROMPT_CACHE_SIZE = 8


class PromptEncoder:
    """Encodes prompts into the UNet's `encoder_hidden_states` [1, 77, d], cached per prompt.

    `clip_skip` counts like most SD front-ends: 1 uses the last CLIP layer, 2 the penultimate one
    (the usual choice for anime/cartoon checkpoints), and so on; the final layer norm is applied to
    whichever layer is used, as diffusers does.
    """

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, clip_skip: int = 1) -> None:
        num_layers = int(text_encoder.config.num_hidden_layers)
        if not 1 <= clip_skip <= num_layers:
            raise ValueError(f"clip_skip {clip_skip} is not in [1, {num_layers}]: use 1 (last layer) or 2")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.clip_skip = clip_skip
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

        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        input_ids = tokens.input_ids.to(self.device)  # [1, 77]
        with torch.inference_mode():
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
