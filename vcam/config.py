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
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcam.errors import ConfigError
from vcam.model.step_backends import MODEL_BACKENDS
from vcam.paths import config_file, runtime_dir

log = logging.getLogger(__name__)

SEGMENT_MODES = ("off", "person", "background", "blur", "replace")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16")
MIN_SIZE, MAX_WIDTH, MAX_HEIGHT = 64, 3840, 2160
MIN_FPS, MAX_FPS = 1.0, 120.0


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


@dataclass
class PreviewConfig:
    port: int = 8765


@dataclass
class StyleConfig:
    name: str = "passthrough"
    seed: int = 0


@dataclass
class SegmentConfig:
    mode: str = "off"
    model: str = ""  # a .tflite path; empty = the bundled selfie segmentation model
    background_image: str = ""  # for mode "replace"
    blur_strength: int = 35


@dataclass
class ModelsConfig:
    cache_dir: str = ""  # empty = the standard Hugging Face cache
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"  # auto | torch | onnx: what runs the UNet's stream step (vcam.model.step_backends)


@dataclass
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    styles: dict[str, dict[str, Any]] = field(default_factory=dict)  # user styles, validated by vcam.catalogue
    path: Path | None = None  # the file this was read from (None: defaults only)


SECTIONS: dict[str, type] = {
    "camera": CameraConfig,
    "output": OutputConfig,
    "preview": PreviewConfig,
    "style": StyleConfig,
    "segment": SegmentConfig,
    "models": ModelsConfig,
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


def validate_fps(key: str, fps: float) -> None:
    _check_range(key, fps, MIN_FPS, MAX_FPS)


def validate(config: Config) -> None:
    """Raise ConfigError naming the key, the value and what is allowed, for the first bad value."""
    validate_size("output", config.output.width, config.output.height)
    validate_fps("output.fps", config.output.fps)
    validate_size("camera", config.camera.width, config.camera.height)
    validate_fps("camera.fps", config.camera.fps)
    if not config.output.sinks:
        raise ConfigError('output.sinks = [] is empty: give at least one sink, e.g. ["auto"] or ["null"]')
    _check_range("preview.port", config.preview.port, 1024, 65535)
    if config.style.seed < 0:
        raise ConfigError(f"style.seed = {config.style.seed!r} must be 0 or more")
    if not config.style.name:
        raise ConfigError("style.name = '' is empty: run `vcam styles` to see the names")
    _check_choice("segment.mode", config.segment.mode, SEGMENT_MODES)
    _check_range("segment.blur_strength", config.segment.blur_strength, 1, 201)
    _check_choice("models.device", config.models.device, DEVICES)
    _check_choice("models.dtype", config.models.dtype, DTYPES)
    _check_choice("models.backend", config.models.backend, MODEL_BACKENDS)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check a TOML value against the type of the field's default (ints are accepted as floats)."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{key} = {value!r} must be a list of strings")
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
            setattr(target, key, _coerce(f"{section}.{key}", value, getattr(target, key)))
    validate(config)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    data: dict[str, Any] = {section: dataclasses.asdict(getattr(config, section)) for section in SECTIONS}
    if config.styles:
        data["styles"] = copy.deepcopy(config.styles)
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}; fix it or move it away") from error
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
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
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
