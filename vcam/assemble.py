"""The composition root: a `Runtime` built from the user's config, with `auto` source and sinks resolved.

The only place that knows every concrete part: the source and sink parsers, the style registry's loader,
the segmentation stage. `vcam run`, the tray and the benchmarks build their runtime here.

A saved setting never locks the user out: a style or segmentation mode from the config file that cannot
be used (a style that no longer exists, `replace` without a usable image, a missing segmentation model)
starts the camera without it, and says so once (a log warning and the status's `last_error`). Only the
keys the user gave on this command line (`keep`) stay errors, so a typo in `--style` still fails fast.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from vcam.errors import UserError
from vcam.runtime import FALLBACK_STYLE, Runtime

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.profile import ProfileController
    from vcam.run_settings import RunSettings
    from vcam.segment.stage import SegmentationStage

log = logging.getLogger(__name__)


#: the config keys of the segmentation stage: given on the command line, a failure there stays an error
SEGMENT_KEYS = frozenset({"segment.mode", "segment.background_image", "segment.model", "segment.blur_strength"})


def build_runtime(
    config: Config, settings: RunSettings | None = None, *, keep: Collection[str] = (), preload_models: bool = True
) -> Runtime:
    """The runtime for a (validated, CLI-overridden) config: resolves `auto` source and sinks. Styles load with
    the run's changeable `settings` (made from the config when None; the control API changes them).

    A saved style or segmentation mode that cannot be used is dropped (see the module docstring) and
    `config` then says what the camera runs (the file is left as it is); the keys in `keep` (those the
    user gave on this command line) raise their UserError instead.

    With `preload_models` (and the model libraries installed) the runtime imports them before its first frame:
    a diffusion style loaded later, at start-up or on a switch, then never freezes the output.
    """
    from vcam.run_settings import RunSettings
    from vcam.sinks import parse_sink
    from vcam.sources import parse_source
    from vcam.style_switch import model_stack_installed, preload_model_stack
    from vcam.styles import load_translator

    notices: list[str] = []
    config.style.name = usable_style(config, keep, notices)
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
            face_strength=config.segment.face_strength,
        )

    segmentation: SegmentationStage | None = None
    if config.segment.mode != "off":
        try:
            segmentation = make_segmentation(config.segment.mode)
        except UserError as error:
            if SEGMENT_KEYS & set(keep):
                raise
            notices.append(
                f"the saved segmentation mode {config.segment.mode!r} cannot be used ({error}); "
                f"the camera started with segmentation off (choose a mode again once that is fixed)"
            )
            config.segment.mode = "off"
    run_settings = settings if settings is not None else RunSettings(config)
    runtime = Runtime(
        source,
        sinks,
        width=config.output.width,
        height=config.output.height,
        fps=config.output.fps,
        style=config.style.name,
        translator_loader=lambda name: load_translator(name, config, run_settings),
        segmentation=segmentation,
        segmentation_factory=make_segmentation,
        delay_ms=config.output.delay_ms,
        audio_offset_ms=config.output.audio_offset_ms,
        profile=build_profile(config, run_settings),
        preload=preload_model_stack if preload_models and model_stack_installed() else None,
    )
    if notices:
        message = "; ".join(notices)
        log.warning("%s", message)
        runtime.report_problem(message)  # said once: the status's last_error (the tray notifies it once)
    return runtime


def usable_style(config: Config, keep: Collection[str], notices: list[str]) -> str:
    """The style to start with: the config's, or the fallback look when a saved name cannot be used
    (appending why to `notices`); a `--style` the user just gave (in `keep`) raises instead."""
    from vcam.styles import find_style

    try:
        find_style(config.style.name, config)
    except UserError as error:
        if "style.name" in keep:
            raise
        notices.append(
            f"the saved style {config.style.name!r} cannot be used ({error}); "
            f"the camera started with the classic {FALLBACK_STYLE!r} look"
        )
        return FALLBACK_STYLE
    return config.style.name


def build_profile(config: Config, settings: RunSettings | None = None) -> ProfileController:
    """The profile controller for a config: `[style] profile` and `target_fps`, styles loaded from the config
    with the run's user `settings`."""
    from vcam.profile import ProfileController
    from vcam.styles import load_translator, style_knobs

    return ProfileController(
        config.style.profile,
        lambda name, profile: load_translator(name, config, settings, profile),
        lambda name: style_knobs(name, config, settings),
        target_fps=config.style.target_fps,
        device=lambda name: device_label(name, config),
    )


def device_label(style: str, config: Config) -> str:
    """The device a style runs on, as the profile cache names it ("cpu", "cuda:NVIDIA H200", ...)."""
    from vcam.styles import TINY_STYLE_NAME

    if style == TINY_STYLE_NAME:
        return "cpu"  # the tiny test model always runs on the CPU
    from vcam.model.loading import resolve_device

    device = resolve_device(config.models.device)
    if device.type == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


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

        available, reason = probe_virtual_camera(suggest_preview=False)  # the preview is what runs instead
        if available:
            resolved.append("vcam")
        else:
            log.warning("serving the preview stream instead of the virtual camera: %s", reason)  # says how to fix it
            resolved.append("preview")
    return list(dict.fromkeys(resolved))
