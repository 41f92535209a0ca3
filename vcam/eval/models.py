"""The models `vcam eval` measures with: CLIP ViT-B/32 and the DPT depth model, when they are on disk.

CLIP is an optional download of its own (vcam/data/eval_models.toml); DPT is the shared depth part every
diffusion style downloads. Each is looked up in the model cache without touching the network; a missing one
turns its metrics into "not available: `vcam models download NAME`".
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.errors import ConfigError

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.store.catalogue import SharedPart
    from vcam.store.store import FileReport, ModelStore

log = logging.getLogger(__name__)

EVAL_MODELS_FILE = "data/eval_models.toml"
#: the names `vcam models download` takes for the evaluation models
CLIP_MODEL_NAME = "clip"
DEPTH_MODEL_NAME = "depth"
EVAL_MODEL_NAMES = (CLIP_MODEL_NAME, DEPTH_MODEL_NAME)


def not_available(name: str) -> str:
    """What a table says for a metric whose model `name` is not on disk."""
    return f"not available: `vcam models download {name}`"


def load_eval_parts(data: Mapping[str, Any] | None = None) -> dict[str, SharedPart]:
    """The evaluation-only models of vcam/data/eval_models.toml (or `data`), by name."""
    from vcam.store.catalogue import _parse_shared

    if data is None:
        text = resources.files("vcam").joinpath(*EVAL_MODELS_FILE.split("/")).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    tables = data.get("models", {})
    if not isinstance(tables, Mapping):
        raise ConfigError("eval_models.toml: [models.*] must be tables")
    return {name: _parse_shared(name, table) for name, table in tables.items()}


def eval_part(name: str, store: ModelStore) -> SharedPart:
    """The model `name` ("clip" or "depth") as a catalogue part."""
    if name == DEPTH_MODEL_NAME:
        return store.catalogue.shared["depth"]
    return load_eval_parts()[name]


def missing_reports(name: str, store: ModelStore) -> list[FileReport]:
    """The files of model `name` that are not complete on disk (never touches the network)."""
    reports = [store.file_report(hub_file) for hub_file in eval_part(name, store).source.hub_files()]
    return [report for report in reports if report.state != "ok"]


def model_folder(name: str, store: ModelStore) -> Path | None:
    """The snapshot folder holding model `name`, or None when any of its files is missing."""
    part = eval_part(name, store)
    if missing_reports(name, store):
        return None
    first = part.source.hub_files()[0]
    path = store.cached_path(first)
    if path is None:
        return None
    root = path
    for _ in Path(first.filename).parts:
        root = root.parent
    return root


def download_eval_models(names: list[str], store: ModelStore) -> int:
    """Fetch the evaluation models `names`; returns how many files were fetched."""
    from vcam.store.download import fetch_files

    fetched = 0
    for name in names:
        fetched += fetch_files(store, missing_reports(name, store), [name])
    return fetched


@dataclass
class EvalModels:
    """The loaded models (None when not on disk) and, for each missing one, its 'not available' text."""

    clip: Any = None  # vcam.eval.clip.ClipScorer
    depth: Any = None  # vcam.model.depth.DepthEncoder
    missing: dict[str, str] = field(default_factory=dict)

    def reason(self, name: str) -> str | None:
        return self.missing.get(name)


def load_eval_models(config: Config, store: ModelStore | None = None) -> EvalModels:
    """Load CLIP and DPT from the cache when they are there (on the config's device), else say what to run."""
    from vcam.store.store import ModelStore

    store = store or ModelStore.from_config(config, strict=False)
    models = EvalModels()
    device = _device(config)
    clip_folder = model_folder(CLIP_MODEL_NAME, store)
    if clip_folder is None:
        models.missing[CLIP_MODEL_NAME] = not_available(CLIP_MODEL_NAME)
    else:
        from vcam.eval.clip import ClipScorer

        models.clip = ClipScorer.from_folder(clip_folder, device=device)
    depth_folder = model_folder(DEPTH_MODEL_NAME, store)
    if depth_folder is None:
        models.missing[DEPTH_MODEL_NAME] = not_available(DEPTH_MODEL_NAME)
    else:
        from transformers import DPTForDepthEstimation

        from vcam.model.depth import DPT_INPUT_SIZE, DepthEncoder

        depth_model: Any = DPTForDepthEstimation.from_pretrained(str(depth_folder), local_files_only=True)
        input_size = int(getattr(depth_model.config, "image_size", DPT_INPUT_SIZE) or DPT_INPUT_SIZE)
        models.depth = DepthEncoder(depth_model.eval().to(device), input_size=input_size)
    return models


def _device(config: Config) -> Any:
    from vcam.model.loading import resolve_device

    return resolve_device(config.models.device)
