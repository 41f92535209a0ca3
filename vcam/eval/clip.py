"""CLIP image and text embeddings for the CLIP metrics (ViT-B/32, as StreamV2V's clip_score.py uses).

Frames are preprocessed as CLIP was trained: the short side resized to the model's input size (bicubic),
the centre square cropped, pixels in [0, 1] normalised with OpenAI CLIP's mean and std. Embeddings are the
projected pooled outputs (`image_embeds` / `text_embeds` of transformers' CLIPModel), L2-normalised.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: OpenAI CLIP's pixel normalisation (RGB)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_input(image: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [3, size, size] float32: short side to `size` (bicubic), centre crop, normalised."""
    import cv2

    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_CUBIC)  # [h, w, 3]
    top, left = (new_height - size) // 2, (new_width - size) // 2
    square = resized[top : top + size, left : left + size].astype(np.float32) / 255.0  # [size, size, 3]
    normalised = (square - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))  # [3, size, size]


class ClipScorer:
    """Embeds frames and prompts with a transformers `CLIPModel` and its CLIP tokenizer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.max_tokens = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_folder(cls, folder: Path, device: Any = "cpu") -> ClipScorer:
        """Load CLIPModel and CLIPTokenizer from a downloaded snapshot folder (no network)."""
        from transformers import CLIPModel, CLIPTokenizer

        model: Any = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        return cls(model.to(device), tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        """[N] frames [H, W, 3] uint8 RGB -> [N, d] unit-length float32 embeddings."""
        import torch

        batch = np.stack([clip_input(image, self.image_size) for image in images])  # [N, 3, s, s]
        dtype = next(self.model.parameters()).dtype
        pixels = torch.from_numpy(batch).to(device=self.device, dtype=dtype)  # [N, 3, s, s]
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output  # [N, hidden]
            embeds = self.model.visual_projection(pooled).float()  # [N, d]
        return _unit(embeds.cpu().numpy())

    def text_embedding(self, prompt: str) -> np.ndarray:
        """A prompt -> [d] unit-length float32 embedding."""
        import torch

        tokens = self.tokenizer(
            [prompt], padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            output = self.model.text_model(
                input_ids=tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device)
            )
            embeds = self.model.text_projection(output.pooler_output).float()  # [1, d]
        return _unit(embeds.cpu().numpy())[0]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def frame_consistency(embeddings: np.ndarray) -> float | None:
    """Mean cosine of consecutive frames' unit embeddings [N, d] (None below 2 frames); x100 in the tables."""
    if len(embeddings) < 2:
        return None
    return float((embeddings[:-1] * embeddings[1:]).sum(-1).mean())


def text_alignment(embeddings: np.ndarray, text: np.ndarray) -> float | None:
    """Mean cosine of each frame's unit embedding [N, d] with the prompt's [d] (None for no frames)."""
    if len(embeddings) == 0:
        return None
    return float((embeddings @ text).mean())
