"""`vcam eval CLIPS... --style NAME [--style NAME ...]`: the Live2Diff paper's table on your own clips.

Each clip (a video file, a folder of frames, or a DAVIS-style folder of such folders) goes through each style
on the camera's streaming path, with the style's settings from the config as for `vcam run`; the tables (per
style and overall) go to stdout, and on request JSON, CSV and a PNG of the per-frame warp error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vcam.commands.common import add_config_argument, load_config_from_args, positive_int
from vcam.errors import UserError

log = logging.getLogger(__name__)

#: the files --out DIR holds
OUT_FILES = {"json": "eval.json", "csv": "eval.csv", "plot": "warp_error.png"}


class OutputPathError(UserError):
    """An output file `vcam eval` would write cannot be written, or would overwrite a file."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure styles on clips: warp error, CLIP and depth metrics, fps, latency",
        description=(
            "Run clips (video files or folders of frames) through styles on the camera's streaming path and print"
            " warp error (and a StreamV2V-style 0-255 variant), CLIP consistency and text alignment, depth MSE,"
            " content fps and latency, per style and overall."
        ),
    )
    parser.add_argument("clips", nargs="+", type=Path, metavar="CLIP", help="a video file or a folder of frames")
    parser.add_argument(
        "--style", metavar="NAME", action="append", required=True, help="a style to measure (repeat for several)"
    )
    parser.add_argument("--frames", type=positive_int, metavar="N", help="use only the first N frames of each clip")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write everything measured as JSON")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write one row per style and clip as CSV")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write the per-frame warp error of each style")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="write eval.json, eval.csv and warp_error.png into this folder"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bars")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """kind ("json", "csv", "plot") -> path, from --json/--csv/--plot and --out; checked before any work."""
    paths: dict[str, Path] = {}
    if args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise OutputPathError(f"--out {str(args.out)!r} is a file: give a folder")
        if not args.out.parent.is_dir():
            raise OutputPathError(
                f"--out {str(args.out)!r}: folder {str(args.out.parent)!r} does not exist; create it or pick another"
            )
        paths = {kind: args.out / name for kind, name in OUT_FILES.items()}
    for kind in OUT_FILES:
        given = getattr(args, kind)
        if given is not None:
            paths[kind] = given
    plot = paths.get("plot")
    if plot is not None and plot.suffix.lower() != ".png":
        raise OutputPathError(f"--plot {str(plot)!r} must end in .png")
    for kind, path in paths.items():
        if path.is_dir():
            raise OutputPathError(f"{str(path)!r} is a folder: give a file name for the {kind} output")
        if path.exists() and not args.overwrite:
            raise OutputPathError(f"{str(path)!r} exists: pick another name, or add --overwrite to replace it")
        folder = path.parent
        if folder != args.out and not folder.is_dir():
            raise OutputPathError(
                f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist; create it or pick another"
            )
    return paths


def run(args: argparse.Namespace) -> int:
    from vcam.eval.clips import check_clip, find_clips
    from vcam.eval.measure import evaluate
    from vcam.eval.models import load_eval_models
    from vcam.eval.report import format_tables, plot_warp_error, write_csv, write_json
    from vcam.styles import find_style, load_translator

    config = load_config_from_args(args)
    styles = list(dict.fromkeys(args.style))
    for name in styles:
        find_style(name, config)  # an unknown name is an error before anything loads
    clips = find_clips(args.clips)
    for clip in clips:
        check_clip(clip)
    paths = output_paths(args)
    models = load_eval_models(config)
    evaluation = evaluate(
        clips,
        styles,
        lambda name: load_translator(name, config),
        models,
        max_frames=args.frames,
        progress=not args.no_progress,
    )
    sys.stdout.write(format_tables(evaluation))
    sys.stdout.flush()
    if args.out is not None:
        args.out.mkdir(exist_ok=True)
    writers = {"json": write_json, "csv": write_csv, "plot": plot_warp_error}
    for kind, path in paths.items():
        writers[kind](evaluation, path)
        print(f"wrote {path}", file=sys.stderr)
    return 0
