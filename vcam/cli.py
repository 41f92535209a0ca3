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
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from vcam import __version__
from vcam.errors import UserError

#: subcommand modules under vcam/commands/, in the order `vcam --help` lists them
COMMANDS = ("run", "serve", "translate", "styles", "models", "devices", "doctor", "tray", "bench")

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
    """Run one subcommand; Ctrl-C (SIGINT) exits with 130 and SIGTERM with 143, both without a traceback."""
    previous = _exit_on_sigterm()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("vcam: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
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
        log.debug("user error", exc_info=True)
        print(f"vcam: error: {error}", file=sys.stderr)
        return 2


def _exit_on_sigterm() -> Any:
    """SIGTERM raises SystemExit(143), so `finally` blocks run (files are finished, devices closed).

    Returns the previous handler (None when not called from the main thread, where handlers cannot be set).
    Commands with their own shutdown (`vcam run`, `vcam tray`) install their own handler over this one.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, _frame: object) -> None:
        log.info("signal %d: exiting", signum)
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, terminate)
