"""The composition root: a `Runtime` built from the user's config, with `auto` source and sinks resolved.

The only place that knows every concrete part: the source and sink parsers, the style registry's loader,
the segmentation stage. `vcam run`, the tray and the benchmarks build their runtime here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vcam.runtime import Runtime

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.segment.stage import SegmentationStage

log = logging.getLogger(__name__)


def build_runtime(config: Config, preload_models: bool = True) -> Runtime:
    """The runtime for a (validated, CLI-overridden) config: resolves `auto` source and sinks.

    With `preload_models` (and the model libraries installed) the runtime imports them before its first frame:
    a diffusion style loaded later, at start-up or on a switch, then never freezes the output.
    """
    from vcam.sinks import parse_sink
    from vcam.sources import parse_source
    from vcam.style_switch import model_stack_installed, preload_model_stack
    from vcam.styles import load_translator

    source_spec = resolve_auto_source(config.camera.source)
    source = parse_source(source_spec, config.camera.width, config.camera.height, config.camera.fps)
    sinks = [parse_sink(spec, config.preview.port) for spec in resolve_auto_sinks(config.output.sinks)]

    def make_segmentation(mode: str) -> SegmentationStage:
        from vcam.segment.stage import SegmentationStage

        return SegmentationStage(
            mode,
            model_path=config.segment.model or None,
            background_image=config.segment.background_image or None,
            blur_strength=config.segment.blur_strength,
        )

    segmentation = make_segmentation(config.segment.mode) if config.segment.mode != "off" else None
    return Runtime(
        source,
        sinks,
        width=config.output.width,
        height=config.output.height,
        fps=config.output.fps,
        style=config.style.name,
        translator_loader=lambda name: load_translator(name, config),
        segmentation=segmentation,
        segmentation_factory=make_segmentation,
        preload=preload_model_stack if preload_models and model_stack_installed() else None,
    )


def resolve_auto_source(spec: str) -> str:
    """`auto`: the first webcam if there is one, else the demo source (saying so)."""
    if spec != "auto":
        return spec
    from vcam.devices.cameras import list_cameras

    cameras = list_cameras(with_formats=False)
    if cameras:
        return "webcam"
    log.warning("no webcam found: showing the built-in demo scene (choose one with --source)")
    return "demo"


def resolve_auto_sinks(specs: Sequence[str]) -> list[str]:
    """`auto`: the virtual camera if a driver is present, else the preview stream (saying how to install one)."""
    resolved: list[str] = []
    for spec in specs:
        if spec != "auto":
            resolved.append(spec)
            continue
        from vcam.devices.virtual_cameras import probe_virtual_camera

        available, reason = probe_virtual_camera()
        if available:
            resolved.append("vcam")
        else:
            log.warning("serving the preview stream instead of the virtual camera: %s", reason)  # says how to fix it
            resolved.append("preview")
    return list(dict.fromkeys(resolved))
