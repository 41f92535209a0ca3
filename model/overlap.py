"""Encode overlap: the next frame's encode and depth run on a side CUDA stream while the UNet call runs.

With overlap on, a `StreamPipeline` works one frame behind its input: call k runs the UNet (and everything
after it) on frame k-1, whose latent and depth were made at call k-1, and launches frame k's encode and depth
on a second CUDA stream right after launching the UNet call on the main stream, so the two run at once. The
price is one more frame of latency. The stages after the encode see exactly the frames, in exactly the order,
they see without overlap: the outputs are the same, one call later.

`EncodeOverlap` holds that one frame: `defer` (frame k's pixels, before the UNet call), `launch` (its encode on
the side stream, after the UNet call is launched) and `take` (at call k+1: the main stream waits for it). On a
device without CUDA the streams are no-ops and only the one-frame delay remains (what the CPU tests check).

Streams and memory: the side stream waits for the event recorded after the pixels were uploaded on the main
stream (not for the whole main stream, which by then holds the UNet call); the main stream waits for the event
recorded after the encode before it uses the result, and each tensor made on the side stream is recorded on
the main stream (`record_stream`) so the allocator never hands its memory out while the main stream still
reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vcam.model.stream_state import EncodedFrame, SkippedFrame

from vcam.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: `[models] overlap`: "auto" is on for a compiled UNet on CUDA (where the GPU, not the launching thread, bounds
#: the UNet call, so the side stream has time to fill), off elsewhere (eager: near neutral for one more frame late)
OVERLAP_MODES = ("auto", "on", "off")


def check_overlap_mode(mode: object, where: str = "models.overlap") -> str:
    """`mode` when it is one of OVERLAP_MODES, else ConfigError naming the value and the choices."""
    if not isinstance(mode, str) or mode not in OVERLAP_MODES:
        raise ConfigError(f"{where} = {mode!r} is not allowed: use one of {', '.join(OVERLAP_MODES)}")
    return mode


def resolve_overlap(mode: str, device_type: str, compiled: bool) -> bool:
    """ "on" -> True, "off" -> False, "auto" -> True for a compiled UNet (`compiled`) on a CUDA device only
    (`device_type` as torch names it): the one case where the overlap is reasoned to pay for its frame of latency
    (README, "Encode overlap"; untried on a GPU: `benchmarks/gpu.sh` measures it)."""
    check_overlap_mode(mode)
    if mode == "auto":
        return device_type == "cuda" and compiled
    return mode == "on"


@dataclass
class _Deferred:
    """Frame k between `defer` (before the UNet call) and `launch` (after it)."""

    index: int
    pixels: torch.Tensor  # [1, 3, H, W] on the device, made on the main stream
    uploaded: Any  # torch.cuda.Event recorded on the main stream after the upload (None off CUDA)


class EncodeOverlap:
    """The frame a pipeline holds back for its next call, and the side stream that encodes it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream: torch.cuda.Stream | None = None  # the side stream, made by the first `launch` on CUDA
        self._deferred: _Deferred | None = None
        self._held: EncodedFrame | SkippedFrame | None = None
        self._encoded: Any = None  # torch.cuda.Event recorded on the side stream after `_held` was made

    @property
    def holding(self) -> bool:
        """True while a frame waits for the next call (deferred or launched)."""
        return self._deferred is not None or self._held is not None

    def clear(self) -> None:
        """Drop the held frame (a reset, a stream break). Work still running on the side stream is harmless:
        its memory goes back to the allocator on the side stream, which reuses it only after that work."""
        self._deferred = None
        self._held = None
        self._encoded = None

    def current_stream(self) -> torch.cuda.Stream | None:
        """The stream work is queued on now (the side stream inside `launch`), None off CUDA."""
        if not self.cuda:
            return None
        import torch

        return torch.cuda.current_stream(self.device)

    def skip(self, index: int) -> None:
        """Hold frame `index` as skipped (the similar-frame filter): it will only repeat the previous output."""
        self._held = SkippedFrame(index)

    def defer(self, index: int, pixels: torch.Tensor) -> None:
        """Hold frame `index` for `launch`; its pixels were made on the current (main) stream."""
        uploaded = None
        if self.cuda:
            import torch

            uploaded = torch.cuda.Event()
            uploaded.record(torch.cuda.current_stream(self.device))
        self._deferred = _Deferred(index, pixels, uploaded)

    def launch(self, encode: Callable[[int, torch.Tensor], EncodedFrame]) -> None:
        """Run `encode` on the deferred frame, on the side stream (the caller has launched the UNet call)."""
        deferred = self._deferred
        if deferred is None:
            return
        self._deferred = None
        if not self.cuda:
            self._held = encode(deferred.index, deferred.pixels)
            return
        import torch

        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        self.stream.wait_event(deferred.uploaded)
        with torch.cuda.stream(self.stream):
            self._held = encode(deferred.index, deferred.pixels)
            self._encoded = torch.cuda.Event()
            self._encoded.record(self.stream)
        deferred.pixels.record_stream(self.stream)

    def take(self, encode: Callable[[int, torch.Tensor], EncodedFrame]) -> EncodedFrame | SkippedFrame | None:
        """The frame held since the last call (None when there is none), ready for the main stream; a frame
        still deferred (its UNet call never came) is encoded first."""
        self.launch(encode)
        held = self._held
        self._held = None
        if isinstance(held, EncodedFrame) and self.cuda:
            import torch

            main = torch.cuda.current_stream(self.device)
            main.wait_event(self._encoded)
            for tensor in (held.latent, held.depth, held.raw_depth):
                if tensor is not None:
                    tensor.record_stream(main)
        self._encoded = None
        return held
