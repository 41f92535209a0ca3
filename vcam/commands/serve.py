"""`vcam serve`: run styles for cameras on other machines (remote mode, WebRTC)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from vcam.commands.common import add_config_argument, load_config_from_args, positive_float, positive_int
from vcam.serve import IDLE_TIMEOUT_S

log = logging.getLogger(__name__)

DEFAULT_PORT = 8890


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run styles for cameras on other machines (vcam run --remote, WHIP/WHEP, a browser page)",
        description=(
            "Serve styles over WebRTC: `vcam run --remote URL` on a laptop, OBS's WHIP output, or the page at "
            "the printed URL send their camera and get it back styled. Binds 127.0.0.1 unless --host says "
            "otherwise; beyond loopback it needs TLS (--cert/--key) or --insecure."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--token", metavar="TOKEN", help="access token (default: made once, kept in a 0600 file)")
    parser.add_argument("--cert", metavar="PEM", help="TLS certificate (https)")
    parser.add_argument("--key", metavar="PEM", help="TLS private key")
    parser.add_argument("--insecure", action="store_true", help="allow plain http beyond loopback (a warning)")
    parser.add_argument("--style", metavar="NAME", help="the style a client gets unless it asks for one")
    parser.add_argument("--max-clients", type=positive_int, default=4, metavar="N", help="clients at once (4)")
    parser.add_argument(
        "--ice-server", metavar="URL", action="append", default=[], help="stun:HOST[:PORT] or turn:USER:PASS@HOST"
    )
    parser.add_argument("--no-batch", action="store_true", help="one UNet call per client (no stacking)")
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=IDLE_TIMEOUT_S,
        metavar="S",
        help=f"drop a client that sends no frame for S seconds (default {IDLE_TIMEOUT_S:g})",
    )
    add_config_argument(parser)
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from vcam.errors import RemoteError
    from vcam.serve.engine import Engine, StyleFactory
    from vcam.serve.rtc import check_ice_server, require_aiortc
    from vcam.serve.server import LOOPBACK_HOSTS, RemoteServer, ServeOptions
    from vcam.serve.token import check_token, load_or_create_server_token, server_token_path

    require_aiortc()
    config = load_config_from_args(args)
    if not 1 <= args.port <= 65535:
        raise RemoteError(f"--port {args.port} is out of range: use 1 to 65535")
    if bool(args.cert) != bool(args.key):
        raise RemoteError("--cert and --key go together: give both for https")
    loopback = args.host in LOOPBACK_HOSTS
    if not loopback and not args.cert and not args.insecure:
        raise RemoteError(
            f"--host {args.host} reaches beyond this machine: give --cert and --key for https, or --insecure "
            "to send the token in the clear"
        )
    if not loopback and not args.cert:
        log.warning("serving plain http on %s: the token travels in the clear (use --cert/--key)", args.host)
    ice_servers = [check_ice_server(url) for url in (args.ice_server or config.remote.ice_servers)]
    made = False
    if args.token is not None:
        token = check_token(args.token, "--token")
    else:
        token, made = load_or_create_server_token()
    style = args.style or (config.style.name if config.style.name != "passthrough" else "tiny-random")
    factory = StyleFactory(config)
    factory.check(style)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        token=token,
        style=style,
        max_clients=args.max_clients,
        ice_servers=ice_servers,
        certfile=args.cert,
        keyfile=args.key,
        batch=not args.no_batch,
        idle_timeout_s=args.idle_timeout,
    )
    server = RemoteServer(options, Engine(factory, max_clients=args.max_clients, batch=options.batch))
    server.start()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        print(f"vcam: serving style {style!r} at {server.url} (up to {args.max_clients} clients)", file=sys.stderr)
        where = "--token" if args.token is not None else f"{server_token_path()}{' (new)' if made else ''}"
        print(f"vcam: access token ({where}): {token}", file=sys.stderr)
        print(f"vcam: on the laptop: vcam run --remote {server.url} --token TOKEN", file=sys.stderr)
        print(f"vcam: in a browser: {server.url}/#token=TOKEN", file=sys.stderr)
        sys.stderr.flush()
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0
