"""The styles a user can pick: passthrough, classic OpenCV looks, test models and diffusion styles.

One registry for the CLI (`vcam styles`, `--style`), the tray menu and the runtime's loader.
Diffusion styles come from the packaged catalogue plus the user's own `[styles.NAME]` tables;
they are "ready" when their weights are on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcam.errors import ConfigError, UnknownStyleError

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.profile import ProfileSettings, StyleKnobs
    from vcam.run_settings import RunSettings
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StyleInfo:
    name: str
    kind: str  # "classic" | "diffusion" | "test"
    title: str
    ready: bool  # usable now (weights on disk for diffusion styles)
    detail: str = ""  # description, or what is missing and how to get it
    error: str | None = None  # why a user style's [styles.NAME] table is invalid


def list_styles(config: Config, diffusion: bool = True) -> list[StyleInfo]:
    """Every style, classic ones first (diffusion styles only when `diffusion`)."""
    from vcam.translators.classic import CLASSIC_STYLES

    styles = [StyleInfo("passthrough", "classic", "Camera (no style)", True, "the camera image as it is")]
    styles += [StyleInfo(name, "classic", title, True, text) for name, (title, text) in CLASSIC_STYLES.items()]
    styles += _test_styles()
    if diffusion:
        styles += _diffusion_styles(config)
    return styles


#: the kinds of style that run a diffusion model (torch, diffusers, transformers)
MODEL_STYLE_KINDS = ("diffusion", "test")
#: the tiny random-weight model's style name (`vcam.translators.live2diff.build_tiny_translator`)
TINY_STYLE_NAME = "tiny-random"


def _test_styles() -> list[StyleInfo]:
    return [
        StyleInfo(
            TINY_STYLE_NAME,
            "test",
            "Tiny random model (test)",
            True,
            "a tiny random-weight Live2Diff pipeline: its output is noise; for tests and smoke runs",
        )
    ]


def _diffusion_styles(config: Config) -> list[StyleInfo]:
    """The catalogue's styles and the user's own, ready when their weights are on disk (never the network)."""
    from vcam.store.store import ModelStore, download_command

    store = ModelStore.from_config(config, strict=False)  # one bad user style must not hide the others
    infos: list[StyleInfo] = []
    for name, entry in store.catalogue.styles.items():
        ready = store.is_downloaded(name)
        detail = entry.description if ready else f"not downloaded: run `{download_command([name])}`"
        infos.append(StyleInfo(name, "diffusion", entry.title, ready, detail))
    where = f" in {config.path}" if config.path is not None else ""
    for name, error in store.catalogue.invalid.items():
        infos.append(StyleInfo(name, "diffusion", name, False, f"invalid{where}: {error}", error=f"{error}{where}"))
    return infos


def find_style(name: str, config: Config) -> StyleInfo:
    """The style called `name` (classic and test styles are found without looking at weights)."""
    from vcam.translators.classic import CLASSIC_STYLES

    if name == "passthrough" or name in CLASSIC_STYLES or name in {info.name for info in _test_styles()}:
        return next(info for info in list_styles(config, diffusion=False) if info.name == name)
    styles = list_styles(config)
    for info in styles:  # a bad `[styles.NAME]` table first: for a catalogue style the listing shows both
        if info.name == name and info.error is not None:
            raise ConfigError(info.error)
    for info in styles:
        if info.name == name:
            return info
    names = ", ".join(info.name for info in styles)
    raise UnknownStyleError(f"unknown style {name!r}: choose one of {names} (`vcam styles` lists them)")


def load_translator(
    name: str, config: Config, settings: RunSettings | None = None, profile: ProfileSettings | None = None
) -> Translator:
    """Build the translator for style `name` (slow for diffusion styles: call it off the frame loop), with what
    the user set in `settings` (the run's changeable settings; None: the config's), at the automatic `profile`
    when given (`vcam.profile`: it changes only what the user left unset, and keeps the strength when the
    number of steps changes)."""
    from vcam.translators.classic import CLASSIC_STYLES, ClassicTranslator
    from vcam.translators.passthrough import PassthroughTranslator

    if name == "passthrough":
        return PassthroughTranslator()
    if name in CLASSIC_STYLES:
        return ClassicTranslator(name)
    info = find_style(name, config)
    if settings is None:
        from vcam.run_settings import RunSettings

        settings = RunSettings(config)
    if config.remote.url:  # the style runs on a `vcam serve` box (vcam run --remote)
        from vcam.serve.token import client_token
        from vcam.translators.remote import RemoteTranslator

        return RemoteTranslator(
            config.remote.url,
            client_token(config.remote_token),
            name,
            ice_servers=config.remote.ice_servers,
            ca_file=config.remote.ca_file or None,
        )
    from vcam.profile import t_index_list_for_steps

    if info.kind == "test":
        from vcam.model.overlap import resolve_overlap
        from vcam.model.tiny import TINY_T_INDEX_LIST
        from vcam.translators.live2diff import build_tiny_translator

        overlap = resolve_overlap(config.models.overlap, "cpu", False)  # the tiny model runs on the CPU, uncompiled
        if profile is None:
            return build_tiny_translator(seed=config.style.seed, settings=settings, overlap=overlap)
        steps = t_index_list_for_steps(TINY_T_INDEX_LIST, profile.steps)
        size = (profile.width, profile.height)
        return build_tiny_translator(
            seed=config.style.seed,
            t_index_list=steps,
            size=size,
            vae=profile.vae,
            depth_every=profile.depth_every,
            settings=settings,
            overlap=overlap,
        )
    from vcam.store.store import ModelStore
    from vcam.translators.live2diff import Live2DiffTranslator

    store = ModelStore.from_config(config, strict=False)  # another style's bad table must not block this one
    paths = store.path(name)  # NotDownloadedError (a UserError) with the exact download command
    if profile is None:
        return Live2DiffTranslator.from_style(paths, config, settings=settings)
    table_depth = f"styles.{name}.depth_every" in settings.user_set  # the user's `[styles.NAME] depth_every`
    overrides = {
        "t_index_list": t_index_list_for_steps(paths.t_index_list, profile.steps),
        "vae": profile.vae,
        "depth_every": paths.depth_every if table_depth else profile.depth_every,
    }
    size = (profile.width, profile.height)
    return Live2DiffTranslator.from_style(paths, config, size=size, overrides=overrides, settings=settings)


def style_knobs(name: str, config: Config, settings: RunSettings | None = None) -> StyleKnobs | None:
    """What style `name` offers the auto profile (its own settings, the knobs the user pinned: in the config, on
    the command line, or through the control API when `settings` is the run's); None for looks without model
    settings (passthrough, classic looks, styles that run on a remote server). Every Live2Diff style has a depth
    prior (the tiny test model too), so each offers the depth rate; its top rung runs at the depth rate the user
    set, else the style's own."""
    from vcam.profile import ProfileSettings, StyleKnobs, pinned_knobs
    from vcam.translators.classic import CLASSIC_STYLES

    if name == "passthrough" or name in CLASSIC_STYLES or config.remote.url:
        return None
    info = find_style(name, config)
    pinned = pinned_knobs(settings.user_set if settings is not None else config.user_set, name)
    user_depth_every = settings.style(name).depth_every if settings is not None else None
    if user_depth_every is None and name == config.style.name and "style.depth_every" in config.user_set:
        user_depth_every = config.style.depth_every
    if info.kind == "test":
        from vcam.model.tiny import TINY_HEIGHT, TINY_T_INDEX_LIST, TINY_WIDTH

        tiny = ProfileSettings(len(TINY_T_INDEX_LIST), TINY_WIDTH, TINY_HEIGHT, "kl", user_depth_every or 1)
        return StyleKnobs(tiny, pinned)
    from vcam.model.loading import PipelineSpec
    from vcam.store.store import ModelStore
    from vcam.translators.live2diff import model_size_for_output, native_model_size

    paths = ModelStore.from_config(config, strict=False).path(name)
    width, height = model_size_for_output(native_model_size(paths.base), config.output.width, config.output.height)
    vae = PipelineSpec.__dataclass_fields__["vae"].default
    depth_every = user_depth_every or paths.depth_every
    return StyleKnobs(ProfileSettings(len(paths.t_index_list), width, height, str(vae), depth_every), pinned)
