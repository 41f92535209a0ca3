"""`vcam translate IN OUT --style NAME`: offline video-to-video through the same streaming path as the camera.

Every input frame goes through the style's translator once, in order; for a Live2Diff style the frames
go through its `StreamPipeline` (warmup, stream batch) and the frames still in flight are flushed at the
end, so OUT holds exactly as many frames as were read, at the input's frame rate and size.

OUT is written through a temporary file beside it and renamed into place only when the whole run
succeeded: a failed or interrupted run leaves no half file under OUT's name. An existing OUT is
refused unless `--overwrite`; OUT may never be IN (compared by file identity: same path, symlink or
hard link).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vcam.atomic_files import publish, remove_stale_temporaries, temporary_path
from vcam.commands.common import add_config_argument, load_config_from_args, positive_int
from vcam.errors import UserError
from vcam.file_kinds import why_not_a_file
from vcam.video_containers import container_format, supported_suffixes

if TYPE_CHECKING:
    import numpy as np

    from vcam.translators.base import Translator

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="restyle a video file offline (same streaming model as the camera)",
        description="Restyle a video file frame by frame through a style, with the same streaming path as the camera.",
    )
    parser.add_argument("input", type=Path, metavar="IN", help="input video file")
    parser.add_argument(
        "output", type=Path, metavar="OUT", help=f"output video file ({supported_suffixes()}); never the input"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (once the new video is complete)"
    )
    parser.add_argument("--style", metavar="NAME", required=True, help="style name (`vcam styles` lists them)")
    parser.add_argument("--frames", type=positive_int, metavar="N", help="translate only the first N frames")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="print temporal-stability metrics as JSON (warp error, frame-to-frame differences)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config_from_args(args)
    check_paths(args.input, args.output, overwrite=args.overwrite)
    from vcam.styles import load_translator

    translator = load_translator(args.style, config)
    remove_stale_temporaries(args.output)
    temporary = temporary_path(args.output)
    try:
        summary = translate_video(
            args.input,
            temporary,
            translator,
            max_frames=args.frames,
            metrics=args.metrics,
            progress=not args.no_progress,
            container=container_format(args.output),
        )
        try:
            publish(temporary, args.output, overwrite=args.overwrite)
        except FileExistsError:
            raise UserError(
                f"{str(args.output)!r} appeared while translating: pass --overwrite to replace it or pick another name"
            ) from None
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: a stop that was asked for
        print(f"vcam: translate stopped: nothing written to {args.output}", file=sys.stderr)
        return 0
    finally:
        temporary.unlink(missing_ok=True)  # a failed or interrupted run leaves nothing behind
        translator.close()
    if args.metrics:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['frames_written']} frames to {args.output}", file=sys.stderr)
    return 0


def check_paths(input_path: Path, output_path: Path, *, overwrite: bool = False) -> None:
    """Refuse what would fail later or destroy a file: a missing input, a missing output folder, an unsupported
    output container, OUT = IN (the same file by identity, also through a symlink or a hard link), and an
    existing OUT unless `overwrite`."""
    if input_path.is_dir():
        raise UserError(f"input video {str(input_path)!r} is a folder: give the path of a video file")
    what = why_not_a_file(input_path)
    if what == "not found":
        raise UserError(f"input video {str(input_path)!r} does not exist: give the path of a video file")
    if what is not None:
        raise UserError(f"input video {str(input_path)!r} {what}: give the path of a video file")
    if output_path.is_dir():
        raise UserError(f"output {str(output_path)!r} is a folder: give a file name such as {output_path / 'out.mp4'}")
    if container_format(output_path) is None:
        raise UserError(
            f"cannot write {str(output_path)!r}: vcam translate writes {supported_suffixes()} files; "
            "give an output name ending in one of them"
        )
    if not output_path.parent.is_dir():
        raise UserError(
            f"cannot write {str(output_path)!r}: folder {str(output_path.parent)!r} does not exist; "
            "create it or pick another"
        )
    if output_path.exists():
        if os.path.samefile(output_path, input_path):
            raise UserError(f"the output {str(output_path)!r} is the input video: give another output file name")
        if not overwrite:
            raise UserError(
                f"the output {str(output_path)!r} already exists: pass --overwrite to replace it, or pick another name"
            )


def av_error_text(error: BaseException) -> str:
    """An FFmpeg/OS error without its `[Errno N]` prefix ("Invalid data found when processing input")."""
    text = getattr(error, "strerror", None)
    return text if isinstance(text, str) and text else str(error)


def read_video(path: Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], Fraction, int | None]:
    """(frames as HxWx3 uint8 RGB, frame rate, frame count if the container knows it)."""
    import av

    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as error:
        raise UserError(
            f"cannot read video {str(path)!r} ({av_error_text(error)}): give a video file FFmpeg can decode"
        ) from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{str(path)!r} has no video stream: give a video file")
    stream = container.streams.video[0]
    rate = Fraction(stream.average_rate or stream.guessed_rate or 30)
    count = int(stream.frames) if stream.frames else None
    if max_frames is not None:
        count = max_frames if count is None else min(count, max_frames)

    def frames() -> Iterator[np.ndarray]:
        index = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and index >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as error:
            raise UserError(
                f"decoding {str(path)!r} failed after {index} frames ({av_error_text(error)}): the file may be "
                "damaged (nothing was written). Re-encode it (e.g. with ffmpeg) and try again"
            ) from None
        finally:
            container.close()

    return frames(), rate, count


class VideoWriter:
    """Writes HxWx3 uint8 RGB frames to a video file with PyAV (libx264 or mpeg4, yuv420p, even size)."""

    def __init__(self, path: Path, width: int, height: int, rate: Fraction, container: str | None = None) -> None:
        import av

        self.width = width - width % 2
        self.height = height - height % 2
        if self.width < 2 or self.height < 2:
            raise UserError(f"video size {width}x{height} is too small to encode: use a video of 2x2 pixels or more")
        try:
            self._container = av.open(str(path), mode="w", format=container)
        except (OSError, av.FFmpegError) as error:
            raise UserError(
                f"cannot write {str(path)!r} ({av_error_text(error)}): check the folder and the file suffix (.mp4)"
            ) from None
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream: Any = cast(Any, self._container.add_stream(codec, rate=rate))
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = "yuv420p"
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image[: self.height, : self.width], format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


def translate_video(
    input_path: Path,
    output_path: Path,
    translator: Translator,
    max_frames: int | None = None,
    metrics: bool = False,
    progress: bool = True,
    container: str | None = None,
) -> dict[str, Any]:
    """Translate a video file; returns frame counts (and the metrics when asked) as a JSON-ready dict.

    `container` names the FFmpeg muxer (None: from `output_path`'s suffix).
    """
    from tqdm import tqdm

    from vcam.translators.offline import OfflineTranslation

    frames, rate, count = read_video(input_path, max_frames)
    writer: VideoWriter | None = None
    tracker = None
    if metrics:
        from vcam.model.metrics import VideoMetrics

        tracker = VideoMetrics()
    translation = OfflineTranslation(frames, translator)
    bar = tqdm(total=count, unit="frame", desc=f"translate ({translator.name})", disable=not progress, file=sys.stderr)
    try:
        for frame in translation:
            if writer is None:
                writer = VideoWriter(output_path, frame.output.shape[1], frame.output.shape[0], rate, container)
            writer.write(frame.output)
            if tracker is not None:
                tracker.add(frame.image, frame.output)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    frames_read = translation.frames_read
    if frames_read == 0:
        raise UserError(f"no frames could be read from {str(input_path)!r}: give a video with at least one frame")
    summary: dict[str, Any] = {
        "style": translator.name,
        "frames_read": frames_read,
        "frames_written": writer.frames_written if writer is not None else 0,
        "fps": float(rate),
    }
    if tracker is not None:
        summary.update(tracker.summary())
    log.info("translated %s -> %s: %s", input_path, output_path, summary)
    return summary
