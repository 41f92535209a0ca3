"""The video containers vcam writes (the file sink, `vcam translate`), by file suffix."""

from __future__ import annotations

from pathlib import Path

#: file suffix -> FFmpeg muxer; mp4 and mov can be written as fragments (a recording survives a hard kill)
VIDEO_CONTAINERS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: the muxers that take MP4 fragment flags (`movflags`)
FRAGMENTABLE = ("mp4", "mov")


def supported_suffixes() -> str:
    """'.mp4, .m4v, .mov or .mkv', for error messages."""
    names = list(VIDEO_CONTAINERS)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def container_format(path: Path) -> str | None:
    """The FFmpeg muxer for `path`'s suffix (case-insensitive); None when vcam does not write that kind."""
    return VIDEO_CONTAINERS.get(path.suffix.lower())
