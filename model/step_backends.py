"""How `StreamUNet.stream` runs a stream step: the reference path, or the static step eager, compiled, as a CUDA graph.

The reference path (no backend attached) appends each layer's new K/V to its cache from inside the attention
processors and reads the slot layout from Python counters: simple, but every call differs for a compiler
and a CUDA graph cannot be replayed over it. The static step (`StaticStep`) is the same function over tensors
only: the host computes each entry's slot layout once per call (`static_step_layout`), the forward reads the
caches without writing them and leaves each layer's new rows, which are then copied into the ring in place on
the device (`index_copy_` with a device index: no host sync, the cache addresses never change). On it:

- `StaticStepBackend` ("static"): eager; the mechanism the others share, tested against the reference on the CPU;
- `CompiledStepBackend` ("compiled"): `torch.compile` of the UNet over the static step;
- `CudaGraphStepBackend` ("cudagraph"): the whole step (forward and ring writes) captured once per batch
  composition and cache set, replayed from static input buffers filled by non-blocking copies from pinned
  memory; CUDA only;
- `vcam.model.onnx_step.OnnxStepBackend` ("onnx"): the step as an ONNX graph run by onnxruntime.

Calls whose caches are not all allocated yet fall back to the reference path (nothing to read before the
warmup). `MODEL_BACKENDS` is the config's `[models] backend` list; this module imports nothing heavy at load.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from vcam.model.stream_attention import KVCache, StaticStep, StreamCaches
    from vcam.model.unet import StreamUNet

log = logging.getLogger(__name__)

#: `[models] backend`: "torch" runs the UNet in PyTorch, "onnx" the exported step in onnxruntime, "auto" picks
#: onnx where onnxruntime has TensorRT, else torch (see `resolve_model_backend`)
MODEL_BACKENDS = ("auto", "torch", "onnx")
#: what `attach_step_backend` takes (and `vcam bench model --modes`, less "static")
STEP_MODES = ("static", "compiled", "cudagraph", "onnx")
#: CUDA graphs kept per backend (one per batch composition and cache set; a prompt switch makes new caches)
MAX_GRAPHS = 8


def resolve_model_backend(backend: str) -> str:
    """ "auto" -> "onnx" when onnxruntime offers TensorRT (the fastest engine it has), else "torch"."""
    from vcam.errors import ConfigError

    if backend not in MODEL_BACKENDS:
        raise ConfigError(f"models.backend {backend!r} is not one of {MODEL_BACKENDS}")
    if backend != "auto":
        return backend
    try:
        import onnxruntime
    except ImportError:
        return "torch"
    return "onnx" if "TensorrtExecutionProvider" in onnxruntime.get_available_providers() else "torch"


def caches_ready(entries: Sequence[Sequence[KVCache]]) -> bool:
    """True when every cache of every entry holds a tensor (the warmup has written it)."""
    return all(cache.kv is not None for layers in entries for cache in layers)


def write_new_rows(static: StaticStep) -> None:
    """Copy each layer's new K/V rows into its ring slot, in place on the device (the slot is a device index)."""
    if static.write_slot is None:
        raise ValueError("this static step has no write_slot: its rows are returned, not written")
    for entry, (caches, rows) in enumerate(zip(static.caches, static.new_rows, strict=True)):
        slot = static.write_slot[entry : entry + 1]  # [1]
        for kv, row in zip(caches, rows, strict=True):
            if row is None:
                raise RuntimeError("a temporal attention layer left no new row; this is a bug")
            kv.index_copy_(3, slot, row.unsqueeze(3))  # kv [2, rows, heads, window, d] <- [2, rows, heads, 1, d]


def _reference_stream(
    unet: StreamUNet,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    depth_latent: torch.Tensor | None,
    caches: StreamCaches,
    steps: Sequence[int],
) -> torch.Tensor:
    backend = unet.step_backend
    unet.step_backend = None
    try:
        return unet.stream(sample, timesteps, encoder_hidden_states, depth_latent, caches, steps)
    finally:
        unet.step_backend = backend


class StaticStepBackend:
    """The static stream step, eager: host layout -> read-only forward -> in-place ring writes on the device."""

    name = "static"

    def attach(self, unet: StreamUNet) -> None:
        """Called once when attached to `unet`."""

    def detach(self, unet: StreamUNet) -> None:
        """Called once when detached; undoes `attach`."""

    def stream(
        self,
        unet: StreamUNet,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        caches: StreamCaches,
        steps: Sequence[int],
    ) -> torch.Tensor:
        entries = [caches.layers(step) for step in steps]
        if not caches_ready(entries):
            return _reference_stream(unet, sample, timesteps, encoder_hidden_states, depth_latent, caches, steps)
        out = self.run(unet, sample, timesteps, encoder_hidden_states, depth_latent, entries)
        for layers in entries:
            for cache in layers:
                cache.advance()
        return out

    def run(
        self,
        unet: StreamUNet,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        entries: list[list[KVCache]],
    ) -> torch.Tensor:
        """The step's device work (forward and ring writes); the caches' Python counters are advanced after."""
        from vcam.model.stream_attention import StaticStep, static_step_layout

        device = sample.device
        write_slot, key_positions, visible, query_position = static_step_layout(entries)
        static = StaticStep(
            write_slot=write_slot.to(device),
            key_positions=key_positions.to(device),
            visible=visible.to(device),
            query_position=query_position.to(device),
            caches=[[_tensor(cache) for cache in layers] for layers in entries],
        )
        return static_forward(unet, sample, timesteps, encoder_hidden_states, depth_latent, static)


def _tensor(cache: KVCache) -> torch.Tensor:
    if cache.kv is None:
        raise RuntimeError("static stream step over an empty cache; this is a bug")
    return cache.kv


def static_forward(
    unet: StreamUNet,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    depth_latent: torch.Tensor | None,
    static: StaticStep,
) -> torch.Tensor:
    """`unet.stream_static` then the in-place ring writes: everything one stream step does on the device."""
    out = unet.stream_static(sample, timesteps, encoder_hidden_states, depth_latent, static)  # [B, C, h, w]
    write_new_rows(static)
    return out


class CompiledStepBackend(StaticStepBackend):
    """The static step with the diffusers UNet wrapped in `torch.compile` (restored on detach)."""

    name = "compiled"

    def __init__(self, compile_backend: str = "inductor", compile_mode: str | None = None) -> None:
        self.compile_backend = compile_backend
        self.compile_mode = compile_mode
        self._original: Any = None

    def attach(self, unet: StreamUNet) -> None:
        import torch
        import torch._dynamo

        # diffusers' motion UNet has graph breaks, and its attention blocks run at 3 resolutions x T batch sizes:
        # the default recompile limit (8) would send the later ones back to eager (a process-wide setting)
        config: Any = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                setattr(config, name, max(int(getattr(config, name)), 64))
        self._original = unet.unet
        unet.unet = torch.compile(unet.unet, backend=self.compile_backend, mode=self.compile_mode)  # type: ignore[assignment]

    def detach(self, unet: StreamUNet) -> None:
        if self._original is not None:
            unet.unet = self._original
            self._original = None


@dataclass
class _Captured:
    """One captured CUDA graph and the static buffers it reads and writes."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


class CudaGraphStepBackend(StaticStepBackend):
    """The static step captured as a CUDA graph, one per (steps, shapes, cache set), replayed from static buffers.

    A batch composition is captured the second time it is seen (the first runs eagerly, which also loads the
    kernels); steady state is one composition (steps 0..T-1), the pipeline's fill and drain a few more. Inputs
    are copied into the graph's buffers with non-blocking copies from pinned memory and the result is cloned
    out, so nothing inside a frame waits for the GPU.
    """

    name = "cudagraph"

    def __init__(self) -> None:
        self._graphs: OrderedDict[tuple[Any, ...], _Captured] = OrderedDict()
        self._seen: set[tuple[Any, ...]] = set()
        self._pool: Any = None

    def detach(self, unet: StreamUNet) -> None:
        self._graphs.clear()
        self._seen.clear()

    def run(
        self,
        unet: StreamUNet,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        entries: list[list[KVCache]],
    ) -> torch.Tensor:
        from vcam.model.stream_attention import static_step_layout

        if sample.device.type != "cuda":
            raise RuntimeError(f"the CUDA graph step backend needs a CUDA device, the UNet is on {sample.device}")
        key = (
            tuple(sample.shape),
            tuple(encoder_hidden_states.shape),
            depth_latent is None,
            tuple(_tensor(layers[0]).data_ptr() for layers in entries),
        )
        if key not in self._graphs and key not in self._seen:
            self._seen.add(key)
            return super().run(unet, sample, timesteps, encoder_hidden_states, depth_latent, entries)
        write_slot, key_positions, visible, query_position = static_step_layout(entries)
        host = {
            "sample": sample,
            "timesteps": timesteps.reshape(-1).expand(sample.shape[0]),
            "encoder_hidden_states": encoder_hidden_states,
            "write_slot": write_slot.pin_memory(),
            "key_positions": key_positions.pin_memory(),
            "visible": visible.pin_memory(),
            "query_position": query_position.pin_memory(),
        }
        if depth_latent is not None:
            host["depth_latent"] = depth_latent
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(unet, host, entries)
            self._graphs[key] = captured
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        for name, value in host.items():
            captured.inputs[name].copy_(value, non_blocking=True)
        captured.graph.replay()
        return captured.output.clone()

    def _capture(self, unet: StreamUNet, host: dict[str, torch.Tensor], entries: list[list[KVCache]]) -> _Captured:
        import torch
        from vcam.model.stream_attention import StaticStep

        device = host["sample"].device
        inputs = {name: torch.empty_like(value, device=device) for name, value in host.items()}
        for name, value in host.items():
            inputs[name].copy_(value)

        def step() -> torch.Tensor:
            static = StaticStep(
                write_slot=inputs["write_slot"],
                key_positions=inputs["key_positions"],
                visible=inputs["visible"],
                query_position=inputs["query_position"],
                caches=[[_tensor(cache) for cache in layers] for layers in entries],
            )
            return static_forward(
                unet,
                inputs["sample"],
                inputs["timesteps"],
                inputs["encoder_hidden_states"],
                inputs.get("depth_latent"),
                static,
            )

        # a warm-up on a side stream (library handles, autotuning) before capture, as PyTorch asks; it writes the
        # same rows to the same slots as the replay will, so it changes nothing the replay reads
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = step()
        log.info("captured a CUDA graph of the stream step for batch %d", int(host["sample"].shape[0]))
        return _Captured(graph=graph, inputs=inputs, output=output)


def make_step_backend(mode: str, **options: Any) -> StaticStepBackend:
    """A step backend by name (`STEP_MODES`); options: compile_backend, compile_mode (compiled); onnx_* (onnx)."""
    if mode == "static":
        return StaticStepBackend()
    if mode == "compiled":
        return CompiledStepBackend(options.get("compile_backend", "inductor"), options.get("compile_mode"))
    if mode == "cudagraph":
        return CudaGraphStepBackend()
    if mode == "onnx":
        from vcam.model.onnx_step import OnnxStepBackend

        return OnnxStepBackend(**{key: value for key, value in options.items() if key.startswith("onnx_")})
    raise ValueError(f"step backend {mode!r} is not one of {STEP_MODES}")


def attach_step_backend(unet: StreamUNet, mode: str, **options: Any) -> StaticStepBackend:
    """Make `unet.stream` run through the backend `mode`; `detach_step_backend` restores the reference path."""
    detach_step_backend(unet)
    backend = make_step_backend(mode, **options)
    backend.attach(unet)
    unet.step_backend = backend
    return backend


def use_model_backend(unet: StreamUNet, backend: str, onnx_cache_dir: Any) -> str:
    """Apply the config's `[models] backend` to a loaded UNet; returns what runs ("torch" or "onnx").

    "onnx" attaches `OnnxStepBackend` (once per UNet: styles sharing it share its sessions); "torch" leaves the
    reference path. A missing onnxruntime is a `ConfigError` naming the extra to install.
    """
    from vcam.errors import ConfigError

    resolved = resolve_model_backend(backend)
    if resolved == "torch" or getattr(unet.step_backend, "name", None) == "onnx":
        return resolved
    try:
        attach_step_backend(unet, "onnx", onnx_cache_dir=onnx_cache_dir)
    except RuntimeError as error:
        raise ConfigError(f"models.backend = 'onnx': {error}") from None
    return resolved


def detach_step_backend(unet: StreamUNet) -> None:
    backend = unet.step_backend
    if backend is not None:
        unet.step_backend = None
        backend.detach(unet)
