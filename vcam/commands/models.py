"""`vcam models`: list, download, verify, remove the diffusion styles' weights, or print where they are."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.store.store import ModelStore

#: marks a catalogue entry whose names or revisions could not be checked (`vcam styles` marks the current one)
UNVERIFIED_MARK = "(unverified)"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="download, verify or remove the weights of the diffusion styles",
        description="Manage the weights of the diffusion styles (Hugging Face cache, or [models] cache_dir).",
    )
    parser.add_argument("--cache-dir", default=None, help="use this folder instead of the configured cache")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    actions.add_parser("list", help="list the styles: downloaded or not, size, licence")
    download = actions.add_parser(
        "download", help="download styles (and the shared parts, once); an interrupted file resumes where it stopped"
    )
    download.add_argument(
        "styles", nargs="*", metavar="STYLE", help="style names; also `clip` and `depth`, the models of `vcam eval`"
    )
    download.add_argument("--all", action="store_true", help="download every catalogue style")
    verify = actions.add_parser("verify", help="check sizes and sha256 of downloaded files")
    verify.add_argument("styles", nargs="*", metavar="STYLE")
    remove = actions.add_parser("remove", help="delete a style's files (shared parts other styles use are kept)")
    remove.add_argument("style", metavar="STYLE")
    path = actions.add_parser("path", help="print the cache folder, or a style's local paths")
    path.add_argument("style", nargs="?", metavar="STYLE")
    parser.set_defaults(handler=handle)


def _load_config() -> Config:
    from vcam.config import load_config

    return load_config()


def build_store(args: argparse.Namespace) -> ModelStore:
    from pathlib import Path

    from vcam.errors import UserError
    from vcam.file_kinds import file_kind
    from vcam.store.store import ModelStore

    store = ModelStore.from_config(_load_config())
    if args.cache_dir:
        cache_dir = Path(args.cache_dir).expanduser()
        kind = file_kind(cache_dir)
        if kind not in ("a folder", "missing"):
            raise UserError(f"--cache-dir {cache_dir} is {kind}, not a folder: give a folder (created if missing)")
        store = ModelStore(store.catalogue, cache_dir)
    return store


def handle(args: argparse.Namespace) -> int:
    store = build_store(args)
    action = args.models_action or "list"
    out = sys.stdout
    if action == "list":
        return list_styles(store, out)
    if action == "download":
        return download_styles(store, args.styles, args.all, out)
    if action == "verify":
        return verify_styles(store, args.styles, out)
    if action == "remove":
        return remove_style(store, args.style, out)
    return print_path(store, args.style, out)


def list_styles(store: ModelStore, out: TextIO) -> int:
    rows = [("STYLE", "TITLE", "STATUS", "SIZE", "LICENCE")]
    for name, style in store.catalogue.styles.items():
        status = "downloaded" if store.is_downloaded(name) else "not downloaded"
        if style.kind == "user":
            size = "local"
        else:
            size = f"{style.size_mb / 1000:.1f} GB" if style.size_mb >= 1000 else f"{style.size_mb:.0f} MB"
        flag = "" if style.verified else f" {UNVERIFIED_MARK}"
        rows.append((name, style.title + flag, status, size, style.licence))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4] + "\n"
        )
    shared_mb = sum(part.source.size_mb for part in store.catalogue.shared.values())
    out.write(f"\nshared parts (downloaded once with the first style): {shared_mb / 1000:.1f} GB\n")
    if any(not style.verified for style in store.catalogue.styles.values()):
        out.write(
            f"{UNVERIFIED_MARK}: its names or revisions could not be checked against the model card "
            "(see `vcam models verify`)\n"
        )
    out.write(f"cache: {store.cache_dir}\n")
    return 0


def download_styles(store: ModelStore, names: list[str], everything: bool, out: TextIO) -> int:
    from vcam.errors import UserError
    from vcam.store.download import download

    if everything:
        names = [name for name, style in store.catalogue.styles.items() if style.kind == "catalogue"]
    if not names:
        raise UserError("name the styles to download, e.g. `vcam models download pixar`, or use --all")
    from vcam.eval.models import EVAL_MODEL_NAMES, download_eval_models

    extras = [name for name in names if name in EVAL_MODEL_NAMES and name not in store.catalogue.styles]
    styles = [name for name in names if name not in extras]
    for name in styles:
        store.style(name)
    try:
        fetched = download_eval_models(extras, store) + (download(store, styles) if styles else 0)
    except KeyboardInterrupt:
        out.write(f"\ninterrupted: run `vcam models download {' '.join(names)}` again to continue\n")
        raise
    if fetched:
        out.write(f"downloaded {fetched} file(s) into {store.cache_dir}\n")
    out.write(f"ready: {', '.join(names)}\n")
    return 0


def verify_styles(store: ModelStore, names: list[str], out: TextIO) -> int:
    for name in names:
        store.style(name)
    results = store.verify(names or None)
    if not results:
        out.write("no style is downloaded: run `vcam models download STYLE` (see `vcam models list`)\n")
        return 0
    bad = 0
    for name, reports in results.items():
        problems = [report for report in reports if report.state != "ok"]
        bad += len(problems)
        out.write(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}\n")
        for report in problems:
            detail = f" ({report.detail})" if report.detail else ""
            out.write(f"  {report.state}: {report.file}{detail}\n")
        if problems:
            out.write(f"  fix: vcam models remove {name} && vcam models download {name}\n")
        style = store.style(name)
        if not style.verified:
            out.write(f"  note: {style.note or 'some names or revisions could not be checked'}\n")
    return 1 if bad else 0


def remove_style(store: ModelStore, name: str, out: TextIO) -> int:
    style = store.style(name)
    if style.kind == "user":
        out.write(f"{name} uses your own files ({', '.join(map(str, style.local_files()))}): nothing removed\n")
        return 0
    removed = store.remove(name)
    if not removed:
        out.write(f"{name} is not downloaded: nothing to remove\n")
    else:
        out.write(f"removed {len(removed)} file(s) of {name}; files other downloaded styles use were kept\n")
    return 0


def print_path(store: ModelStore, name: str | None, out: TextIO) -> int:
    if name is None:
        out.write(f"{store.cache_dir}\n")
        return 0
    paths = store.path(name)
    for field in ("base", "sd15", "motion", "lcm_lora", "style_lora", "taesd", "depth"):
        out.write(f"{field}: {getattr(paths, field)}\n")
    return 0
