"""`vcam run`: the camera: a source through a style into the virtual camera (and other sinks)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from vcam.commands.common import add_config_argument, load_config_from_args, parse_size, positive_int
from vcam.serve.token import TOKEN_ENV

log = logging.getLogger(__name__)

SOURCE_HELP = "webcam[:N|NAME] | file:PATH | screen[:N] | demo | auto (default: the webcam if there is one, else demo)"
SINK_HELP = (
    "vcam[:NAME] | preview[:PORT] | file:PATH.mp4 | null | auto; repeat for several sinks "
    "(default: the virtual camera if a driver is present, else the preview stream). A recording survives "
    "a crash up to its last second; an existing file is refused unless --overwrite"
)
EPILOG = (
    "exit codes: 0 clean stop (--frames reached, Ctrl-C, SIGTERM, SIGHUP); 1 failure (the camera stopped on an "
    "error, or an output failed mid-run, e.g. a full disk: the recording is incomplete); 2 bad input"
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the camera (the default: webcam -> style -> virtual camera)",
        description="Run the camera: read the source, apply the style, send to the sinks at a steady fps.",
        epilog=EPILOG,
    )
    parser.add_argument("--source", metavar="SPEC", help=SOURCE_HELP)
    parser.add_argument("--sink", metavar="SPEC", action="append", help=SINK_HELP)
    parser.add_argument("--style", metavar="NAME", help="style name (`vcam styles` lists them)")
    parser.add_argument("--segment", metavar="MODE", help="off | person | background | blur | replace")
    parser.add_argument("--background", metavar="IMAGE", help="background image for --segment replace")
    parser.add_argument("--size", type=parse_size, metavar="WxH", help="output (and camera) size, e.g. 1280x720")
    parser.add_argument("--fps", type=float, metavar="N", help="output (and camera) frames per second")
    parser.add_argument("--frames", type=positive_int, metavar="N", help="stop after N output frames")
    parser.add_argument(
        "--overwrite", action="store_true", help="let a file:PATH sink replace an existing file (refused otherwise)"
    )
    parser.add_argument(
        "--remote", metavar="URL", help="run the style on a `vcam serve` box, e.g. https://gpu-box:8890"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help=f"the remote server's token (default: ${TOKEN_ENV}, else the token file)"
    )
    parser.add_argument(
        "--ice-server", metavar="URL", action="append", help="stun:HOST[:PORT] or turn:USER:PASS@HOST[:PORT]"
    )
    parser.add_argument(
        "--save", action="store_true", help="save --style/--segment/--background/--size/--fps as your defaults"
    )
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def apply_overrides(config: Any, args: argparse.Namespace) -> None:
    """CLI flags override the config; the result is validated again."""
    from vcam.config import validate
    from vcam.errors import ConfigError

    if args.source is not None:
        config.camera.source = args.source
    if args.sink is not None:
        config.output.sinks = list(args.sink)
    if args.style is not None:
        config.style.name = args.style
    if args.segment is not None:
        config.segment.mode = args.segment
    if args.background is not None:
        config.segment.background_image = args.background
    if args.size is not None:
        config.output.width, config.output.height = args.size
        config.camera.width, config.camera.height = args.size
    if args.fps is not None:
        config.output.fps = config.camera.fps = args.fps
    if getattr(args, "remote", None) is not None:
        config.remote.url = args.remote
    if getattr(args, "ice_server", None):
        config.remote.ice_servers = list(args.ice_server)
    if getattr(args, "token", None) is not None:
        config.remote_token = args.token
    # an explicit but empty value is a mistake, never "use the default"
    for flag, value in (("--source", args.source), ("--style", args.style), ("--background", args.background)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} is empty: give a value (see `vcam run --help`)")
    validate(config)


def saved_settings(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.style is not None:
        changes["style.name"] = args.style
    if args.segment is not None:
        changes["segment.mode"] = args.segment
    if args.background is not None:
        changes["segment.background_image"] = args.background
    if args.size is not None:
        changes["output.width"], changes["output.height"] = args.size
    if args.fps is not None:
        changes["output.fps"] = args.fps
    return changes


def run(args: argparse.Namespace) -> int:
    from vcam.assemble import build_runtime
    from vcam.cli import STOP_SIGNALS
    from vcam.sinks.file import FileSink
    from vcam.styles import MODEL_STYLE_KINDS, find_style

    config = load_config_from_args(args)
    apply_overrides(config, args)
    style = find_style(config.style.name, config)  # an unknown name is an error before anything opens
    if config.remote.url:
        from vcam.serve.token import client_token

        client_token(config.remote_token)  # no token: an error before anything opens
    # an open-ended run may switch to a diffusion style later: import the model libraries before the first frame
    runtime = build_runtime(config, preload_models=args.frames is None or style.kind in MODEL_STYLE_KINDS)
    recordings = [sink for sink in runtime.sinks if isinstance(sink, FileSink)]
    for recording in recordings:
        recording.overwrite = args.overwrite
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop_requested.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        runtime.start(max_frames=args.frames)
        if args.save:  # only once the source, sinks and segmentation opened: a setting that fails is never saved
            from vcam.config import update_config

            update_config(saved_settings(args), config.path)
        status = runtime.status()
        print(f"vcam: {status.source} -> style {config.style.name!r} -> {', '.join(status.sinks)}", file=sys.stderr)
        if status.preview_url:
            print(f"vcam: preview and OBS stream at {status.preview_url}", file=sys.stderr)
        if args.frames is None:
            print("vcam: running; press Ctrl-C to stop", file=sys.stderr)
        while not stop_requested.is_set():
            if runtime.wait(frames=args.frames, timeout=0.2) and args.frames is not None:
                break
            if not runtime.running:
                break
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        runtime.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status = runtime.status()
    print(
        f"vcam: sent {status.frames_out} frames (repeated {status.repeated}, dropped {status.dropped})",
        file=sys.stderr,
    )
    failed = False
    for recording in recordings:
        if recording.incomplete:
            print(
                f"vcam: error: the recording {recording.path} is incomplete: it holds the first "
                f"{recording.frames_written} of {status.frames_out} frames ({recording.error_text})",
                file=sys.stderr,
            )
            failed = True
    if runtime.failure is not None:
        print(f"vcam: error: {runtime.failure}", file=sys.stderr)
        failed = True
    return 1 if failed else 0
