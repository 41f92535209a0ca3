"""Live2Diff's depth mapping network: the depth latent, mapped to ``conv_in``'s channels and added to its output.

Not a ControlNet: a few 3x3 convolutions with SiLU, the last one zero-initialised so an untrained mapper
leaves the UNet unchanged. Parameter names (``conv_in``, ``blocks.N``, ``conv_out``) follow Live2Diff's
``MappingNetwork`` so its checkpoint converts by a prefix change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DepthMapper(nn.Module):
    """``[N, latent_channels, h, w]`` depth latent -> ``[N, embedding_channels, h, w]`` conv_in residual.

    With the default channels (16, 32, 96, 256): 4->16, then 16->16, 16->32, 32->32, 32->96, 96->96, 96->256,
    then a zero-initialised 256->320.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        embedding_channels: int = 320,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        if not block_out_channels:
            raise ValueError("block_out_channels must name at least one width")
        self.conv_in = nn.Conv2d(latent_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for channels_in, channels_out in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            self.blocks.append(nn.Conv2d(channels_in, channels_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1))
        self.conv_out = nn.Conv2d(block_out_channels[-1], embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.get_parameter("bias"))

    def forward(self, depth_latent: torch.Tensor) -> torch.Tensor:
        embedding = F.silu(self.conv_in(depth_latent))  # [N, c0, h, w]
        for block in self.blocks:
            embedding = F.silu(block(embedding))  # [N, ci, h, w]
        return self.conv_out(embedding)  # [N, embedding_channels, h, w]
