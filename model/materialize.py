"""Building a model without initialising its parameters, then giving it its weights one tensor at a time.

A model whose weights come from files needs no random initialisation: at SD1.5 size the UNet's kaiming init is
seconds of CPU thrown away when the weights replace it. `empty_parameters()` builds modules with their
parameters on the meta device (no memory, no init work; buffers such as the sinusoidal PE tables are still
computed), and `assign_weights` gives every meta parameter an owned, contiguous copy of its file tensor at the
parameter's dtype: one short tensor copy per call, the interpreter lock released inside each and handed to
other threads between them, so a load never holds it for long. The values are exactly those that
`load_state_dict` would have copied into an initialised model (the same cast to the parameter's dtype).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextmanager
def empty_parameters() -> Iterator[None]:
    """Modules built inside have their parameters on the meta device, uninitialised (buffers stay real).

    accelerate's ``init_empty_weights`` (what diffusers and PEFT use for the same purpose)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def meta_tensor_names(module: nn.Module) -> list[str]:
    """State-dict names of the module's parameters and buffers that have no data yet (on the meta device)."""
    return [name for name, value in module.state_dict(keep_vars=True).items() if value.is_meta]


def owned_copy(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous copy of `value` at `dtype` in memory of its own (not a view of a memory-mapped file)."""
    import torch

    copy = torch.empty(value.shape, dtype=dtype)  # [same shape as value]
    copy.copy_(value)
    return copy


def assign_weights(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load `state_dict` (names of ``module.state_dict()``, checked by the caller) into `module`.

    A meta tensor of the module becomes an owned copy of its file tensor at the module tensor's dtype (assigned,
    one copy per call); a tensor that has data already gets the file's values copied in, as ``load_state_dict``
    does.
    """
    import torch

    current = module.state_dict(keep_vars=True)
    assigned: dict[str, torch.Tensor] = {}
    copied: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        target = current[key]
        if target.is_meta:
            assigned[key] = owned_copy(value, target.dtype)
            time.sleep(0)  # hand the interpreter lock to the output thread between two copies
        else:
            copied[key] = value
    with torch.no_grad():
        if assigned:
            module.load_state_dict(assigned, strict=False, assign=True)
        if copied:
            module.load_state_dict(copied, strict=False)
