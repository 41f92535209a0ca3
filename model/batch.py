"""One UNet call for several streams: the stream batches of pipelines that share a UNet, stacked.

Each `StreamPipeline` keeps its own state (KV caches, frames in flight, seeded noise, prompt); only the UNet
call is shared. `batched_step(pipelines, images)` runs `begin_step` on each, stacks the entries of those on
the same UNet and model size into one `unet.stream_entries` call (entry i reads and writes its own stream's
caches), splits the noise prediction, and runs `finish_step` on each. Pipelines still warming up (or in the
sequential mode) run their step alone inside `begin_step`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vcam.model.pipeline import StreamPipeline, StreamResult, StreamStepPlan


def batch_key(pipeline: StreamPipeline) -> Hashable:
    """Pipelines with equal keys can share a UNet call: the same UNet object, size, dtype and depth input."""
    return (id(pipeline.unet), pipeline.width, pipeline.height, str(pipeline.dtype), pipeline.depth_encoder is None)


def batched_step(pipelines: Sequence[StreamPipeline], images: Sequence[np.ndarray]) -> list[list[StreamResult]]:
    """Feed `images[i]` to `pipelines[i]`; returns each pipeline's finished results, as its `step` would.

    The pipelines must be distinct. Those with equal `batch_key` share one UNet call per call of this function.
    """
    import torch

    if len(pipelines) != len(images):
        raise ValueError(f"{len(pipelines)} pipelines need {len(images)} images")
    if len({id(pipeline) for pipeline in pipelines}) != len(pipelines):
        raise ValueError("a pipeline appears twice in one batched step")
    results: list[list[StreamResult] | None] = [None] * len(pipelines)
    groups: dict[Hashable, list[tuple[int, StreamStepPlan]]] = {}
    with contextlib.ExitStack() as held:
        for pipeline in pipelines:  # no other thread may step a pipeline between its begin and finish
            held.enter_context(pipeline.state_lock)
        for position, (pipeline, image) in enumerate(zip(pipelines, images, strict=True)):
            plan = pipeline.begin_step(image)
            if plan.results is not None:
                results[position] = plan.results
            else:
                groups.setdefault(batch_key(pipeline), []).append((position, plan))
        for members in groups.values():
            plans = [plan for _, plan in members]
            first = pipelines[members[0][0]]
            samples = torch.cat([plan.samples for plan in plans if plan.samples is not None])  # [sum B, 4, h, w]
            timesteps = torch.cat([plan.timesteps for plan in plans if plan.timesteps is not None])  # [sum B]
            embeds = torch.cat([plan.embeds for plan in plans if plan.embeds is not None])  # [sum B, 77, d]
            depths = [plan.depth for plan in plans if plan.depth is not None]
            depth = torch.cat(depths) if depths else None  # [sum B, 4, h, w] or None
            entry_caches = [caches for plan in plans for caches in plan.entry_caches]
            with first.unet_lock, torch.inference_mode():
                noise_pred = first.unet.stream_entries(
                    samples, timesteps, embeds, depth, entry_caches
                )  # [sum B, 4, h, w]
            for position, _ in members:  # with overlap, each pipeline's next encode runs behind the UNet call
                pipelines[position].launch_encode()
            start = 0
            for position, plan in members:
                count = len(plan.entries)
                results[position] = pipelines[position].finish_step(plan, noise_pred[start : start + count])
                start += count
    return [found if found is not None else [] for found in results]
