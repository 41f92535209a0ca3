"""The clips `vcam eval` reads: video files, and folders of frames in the layout DAVIS uses.

A folder holding image files (`00000.jpg`, `00001.jpg`, ...) is one clip, its frames in name order. A folder
holding no images but sub-folders of frames (DAVIS's `JPEGImages/480p/`) stands for each of them, in name
order. Anything else is a video file PyAV decodes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vcam.errors import UserError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: the suffixes of frame images in a folder clip
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ClipError(UserError):
    """A clip that does not exist, holds no frames, or cannot be decoded."""


@dataclass(frozen=True)
class Clip:
    """One clip: a video file or a folder of frames; `name` labels it in the tables."""

    name: str
    path: Path
    frame_files: tuple[Path, ...] = ()  # the frames of a folder clip, in order; empty for a video file

    @property
    def is_folder(self) -> bool:
        return bool(self.frame_files)

    def count(self, max_frames: int | None = None) -> int | None:
        """How many frames reading it gives (None when a video's container does not say)."""
        if self.is_folder:
            return len(self.frame_files) if max_frames is None else min(max_frames, len(self.frame_files))
        return None


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=_natural_key)


def find_clips(paths: Sequence[Path]) -> list[Clip]:
    """The clips named on the command line (a DAVIS-style folder of sequences stands for each); ClipError if bad."""
    clips: list[Clip] = []
    for path in paths:
        if not path.exists():
            raise ClipError(f"clip {str(path)!r} does not exist: give a video file or a folder of frames")
        if path.is_file():
            clips.append(Clip(path.stem, path))
            continue
        frames = _frame_files(path)
        if frames:
            clips.append(Clip(path.name, path, tuple(frames)))
            continue
        sequences = [
            Clip(sub.name, sub, tuple(_frame_files(sub)))
            for sub in sorted(path.iterdir(), key=_natural_key)
            if sub.is_dir() and _frame_files(sub)
        ]
        if not sequences:
            suffixes = ", ".join(FRAME_SUFFIXES)
            raise ClipError(
                f"folder {str(path)!r} holds no frames ({suffixes}) and no sub-folders of frames: give a video"
                " file, a folder of frames, or a folder of such folders (DAVIS's JPEGImages/480p)"
            )
        clips.extend(sequences)
    names = [clip.name for clip in clips]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        renamed: list[Clip] = []
        for clip in clips:
            name = str(clip.path) if clip.name in duplicates else clip.name
            renamed.append(Clip(name, clip.path, clip.frame_files))
        clips = renamed
    return clips


def read_clip(clip: Clip, max_frames: int | None = None) -> Generator[np.ndarray, None, None]:
    """The clip's frames as [H, W, 3] uint8 RGB, in order (at most `max_frames`); ClipError on a bad frame."""
    if not clip.is_folder:
        from vcam.commands.translate import read_video

        frames, _rate, _count = read_video(clip.path, max_frames)
        yield from frames
        return
    yield from _read_folder(clip, max_frames)


def _read_folder(clip: Clip, max_frames: int | None) -> Iterator[np.ndarray]:
    import cv2
    import numpy as np

    size: tuple[int, int] | None = None
    for path in clip.frame_files[:max_frames]:
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise ClipError(f"frame {str(path)!r} is not an image OpenCV can read: replace or remove it")
        if size is None:
            size = image.shape[:2]
        elif image.shape[:2] != size:
            raise ClipError(
                f"frame {str(path)!r} is {image.shape[1]}x{image.shape[0]}, the clip's first frame"
                f" {size[1]}x{size[0]}: every frame of a clip must have the same size"
            )
        yield np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def check_clip(clip: Clip) -> None:
    """Decode the clip's first frame, so a bad clip is reported before any style loads; ClipError if none."""
    frames = read_clip(clip, max_frames=1)
    try:
        if next(frames, None) is None:
            raise ClipError(f"clip {str(clip.path)!r} has no frames: give a clip with at least one frame")
    finally:
        frames.close()
