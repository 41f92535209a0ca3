"""The style catalogue: the looks shipped with the package (vcam/data/styles.toml) plus the user's own.

A diffusion style is a Stable Diffusion 1.5 base (a DreamBooth / fine-tuned checkpoint, or SD1.5 itself),
an optional LoRA with its scale, a prompt, the denoising steps (`t_index_list`, indices into the 50-step
LCM schedule), `clip_skip` (counted as in AUTOMATIC1111 and on civitai model cards: 1 = CLIP's last layer,
2 = the penultimate one; Live2Diff's and diffusers' `clip_skip: N` is N + 1 here) and the noise mode
(`fresh`, Live2Diff's, or `fixed`, StreamDiffusion's: `vcam.model.noise`) and `depth_every` (depth estimated on
every N-th frame, reused in between; 1, the default: every frame). Every style also needs the
shared parts (SD1.5 tokenizer, text encoder, VAE and configs, the LCM-LoRA, TAESD, the Live2Diff motion
checkpoint, the DPT-Hybrid depth model), which are downloaded once.

Catalogue styles point at public Hugging Face repositories with a pinned revision and the exact file
names; user styles (`[styles.NAME]` in the config) point at local files. A `[styles.NAME]` table without
`base` for a catalogue style's name overrides that style's settings (prompt, t_index_list, clip_skip,
lora_scale, noise, depth_every, title, description), validated as a user style's are. Loading only parses TOML:
nothing here touches the network or imports anything heavy.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from vcam.errors import ConfigError, UnknownStyleError
from vcam.model.depth import check_depth_every
from vcam.model.noise import DEFAULT_NOISE, check_noise_mode
from vcam.model.scheduler import check_t_index_list

log = logging.getLogger(__name__)

#: the shared parts every diffusion style needs, by catalogue key
SHARED_PART_NAMES = ("sd15", "lcm_lora", "taesd", "motion", "depth")
BASE_FORMATS = ("single_file", "diffusers")
STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
CATALOGUE_PACKAGE = "vcam"
CATALOGUE_FILE = "data/styles.toml"
#: clip_skip's range: SD1.5's CLIP text model has 12 layers
MAX_CLIP_SKIP = 12
#: what a `[styles.NAME]` table may change of a catalogue style (without `base`: an override, not a new style)
OVERRIDE_FIELDS = (
    "prompt",
    "t_index_list",
    "clip_skip",
    "lora_scale",
    "noise",
    "depth_every",
    "title",
    "description",
)

BaseFormat = Literal["single_file", "diffusers"]
StyleKind = Literal["catalogue", "user"]


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face model repository at a revision, with what the catalogue knows of it."""

    repo: str
    revision: str
    filename: str
    sha256: str | None = None  # lowercase hex, when the catalogue pins the content
    size: int | None = None  # bytes, when the catalogue knows them exactly

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.repo, self.revision, self.filename)

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision[:7]}:{self.filename}"


@dataclass(frozen=True)
class HubSource:
    """Files taken from one Hugging Face repository at one revision."""

    repo: str
    revision: str
    files: tuple[str, ...]
    sha256: Mapping[str, str] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    size_mb: float = 0.0  # estimate of the whole download, for the free-disk check when offline
    checked: bool = True  # False: `revision` is a branch, not a checked commit
    verified: bool = True  # False: repository or file names could not be checked against the model card
    note: str = ""

    @property
    def pinned(self) -> bool:
        return COMMIT.match(self.revision) is not None

    def hub_files(self) -> list[HubFile]:
        return [
            HubFile(self.repo, self.revision, name, self.sha256.get(name), self.sizes.get(name)) for name in self.files
        ]


@dataclass(frozen=True)
class SharedPart:
    """A component every diffusion style needs (downloaded once, kept while any style uses it)."""

    name: str
    title: str
    source: HubSource
    licence: str
    note: str = ""

    @property
    def verified(self) -> bool:
        return self.source.verified and self.source.checked


@dataclass(frozen=True)
class StyleEntry:
    """One look: where its weights come from and how to run it.

    Catalogue styles have `base` (and `lora`) as `HubSource`; user styles have local `Path`s.
    For a `diffusers` base, `base` files are relative to the repository (or folder) root and the
    pipeline takes `unet/` (and `text_encoder/` when present) from there, the rest from SD1.5.
    """

    name: str
    title: str
    kind: StyleKind
    base: HubSource | Path
    base_format: BaseFormat
    prompt: str
    t_index_list: tuple[int, ...]
    clip_skip: int
    licence: str
    description: str = ""
    lora: HubSource | Path | None = None
    lora_scale: float = 1.0
    verified: bool = True
    note: str = ""
    noise: str = DEFAULT_NOISE
    depth_every: int = 1  # depth on every N-th frame (`vcam.model.depth.check_depth_every`)
    #: the fields a user's `[styles.NAME]` table overrides (a catalogue style; empty when none)
    overrides: tuple[str, ...] = ()

    @property
    def size_mb(self) -> float:
        """Estimated download size of the style's own files (shared parts not included)."""
        total = self.base.size_mb if isinstance(self.base, HubSource) else 0.0
        if isinstance(self.lora, HubSource):
            total += self.lora.size_mb
        return total

    def hub_files(self) -> list[HubFile]:
        """The style's own files on the Hub (empty for a user style with local files)."""
        files: list[HubFile] = []
        if isinstance(self.base, HubSource):
            files.extend(self.base.hub_files())
        if isinstance(self.lora, HubSource):
            files.extend(self.lora.hub_files())
        return files

    def local_files(self) -> list[Path]:
        """The user style's local base and LoRA paths (empty for a catalogue style)."""
        paths: list[Path] = []
        if isinstance(self.base, Path):
            paths.append(self.base)
        if isinstance(self.lora, Path):
            paths.append(self.lora)
        return paths

    @property
    def sha256(self) -> dict[str, str]:
        """filename -> expected sha256 for the style's own files that the catalogue pins."""
        pinned: dict[str, str] = {}
        for hub_file in self.hub_files():
            if hub_file.sha256:
                pinned[hub_file.filename] = hub_file.sha256
        return pinned


@dataclass(frozen=True)
class Catalogue:
    """Shared parts and styles, catalogue styles first, then the user's (a user style may override one)."""

    shared: Mapping[str, SharedPart]
    styles: Mapping[str, StyleEntry]
    #: user styles that did not parse (name -> the error), when loaded with strict=False
    invalid: Mapping[str, str] = field(default_factory=dict)

    def style(self, name: str) -> StyleEntry:
        try:
            return self.styles[name]
        except KeyError:
            if name in self.invalid:
                raise ConfigError(self.invalid[name]) from None
            known = ", ".join(sorted(self.styles)) or "none"
            raise UnknownStyleError(
                f"unknown style {name!r}: the diffusion styles are {known} (run `vcam models list`)"
            ) from None

    def shared_files(self) -> list[HubFile]:
        files: list[HubFile] = []
        for part in self.shared.values():
            files.extend(part.source.hub_files())
        return files


# --- parsing -----------------------------------------------------------------------------------------------


def _where(kind: str, name: str) -> str:
    return f"[{kind}.{name}]"


def _get(table: Mapping[str, Any], key: str, expected: type | tuple[type, ...], where: str, what: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing field {key!r} ({what})")
    value = table[key]
    types = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed: {what}")
    return value


def _optional(
    table: Mapping[str, Any], key: str, expected: type | tuple[type, ...], default: Any, where: str, what: str
) -> Any:
    if key not in table:
        return default
    return _get(table, key, expected, where, what)


def _check_unknown(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown field {key!r}: allowed fields are {', '.join(allowed)}")


def _parse_clip_skip(table: Mapping[str, Any], where: str, default: int | None) -> int:
    what = (
        f"1 (CLIP's last layer), 2 (the penultimate one, usual for anime and cartoon models) ... {MAX_CLIP_SKIP},"
        " counted as in AUTOMATIC1111 (Live2Diff's and diffusers' clip_skip N is N + 1 here)"
    )
    value = table.get("clip_skip", default)
    if value is None:
        raise ConfigError(f"{where}: missing field 'clip_skip' ({what})")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLIP_SKIP:
        raise ConfigError(f"{where}: clip_skip = {value!r} is not allowed: {what}")
    return value


def _parse_noise(table: Mapping[str, Any], where: str) -> str:
    return check_noise_mode(table.get("noise", DEFAULT_NOISE), f"{where}: noise")


def _parse_depth_every(table: Mapping[str, Any], where: str) -> int:
    return check_depth_every(table.get("depth_every", 1), f"{where}: depth_every")


def _parse_scale(table: Mapping[str, Any], where: str) -> float:
    what = "a number from 0 to 2 (1.0 = the LoRA at full strength)"
    value = table.get("lora_scale", table.get("scale", 1.0))
    key = "lora_scale" if "lora_scale" in table else "scale"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 2.0:
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed: {what}")
    return float(value)


def _parse_prompt(table: Mapping[str, Any], where: str) -> str:
    prompt = _get(table, "prompt", str, where, "a non-empty text prompt describing the look")
    if not prompt.strip():
        raise ConfigError(f"{where}: prompt = {prompt!r} is not allowed: a non-empty text prompt describing the look")
    return prompt.strip()


def _parse_hub_source(table: Any, where: str, extra_fields: tuple[str, ...] = ()) -> HubSource:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table with repo, revision and files")
    allowed = ("repo", "revision", "files", "file", "sha256", "sizes", "size_mb", "checked", "verified", "note")
    _check_unknown(table, allowed + extra_fields, where)
    repo = _get(table, "repo", str, where, "a Hugging Face repository id like 'org/name'")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"{where}: repo = {repo!r} is not allowed: a Hugging Face repository id like 'org/name'")
    revision = _get(table, "revision", str, where, "a 40-hex commit, or a branch with checked = false")
    checked = _optional(table, "checked", bool, True, where, "true or false")
    note = _optional(table, "note", str, "", where, "a text")
    if COMMIT.match(revision) is None and checked:
        raise ConfigError(
            f"{where}: revision = {revision!r} is not allowed: pin a 40-hex commit, or set checked = false"
            " and say why in note"
        )
    if "file" in table:
        files = [_get(table, "file", str, where, "a file name inside the repository")]
    else:
        files = _get(table, "files", list, where, "a list of file names inside the repository")
    if not files or not all(isinstance(name, str) and name and not name.startswith("/") for name in files):
        raise ConfigError(f"{where}: files = {files!r} is not allowed: a non-empty list of relative file names")
    sha256 = _optional(table, "sha256", Mapping, {}, where, "a table filename -> sha256 hex")
    for name, digest in sha256.items():
        if name not in files:
            raise ConfigError(f"{where}: sha256 names {name!r}, which is not in files {files!r}")
        if not isinstance(digest, str) or re.match(r"^[0-9a-f]{64}$", digest) is None:
            raise ConfigError(f"{where}: sha256.{name} = {digest!r} is not allowed: 64 lowercase hex digits")
    sizes = _optional(table, "sizes", Mapping, {}, where, "a table filename -> size in bytes")
    for name, size in sizes.items():
        if name not in files:
            raise ConfigError(f"{where}: sizes names {name!r}, which is not in files {files!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{where}: sizes.{name} = {size!r} is not allowed: a positive number of bytes")
    size_mb = _optional(table, "size_mb", (int, float), 0.0, where, "an estimated size in megabytes")
    if size_mb < 0:
        raise ConfigError(f"{where}: size_mb = {size_mb!r} is not allowed: an estimated size in megabytes, 0 or more")
    verified = _optional(table, "verified", bool, True, where, "true or false")
    if (not verified or not checked) and not note:
        raise ConfigError(f"{where}: verified = false or checked = false needs a note saying what is unchecked")
    return HubSource(
        repo=repo,
        revision=revision,
        files=tuple(files),
        sha256=dict(sha256),
        sizes=dict(sizes),
        size_mb=float(size_mb),
        checked=checked,
        verified=verified,
        note=note,
    )


def _parse_shared(name: str, table: Any) -> SharedPart:
    where = _where("shared", name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    title = _get(table, "title", str, where, "a short human-readable title")
    licence = _get(table, "licence", str, where, "the licence id from the model card, e.g. creativeml-openrail-m")
    source_table = {key: value for key, value in table.items() if key not in ("title", "licence")}
    source = _parse_hub_source(source_table, where)
    return SharedPart(name=name, title=title, source=source, licence=licence, note=source.note)


def _parse_catalogue_style(name: str, table: Any) -> StyleEntry:
    where = _where("styles", name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    allowed = (
        "title",
        "description",
        "prompt",
        "t_index_list",
        "clip_skip",
        "noise",
        "depth_every",
        "licence",
        "base",
        "lora",
        "verified",
        "note",
    )
    _check_unknown(table, allowed, where)
    title = _get(table, "title", str, where, "a short human-readable title")
    base_table = _get(table, "base", Mapping, f"{where}", "a [styles.NAME.base] table with repo, revision, files")
    base_format = base_table.get("format", "diffusers")
    if base_format not in BASE_FORMATS:
        raise ConfigError(f"{where}.base: format = {base_format!r} is not allowed: one of {', '.join(BASE_FORMATS)}")
    base = _parse_hub_source(base_table, f"{where}.base", extra_fields=("format",))
    if base_format == "single_file" and len(base.files) != 1:
        raise ConfigError(f"{where}.base: format = 'single_file' needs exactly one file, got {list(base.files)!r}")
    lora: HubSource | None = None
    lora_scale = 1.0
    if "lora" in table:
        lora_table = _get(table, "lora", Mapping, where, "a [styles.NAME.lora] table with repo, revision, file")
        lora = _parse_hub_source(lora_table, f"{where}.lora", extra_fields=("scale", "licence"))
        if len(lora.files) != 1:
            raise ConfigError(f"{where}.lora: needs exactly one file, got {list(lora.files)!r}")
        lora_scale = _parse_scale(lora_table, f"{where}.lora")
    verified = _optional(table, "verified", bool, True, where, "true or false")
    note = _optional(table, "note", str, "", where, "a text")
    if not verified and not note:
        raise ConfigError(f"{where}: verified = false needs a note saying what is unchecked")
    all_verified = verified and base.verified and base.checked and (lora is None or (lora.verified and lora.checked))
    return StyleEntry(
        name=name,
        title=title,
        kind="catalogue",
        base=base,
        base_format=base_format,
        prompt=_parse_prompt(table, where),
        t_index_list=check_t_index_list(table.get("t_index_list"), where),
        clip_skip=_parse_clip_skip(table, where, default=None),
        noise=_parse_noise(table, where),
        depth_every=_parse_depth_every(table, where),
        licence=_get(table, "licence", str, where, "the licence id from the model card"),
        description=_optional(table, "description", str, "", where, "a text"),
        lora=lora,
        lora_scale=lora_scale,
        verified=all_verified,
        note=note,
    )


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """Build a Catalogue from parsed TOML; raise ConfigError naming the entry and the field on the first problem."""
    _check_unknown(data, ("schema", "shared", "styles"), "styles.toml")
    shared_tables = data.get("shared", {})
    styles_tables = data.get("styles", {})
    if not isinstance(shared_tables, Mapping) or not isinstance(styles_tables, Mapping):
        raise ConfigError("styles.toml: [shared.*] and [styles.*] must be tables")
    shared = {name: _parse_shared(name, table) for name, table in shared_tables.items()}
    for needed in SHARED_PART_NAMES:
        if needed not in shared:
            raise ConfigError(f"styles.toml: missing shared part [shared.{needed}]")
    styles: dict[str, StyleEntry] = {}
    for name, table in styles_tables.items():
        if STYLE_NAME.match(name) is None:
            raise ConfigError(
                f"[styles.{name}]: the name is not allowed: lowercase letters, digits, '-' and '_', at most 40"
            )
        styles[name] = _parse_catalogue_style(name, table)
    return Catalogue(shared=shared, styles=styles)


def _resolve_local(value: str, relative_to: Path | None) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    return path


def parse_user_style(name: str, table: Any, relative_to: Path | None = None) -> StyleEntry:
    """Validate one `[styles.NAME]` table from the user's config (local files); raise ConfigError on a bad field.

    Fields: base (a single-file .safetensors/.ckpt checkpoint or a diffusers folder with unet/), lora (a
    .safetensors file, optional), lora_scale (0..2, default 1), prompt, t_index_list (default [30, 40]),
    clip_skip (1..12 counted as in AUTOMATIC1111, default 2: the penultimate layer), noise ("fresh", the
    default, or "fixed"), depth_every (1..30, default 1: depth on every frame), title and description
    (optional). Relative paths are taken from the config file's folder. Whether the files exist is checked when
    the style is used, not here.
    """
    where = _where("styles", name)
    if STYLE_NAME.match(name) is None:
        raise ConfigError(f"{where}: the name is not allowed: lowercase letters, digits, '-' and '_', at most 40")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table with at least base and prompt")
    allowed = (
        "base",
        "lora",
        "lora_scale",
        "prompt",
        "t_index_list",
        "clip_skip",
        "noise",
        "depth_every",
        "title",
        "description",
        "licence",
    )
    _check_unknown(table, allowed, where)
    base_value = _get(table, "base", str, where, "the path of a .safetensors/.ckpt checkpoint or a diffusers folder")
    if not base_value.strip():
        raise ConfigError(f"{where}: base = '' is not allowed: the path of a checkpoint file or a diffusers folder")
    base = _resolve_local(base_value, relative_to)
    if base.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin"):
        base_format: BaseFormat = "single_file"
    elif base.suffix == "":
        base_format = "diffusers"
    else:
        raise ConfigError(
            f"{where}: base = {base_value!r} is not allowed: a .safetensors or .ckpt checkpoint file,"
            " or a diffusers folder (with unet/ inside)"
        )
    lora: Path | None = None
    if "lora" in table:
        lora_value = _get(table, "lora", str, where, "the path of a LoRA .safetensors file")
        lora = _resolve_local(lora_value, relative_to)
        if lora.suffix.lower() not in (".safetensors", ".bin", ".pt"):
            raise ConfigError(f"{where}: lora = {lora_value!r} is not allowed: a LoRA .safetensors file")
    lora_scale = _parse_scale(table, where)
    t_index_list = check_t_index_list(table.get("t_index_list", [30, 40]), where)
    return StyleEntry(
        name=name,
        title=_optional(table, "title", str, name, where, "a text"),
        kind="user",
        base=base,
        base_format=base_format,
        prompt=_parse_prompt(table, where),
        t_index_list=t_index_list,
        clip_skip=_parse_clip_skip(table, where, default=2),
        noise=_parse_noise(table, where),
        depth_every=_parse_depth_every(table, where),
        licence=_optional(table, "licence", str, "see the model's own licence", where, "a text"),
        description=_optional(table, "description", str, "your own style", where, "a text"),
        lora=lora,
        lora_scale=lora_scale,
        verified=True,
        note="",
    )


def apply_style_override(style: StyleEntry, table: Any) -> StyleEntry:
    """A catalogue style with a user's `[styles.NAME]` table (no `base`) merged over it; ConfigError on a bad field.

    Only OVERRIDE_FIELDS may appear; each is validated as in a user style. The files stay the catalogue's.
    """
    where = _where("styles", style.name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    for key in table:
        if key not in OVERRIDE_FIELDS:
            raise ConfigError(
                f"{where}: {key!r} cannot be overridden for the catalogue style {style.name!r}: allowed are "
                f"{', '.join(OVERRIDE_FIELDS)} (or give base = ... to define a style of your own by this name)"
            )
    if "lora_scale" in table and style.lora is None:
        raise ConfigError(f"{where}: lora_scale is not allowed: the catalogue style {style.name!r} has no LoRA")
    changes: dict[str, Any] = {}
    if "prompt" in table:
        changes["prompt"] = _parse_prompt(table, where)
    if "t_index_list" in table:
        changes["t_index_list"] = check_t_index_list(table["t_index_list"], where)
    if "clip_skip" in table:
        changes["clip_skip"] = _parse_clip_skip(table, where, default=None)
    if "lora_scale" in table:
        changes["lora_scale"] = _parse_scale(table, where)
    if "noise" in table:
        changes["noise"] = _parse_noise(table, where)
    if "depth_every" in table:
        changes["depth_every"] = _parse_depth_every(table, where)
    for key in ("title", "description"):
        if key in table:
            changes[key] = _get(table, key, str, where, "a text")
    return replace(style, overrides=tuple(key for key in OVERRIDE_FIELDS if key in table), **changes)


def load_packaged_data() -> dict[str, Any]:
    """The parsed TOML of the catalogue shipped with the package."""
    text = resources.files(CATALOGUE_PACKAGE).joinpath(*CATALOGUE_FILE.split("/")).read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_catalogue(
    user_styles: Mapping[str, Mapping[str, Any]] | None = None,
    relative_to: Path | None = None,
    data: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> Catalogue:
    """The packaged catalogue (or `data`), plus the user's `[styles.NAME]` tables (`Config.styles`).

    A user table with the name of a catalogue style overrides that style's settings when it has no `base`
    (`apply_style_override`), and replaces the style when it has one (logged once). A user table that does
    not parse raises ConfigError, or with `strict=False` is left out and kept in `Catalogue.invalid`
    (so a list of styles still shows every other style, and the bad one with its error).
    """
    catalogue = parse_catalogue(data if data is not None else load_packaged_data())
    if not user_styles:
        return catalogue
    styles = dict(catalogue.styles)
    invalid: dict[str, str] = {}
    for name, table in user_styles.items():
        catalogue_style = catalogue.styles.get(name)
        try:
            if catalogue_style is not None and isinstance(table, Mapping) and "base" not in table:
                styles[name] = apply_style_override(catalogue_style, table)
                continue
            if catalogue_style is not None:
                log.info("user style %r replaces the catalogue style of the same name", name)
            styles[name] = parse_user_style(name, table, relative_to)
        except ConfigError as error:
            if strict:
                raise
            invalid[name] = str(error)
    return Catalogue(shared=catalogue.shared, styles=styles, invalid=invalid)
