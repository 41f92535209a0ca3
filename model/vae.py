"""Images to latents and back: SD's AutoencoderKL or TAESD (AutoencoderTiny), both in SD's scaled latent space."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

log = logging.getLogger(__name__)

#: pixels per latent cell of SD1.5's autoencoders
VAE_SCALE_FACTOR = 8


class LatentCodec:
    """Encodes [-1, 1] images [B, 3, H, W] into latents [B, 4, H/8, W/8] scaled like SD's, and decodes them.

    The latents are `encode(x) * scaling_factor` for both autoencoders: 0.18215 for SD1.5's AutoencoderKL
    (whose posterior mean is used, so the encoding is deterministic), 1.0 for TAESD, which is trained to
    output SD's scaled latents directly.
    """

    def __init__(self, vae: AutoencoderKL | AutoencoderTiny) -> None:
        self.vae: Any = cast(Any, vae)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.is_tiny = type(vae).__name__ == "AutoencoderTiny"

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, 4, H/8, W/8] scaled latents."""
        import torch

        images = images.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            encoded = self.vae.encode(images)
            # TAESD returns latents; AutoencoderKL a posterior, whose mean is used
            latents = encoded.latents if self.is_tiny else encoded.latent_dist.mode()  # [B, 4, h, w]
        return latents * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 4, h, w] scaled latents -> [B, 3, 8h, 8w] in [-1, 1]."""
        import torch

        latents = latents.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            images = self.vae.decode(latents / self.scaling_factor).sample  # [B, 3, H, W]
        return images.clamp(-1.0, 1.0)


def images_to_tensor(images: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HxWx3 uint8 RGB images (all the same size) -> [B, 3, H, W] in [-1, 1]."""
    import torch

    batch = np.stack(images)  # [B, H, W, 3] uint8
    tensor = torch.from_numpy(batch).to(device=device).permute(0, 3, 1, 2)  # [B, 3, H, W]
    return tensor.to(dtype) / 127.5 - 1.0


def tensor_to_images(tensor: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, H, W] in [-1, 1] -> HxWx3 uint8 RGB images."""
    import torch

    scaled = ((tensor.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)  # [B, 3, H, W]
    batch = scaled.permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3]
    return [np.ascontiguousarray(image) for image in batch]
