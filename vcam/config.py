"""The user's configuration: TOML in the platform's config dir, a default for every key, validated.

The file is read, never rewritten, unless the user changes a setting (the tray's style or
segmentation menu, `vcam run --save`); then `update_config` rewrites it atomically (a temporary file
in the same folder, then `os.replace`), so a crash mid-write can never leave garbage behind, and
an invalid change is refused before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcam.atomic_files import fsync_folder, remove_stale_temporaries, temporary_path
from vcam.errors import ConfigError
from vcam.latency import MAX_DELAY_MS
from vcam.model.depth import check_depth_every
from vcam.model.loading import DEVICES, DTYPES, VAE_KINDS
from vcam.model.noise import check_noise_mode
from vcam.model.overlap import check_overlap_mode
from vcam.model.scheduler import check_t_index_list
from vcam.model.similar_filter import SIMILAR_THRESHOLD, check_similar_threshold
from vcam.model.step_backends import MODEL_BACKENDS
from vcam.paths import config_file, runtime_dir
from vcam.profile import DEFAULT_TARGET_FPS, check_profile
from vcam.segment.stage import SEGMENT_MODES, check_face_strength
from vcam.user_settings import Origin, UserSettings

log = logging.getLogger(__name__)

MIN_SIZE, MAX_WIDTH, MAX_HEIGHT = 64, 3840, 2160
MIN_FPS, MAX_FPS = 1.0, 120.0
#: the URL schemes of ICE servers (remote mode)
ICE_SCHEMES = ("stun:", "turn:", "turns:")
#: the longest prompt accepted (CLIP reads 77 tokens; this only bounds what a client may send)
MAX_PROMPT_CHARS = 1000
#: the `[style]` keys that belong to the style being started (recorded as "styles.NAME.key")
PER_STYLE_KEYS = ("prompt", "t_index_list", "noise", "depth_every")


@dataclass
class CameraConfig:
    source: str = "auto"  # auto | webcam | webcam:N | webcam:NAME | file:PATH | screen | demo
    width: int = 1280
    height: int = 720
    fps: float = 30.0


@dataclass
class OutputConfig:
    sinks: list[str] = field(
        default_factory=lambda: ["auto"]
    )  # auto | vcam[:NAME] | preview[:PORT] | file:PATH | null
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    delay_ms: int = 0  # hold the video at this capture-to-send delay (0: off; `vcam.latency`)
    audio_offset_ms: int = 0  # added to the measured latency for the advised audio delay (a clap test's result)


@dataclass
class PreviewConfig:
    port: int = 8765


@dataclass
class StyleConfig:
    name: str = "passthrough"
    seed: int = 0
    # for the style named above (the one being started); empty: the style's own
    prompt: str = ""
    t_index_list: list[int] = field(default_factory=list)  # the strength: indices into the 50-step schedule
    noise: str = ""  # fixed | fresh
    depth_every: int = 1  # depth on every N-th frame (1..30); applies when set, else the style's own
    profile: str = "off"  # off | auto | a pinned profile such as "t1-448x256-taesd" (`vcam.profile`)
    target_fps: float = DEFAULT_TARGET_FPS  # the content frame rate the auto profile holds


@dataclass
class SegmentConfig:
    mode: str = "off"
    model: str = ""  # a .tflite path; empty = the bundled selfie segmentation model
    background_image: str = ""  # for mode "replace"
    blur_strength: int = 35
    face_strength: float = 0.0  # 0..1: the camera's face mixed back over the styled one (0 = off)


@dataclass
class ModelsConfig:
    cache_dir: str = ""  # empty = the standard Hugging Face cache
    device: str = "auto"
    dtype: str = "auto"
    vae: str = "taesd"  # taesd (fast) | kl (SD's full VAE) for decoding
    compile: bool = False  # torch.compile the UNet (CUDA only; the first frames are slow)
    similar_filter: bool = False  # skip camera frames nearly equal to the last one (saves GPU when still)
    similar_threshold: float = SIMILAR_THRESHOLD
    backend: str = "auto"  # auto | torch | onnx: what runs the UNet's stream step (vcam.model.step_backends)
    overlap: str = "auto"  # auto | on | off: encode the next frame during the UNet call (vcam.model.overlap)


@dataclass
class RemoteConfig:
    url: str = ""  # http(s)://HOST:PORT of a `vcam serve` box; empty = styles run on this machine
    ice_servers: list[str] = field(default_factory=list)  # stun:HOST[:PORT] | turn:USER:PASSWORD@HOST[:PORT]
    ca_file: str = ""  # a certificate (or CA) file to trust for an https server with its own certificate


@dataclass
class ControlConfig:
    port: int = 0  # the control API's port when no preview sink serves it: 0 = any free port


@dataclass
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    styles: dict[str, dict[str, Any]] = field(default_factory=dict)  # user styles, validated by vcam.store.catalogue
    path: Path | None = None  # the file this was read from (None: defaults only)
    remote_token: str | None = None  # `vcam run --token`: never read from or written to the file
    user_set: UserSettings = field(default_factory=UserSettings, compare=False)  # which keys the user set


SECTIONS: dict[str, type] = {
    "camera": CameraConfig,
    "output": OutputConfig,
    "preview": PreviewConfig,
    "style": StyleConfig,
    "segment": SegmentConfig,
    "models": ModelsConfig,
    "remote": RemoteConfig,
    "control": ControlConfig,
}


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} = {value!r} is out of range: allowed {low:g} to {high:g}")


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not allowed: choose one of {', '.join(allowed)}")


def validate_size(key: str, width: int, height: int) -> None:
    """Frame sizes: even numbers (video encoders and YUV formats need them) within limits."""
    _check_range(f"{key}.width", width, MIN_SIZE, MAX_WIDTH)
    _check_range(f"{key}.height", height, MIN_SIZE, MAX_HEIGHT)
    if width % 2 or height % 2:
        raise ConfigError(f"{key} size {width}x{height} must have an even width and height")


#: what a preview port may be (`--sink preview:PORT` and `[preview] port` alike), for messages
PREVIEW_PORT_RULE = "0 (any free port) or 1024..65535"


def preview_port_problem(port: int) -> str | None:
    """What is wrong with `port` as the preview's port, or None when it is allowed (the one rule for both)."""
    if port == 0 or 1024 <= port <= 65535:
        return None
    if 0 < port < 1024:
        return f"ports under 1024 need administrator rights; use {PREVIEW_PORT_RULE}"
    return f"not a port; use {PREVIEW_PORT_RULE}"


def validate_fps(key: str, fps: float) -> None:
    _check_range(key, fps, MIN_FPS, MAX_FPS)


def validate_prompt(key: str, prompt: str) -> None:
    """A prompt (empty: the style's own)."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"{key} is {len(prompt)} characters long: at most {MAX_PROMPT_CHARS} are allowed")
    if any(ord(character) < 32 and character not in "\t\n" for character in prompt):
        raise ConfigError(f"{key} = {prompt[:40]!r} holds control characters: write plain text")


def validate_style_settings(style: StyleConfig) -> None:
    """`[style]` prompt, t_index_list and noise (each may be empty: the style's own), and depth_every."""
    validate_prompt("style.prompt", style.prompt)
    if style.t_index_list:
        check_t_index_list(style.t_index_list, "style")
    if style.noise:  # empty: the style's own
        check_noise_mode(style.noise, "style.noise")
    check_depth_every(style.depth_every, "style.depth_every")


def validate_model_settings(models: ModelsConfig) -> None:
    _check_choice("models.device", models.device, DEVICES)
    _check_choice("models.dtype", models.dtype, DTYPES)
    _check_choice("models.vae", models.vae, VAE_KINDS)
    _check_choice("models.backend", models.backend, MODEL_BACKENDS)
    check_overlap_mode(models.overlap)
    check_similar_threshold(models.similar_threshold, "models.similar_threshold")


def validate(config: Config) -> None:
    """Raise ConfigError naming the key, the value and what is allowed, for the first bad value."""
    validate_size("output", config.output.width, config.output.height)
    validate_fps("output.fps", config.output.fps)
    validate_size("camera", config.camera.width, config.camera.height)
    validate_fps("camera.fps", config.camera.fps)
    if not config.output.sinks:
        raise ConfigError('output.sinks = [] is empty: give at least one sink, e.g. ["auto"] or ["null"]')
    port_problem = preview_port_problem(config.preview.port)
    if port_problem is not None:
        raise ConfigError(f"preview.port = {config.preview.port!r} is not allowed: {port_problem}")
    _check_range("output.delay_ms", config.output.delay_ms, 0, MAX_DELAY_MS)
    _check_range("output.audio_offset_ms", config.output.audio_offset_ms, -MAX_DELAY_MS, MAX_DELAY_MS)
    check_profile(config.style.profile)
    _check_range("style.target_fps", config.style.target_fps, MIN_FPS, MAX_FPS)
    if config.style.seed < 0:
        raise ConfigError(f"style.seed = {config.style.seed!r} must be 0 or more")
    if not config.style.name:
        raise ConfigError("style.name = '' is empty: run `vcam styles` to see the names")
    validate_style_settings(config.style)
    _check_choice("segment.mode", config.segment.mode, SEGMENT_MODES)
    _check_range("segment.blur_strength", config.segment.blur_strength, 1, 201)
    check_face_strength(config.segment.face_strength)
    validate_model_settings(config.models)
    control_problem = preview_port_problem(config.control.port)
    if control_problem is not None:
        raise ConfigError(f"control.port = {config.control.port!r} is not allowed: {control_problem}")
    if config.remote.url and not config.remote.url.startswith(("http://", "https://")):
        raise ConfigError(f"remote.url = {config.remote.url!r} must start with http:// or https://")
    for url in config.remote.ice_servers:
        if not url.startswith(ICE_SCHEMES):
            raise ConfigError(f"remote.ice_servers entry {url!r} must start with {', '.join(ICE_SCHEMES)}")


#: the keys whose value is a list of integers (the other lists hold strings)
INTEGER_LISTS = ("style.t_index_list",)


def coerce_value(key: str, value: Any, default: Any) -> Any:
    """Check a TOML (or JSON) value for `key` ("section.key") against the type of the field's default (ints are
    accepted as floats). The config file and the control API both go through here."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list:
        item_type, what = (int, "whole numbers") if key in INTEGER_LISTS else (str, "strings")
        if not isinstance(value, list) or not all(
            isinstance(item, item_type) and not isinstance(item, bool) for item in value
        ):
            raise ConfigError(f"{key} = {value!r} must be a list of {what}")
        return list(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{key} = {value!r} must be of type {expected.__name__}")
    return value


def config_from_dict(data: dict[str, Any], path: Path | None = None) -> Config:
    """Build a validated Config from parsed TOML; unknown sections and keys are errors."""
    config = Config(path=path)
    for section, table in data.items():
        if section == "styles":
            if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
                raise ConfigError("styles must hold one table per style, e.g. [styles.my-style]")
            config.styles = copy.deepcopy(table)
            continue
        if section not in SECTIONS:
            allowed = ", ".join([*SECTIONS, "styles"])
            raise ConfigError(f"unknown config section [{section}]: allowed sections are {allowed}")
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a table ([{section}])")
        target = getattr(config, section)
        names = {f.name for f in dataclasses.fields(target)}
        for key, value in table.items():
            if key not in names:
                raise ConfigError(f"unknown config key {section}.{key}: allowed keys are {', '.join(sorted(names))}")
            setattr(target, key, coerce_value(f"{section}.{key}", value, getattr(target, key)))
            config.user_set.mark(f"{section}.{key}", "config")
    for name, style_table in config.styles.items():
        for key in style_table:
            config.user_set.mark(f"styles.{name}.{key}", "config")
    validate(config)
    return config


def setting_value(config: Config, key: str) -> Any:
    """The value of "section.key" in `config` (ConfigError for a key that is not one)."""
    section, _, name = key.partition(".")
    target = getattr(config, section, None) if section in SECTIONS else None
    if target is None or name not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"unknown config key {key!r}")
    return getattr(target, name)


def with_changes(config: Config, changes: dict[str, Any], origin: Origin) -> Config:
    """A copy of `config` with `changes` ("section.key" -> value) applied, checked exactly as the file is
    (types, then `validate`); the keys are marked as set by the user from `origin`. `config` is unchanged."""
    changed = copy.copy(config)
    for section in SECTIONS:
        setattr(changed, section, copy.deepcopy(getattr(config, section)))
    changed.user_set = config.user_set.copy()
    for key, value in changes.items():
        section, _, name = key.partition(".")
        default = setting_value(config, key)
        setattr(getattr(changed, section), name, coerce_value(key, value, default))
        changed.user_set.mark(key, origin)
    validate(changed)
    return changed


def _nested_too_deeply(path: Path) -> ConfigError:
    """tomllib parses nesting by recursion: thousands of levels exhaust Python's stack."""
    return ConfigError(f"the config file {path} nests tables or arrays too deeply; fix it or move it away")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}; fix it or move it away") from error
    except UnicodeDecodeError:
        raise ConfigError(f"the config file {path} is not UTF-8 text; save it as UTF-8 or move it away") from None
    except RecursionError:
        raise _nested_too_deeply(path) from None
    except OSError as error:
        what = "it is a folder" if path.is_dir() else error.strerror
        raise ConfigError(
            f"cannot read the config file {path}: {what}; give the path of a readable config.toml file"
        ) from error


def load_config(path: Path | str | None = None) -> Config:
    """Read the config (the user's file by default; defaults alone when it does not exist).

    A path given explicitly must exist; the default file may be missing (first run).
    """
    explicit = path is not None
    file_path = Path(path) if path is not None else config_file()
    if not file_path.exists():
        if explicit:
            raise ConfigError(f"config file {file_path} does not exist: check the path given with --config")
        return Config()
    data = _read_toml(file_path)  # its errors name the file already
    try:
        return config_from_dict(data, path=file_path)
    except ConfigError as error:
        raise ConfigError(f"{file_path}: {error}") from error


def write_config_atomically(data: dict[str, Any], path: Path) -> None:
    """Write TOML to `path` through a temporary file in the same folder and an atomic rename."""
    import tomli_w

    write_text_atomically(tomli_w.dumps(data), path)


def write_text_atomically(text: str, path: Path) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename.

    A symlinked `path` (dotfiles) is written through: its target gets the new text, the link stays. The
    file keeps its permission bits (a new one gets 0644 less the umask). Temporaries left by a process
    killed mid-save are removed first.
    """
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    temporary = temporary_path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        with os.fdopen(os.open(temporary, flags, 0o600), "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.chmod(temporary, mode)
            os.fsync(stream.fileno())
        os.replace(temporary, target)
        fsync_folder(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _edited_text(original: str, changes: dict[tuple[str, str], Any], updated: dict[str, Any]) -> str:
    """The file's text with only `changes` applied: comments and layout are kept (tomlkit).

    Without tomlkit the file is re-serialised (same keys and values, comments lost). Either way the
    text is parsed back and must equal `updated`, so what is written is always what was validated.
    """
    try:
        import tomlkit
    except ImportError:
        log.debug("tomlkit is not installed: rewriting the config without its comments")
        import tomli_w

        return tomli_w.dumps(updated)
    document = tomlkit.parse(original)
    for (section, key), value in changes.items():
        table = document.get(section)
        if table is None:
            table = tomlkit.table()
            document[section] = table
        table[key] = value
    text = tomlkit.dumps(document)
    if tomllib.loads(text) != updated:
        import tomli_w

        log.debug("tomlkit's edit did not round-trip: rewriting the config without its comments")
        return tomli_w.dumps(updated)
    return text


def update_config(changes: dict[str, Any], path: Path | str | None = None) -> Config:
    """Change settings ("section.key" -> value) in the user's file, keeping every other key as written.

    The result is validated before anything is written; an invalid change raises ConfigError and
    leaves the file untouched. Comments and layout are kept; a lock file (in the user runtime folder) makes
    concurrent saves (the tray and `vcam run --save`) apply one after the other, never losing one.
    """
    from filelock import FileLock, Timeout

    file_path = Path(path) if path is not None else config_file()
    parsed: dict[tuple[str, str], Any] = {}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"a setting is named section.key, got {dotted!r}")
        parsed[(section, key)] = value
    try:
        with FileLock(str(_lock_path(file_path)), timeout=10):
            original = _read_text(file_path)
            data = _parse_toml(original, file_path)
            updated = copy.deepcopy(data)
            for (section, key), value in parsed.items():
                table = updated.setdefault(section, {})
                if not isinstance(table, dict):
                    raise ConfigError(f"{file_path}: {section} must be a table ([{section}])")
                table[key] = value
            try:
                config = config_from_dict(updated, path=file_path)
            except ConfigError as error:
                raise ConfigError(f"not saved: {error}; your config file {file_path} is unchanged") from error
            if updated != data:
                write_text_atomically(_edited_text(original, parsed, updated), file_path)
                log.info("saved %s to %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()), file_path)
    except Timeout as error:
        raise ConfigError(f"cannot save settings: {file_path} is locked by another vcam; try again") from error
    except OSError as error:
        raise ConfigError(
            f"cannot save settings to {file_path}: {error.strerror or error}; the file is unchanged "
            "(check that its folder is writable and the disk has space)"
        ) from error
    return config


def _lock_path(path: Path) -> Path:
    """The lock file that serialises saves to `path` (in the user runtime folder, not beside the config)."""
    import hashlib

    folder = runtime_dir()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:16]
    return folder / f"config-{digest}.lock"


def _read_text(path: Path) -> str:
    """The file's text ("" when it does not exist yet)."""
    if not path.exists():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"cannot read the config file {path}: {reason}; fix it or move it away") from error


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}; fix it or move it away") from error
    except RecursionError:
        raise _nested_too_deeply(path) from None
