"""Argument helpers shared by the subcommands (argparse only: no heavy imports here)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vcam.errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); range checks happen in config validation."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 1280x720")
    return int(match.group(1)), int(match.group(2))


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH", help="config file (default: the user's config.toml)")


def load_config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The user's config (or --config PATH), validated."""
    from vcam.config import load_config

    return load_config(getattr(args, "config", None))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return value


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition (for checks on user input; never `assert`)."""
    if not condition:
        raise UserError(message)
