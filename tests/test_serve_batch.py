"""Several clients' streams in one UNet call (vcam.model.batch): the same outputs as each stream alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vcam.model.batch import batch_key, batched_step
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames

WARMUP = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_two_streams_batched_equal_each_alone() -> None:
    frames_a = moving_frames(WARMUP + 5, seed=0)
    frames_b = moving_frames(WARMUP + 5, seed=1)[::-1]  # another video, another seed, another prompt
    shared = build_tiny_pipeline(t_index_list=(20, 30, 40))
    batched_a = shared.sibling(seed=3)
    batched_b = shared.sibling(seed=7, prompt="another prompt")
    alone_a = build_tiny_pipeline(t_index_list=(20, 30, 40)).sibling(seed=3)
    alone_b = build_tiny_pipeline(t_index_list=(20, 30, 40)).sibling(seed=7, prompt="another prompt")
    assert batch_key(batched_a) == batch_key(batched_b) != batch_key(alone_a)

    calls: list[int] = []
    original = shared.unet.stream_entries

    def counting(sample: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)  # type: ignore[arg-type]

    shared.unet.stream_entries = counting  # type: ignore[method-assign]
    batched = [batched_step([batched_a, batched_b], [a, b]) for a, b in zip(frames_a, frames_b, strict=True)]
    alone = [(alone_a.step(a), alone_b.step(b)) for a, b in zip(frames_a, frames_b, strict=True)]

    # after the warmup, one UNet call per tick carries both streams' entries: 1+1, 2+2, then 3+3
    assert calls == [2, 4, 6, 6, 6]
    for (got_a, got_b), (want_a, want_b) in zip(batched, alone, strict=True):
        for got, want in ((got_a, want_a), (got_b, want_b)):
            assert [r.index for r in got] == [r.index for r in want]
            for ours, reference in zip(got, want, strict=True):
                assert ours.latent is not None and reference.latent is not None
                torch.testing.assert_close(ours.latent, reference.latent, atol=1e-4, rtol=1e-4)
                assert np.abs(ours.image.astype(int) - reference.image.astype(int)).max() <= 1
    # the two streams are not the same stream (the equality above is per stream)
    last_a, last_b = batched[-1]
    assert last_a[0].latent is not None and last_b[0].latent is not None
    assert (last_a[0].latent - last_b[0].latent).abs().mean().item() > 1e-2
    # each kept its own caches
    assert batched_a.cache_nbytes() == alone_a.cache_nbytes() > 0


def test_a_pipeline_twice_in_one_step_is_refused() -> None:
    pipeline = build_tiny_pipeline()
    frame = moving_frames(1)[0]
    with pytest.raises(ValueError, match="twice"):
        batched_step([pipeline, pipeline], [frame, frame])
