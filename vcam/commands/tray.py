"""`vcam tray [--config PATH] [--autostart on|off]`: the tray icon that runs and controls the camera."""

from __future__ import annotations

import argparse
from typing import Any

from vcam.commands.common import add_config_argument


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tray",
        help="run the camera with a tray icon to switch styles, pause, and open the preview",
        description=(
            "Start the camera with your config and show a tray icon whose menu switches styles and "
            "segmentation, pauses the camera and opens the preview. One tray runs per user: a second "
            "start says so and exits. With --autostart, only turn starting at login on or off, then exit."
        ),
    )
    add_config_argument(parser)
    parser.add_argument(
        "--autostart",
        choices=("on", "off"),
        help="turn starting the tray at login on or off (for installers), then exit",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.autostart is not None:
        from vcam.tray.autostart import disable_autostart, enable_autostart

        if args.autostart == "on":
            where = enable_autostart()
            print(f"the tray starts at login: {where}")
        else:
            was_on = disable_autostart()
            print("the tray no longer starts at login" if was_on else "the tray was not set to start at login")
        return 0
    from vcam.tray.app import run_tray

    return run_tray(args.config)
