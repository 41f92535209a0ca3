"""The `vcam` command: argparse with one module per subcommand under `vcam/commands/`.

Each subcommand module defines `add_parser(subparsers)`, which registers its parser and sets
`handler=<function(args) -> int>`. Modules import only argparse-level things at import time, so
`vcam --help` stays instant; torch, cv2 and friends are imported inside the handlers.
A `UserError` (bad input, missing driver, ...) prints its message and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from vcam import __version__
from vcam.errors import UserError

#: subcommand modules under vcam/commands/, in the order `vcam --help` lists them
COMMANDS = ("run", "translate", "styles", "models", "devices", "doctor", "tray", "bench")

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam",
        description="A virtual camera that restyles your webcam live with streaming video diffusion (Live2Diff).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info-level log messages on the console")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"vcam.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from vcam.logs import setup_logging

    setup_logging(verbose=args.verbose)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"vcam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
