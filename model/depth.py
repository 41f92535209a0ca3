"""The depth prior: MiDaS DPT-Hybrid (transformers' DPT classes) -> normalised 3-channel depth -> VAE latent."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import DPTForDepthEstimation
    from vcam.model.vae import LatentCodec

log = logging.getLogger(__name__)

#: the input size DPT-Hybrid was trained at
DPT_INPUT_SIZE = 384
#: `depth_every`'s range: depth on every frame (1) up to once a second at 30 fps
MAX_DEPTH_EVERY = 30


def check_depth_every(value: object, where: str = "depth_every") -> int:
    """The one `depth_every` rule (a style setting and a pipeline option: depth is estimated on every N-th frame
    and reused in between): `value` when it is a whole number from 1 to MAX_DEPTH_EVERY, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEPTH_EVERY:
        raise ConfigError(
            f"{where} = {value!r} is not allowed: a whole number from 1 (depth on every frame) to {MAX_DEPTH_EVERY}"
            " (depth on every N-th frame, reused in between)"
        )
    return value


class DepthEncoder:
    """Turns input frames into the depth latents the UNet's mapping network consumes.

    For each frame: resize to the DPT's input size (DPT-Hybrid's processor normalises with mean and std
    0.5, i.e. takes [-1, 1] images as they are), predict relative inverse depth, min-max normalise it to
    [-1, 1], repeat it to 3 channels, resize to the frame's size and encode it with the VAE (scaled like SD
    latents). The min and max are taken per frame (`batch=False`, a streaming frame) or over the whole batch
    (`batch=True`, the warmup frames, as Live2Diff's reference normalises its warmup batch at once).
    """

    def __init__(self, model: DPTForDepthEstimation, input_size: int = DPT_INPUT_SIZE) -> None:
        self.model = model
        self.input_size = input_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> the DPT's raw relative inverse depth [B, 1, d, d] float32 (d: input size)."""
        import torch
        import torch.nn.functional as F

        pixels = images.to(device=self.device, dtype=self.dtype)
        pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            depth = self.model(pixel_values=pixels).predicted_depth  # [B, d, d]
        return depth.float()[:, None]  # [B, 1, d, d]

    @staticmethod
    def normalise(depth: torch.Tensor, height: int, width: int, batch: bool = False) -> torch.Tensor:
        """Raw depth [B, 1, d, d] -> [B, 3, height, width] in [-1, 1] (near is 1), min-max per frame or per batch."""
        import torch.nn.functional as F

        dims = (0, 1, 2, 3) if batch else (1, 2, 3)
        low = depth.amin(dim=dims, keepdim=True)  # [B or 1, 1, 1, 1]
        high = depth.amax(dim=dims, keepdim=True)  # [B or 1, 1, 1, 1]
        normalised = (depth - low) / (high - low).clamp_min(1e-6) * 2.0 - 1.0  # [B, 1, d, d]
        normalised = F.interpolate(normalised, size=(height, width), mode="bilinear", align_corners=False)
        return normalised.repeat(1, 3, 1, 1).clamp(-1.0, 1.0)  # [B, 3, H, W]

    def depth_images(self, images: torch.Tensor, batch: bool = False) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, 3, H, W] depth in [-1, 1] (near is 1)."""
        return self.normalise(self.predict(images), int(images.shape[2]), int(images.shape[3]), batch=batch)

    def encode(
        self, depth: torch.Tensor, codec: LatentCodec, height: int, width: int, batch: bool = False
    ) -> torch.Tensor:
        """Raw depth [B, 1, d, d] (from `predict`) -> depth latents [B, 4, H/8, W/8]."""
        return codec.encode(self.normalise(depth, height, width, batch=batch))

    def __call__(self, images: torch.Tensor, codec: LatentCodec, batch: bool = False) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> depth latents [B, 4, H/8, W/8]."""
        return codec.encode(self.depth_images(images, batch=batch))
