"""The noise a stream adds: at a frame's first step, and when a denoised latent is re-noised for its next step.

Two modes, a style setting (`noise = "fresh" | "fixed"`):

- `fresh` (Live2Diff's reference, the default): every entry draws new Gaussian noise each time it is noised.
  Successive frames get independent noise, so fine texture (hatching, paper grain, pixel dither) is drawn anew
  each frame and shimmers a little; the motion modules' attention to past frames is what holds it together.
- `fixed` (StreamDiffusion's choice): one noise tensor per denoising step, drawn once per stream and reused for
  every frame. A still scene then gives nearly the same output frame after frame (less flicker), but the
  texture stays glued to the screen rather than to the moving subject.

Both are seeded per stream: the same seed and the same frames give the same outputs (a `reset` starts the
draws again). The generator runs on the CPU so a seed means the same noise on every device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: the noise modes, as the style setting and the pipeline spell them
NOISE_MODES = ("fresh", "fixed")
#: the reference's: fresh noise for every entry at every step
DEFAULT_NOISE = "fresh"


def check_noise_mode(noise: object, where: str = "noise") -> str:
    """`noise` when it is one of NOISE_MODES, else ConfigError naming the value and the choices."""
    if not isinstance(noise, str) or noise not in NOISE_MODES:
        raise ConfigError(f"{where} = {noise!r} is not allowed: use one of {', '.join(NOISE_MODES)}")
    return noise


class StreamNoise:
    """Seeded noise for one stream: `draw(step, count)` -> [count, 4, h, w] on the stream's device and dtype."""

    def __init__(
        self,
        mode: str,
        seed: int,
        num_steps: int,
        latent_shape: tuple[int, int, int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.mode = check_noise_mode(mode)
        self.seed = seed
        self.num_steps = num_steps
        self.latent_shape = latent_shape  # (4, h, w)
        self.device = device
        self.dtype = dtype
        self.reset()

    def reset(self) -> None:
        """Start the draws again from the seed (the same frames then give the same outputs)."""
        import torch

        self._generator = torch.Generator(device="cpu").manual_seed(self.seed)
        fixed = torch.randn(
            (self.num_steps, *self.latent_shape), generator=torch.Generator(device="cpu").manual_seed(self.seed)
        )  # [T, 4, h, w]
        self._fixed = fixed.to(device=self.device, dtype=self.dtype)

    def draw(self, step: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise for `count` latents at denoising step `step`: [count, 4, h, w].

        `fixed`: the step's own tensor for every latent; `fresh`: new draws from `generator` (the stream's when
        None; a prompt switch's warmup passes its own so it does not shift the stream's sequence).
        """
        import torch

        if self.mode == "fixed":
            return self._fixed[step].expand(count, -1, -1, -1)  # [count, 4, h, w]
        fresh = torch.randn((count, *self.latent_shape), generator=generator or self._generator)
        return fresh.to(device=self.device, dtype=self.dtype)  # [count, 4, h, w]
