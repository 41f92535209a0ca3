"""The stream step as one ONNX graph, run by onnxruntime: KV caches in, only the new K/V rows out.

`OnnxStepModule` wraps the static stream step (`StreamUNet.stream_static`) as a pure function of tensors:

    inputs:  sample [B, 4, h, w], timesteps [B], encoder_hidden_states [B, 77, d], depth_latent [B, 4, h, w]
             (when the UNet has a depth mapper), key_positions [B, window], visible [B, window],
             query_position [B], then cache_<entry>_<layer> [2, rows, heads, window, head_dim] for every entry
             and temporal layer (read only)
    outputs: noise_pred [B, 4, h, w], then row_<entry>_<layer> [2, rows, heads, head_dim]

`OnnxStepBackend` exports it once per batch size, shape and dtype into a cache folder, opens it with the best
onnxruntime provider present (`PROVIDER_ORDER`: TensorRT, CUDA, DirectML, CoreML, CPU), binds every input and
output to the torch tensors in place with IOBinding (the caches are bound where they lie, never copied), and
copies the new rows into each ring slot on the device with `index_copy_`. The cache therefore exists once; the
reference's TensorRT build, whose engine returns whole updated caches, needs it twice.

A batch size is exported the third time it is seen: steady state (B = T) is; the few calls of the batch filling
after the warmup and draining at the end run the same step in PyTorch. TensorRT builds its engine on the first
run of a session (minutes for the real UNet): that is logged before it starts and when it ends, and the engine
is kept in the cache folder, keyed by model, shape, batch, dtype, GPU and versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .step_backends import StaticStepBackend, write_new_rows
from .stream_attention import StaticStep, static_step_layout

if TYPE_CHECKING:
    from vcam.model.stream_attention import KVCache
    from vcam.model.unet import StreamUNet

log = logging.getLogger(__name__)

#: onnxruntime providers, best first; the first one present is used (CPU is always present)
PROVIDER_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
#: providers that read and write CUDA memory directly (the torch tensors are bound where they lie)
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
ONNX_OPSET = 18
#: a batch size is exported when seen this many times (steady state is; the pipeline's fill and drain are not)
EXPORT_AFTER_CALLS = 3
INSTALL_HINT = "install the extra: pip install 'live2diff-vcam[onnx]'"


class OnnxStepModule(nn.Module):
    """The static stream step of `unet` for `entries` batch entries, as a function of tensors (for export)."""

    def __init__(self, unet: StreamUNet, entries: int, with_depth: bool) -> None:
        super().__init__()
        self.unet = unet
        self.entries = entries
        self.layers = unet.num_temporal_layers
        self.with_depth = with_depth

    def input_names(self) -> list[str]:
        names = ["sample", "timesteps", "encoder_hidden_states"]
        names += ["depth_latent"] if self.with_depth else []
        names += ["key_positions", "visible", "query_position"]
        return names + [f"cache_{e}_{layer}" for e in range(self.entries) for layer in range(self.layers)]

    def output_names(self) -> list[str]:
        return ["noise_pred"] + [f"row_{e}_{layer}" for e in range(self.entries) for layer in range(self.layers)]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sample, timesteps, encoder_hidden_states = inputs[:3]
        rest = list(inputs[3:])
        depth_latent = rest.pop(0) if self.with_depth else None
        key_positions, visible, query_position = rest[:3]
        caches = rest[3:]
        static = StaticStep(
            write_slot=None,
            key_positions=key_positions,
            visible=visible,
            query_position=query_position,
            caches=[list(caches[e * self.layers : (e + 1) * self.layers]) for e in range(self.entries)],
        )
        noise_pred = self.unet.stream_static(sample, timesteps, encoder_hidden_states, depth_latent, static)
        rows = [row for entry in static.new_rows for row in entry]
        if any(row is None for row in rows):
            raise RuntimeError("a temporal attention layer left no new row; this is a bug")
        return (noise_pred, *[row for row in rows if row is not None])


def model_fingerprint(unet: StreamUNet) -> str:
    """A short hash of the UNet's config and of a sample of every weight (a style's fused LoRA changes it)."""
    digest = hashlib.sha256(json.dumps(dict(unet.config), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            flat = parameter.detach().reshape(-1)
            sample = torch.cat([flat[:8], flat[-8:]]).float().cpu()  # [16]
            digest.update(name.encode())
            digest.update(str(tuple(parameter.shape)).encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def export_stream_step(
    unet: StreamUNet, path: Path, example: Sequence[torch.Tensor], entries: int, with_depth: bool
) -> Path:
    """Export the static stream step for these example inputs (their shapes and dtypes are fixed) to `path`."""
    module = OnnxStepModule(unet, entries, with_depth).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.onnx")
    started = time.perf_counter()
    log.info("exporting the stream step (batch %d) to ONNX: %s", entries, path)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about every Python-side shape check of diffusers' blocks: shapes are fixed here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter: 5x faster here than the dynamo one (which also works, within 2.4e-6 of it,
        # but needs onnxscript); deprecated since torch 2.9
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            tuple(example),
            str(partial),
            input_names=module.input_names(),
            output_names=module.output_names(),
            opset_version=ONNX_OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    partial.replace(path)
    log.info("exported the stream step in %.1f s", time.perf_counter() - started)
    return path


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first: `wanted` (or `PROVIDER_ORDER`) filtered by what onnxruntime has."""
    order = list(wanted) if wanted else list(PROVIDER_ORDER)
    chosen = [name for name in order if name in available]
    if "CPUExecutionProvider" not in chosen and "CPUExecutionProvider" in available:
        chosen.append("CPUExecutionProvider")
    return chosen


def _numpy_dtype(dtype: torch.dtype) -> Any:
    import numpy as np

    table = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.bool: np.bool_}
    return table[dtype]


@dataclass
class _Session:
    """One onnxruntime session for one batch size and shape, with its output tensors (reused every call)."""

    session: Any  # onnxruntime.InferenceSession
    module: OnnxStepModule
    device_type: str  # "cuda" or "cpu": where the bound tensors live
    outputs: list[torch.Tensor]
    first_run: bool = True


class OnnxStepBackend(StaticStepBackend):
    """`StreamUNet.stream` through onnxruntime (see the module's docstring)."""

    name = "onnx"

    def __init__(self, onnx_cache_dir: Path | str | None = None, onnx_providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise RuntimeError(f"the onnx step backend needs onnx and onnxruntime: {INSTALL_HINT}") from error
        if onnx_cache_dir is None:
            import tempfile

            onnx_cache_dir = Path(tempfile.gettempdir()) / "live2diff-vcam-onnx"
        self.cache_dir = Path(onnx_cache_dir)
        self.wanted_providers = list(onnx_providers) if onnx_providers else None
        self._sessions: dict[tuple[Any, ...], _Session] = {}
        self._calls: dict[tuple[Any, ...], int] = {}
        self._fingerprint: str | None = None

    def detach(self, unet: StreamUNet) -> None:
        self._sessions.clear()
        self._calls.clear()

    @property
    def providers_used(self) -> list[list[str]]:
        """The providers of each open session (what onnxruntime actually took)."""
        return [entry.session.get_providers() for entry in self._sessions.values()]

    def run(
        self,
        unet: StreamUNet,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        depth_latent: torch.Tensor | None,
        entries: list[list[KVCache]],
    ) -> torch.Tensor:
        key = (tuple(sample.shape), tuple(encoder_hidden_states.shape), sample.dtype, depth_latent is not None)
        calls = self._calls.get(key, 0) + 1
        self._calls[key] = calls
        if key not in self._sessions and calls < EXPORT_AFTER_CALLS:
            return super().run(unet, sample, timesteps, encoder_hidden_states, depth_latent, entries)
        write_slot, key_positions, visible, query_position = static_step_layout(entries)
        device = sample.device
        caches = [[_cache_tensor(cache) for cache in layers] for layers in entries]
        inputs = [
            sample.contiguous(),
            timesteps.reshape(-1).expand(sample.shape[0]).to(torch.int64).contiguous(),
            encoder_hidden_states.contiguous(),
        ]
        if depth_latent is not None:
            inputs.append(depth_latent.to(sample.dtype).contiguous())
        inputs += [key_positions.to(device), visible.to(device), query_position.to(device)]
        inputs += [kv for layers in caches for kv in layers]
        entry = self._sessions.get(key)
        if entry is None:
            entry = self._open(unet, key, inputs, len(entries), depth_latent is not None)
            self._sessions[key] = entry
        self._run_session(entry, inputs)
        layers = len(caches[0])
        rows: list[torch.Tensor | None] = list(entry.outputs[1:])
        # the new rows into each ring slot, on the device: the cache is never copied
        write_new_rows(
            StaticStep(
                write_slot=write_slot.to(device),
                key_positions=key_positions,
                visible=visible,
                query_position=query_position,
                caches=caches,
                new_rows=[rows[e * layers : (e + 1) * layers] for e in range(len(caches))],
            )
        )
        return entry.outputs[0].clone()

    def _open(
        self, unet: StreamUNet, key: tuple[Any, ...], inputs: list[torch.Tensor], entries: int, with_depth: bool
    ) -> _Session:
        import onnxruntime

        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(unet)
        sample = inputs[0]
        shape_key = "x".join(str(side) for side in sample.shape[1:]) + f"-b{entries}"
        dtype_key = str(sample.dtype).removeprefix("torch.")
        name = f"{self._fingerprint}-{shape_key}-{dtype_key}-{'depth' if with_depth else 'nodepth'}"
        name += f"-torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}"
        path = self.cache_dir / name / "stream_step.onnx"
        module = OnnxStepModule(unet, entries, with_depth)
        if not path.is_file():
            export_stream_step(unet, path, inputs, entries, with_depth)
        providers = choose_providers(onnxruntime.get_available_providers(), self.wanted_providers)
        device_type = "cuda" if sample.is_cuda and providers[0] in CUDA_PROVIDERS else "cpu"
        if sample.device.type != device_type:
            raise RuntimeError(
                f"the UNet is on {sample.device} but onnxruntime offers {providers} here: the onnx backend needs "
                "the CUDA provider (onnxruntime-gpu) for a CUDA UNet; use the torch backend"
            )
        options: list[dict[str, str]] = []
        for provider in providers:
            if provider == "TensorrtExecutionProvider":
                engines = self.cache_dir / "tensorrt" / f"{name}-{_gpu_name()}-ort{onnxruntime.__version__}"
                engines.mkdir(parents=True, exist_ok=True)
                options.append(
                    {
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(engines),
                        "trt_fp16_enable": "True" if sample.dtype == torch.float16 else "False",
                    }
                )
            elif provider in CUDA_PROVIDERS:
                options.append({"device_id": str(sample.device.index or 0)})
            else:
                options.append({})
        session_options = onnxruntime.SessionOptions()
        session_options.log_severity_level = 3
        # idle worker threads sleep instead of spinning: a spinning pool takes the CPU from the camera's other
        # threads (and from PyTorch: spinning after each run tripled the next PyTorch step in `vcam bench onnx`)
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            str(path), sess_options=session_options, providers=providers, provider_options=options
        )
        log.info("onnxruntime session for %s on %s", path.parent.name, session.get_providers())
        outputs = self._allocate_outputs(module, inputs, entries)
        return _Session(session=session, module=module, device_type=device_type, outputs=outputs)

    @staticmethod
    def _allocate_outputs(module: OnnxStepModule, inputs: list[torch.Tensor], entries: int) -> list[torch.Tensor]:
        sample = inputs[0]
        caches = inputs[-entries * module.layers :]
        outputs = [torch.empty_like(sample)]
        for kv in caches:
            two, rows, heads, _, head_dim = kv.shape
            outputs.append(torch.empty((two, rows, heads, head_dim), dtype=kv.dtype, device=kv.device))
        return outputs

    def _run_session(self, entry: _Session, inputs: list[torch.Tensor]) -> None:
        session = entry.session
        binding = session.io_binding()
        device_id = (inputs[0].device.index or 0) if entry.device_type == "cuda" else 0
        for name, tensor in zip(entry.module.input_names(), inputs, strict=True):
            binding.bind_input(
                name, entry.device_type, device_id, _numpy_dtype(tensor.dtype), list(tensor.shape), tensor.data_ptr()
            )
        for name, tensor in zip(entry.module.output_names(), entry.outputs, strict=True):
            binding.bind_output(
                name, entry.device_type, device_id, _numpy_dtype(tensor.dtype), list(tensor.shape), tensor.data_ptr()
            )
        if entry.device_type == "cuda":
            torch.cuda.current_stream(inputs[0].device).synchronize()  # onnxruntime runs on its own stream
        started = time.perf_counter()
        if entry.first_run and "TensorrtExecutionProvider" in session.get_providers():
            log.warning(
                "building the TensorRT engine of the stream step (first run only; can take minutes); it is kept in %s",
                self.cache_dir / "tensorrt",
            )
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if entry.first_run:
            log.info("first onnxruntime run took %.1f s", time.perf_counter() - started)
            entry.first_run = False


def _cache_tensor(cache: KVCache) -> torch.Tensor:
    if cache.kv is None:
        raise RuntimeError("onnx stream step over an empty cache; this is a bug")
    return cache.kv


def _gpu_name() -> str:
    if not torch.cuda.is_available():
        return "nogpu"
    return torch.cuda.get_device_name().replace(" ", "_").replace("/", "_")
