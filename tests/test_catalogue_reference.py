"""The catalogue's styles against Live2Diff's own configs (open-mmlab/Live2Diff configs/*.yaml at e40aa03).

For each style with a reference config: the timesteps the reference ran equal ours, and clip_skip is the
reference's (counted our way) where the style uses the reference's own checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
from vcam.model.scheduler import build_lcm_scheduler, build_stream_schedule
from vcam.model.text import from_reference_clip_skip

from vcam.store.catalogue import load_catalogue

#: the reference's 50-step LCM schedule under its pinned diffusers 0.25: t = 999 - 20 i
REFERENCE_50_STEPS = [999 - 20 * index for index in range(50)]


def reference_lcm_timesteps(num_inference_steps: int, original_steps: int = 50) -> list[int]:
    """diffusers 0.25's LCMScheduler.set_timesteps (strength 1): every `50 // n`-th of the origin schedule."""
    origin = np.arange(1, original_steps + 1) * (1000 // original_steps) - 1  # [19, 39, ..., 999]
    skipping_step = len(origin) // num_inference_steps
    return [int(t) for t in origin[::-skipping_step][:num_inference_steps]]


def reference_strength_timesteps(num_inference_steps: int, strength: float) -> list[int]:
    """The reference's `get_timesteps`: the schedule's last `int(n * strength)` timesteps."""
    timesteps = reference_lcm_timesteps(num_inference_steps)
    start = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
    return timesteps[start:]


# style -> (reference config, timesteps the reference ran, its clip_skip when the style uses its own checkpoint)
REFERENCE = {
    "pixar": ("disneyPixar.yaml", [REFERENCE_50_STEPS[i] for i in (30, 36, 42)], None),
    "toon": ("toonyou.yaml", [REFERENCE_50_STEPS[i] for i in (25, 31, 37, 43)], 2),
    "inkwash": ("moxin.yaml", [REFERENCE_50_STEPS[i] for i in (30, 36, 42)], 2),
    "origami": ("origami.yaml", [REFERENCE_50_STEPS[i] for i in (30, 36, 42)], None),
    "clay": ("kFelted.yaml", [REFERENCE_50_STEPS[i] for i in (25, 34, 43)], None),
    "pixel": ("pixart.yaml", reference_strength_timesteps(4, 0.6), None),
}


def test_the_reference_pixel_art_config_ran_at_519_and_279() -> None:
    assert reference_lcm_timesteps(4) == [999, 759, 519, 279]
    assert reference_strength_timesteps(4, 0.6) == [519, 279]
    # current diffusers spreads 4 steps differently: the same config would run at 499 and 259 there
    scheduler = build_lcm_scheduler()
    scheduler.set_timesteps(4)
    assert [int(t) for t in scheduler.timesteps] == [999, 759, 499, 259]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_catalogue_styles_denoise_at_the_references_timesteps(name: str) -> None:
    style = load_catalogue().style(name)
    _, timesteps, _ = REFERENCE[name]
    assert build_stream_schedule(style.t_index_list).timesteps.tolist() == timesteps


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_catalogue_styles_condition_as_the_reference_or_say_why_not(name: str) -> None:
    style = load_catalogue().style(name)
    config, _, reference_clip_skip = REFERENCE[name]
    assert config in style.note  # every style names the reference config it was checked against
    if reference_clip_skip is not None:
        assert style.clip_skip == from_reference_clip_skip(reference_clip_skip) == 3
    else:  # another checkpoint than the reference's: SD1.5 or a fine-tune trained on CLIP's last layer
        assert style.clip_skip == 1 and "clip_skip 1" in style.note.replace("\n", " ")
    assert style.noise == "fresh"


def test_inkwash_keeps_the_references_prompt_template_and_lora_scale() -> None:
    style = load_catalogue().style("inkwash")
    template = (
        "shukezouma, negative space, shuimobysim, official art,extremely detailed CG,unity 8k wallpaper,"
        "chinese ink painting, {}"
    )
    assert style.prompt == template.format("a person talking to the camera")
    assert style.lora_scale == 0.7
