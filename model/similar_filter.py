"""`SimilarFrameFilter`: skip camera frames nearly equal to the last one processed (StreamDiffusion's filter)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: the similar-frame filter's defaults (from StreamDiffusion / Live2Diff)
SIMILAR_THRESHOLD = 0.98
SIMILAR_MAX_SKIPS = 10


def check_similar_threshold(threshold: object, where: str = "similar-frame threshold") -> float:
    """The one threshold rule (the config, the control API, the filter): a number strictly between 0 and 1.

    Returns it as a float; raises ConfigError naming `where` and the value otherwise.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ConfigError(
            f"{where} = {threshold!r} is not allowed: a number above 0 and below 1, e.g. {SIMILAR_THRESHOLD}"
            " (higher skips only nearly identical frames)"
        )
    return float(threshold)


class SimilarFrameFilter:
    """Skips inputs nearly equal to the last processed one (StreamDiffusion's stochastic similarity filter).

    Skip probability max(0, 1 - (1 - cos) / (1 - threshold)), cos being the cosine similarity of the two
    frames, with at most `max_skips` skips in a row. Seeded, so a run is reproducible.
    """

    def __init__(
        self, threshold: float = SIMILAR_THRESHOLD, max_skips: int = SIMILAR_MAX_SKIPS, seed: int = 0
    ) -> None:
        check_similar_threshold(threshold)
        if max_skips < 1:
            raise ConfigError(f"similar-frame max_skips {max_skips} is not >= 1: use e.g. 10")
        self.threshold = threshold
        self.max_skips = max_skips
        self.seed = seed
        self._random = random.Random(seed)
        self._previous: torch.Tensor | None = None
        self._skips = 0

    def reset(self) -> None:
        self._random = random.Random(self.seed)
        self._previous = None
        self._skips = 0

    def should_skip(self, image: torch.Tensor) -> bool:
        """True to skip `image` ([3, H, W]); a processed image becomes the new reference."""
        import torch

        flat = image.reshape(-1).float()
        if self._previous is not None and self._skips < self.max_skips:
            cosine = float(torch.nn.functional.cosine_similarity(flat, self._previous, dim=0))
            probability = max(0.0, 1.0 - (1.0 - cosine) / (1.0 - self.threshold))
            if self._random.random() < probability:
                self._skips += 1
                return True
        self._previous = flat
        self._skips = 0
        return False
