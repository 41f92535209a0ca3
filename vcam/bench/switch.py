"""Benchmark of style loads: the longest gap between two output frames while a diffusion style loads.

The runtime streams the demo source into a sink that records when each frame is sent, at the target fps,
the way `vcam run` builds it (the model libraries imported before the first frame). Two cases per run:
- start-up: the runtime starts with the style configured: the camera image flows while it loads and warms;
- switch: the runtime starts on the classic `cartoon` look and switches to the style.
While it waits for the style it asks the runtime's status at a client's pace (`POLL_S`), one query at a time.
Reported per case: the longest output gap from the load's start until the style is shown plus one second,
in ms and in frame intervals (medians over the runs, each in a fresh process), the load time, and on Linux
the CPU time the hypervisor took from this machine meanwhile (steal: a virtual CPU stops, with whatever thread it
ran). The sink also reads the steal counter at each send, so on Linux each run says how much was stolen during
its longest gap, and its longest gap among the intervals in which the counter did not move (the counter moves in
ticks of 10 ms per CPU: a smaller theft can hide in such an interval). A baseline gap with no load (the same
runtime on `cartoon` alone) says what the machine's scheduling adds by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from vcam.runtime import Runtime

log = logging.getLogger(__name__)

#: the packaged style the real-size random set of tests/full_size_weights.py holds
FULL_SIZE_STYLE = "pixar"
#: the loads measured: the style configured at start-up, and a switch to it from the classic `cartoon` look
CASES = ("startup", "switch")
#: seconds the runtime runs after the style is shown (the first frames of the new look)
SHOWN_FOR_S = 1.0
#: seconds between two status queries while the bench waits for the style: a client's pace (the tray asks once a
#: second). Asking 150 times a second, as the bench first did, made its own thread one of the busiest holders of the
#: GIL the output thread waits for (30 % of a core in a diagnostic run at real size).
POLL_S = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--style", default="tiny-random", help="the style to load (default tiny-random)")
    parser.add_argument(
        "--full-size",
        metavar="DIR",
        help=f"load {FULL_SIZE_STYLE!r} from the real-size random model set written by tests/full_size_weights.py "
        "into DIR (its hub/ folder is the models cache)",
    )
    parser.add_argument("--cache-dir", help="the models cache to load the style from (default: the config's)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; figures are medians (default 3)")
    parser.add_argument("--size", default="1280x720", help="output size (default 1280x720)")
    parser.add_argument("--fps", type=float, default=30.0, help="output fps (default 30)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=2400.0,
        help="seconds a load may take, its warmup included (default 2400: at real size a CPU warms for many minutes)",
    )
    parser.add_argument(
        "--cases", default="startup,switch", help="which loads to measure: startup, switch or both (default both)"
    )
    parser.add_argument(
        "--baseline-seconds", type=float, default=5.0, help="length of each no-load baseline run (default 5)"
    )


def _config(args: argparse.Namespace, width: int, height: int) -> Any:
    from vcam.config import config_from_dict

    models: dict[str, Any] = {"device": "cpu", "dtype": "float32"}
    cache = os.path.join(args.full_size, "hub") if args.full_size else args.cache_dir
    if cache:
        models["cache_dir"] = cache
    return config_from_dict({"models": models, "output": {"width": width, "height": height, "fps": args.fps}})


def _timed_runtime(
    args: argparse.Namespace, width: int, height: int, style: str, preload: bool
) -> tuple[Runtime, list[tuple[float, float | None]]]:
    """A runtime from the demo source into a sink that records each send's (time, steal counter) (the list it
    returns; the counter is None off Linux)."""
    from vcam.runtime import Runtime
    from vcam.sinks.null import NullSink
    from vcam.sources.demo import DemoSource
    from vcam.style_switch import model_stack_installed, preload_model_stack
    from vcam.styles import load_translator

    send_times: list[tuple[float, float | None]] = []

    class TimingSink(NullSink):
        def send(self, image: np.ndarray) -> None:
            send_times.append((time.perf_counter(), _stolen_seconds()))
            super().send(image)

    config = _config(args, width, height)
    runtime = Runtime(
        DemoSource(width, height, args.fps),
        [TimingSink()],
        width=width,
        height=height,
        fps=args.fps,
        style=style,
        translator_loader=lambda name: load_translator(name, config),
        preload=preload_model_stack if preload and model_stack_installed() else None,
    )
    return runtime, send_times


def _stolen_seconds() -> float | None:
    """Seconds of CPU time the hypervisor gave to other guests so far (/proc/stat's steal; None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 and fields[0] == "cpu" else None


def _in_a_fresh_process(function: Callable[..., Any], *arguments: Any) -> Any:
    """`function(*arguments)` in a new interpreter: each run starts the way `vcam run` does, with nothing that an
    earlier run loaded, froze out of the collector or left in the allocator (at real size that is gigabytes)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, arguments)


def _one_run(args: argparse.Namespace, style: str, case: str, width: int, height: int) -> dict[str, float]:

    runtime, send_times = _timed_runtime(args, width, height, style if case == "startup" else "cartoon", True)
    runtime.start()
    try:
        started = time.perf_counter()
        if case == "switch":
            deadline = started + 30
            while runtime.status().style != "cartoon" and time.perf_counter() < deadline:
                time.sleep(POLL_S)
            time.sleep(1.0)
            started = time.perf_counter()
            runtime.set_style(style)
        deadline = started + args.timeout
        while (status := runtime.status()).style != style and time.perf_counter() < deadline:
            if status.last_error and not status.styles_loading:
                raise RuntimeError(status.last_error)
            time.sleep(POLL_S)
        shown = time.perf_counter()
        if status.style != style:
            raise RuntimeError(f"{style!r} did not load within {args.timeout:.0f} s")
        time.sleep(SHOWN_FOR_S)
    finally:
        runtime.stop()
    return {**_gap_figures([send for send in send_times if send[0] >= started]), "load_s": shown - started}


def _gap_figures(sends: list[tuple[float, float | None]]) -> dict[str, float]:
    """The longest gap between two sends (ms) and, with steal counts, the CPU time stolen during it and the longest
    gap in which nothing was stolen."""
    import numpy as np

    if len(sends) < 2:
        return {"longest_gap_ms": float("nan")}
    times = np.array([time_ for time_, _ in sends])
    gaps = np.diff(times) * 1000
    longest = int(gaps.argmax())
    figures = {"longest_gap_ms": float(gaps[longest])}
    if all(stolen is not None for _, stolen in sends):
        stolen_ms = np.diff(np.array([stolen for _, stolen in sends], dtype=float)) * 1000
        figures["steal_in_longest_gap_ms"] = float(stolen_ms[longest])
        clean = gaps[stolen_ms == 0]
        figures["longest_steal_free_gap_ms"] = float(clean.max()) if len(clean) else float("nan")
    return figures


def _baseline(args: argparse.Namespace, width: int, height: int, seconds: float = 5.0) -> float:
    """The longest output gap (ms) over `seconds` with no load (cartoon look): the machine's own jitter."""

    runtime, send_times = _timed_runtime(args, width, height, "cartoon", False)
    runtime.start()
    try:
        time.sleep(1.0)
        begin = time.perf_counter()
        time.sleep(seconds)
    finally:
        runtime.stop()
    return _gap_figures([send for send in send_times if send[0] >= begin])["longest_gap_ms"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcam.commands.common import parse_size
    from vcam.errors import UserError

    if args.runs < 1:
        raise UserError(f"--runs {args.runs} must be 1 or more")
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    if not cases or any(case not in CASES for case in cases):
        raise UserError(f"--cases {args.cases!r}: choose from {', '.join(CASES)} (comma-separated)")
    width, height = parse_size(args.size)
    style = FULL_SIZE_STYLE if args.full_size else args.style
    interval_ms = 1000 / args.fps
    result: dict[str, Any] = {
        "benchmark": "switch",
        "style": style,
        "size": f"{width}x{height}",
        "target_fps": args.fps,
        "runs": args.runs,
    }
    for case in cases:
        stolen_before = _stolen_seconds()
        runs = [_in_a_fresh_process(_one_run, args, style, case, width, height) for _ in range(args.runs)]
        stolen_after = _stolen_seconds()
        log.info("%s: %s", case, runs)
        gaps = [run["longest_gap_ms"] for run in runs]
        median_gap = statistics.median(gaps)
        result[case] = {
            "longest_gap_ms_median": round(median_gap, 1),
            "longest_gap_ms_max": round(max(gaps), 1),
            "longest_gap_frame_intervals_median": round(median_gap / interval_ms, 2),
            "load_s_median": round(statistics.median(run["load_s"] for run in runs), 2),
        }
        if all("steal_in_longest_gap_ms" in run for run in runs):
            result[case]["steal_in_longest_gap_ms"] = [round(run["steal_in_longest_gap_ms"], 1) for run in runs]
            clean = statistics.median(run["longest_steal_free_gap_ms"] for run in runs)
            result[case]["longest_steal_free_gap_ms_median"] = round(clean, 1)
            result[case]["longest_steal_free_gap_frame_intervals_median"] = round(clean / interval_ms, 2)
        if stolen_before is not None and stolen_after is not None:  # a virtual machine's CPUs taken by its host
            result[case]["cpu_steal_s"] = round(stolen_after - stolen_before, 2)
    baseline = [_in_a_fresh_process(_baseline, args, width, height, args.baseline_seconds) for _ in range(args.runs)]
    result["baseline_no_load_longest_gap_ms_median"] = round(statistics.median(baseline), 1)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    result["load_average"] = [round(value, 2) for value in os.getloadavg()]
    return result
