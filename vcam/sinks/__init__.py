"""Sinks: where finished frames go (virtual camera, preview stream, file, null).

`parse_sink(spec)` turns a `--sink` value or an `[output] sinks` entry into a sink. This module
stays light: the sink modules (and cv2, av, pyvirtualcam) load only when a sink is made.
"""

from __future__ import annotations

from vcam.errors import SinkError
from vcam.sinks.base import Sink, StatusProvider

#: the forms `parse_sink` understands, for error messages and `--help`
SINK_FORMS = (
    "vcam (the first virtual camera)",
    "vcam:NAME (a virtual camera by device or name, e.g. vcam:/dev/video10)",
    "preview (page, MJPEG and MPEG-TS streams on 127.0.0.1)",
    "preview:PORT",
    "file:PATH (an .mp4 recording)",
    "null (discard)",
)

__all__ = ["SINK_FORMS", "Sink", "SinkError", "StatusProvider", "parse_sink"]


def _unknown(spec: str, why: str | None = None) -> SinkError:
    forms = "; ".join(SINK_FORMS)
    problem = f"bad sink {spec!r}: {why}" if why else f"unknown sink {spec!r}"
    return SinkError(f"{problem}. Valid sinks: {forms}")


def parse_sink(spec: str, default_preview_port: int) -> Sink:
    """Make the sink a spec names: `vcam`, `vcam:NAME`, `preview`, `preview:PORT`, `file:PATH` or `null`.

    `auto` is not a sink: the runtime resolves it (vcam when a driver is present, else preview) first.
    """
    text = spec.strip()
    kind, colon, argument = text.partition(":")
    kind = kind.strip().lower()
    argument = argument.strip()
    if colon and not argument:
        raise _unknown(spec, f"nothing after '{kind}:'")
    if kind == "vcam":
        from vcam.sinks.virtual_camera import VirtualCameraSink

        return VirtualCameraSink(device=argument or None)
    if kind == "preview":
        from vcam.sinks.preview import PreviewSink

        if not colon:
            return PreviewSink(port=default_preview_port)
        from vcam.config import PREVIEW_PORT_RULE, preview_port_problem

        if not argument.isdigit():
            raise _unknown(spec, f"the preview port must be {PREVIEW_PORT_RULE}, not {argument!r}")
        problem = preview_port_problem(int(argument))
        if problem is not None:
            raise _unknown(spec, f"preview port {argument}: {problem}")
        return PreviewSink(port=int(argument))
    if kind == "file":
        if not colon:
            raise _unknown(spec, "'file' needs a path (file:PATH)")
        from vcam.sinks.file import FileSink

        return FileSink(argument)
    if kind == "null" and not colon:
        from vcam.sinks.null import NullSink

        return NullSink()
    raise _unknown(spec)
