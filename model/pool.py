"""`ModelPool`: loaded models shared between styles, released when no translator uses them.

A style's pipeline needs a UNet (base + motion weights with the LCM-LoRA and the style LoRA fused in) and
parts (tokenizer, text encoder, autoencoder, depth estimator). The pool keeps each by the key of everything
that determines its weights (paths, LoRA scale, attention kernel, device, dtype):

- a style whose UNet key and parts key are loaded already gets a new pipeline on the same models: its own
  prompt embeddings, KV caches and schedule, no reload (styles of one base that differ in prompt,
  t_index_list or clip_skip);
- another style LoRA on the same base is another UNet key: a fused copy is loaded (measured faster per frame
  than a PEFT adapter switched with `set_adapters`, and safe while two styles run at once), the parts are
  shared (the LoRA's text-encoder half is fused into the shared text encoder only while that style's prompts
  are encoded: `vcam.model.text_lora`);
- another base loads anew; the previous models are dropped from the pool when their last lease is released,
  so after a switch only the new style's models stay resident.

Loads run one at a time, so a switch holds at most the current style's models and one new set. The pool
reports the bytes of model tensors it holds (each storage counted once) and the peak since `reset_peak`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import torch
    from vcam.model.loading import PipelineParts, PipelineSpec
    from vcam.model.pipeline import StreamPipeline
    from vcam.model.unet import StreamUNet

log = logging.getLogger(__name__)

MB = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class UNetKey:
    """Everything that determines a style's UNet weights."""

    base: Path
    base_format: str
    motion: Path
    lcm_lora: Path | None
    style_lora: Path | None
    lora_scale: float
    attention: str
    compile: bool
    device: str
    dtype: str


@dataclass(frozen=True)
class PartsKey:
    """Everything that determines a style's tokenizer, text encoder, autoencoder and depth estimator."""

    sd15: Path
    text_encoder: Path
    vae: str
    vae_source: Path | None
    depth: Path
    device: str
    dtype: str


def unet_key(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> UNetKey:
    return UNetKey(
        base=spec.base.resolve(),
        base_format=spec.base_format,
        motion=spec.motion.resolve(),
        lcm_lora=spec.lcm_lora.resolve() if spec.lcm_lora is not None else None,
        style_lora=spec.style_lora.resolve() if spec.style_lora is not None else None,
        lora_scale=float(spec.lora_scale) if spec.style_lora is not None else 0.0,
        attention=spec.attention,
        compile=spec.compile,
        device=str(device),
        dtype=str(dtype),
    )


def parts_key(spec: PipelineSpec, device: torch.device, dtype: torch.dtype) -> PartsKey:
    from vcam.model.loading import text_encoder_source, vae_source

    vae_folder = vae_source(spec)
    return PartsKey(
        sd15=spec.sd15.resolve(),
        text_encoder=text_encoder_source(spec).resolve(),
        vae=spec.vae,
        vae_source=vae_folder.resolve() if vae_folder is not None else None,
        depth=spec.depth.resolve(),
        device=str(device),
        dtype=str(dtype),
    )


@dataclass
class _Entry(Generic[T]):
    """One loaded model (or set of parts) and how many leases use it."""

    value: T
    nbytes: int
    users: int = 1
    unet_lock: threading.Lock | None = None  # UNet entries: shared by every pipeline on this UNet


class Lease:
    """A pipeline from the pool; `release()` (idempotent) gives its models back when the pipeline is done."""

    def __init__(self, pipeline: StreamPipeline, release: Callable[[], None]) -> None:
        self.pipeline = pipeline
        self._release = release
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release()


def module_storages(modules: list[Any]) -> dict[int, int]:
    """data_ptr -> bytes of every storage behind the modules' parameters and buffers (each storage once)."""
    storages: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return storages


def _unet_modules(unet: StreamUNet) -> list[Any]:
    return [unet]


def _parts_modules(parts: PipelineParts) -> list[Any]:
    return [parts.text_encoder, parts.codec.vae, parts.depth_encoder.model]


class ModelPool:
    """Shares loaded UNets and parts between the pipelines of several styles (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the tables and figures
        self._load_lock = threading.Lock()  # one load at a time
        self._unets: dict[UNetKey, _Entry[StreamUNet]] = {}
        self._parts: dict[PartsKey, _Entry[PipelineParts]] = {}
        self._peak_bytes = 0
        self._resident_bytes = 0  # recounted when an entry comes or goes (`_recount`)
        self._tables_version = 0  # bumped under `_lock` at each change of the tables

    # -- leases ----------------------------------------------------------------------------------------------

    def acquire(self, spec: PipelineSpec, device: str = "auto", dtype: str = "auto") -> Lease:
        """A pipeline for `spec`, on pooled models where their keys match, else on newly loaded ones (slow)."""
        from vcam.model.loading import (
            assemble_stream_pipeline,
            load_pipeline_parts,
            load_pipeline_unet,
            resolve_device,
            resolve_dtype,
        )

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        u_key = unet_key(spec, torch_device, torch_dtype)
        p_key = parts_key(spec, torch_device, torch_dtype)
        unet_entry = self._get_or_load(
            self._unets, u_key, lambda: load_pipeline_unet(spec, torch_device, torch_dtype), _unet_modules
        )
        try:
            parts_entry = self._get_or_load(
                self._parts, p_key, lambda: load_pipeline_parts(spec, torch_device, torch_dtype), _parts_modules
            )
        except BaseException:
            self._give_back(self._unets, u_key)
            raise
        pipeline = assemble_stream_pipeline(spec, unet_entry.value, parts_entry.value, unet_entry.unet_lock)

        def release() -> None:
            self._give_back(self._unets, u_key)
            self._give_back(self._parts, p_key)

        return Lease(pipeline, release)

    def _get_or_load(
        self, table: dict[Any, _Entry[Any]], key: Any, load: Callable[[], Any], modules: Callable[[Any], list[Any]]
    ) -> _Entry[Any]:
        with self._lock:
            entry = table.get(key)
            if entry is not None:
                entry.users += 1
                return entry
        with self._load_lock:
            with self._lock:  # loaded meanwhile by another thread?
                entry = table.get(key)
                if entry is not None:
                    entry.users += 1
                    return entry
            value = load()
            nbytes = sum(module_storages(modules(value)).values())
            entry = _Entry(value, nbytes, unet_lock=threading.Lock() if table is self._unets else None)
            with self._lock:
                table[key] = entry
                self._tables_version += 1
            self._recount()
            log.info("model pool: loaded %s (%.1f MB)", type(value).__name__, nbytes / MB)
            return entry

    def _give_back(self, table: dict[Any, _Entry[Any]], key: Any) -> None:
        with self._lock:
            entry = table.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users > 0:
                return
            del table[key]
            self._tables_version += 1
        self._recount()
        log.info("model pool: released %s (%.1f MB)", type(entry.value).__name__, entry.nbytes / MB)

    # -- figures ---------------------------------------------------------------------------------------------

    def _recount(self) -> None:
        """Recount `resident_bytes` after the tables changed. The walk over every tensor (tens of ms at real size)
        runs outside `_lock`: a status query, which the output thread makes, never waits for it. The count of the
        newest tables wins: an older recount that finishes later is dropped."""
        with self._lock:
            version = self._tables_version
            held = [module for entry in self._unets.values() for module in _unet_modules(entry.value)]
            held += [module for entry in self._parts.values() for module in _parts_modules(entry.value)]
        total = sum(module_storages(held).values())
        with self._lock:
            if version == self._tables_version:
                self._resident_bytes = total
                self._peak_bytes = max(self._peak_bytes, total)

    def resident_bytes(self) -> int:
        """Bytes of the model tensors the pool holds now (a storage shared by two entries counted once)."""
        with self._lock:
            return self._resident_bytes

    def peak_bytes(self) -> int:
        """The most `resident_bytes` has been since the pool was made or `reset_peak` was called."""
        with self._lock:
            return self._peak_bytes

    def reset_peak(self) -> None:
        with self._lock:
            self._peak_bytes = self._resident_bytes

    def unets(self) -> list[StreamUNet]:
        """The UNets held now (one per base / LoRA combination in use)."""
        with self._lock:
            return [entry.value for entry in self._unets.values()]

    def parts(self) -> list[PipelineParts]:
        with self._lock:
            return [entry.value for entry in self._parts.values()]


_shared_pool: ModelPool | None = None
_shared_pool_lock = threading.Lock()


def shared_pool() -> ModelPool:
    """The process's pool, used by `Live2DiffTranslator.from_style` (made on first use)."""
    global _shared_pool
    with _shared_pool_lock:
        if _shared_pool is None:
            _shared_pool = ModelPool()
        return _shared_pool
