"""Frame sources: webcam, video file, screen and the built-in demo scene, chosen by a spec string.

This module stays light: the source modules (and OpenCV, PyAV, mss) are imported when a spec is parsed.
"""

from __future__ import annotations

from pathlib import Path

from vcam.errors import SourceError
from vcam.sources.base import Source

#: the spec forms `parse_source` accepts, as shown in error messages
SOURCE_SPEC_FORMS = (
    "auto",
    "webcam",
    "webcam:N",
    "webcam:NAME",
    "file:PATH",
    "screen",
    "screen:N",
    "demo",
)


def _spec_error(spec: str, problem: str) -> SourceError:
    forms = ", ".join(SOURCE_SPEC_FORMS)
    return SourceError(f"camera source {spec!r}: {problem}; valid forms: {forms}")


def parse_source(spec: str, width: int, height: int, fps: float) -> Source:
    """The source for `spec` (not opened yet); `width`, `height`, `fps` are what to ask the device for.

    `auto` is resolved before this (`vcam.assemble.resolve_auto_source`: a webcam when there is one, else demo).
    """
    text = spec.strip()
    kind, separator, argument = text.partition(":")
    kind = kind.lower()
    argument = argument.strip()
    if kind == "demo" and not argument:
        from vcam.sources.demo import DemoSource

        return DemoSource(width, height, fps)
    if kind == "webcam":
        from vcam.sources.webcam import WebcamSource

        if separator and not argument:
            raise _spec_error(spec, "'webcam:' needs an index or a name after the colon")
        device: int | str | None = None
        if argument:
            device = int(argument) if argument.isdigit() else argument
        return WebcamSource(device, width, height, fps)
    if kind == "file":
        from vcam.sources.video_file import VideoFileSource

        if not argument:
            raise _spec_error(spec, "'file:' needs a path after the colon")
        return VideoFileSource(argument)
    if kind == "screen":
        from vcam.sources.screen import ScreenSource

        if argument and not argument.isdigit():
            raise _spec_error(spec, f"the monitor must be a number, got {argument!r}")
        return ScreenSource(int(argument) if argument else 1, width, height, fps)
    if not text:
        raise _spec_error(spec, "empty source")
    if Path(text).expanduser().is_file():
        raise _spec_error(spec, f"unknown source (to play this video file write 'file:{text}')")
    raise _spec_error(spec, "unknown source")


__all__ = ["SOURCE_SPEC_FORMS", "Source", "parse_source"]
