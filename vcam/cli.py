"""The `vcam` command: argparse with one module per subcommand under `vcam/commands/`.

Each subcommand module defines `add_parser(subparsers)`, which registers its parser and sets
`handler=<function(args) -> int>`. Modules import only argparse-level things at import time, so
`vcam --help` stays instant; torch, cv2 and friends are imported inside the handlers.
A `UserError` (bad input, missing driver, ...) prints its message and exits with code 2.

Exit codes (a supervisor tells a crash from a stop by them):
  0  success, or a clean stop that was asked for: Ctrl-C (SIGINT), SIGTERM, SIGHUP (a closed terminal)
  1  a failure: the camera stopped on an error, an output failed mid-run (a full disk: the recording
     is incomplete), an unexpected error
  2  bad input: one line says what was wrong and what to do
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
COMMANDS = ("run", "serve", "translate", "eval", "styles", "models", "devices", "doctor", "tray", "bench")

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


#: the signals that ask for a clean stop besides Ctrl-C (SIGINT): `kill`, and a closed terminal (not on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; Ctrl-C, SIGTERM and SIGHUP stop it cleanly (exit 0, no traceback)."""
    previous = _interrupt_on_stop_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("vcam: stopped", file=sys.stderr)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def _interrupt_on_stop_signals() -> dict[int, Any]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, like Ctrl-C, so `finally` blocks run (temporary files are
    removed, devices closed) and the command stops as it would on Ctrl-C.

    Returns the previous handlers (none when not called from the main thread, where handlers cannot be set).
    Commands with their own shutdown (`vcam run`, `vcam tray`) install their own handlers over these.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
