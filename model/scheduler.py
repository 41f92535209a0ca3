"""The LCM denoising schedule of a stream: timesteps picked by `t_index_list`, and the per-step scalings.

The stream batch denoises T frames at T different steps in one UNet call, so instead of the stateful
`LCMScheduler.step` it needs the scalings of every step at once, indexed by each entry's step. This file
builds them from diffusers' `LCMScheduler` (SD1.5's config) and applies the LCM update per entry.
Importing it is cheap (torch and diffusers are imported inside the functions): the style catalogue uses
`check_t_index_list`, the one t_index_list rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from diffusers import LCMScheduler

log = logging.getLogger(__name__)

#: Live2Diff's noise schedule: 1000 train steps, *linear* betas 0.00085-0.012. This is the schedule AnimateDiff and
#: Live2Diff trained their motion modules with and that Live2Diff's inference builds its LCMScheduler from; SD1.5's
#: own scheduler_config.json says "scaled_linear" (sqrt(alpha) 0.65 instead of 0.54 at t=399), so it is overridden.
LIVE2DIFF_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "trained_betas": None,
}

#: the scheduler config the stream uses (the keys LCMScheduler understands)
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    **LIVE2DIFF_BETAS,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "original_inference_steps": 50,
    "timestep_spacing": "leading",
}

#: the schedule `t_index_list` indexes into (t = 999 - 20 * i for SD1.5)
NUM_INFERENCE_STEPS = 50
#: the most denoising steps a stream takes (one frame per step rides in each UNet call)
MAX_DENOISING_STEPS = 4


def build_lcm_scheduler(config: dict[str, Any] | None = None) -> LCMScheduler:
    """An LCMScheduler from a base model's scheduler config (SD1.5's when None), with Live2Diff's linear betas.

    Only keys that do not change the noise schedule are taken from `config` (e.g. prediction_type); the betas
    are always `LIVE2DIFF_BETAS`, whatever the base model's scheduler_config.json says.
    """
    from diffusers import LCMScheduler

    merged = dict(SD15_SCHEDULER_CONFIG)
    if config:
        merged.update({key: value for key, value in config.items() if not key.startswith("_")})
    overridden = {key: merged[key] for key in LIVE2DIFF_BETAS if merged.get(key) != LIVE2DIFF_BETAS[key]}
    if overridden:
        log.debug("scheduler config %s replaced by Live2Diff's %s", overridden, LIVE2DIFF_BETAS)
    merged.update(LIVE2DIFF_BETAS)
    merged["original_inference_steps"] = NUM_INFERENCE_STEPS
    merged["timestep_spacing"] = "leading"
    merged["clip_sample"] = False
    return LCMScheduler.from_config(merged)


def check_t_index_list(t_index_list: Any, where: str = "") -> tuple[int, ...]:
    """The one `t_index_list` rule (styles, the pipeline spec, the tiny model): a list of 1 to
    `MAX_DENOISING_STEPS` strictly increasing integers in 0..49, indices into the 50-step schedule.

    Returns it as a tuple; raises ConfigError naming the value (after `where`, e.g. "[styles.mine]") otherwise.
    """
    what = (
        f"a list of 1 to {MAX_DENOISING_STEPS} increasing integers in 0..{NUM_INFERENCE_STEPS - 1}, e.g. [30, 40]"
        f" (indices into the {NUM_INFERENCE_STEPS}-step schedule)"
    )
    shown = list(t_index_list) if isinstance(t_index_list, tuple) else t_index_list
    problem = f"{where}: " if where else ""
    problem += f"t_index_list = {shown!r} is not allowed: {what}"
    if not isinstance(t_index_list, (list, tuple)) or not t_index_list or len(t_index_list) > MAX_DENOISING_STEPS:
        raise ConfigError(problem)
    for value in t_index_list:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_INFERENCE_STEPS:
            raise ConfigError(problem)
    if any(later <= earlier for earlier, later in zip(t_index_list[:-1], t_index_list[1:], strict=True)):
        raise ConfigError(problem)
    return tuple(t_index_list)


@dataclass
class StreamSchedule:
    """Per-step constants of a stream with T = len(t_index_list) steps (step 0 is the noisiest).

    Tensors have one value per step: `timesteps` [T] long; the others [T] float on `device`.
    """

    t_index_list: list[int]
    timesteps: torch.Tensor  # [T] long
    sqrt_alpha: torch.Tensor  # [T]
    sqrt_beta: torch.Tensor  # [T]
    c_skip: torch.Tensor  # [T]
    c_out: torch.Tensor  # [T]

    @property
    def num_steps(self) -> int:
        return len(self.t_index_list)

    @property
    def strength(self) -> float:
        """How much of the input is replaced: 1 - t_index_list[0] / 50."""
        return 1.0 - self.t_index_list[0] / NUM_INFERENCE_STEPS

    def to(self, device: torch.device | str, dtype: torch.dtype) -> StreamSchedule:
        return StreamSchedule(
            t_index_list=list(self.t_index_list),
            timesteps=self.timesteps.to(device),
            sqrt_alpha=self.sqrt_alpha.to(device=device, dtype=dtype),
            sqrt_beta=self.sqrt_beta.to(device=device, dtype=dtype),
            c_skip=self.c_skip.to(device=device, dtype=dtype),
            c_out=self.c_out.to(device=device, dtype=dtype),
        )

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
        """q(x_t | x0) at each entry's step: sqrt(a_t) x0 + sqrt(1 - a_t) noise (DDPM, Ho et al. 2020, eq. 4)."""
        index = self._index(steps, x0)
        return self.sqrt_alpha[index] * x0 + self.sqrt_beta[index] * noise  # [B, 4, h, w]

    def denoise(self, sample: torch.Tensor, noise_pred: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
        """The LCM consistency function at each entry's step: c_skip x_t + c_out x0_pred (Luo et al. 2023, eq. 9)."""
        index = self._index(steps, sample)
        x0_pred = (sample - self.sqrt_beta[index] * noise_pred) / self.sqrt_alpha[index]  # [B, 4, h, w]
        return self.c_out[index] * x0_pred + self.c_skip[index] * sample  # [B, 4, h, w]

    def _index(self, steps: Sequence[int], like: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        import torch

        if len(steps) != like.shape[0]:
            raise ValueError(f"{len(steps)} steps for a batch of {like.shape[0]} entries")
        index = torch.tensor(list(steps), dtype=torch.long, device=self.sqrt_alpha.device)
        return (index, None, None, None)


def build_stream_schedule(t_index_list: Sequence[int], scheduler: LCMScheduler | None = None) -> StreamSchedule:
    """Pick the timesteps of `t_index_list` from the 50-step LCM schedule and precompute their scalings."""
    import torch

    indices = list(check_t_index_list(t_index_list))
    lcm: Any = scheduler if scheduler is not None else build_lcm_scheduler()
    lcm.set_timesteps(NUM_INFERENCE_STEPS)
    all_timesteps = [int(t) for t in lcm.timesteps]
    timesteps = [all_timesteps[index] for index in indices]
    alphas_cumprod = lcm.alphas_cumprod.to(torch.float64)  # [1000]
    sqrt_alpha = [float(alphas_cumprod[t].sqrt()) for t in timesteps]
    sqrt_beta = [float((1.0 - alphas_cumprod[t]).sqrt()) for t in timesteps]
    scalings = [lcm.get_scalings_for_boundary_condition_discrete(t) for t in timesteps]
    log.debug("stream schedule: t_index_list %s -> timesteps %s", indices, timesteps)
    return StreamSchedule(
        t_index_list=indices,
        timesteps=torch.tensor(timesteps, dtype=torch.long),
        sqrt_alpha=torch.tensor(sqrt_alpha, dtype=torch.float32),
        sqrt_beta=torch.tensor(sqrt_beta, dtype=torch.float32),
        c_skip=torch.tensor([float(c_skip) for c_skip, _ in scalings], dtype=torch.float32),
        c_out=torch.tensor([float(c_out) for _, c_out in scalings], dtype=torch.float32),
    )
