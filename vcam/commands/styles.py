"""`vcam styles`: the styles and whether each is ready."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from vcam.commands.common import add_config_argument, load_config_from_args

#: marks the config's style in the list (`vcam models list` marks unverified entries with its own word)
CURRENT_MARK = "(current)"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("styles", help="list the styles and whether each is ready")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vcam.styles import list_styles

    config = load_config_from_args(args)
    styles = list_styles(config)
    if args.json:
        print(json.dumps([dataclasses.asdict(style) for style in styles], indent=2))
        return 0
    current = config.style.name
    names = {style.name: style.name + (f" {CURRENT_MARK}" if style.name == current else "") for style in styles}
    width = max(len(name) for name in names.values())
    for kind, heading in (("classic", "Classic looks"), ("diffusion", "Diffusion styles"), ("test", "Test styles")):
        group = [style for style in styles if style.kind == kind]
        if not group:
            continue
        print(f"{heading}:")
        for style in group:
            state = "ready" if style.ready else "invalid" if style.error else "not downloaded"
            print(f"  {names[style.name]:<{width}}  {state:<14}  {style.title}: {style.detail}")
    print(f"\n{CURRENT_MARK}: your current style; choose with `vcam run --style NAME` (add --save to keep it)")
    return 0
