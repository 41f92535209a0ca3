"""`vcam doctor`: a table of everything the app needs, and the exact command that fixes each problem.

It is a report: the exit code is 0 even when something is missing, unless `--strict` (then 1 when something
the app needs is missing; a diffusion style without its weights is listed apart and never fails it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from vcam.commands.common import add_config_argument

if TYPE_CHECKING:
    from vcam.doctor import Check

OK_LABEL, PROBLEM_LABEL = "ok", "missing"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check everything the app needs and print how to fix what is missing",
        description=(
            "Check Python, torch and the GPU, the virtual camera driver, the webcam, segmentation, the weights of "
            "each style, the tray host, free disk, the config file and the log folder; print the command that fixes "
            "each problem."
        ),
    )
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as JSON (a list of objects)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 1 when something the app needs is missing (styles' weights are optional)",
    )
    parser.set_defaults(handler=run_doctor)


def _rows(checks: Sequence[Check], name_width: int, status_width: int) -> list[str]:
    lines = []
    for check in checks:
        status = OK_LABEL if check.ok else PROBLEM_LABEL
        lines.append(f"{status:<{status_width}}  {check.name:<{name_width}}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"{'':<{status_width}}  {'':<{name_width}}  fix: {check.fix}")
    return lines


def render_table(checks: Sequence[Check]) -> str:
    """The report: what the app needs (one row per check, a `fix:` line under each problem, a summary), then
    the optional diffusion styles apart with their own summary line."""
    name_width = max((len(check.name) for check in checks), default=4)
    status_width = max(len(OK_LABEL), len(PROBLEM_LABEL))
    required = [check for check in checks if check.required]
    optional = [check for check in checks if not check.required]
    lines = [f"{'':<{status_width}}  {'what':<{name_width}}  detail", *_rows(required, name_width, status_width)]
    problems = sum(1 for check in required if not check.ok)
    if problems:
        lines.append(f"\n{problems} problem{'s' if problems != 1 else ''}: run the fix command shown under each.")
    else:
        lines.append("\neverything the app needs is in place.")
    if optional:
        lines += ["", "Diffusion styles (optional: each needs its weights, several GB):"]
        lines += _rows(optional, name_width, status_width)
        downloaded = sum(1 for check in optional if check.ok)
        lines.append(f"\nstyles: {downloaded} of {len(optional)} downloaded; `vcam models download NAME` gets one.")
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps([check.to_dict() for check in checks], indent=2)


def run_doctor(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vcam.doctor import run_checks

    stream = out if out is not None else sys.stdout
    checks = run_checks(config_path=getattr(args, "config", None))
    stream.write((render_json(checks) if args.json else render_table(checks)) + "\n")
    if args.strict and not all(check.ok for check in checks if check.required):
        return 1
    return 0
