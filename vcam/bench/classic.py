"""Temporal stability of the classic looks on a real photograph made into a camera-like clip.

The clip: scikit-image's `data.astronaut()` (a 512x512 portrait photograph) seen through a camera that
drifts and shakes a little (a seeded random walk of sub-pixel shifts, a small rotation and zoom) with
sensor noise on every frame. For each look: the warp error (`vcam.model.metrics`, DIS flow between the
input frames, occlusions masked) of the stateless look (each frame on its own: before) and of the
`ClassicTranslator` (one stream, temporal state: after), with the input's own warp error for scale.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from typing import Any

import numpy as np

from vcam.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=48, help="frames in the clip (default 48)")
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise, standard deviation 0..255 (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the camera motion and noise (default 0)")


def photo_clip(frames: int, noise: float = 3.0, seed: int = 0, size: int = 384) -> list[np.ndarray]:
    """`frames` RGB frames [size, size, 3] of the astronaut photograph under small camera motion and noise."""
    import cv2

    try:
        from skimage import data
    except ImportError as error:
        raise UserError(
            "this needs scikit-image's sample photograph: pip install 'live2diff-vcam[dev]' (or scikit-image)"
        ) from error
    photo = data.astronaut()  # [512, 512, 3] uint8 RGB
    rng = np.random.default_rng(seed)
    centre = (photo.shape[1] / 2.0, photo.shape[0] / 2.0)
    shift = np.zeros(2)
    angle = 0.0
    clip: list[np.ndarray] = []
    for _ in range(frames):
        shift = 0.9 * shift + rng.normal(0.0, 0.6, size=2)  # pixels: a drifting hand-held camera
        angle = 0.9 * angle + rng.normal(0.0, 0.08)  # degrees
        zoom = 1.0 + 0.01 * np.sin(len(clip) / 10.0)
        matrix = np.asarray(cv2.getRotationMatrix2D(centre, angle, zoom), dtype=np.float64)  # [2, 3]
        matrix[:, 2] += shift
        moved = cv2.warpAffine(photo, matrix, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR)
        offset = (photo.shape[0] - size) // 2
        crop = moved[offset : offset + size, offset : offset + size].astype(np.float32)  # [size, size, 3]
        noisy = crop + rng.normal(0.0, noise, size=crop.shape).astype(np.float32)
        clip.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return clip


def warp_errors(name: str, clip: list[np.ndarray]) -> dict[str, float]:
    """The look's warp error without and with temporal state, and the input's, on one clip."""
    from vcam.model.metrics import VideoMetrics
    from vcam.translators.classic import FILTERS, ClassicTranslator

    look = FILTERS[name]
    translator = ClassicTranslator(name)
    before, after = VideoMetrics(), VideoMetrics()
    for frame in clip:
        before.add(frame, look(frame, None))
        after.add(frame, translator(frame))
    stateless, stable = before.summary(), after.summary()
    return {
        "input_warp_error": float(stateless["input_warp_error"]),
        "warp_error_stateless": float(stateless["warp_error"]),
        "warp_error_stable": float(stable["warp_error"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcam.translators.classic import FILTERS

    start = time.perf_counter()
    clip = photo_clip(args.frames, args.noise, args.seed)
    looks: dict[str, Any] = {}
    for name in FILTERS:
        errors = warp_errors(name, clip)
        errors["ratio_to_input_stateless"] = errors["warp_error_stateless"] / errors["input_warp_error"]
        errors["ratio_to_input_stable"] = errors["warp_error_stable"] / errors["input_warp_error"]
        errors["stable_over_stateless"] = errors["warp_error_stable"] / errors["warp_error_stateless"]
        looks[name] = {key: round(value, 6) for key, value in errors.items()}
    return {
        "benchmark": "classic looks: warp error on a photograph clip (astronaut, camera motion, noise)",
        "frames": args.frames,
        "noise": args.noise,
        "seed": args.seed,
        "looks": looks,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "date": date.today().isoformat(),
    }
