"""`vcam run`: the camera: a source through a style into the virtual camera (and other sinks)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.commands.common import add_config_argument, load_config_from_args, parse_size, positive_int
from vcam.serve.token import TOKEN_ENV
from vcam.status import Status
from vcam.user_settings import UserSettings

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

#: seconds between two figure lines in the log (`vcam -v run`)
REPORT_EVERY_S = 5.0
#: output frames a run must have sent before its latency is kept for `vcam doctor`
MIN_FRAMES_MEASURED = 150

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
    parser.add_argument(
        "--face-strength",
        type=float,
        metavar="X",
        help="with --segment person/replace: mix your real face back over the styled one, 0 (off) to 1",
    )
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
    parser.add_argument("--prompt", metavar="TEXT", help="the style's prompt (a diffusion style; default: its own)")
    parser.add_argument(
        "--t-index-list",
        type=parse_int_list,
        metavar="N,N",
        help="the style's strength: denoising steps into the 50-step schedule, e.g. 30,40 (lower = stronger)",
    )
    parser.add_argument("--noise", metavar="MODE", help="fixed | fresh: the noise each denoising step adds")
    parser.add_argument(
        "--depth-every",
        type=int,
        metavar="N",
        help="estimate depth on every N-th frame only and reuse it in between (1..30; default: the style's own)",
    )
    parser.add_argument("--vae", metavar="KIND", help="taesd (fast, the default) | kl (SD's full VAE) for decoding")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile the UNet (CUDA only; slow start)"
    )
    parser.add_argument(
        "--similar-filter",
        action=argparse.BooleanOptionalAction,
        help="skip camera frames nearly equal to the last one (saves GPU when you sit still)",
    )
    parser.add_argument(
        "--similar-threshold", type=float, metavar="X", help="how similar a frame must be to be skipped (0..1, 0.98)"
    )
    parser.add_argument(
        "--control-file",
        type=Path,
        metavar="PATH",
        help="write the control API's address and token here (0600; default: control-PID.json in the "
        "user runtime folder)",
    )
    parser.add_argument(
        "--save", action="store_true", help="save --style/--segment/--background/--size/--fps as your defaults"
    )
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def parse_int_list(text: str) -> list[int]:
    """'30,40' -> [30, 40] (the range rule is the config's)."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be whole numbers separated by commas, e.g. 30,40") from None


#: flags that set one config key each: (the argparse name, "section.key")
SETTING_FLAGS = (
    ("prompt", "style.prompt"),
    ("t_index_list", "style.t_index_list"),
    ("noise", "style.noise"),
    ("depth_every", "style.depth_every"),
    ("vae", "models.vae"),
    ("compile", "models.compile"),
    ("similar_filter", "models.similar_filter"),
    ("similar_threshold", "models.similar_threshold"),
)


def apply_overrides(config: Any, args: argparse.Namespace) -> None:
    """CLI flags override the config (and count as set by the user); the result is validated again."""
    from vcam.config import validate
    from vcam.errors import ConfigError

    user_set: UserSettings = config.user_set
    for name, key in SETTING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            section, _, field_name = key.partition(".")
            setattr(getattr(config, section), field_name, value)
            user_set.mark(key, "cli")

    if args.source is not None:
        config.camera.source = args.source
    if args.sink is not None:
        config.output.sinks = list(args.sink)
    if args.style is not None:
        config.style.name = args.style
        user_set.mark("style.name", "cli")
    if args.segment is not None:
        config.segment.mode = args.segment
        user_set.mark("segment.mode", "cli")
    if args.background is not None:
        config.segment.background_image = args.background
    if getattr(args, "face_strength", None) is not None:
        config.segment.face_strength = args.face_strength
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
    for key in saved_settings(args):  # what the flags set counts as set by the user
        user_set.mark(key, "cli")
    if args.size is not None:
        for key in ("camera.width", "camera.height"):
            user_set.mark(key, "cli")
    if args.fps is not None:
        user_set.mark("camera.fps", "cli")
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


def latency_line(status: Status) -> str:
    """One line of figures: content rate, latency, stages, the audio delay to set, the profile."""
    stages = ", ".join(f"{stage} {ms:.0f}" for stage, ms in status.latency_stages_ms.items())
    profile = f"; profile {status.profile_settings or status.profile}" if status.profile != "off" else ""
    return (
        f"{status.fps_content:.1f} styled fps ({status.fps_out:.0f} sent); "
        f"latency p50 {status.latency_ms_p50:.0f} ms, p95 {status.latency_ms_p95:.0f} ms ({stages} ms); "
        f"audio delay to set: {status.audio_delay_ms} ms{profile}"
    )


def keep_measurement(status: Status) -> None:
    """Keep a run's last latency figures for `vcam doctor` (once it sent styled frames for a while)."""
    from vcam.latency import Measurement, now_text, save_measurement

    if status.latency_ms_p50 <= 0 or status.frames_out < MIN_FRAMES_MEASURED:
        return
    save_measurement(
        Measurement(
            status.latency_ms_p50,
            status.latency_ms_p95,
            status.fps_content,
            status.style,
            status.source,
            now_text(),
            "vcam run",
        )
    )


def runs_a_model_style(config: Config) -> bool:
    """Whether the configured style runs a diffusion model (False for an unknown name: `build_runtime` decides
    what to do about it)."""
    from vcam.errors import UserError
    from vcam.styles import MODEL_STYLE_KINDS, find_style

    try:
        return find_style(config.style.name, config).kind in MODEL_STYLE_KINDS
    except UserError:
        return False


def run(args: argparse.Namespace) -> int:
    from vcam.assemble import build_runtime
    from vcam.cli import STOP_SIGNALS
    from vcam.sinks.file import FileSink

    config = load_config_from_args(args)
    apply_overrides(config, args)
    if config.remote.url:
        from vcam.serve.token import client_token

        client_token(config.remote_token)  # no token: an error before anything opens
    from vcam.control.session import ControlSession
    from vcam.run_settings import RunSettings

    settings = RunSettings(config)
    # a saved style or mode that cannot be used starts without it (saying so); one given here is an error
    # an open-ended run may switch to a diffusion style later: import the model libraries before the first frame
    preload_models = args.frames is None or runs_a_model_style(config)
    runtime = build_runtime(config, settings, keep=saved_settings(args).keys(), preload_models=preload_models)
    recordings = [sink for sink in runtime.sinks if isinstance(sink, FileSink)]
    for recording in recordings:
        recording.overwrite = args.overwrite
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop_requested.set()

    control = ControlSession(
        runtime, config, settings, stop_requested.set, control_file=getattr(args, "control_file", None)
    )
    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        runtime.start(max_frames=args.frames)
        endpoint = control.start()
        if args.save:  # only once the source, sinks and segmentation opened: a setting that fails is never saved
            from vcam.config import update_config

            update_config(saved_settings(args), config.path)
        status = runtime.status()
        print(f"vcam: {status.source} -> style {config.style.name!r} -> {', '.join(status.sinks)}", file=sys.stderr)
        if status.preview_url:
            print(f"vcam: preview and OBS stream at {status.preview_url}", file=sys.stderr)
        print(f"vcam: control API at {endpoint.url}api/ (address and token in {control.path})", file=sys.stderr)
        if args.frames is None:
            print("vcam: running; press Ctrl-C to stop", file=sys.stderr)
        next_report = time.monotonic() + REPORT_EVERY_S
        while not stop_requested.is_set():
            if runtime.wait(frames=args.frames, timeout=0.2) and args.frames is not None:
                break
            if not runtime.running:
                break
            if time.monotonic() >= next_report:  # `vcam -v run` shows the figures
                next_report += REPORT_EVERY_S
                log.info("%s", latency_line(runtime.status()))
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        control.close()
        last = runtime.status()
        runtime.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    keep_measurement(last)
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
