"""What `vcam eval` writes: text tables (per style and overall), JSON, CSV and a PNG of per-frame warp error.

A metric without a value shows "n/a" when its model is missing (the footnote gives the exact download
command) and "-" when it does not apply (no prompt, the input's own row); it is never left out.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.eval.measure import INPUT_ROW, METRIC_KEYS, METRICS, Evaluation, Metric, Result, mean_over_clips

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

NOT_AVAILABLE = "not available"
STREAMV2V_NOTE = (
    "warp err 0-255*: StreamV2V's formula (0-255, mean absolute error, uint8 wrap of negative differences) with"
    " OpenCV DIS flow: the same kind of number as StreamV2V's RAFT figures, not the same"
)
CSV_COLUMNS = ("style", "clip", "frames", *METRIC_KEYS, "notes")


def cell(result: Result, metric: Metric) -> str:
    value = result.values.get(metric.key)
    if value is not None:
        return f"{value:.{metric.digits}f}"
    return "n/a" if result.notes.get(metric.key, "").startswith(NOT_AVAILABLE) else "-"


def _table(first_header: str, rows: Sequence[tuple[str, Result]]) -> list[str]:
    headers = [first_header, "frames", *(metric.header for metric in METRICS)]
    body = [[label, str(result.frames), *(cell(result, metric) for metric in METRICS)] for label, result in rows]
    widths = [max(len(row[column]) for row in [headers, *body]) for column in range(len(headers))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in body]
    return lines


def overall_rows(evaluation: Evaluation) -> list[Result]:
    """The input's row and each style's, averaged over the clips."""
    rows = [mean_over_clips(evaluation.inputs, INPUT_ROW)]
    for style in evaluation.styles:
        rows.append(mean_over_clips([result for result in evaluation.results if result.style == style], style))
    return rows


def footnotes(evaluation: Evaluation) -> list[str]:
    """One line per missing model with the metrics it blanks, plus the other reasons for a '-'."""
    by_reason: dict[str, list[str]] = {}
    for result in [*evaluation.results, *evaluation.inputs]:
        for metric in METRICS:
            reason = result.notes.get(metric.key)
            if reason and reason != "-" and metric.header not in by_reason.setdefault(reason, []):
                by_reason[reason].append(metric.header)
    return [f"{', '.join(headers)}: {reason}" for reason, headers in by_reason.items()]


def format_tables(evaluation: Evaluation) -> str:
    """The per-style tables (one row per clip and the mean) and the overall table, with footnotes."""
    lines: list[str] = []
    for style in evaluation.styles:
        results = [result for result in evaluation.results if result.style == style]
        lines.append(f"style {style}")
        rows = [(result.clip, result) for result in results]
        if len(results) > 1:
            rows.append(("all clips", mean_over_clips(results, style)))
        lines += _table("clip", rows) + [""]
    lines.append(f"overall (mean over {len(evaluation.clips)} clip(s); the input row is the floor)")
    lines += _table("style", [(row.style, row) for row in overall_rows(evaluation)])
    lines += ["", STREAMV2V_NOTE]
    lines += footnotes(evaluation)
    return "\n".join(lines) + "\n"


def _metrics_legend() -> dict[str, dict[str, Any]]:
    return {
        metric.key: {"header": metric.header, "lower_is_better": metric.lower_is_better, "model": metric.model}
        for metric in METRICS
    }


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    """Everything measured, JSON-ready: overall rows, per-style per-clip rows (with per-frame warp errors)."""
    not_available: dict[str, str] = {}
    for result in evaluation.results:
        for key, reason in result.notes.items():
            if reason.startswith(NOT_AVAILABLE):
                not_available.setdefault(key, reason)
    return {
        "clips": list(evaluation.clips),
        "styles": list(evaluation.styles),
        "metrics": _metrics_legend(),
        "overall": [row.as_dict() for row in overall_rows(evaluation)],
        "results": [result.as_dict() for result in evaluation.results],
        "input": [result.as_dict() for result in evaluation.inputs],
        "not_available": not_available,
        "notes": [STREAMV2V_NOTE],
    }


def write_json(evaluation: Evaluation, path: Path) -> None:
    path.write_text(json.dumps(to_json(evaluation), indent=2) + "\n", encoding="utf-8")


def write_csv(evaluation: Evaluation, path: Path) -> None:
    """One row per (style, clip), the input's rows, and one 'all' row per style; empty cells say why in notes."""
    rows = [*evaluation.inputs, *evaluation.results, *overall_rows(evaluation)]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        for result in rows:
            values = ["" if result.values.get(key) is None else f"{result.values[key]:.6g}" for key in METRIC_KEYS]
            notes = "; ".join(f"{key}: {reason}" for key, reason in result.notes.items() if reason != "-")
            writer.writerow([result.style, result.clip, result.frames, *values, notes])


# --- the plot (OpenCV: no plotting library needed) ---------------------------------------------------------

PLOT_WIDTH = 1000
PANEL_HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 34, 36
LEGEND_HEIGHT = 34
#: line colours (BGR) for the styles, in order; the input is grey
COLOURS = ((200, 90, 30), (40, 140, 240), (60, 170, 60), (50, 50, 210), (170, 90, 150), (30, 170, 190))
INPUT_COLOUR = (150, 150, 150)
FONT_SCALE = 0.45


def plot_warp_error(evaluation: Evaluation, path: Path) -> None:
    """A PNG with one panel per clip: per-frame warp error over time for each style, and the input's."""
    import cv2
    import numpy as np

    height = LEGEND_HEIGHT + PANEL_HEIGHT * len(evaluation.clips)
    canvas = np.full((height, PLOT_WIDTH, 3), 255, dtype=np.uint8)
    names = [INPUT_ROW, *evaluation.styles]
    colours = [INPUT_COLOUR, *(COLOURS[i % len(COLOURS)] for i in range(len(evaluation.styles)))]
    x = LEFT
    for name, colour in zip(names, colours, strict=True):
        cv2.line(canvas, (x, 18), (x + 24, 18), colour, 2, cv2.LINE_AA)
        cv2.putText(canvas, name, (x + 30, 22), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
        x += 44 + 8 * len(name)
    for panel, clip in enumerate(evaluation.clips):
        series = [next(result for result in evaluation.inputs if result.clip == clip).per_frame_warp_error]
        for style in evaluation.styles:
            found = [result for result in evaluation.results if result.style == style and result.clip == clip]
            series.append(found[0].per_frame_warp_error if found else [])
        _panel(canvas, LEGEND_HEIGHT + panel * PANEL_HEIGHT, clip, series, colours)
    if not cv2.imwrite(str(path), canvas):  # canvas and colours are BGR
        raise OSError(f"OpenCV could not write {path}")


def _panel(
    canvas: np.ndarray, top: int, clip: str, series: list[list[float]], colours: Sequence[tuple[int, int, int]]
) -> None:
    import cv2
    import numpy as np

    left, right = LEFT, PLOT_WIDTH - RIGHT
    y_top, y_bottom = top + TOP, top + PANEL_HEIGHT - BOTTOM
    black = (0, 0, 0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, f"{clip}: warp error per frame", (left, top + 20), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, y_top), (right, y_bottom), black, 1)
    longest = max((len(values) for values in series), default=0)
    peak = max((max(values) for values in series if values), default=0.0)
    peak = peak * 1.05 if peak > 0 else 1.0
    span = max(1, longest)
    for fraction in (0.0, 0.5, 1.0):
        y = round(y_bottom - fraction * (y_bottom - y_top))
        cv2.line(canvas, (left - 4, y), (left, y), black, 1)
        cv2.putText(canvas, f"{fraction * peak:.3g}", (6, y + 4), font, FONT_SCALE, black, 1, cv2.LINE_AA)
        frame = round(fraction * span)
        xx = round(left + fraction * (right - left))
        cv2.line(canvas, (xx, y_bottom), (xx, y_bottom + 4), black, 1)
        cv2.putText(canvas, str(frame), (xx - 8, y_bottom + 18), font, FONT_SCALE, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, "frame", (right - 44, y_bottom + 30), font, FONT_SCALE, black, 1, cv2.LINE_AA)
    for position, (values, colour) in enumerate(zip(series, colours, strict=True)):
        thickness = 3 if position == 0 else 1  # the input's line, under the styles' (passthrough covers it)
        if not values:
            continue
        xs = left + (np.arange(1, len(values) + 1) / span) * (right - left)
        ys = y_bottom - (np.asarray(values) / peak) * (y_bottom - y_top)
        points = np.stack([xs, ys], axis=-1).round().astype(np.int32)  # [n, 2]
        if len(points) == 1:
            cv2.circle(canvas, (int(points[0][0]), int(points[0][1])), 2, colour, -1, cv2.LINE_AA)
        else:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, thickness, cv2.LINE_AA)
