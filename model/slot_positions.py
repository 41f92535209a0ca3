"""Temporal positions for the streaming attention: AnimateDiff's sinusoidal table, read per cache slot.

The streaming processor (`stream_attention.py`) adds each slot's PE row inside the attention, so K/V can be
cached without it (Live2Diff, arXiv 2407.08701, section 3: positions per slot as in training).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import SinusoidalPositionalEmbedding


class SlotPositionalEncoding(SinusoidalPositionalEmbedding):
    """AnimateDiff's sinusoidal PE table (same ``pe`` buffer, so state dicts match diffusers').

    Its forward is the identity: the streaming processor adds the PE itself, per slot, inside the attention.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def table(self) -> torch.Tensor:
        """The sinusoidal table, ``[1, max_length, dim]``."""
        return self.get_buffer("pe")

    @property
    def max_length(self) -> int:
        return int(self.table.shape[1])

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """PE rows for ``positions`` (long tensor), shape ``[len(positions), dim]``."""
        if positions.numel() and int(positions.max()) >= self.max_length:
            raise ValueError(f"position {int(positions.max())} exceeds the PE table length {self.max_length}")
        return self.table[0, positions]
