"""``neurochip serve``: NeuroChip as an HTTP API (FastAPI + uvicorn), for plugins and scripts.

On 127.0.0.1 by default; anything beyond this machine needs a token (NEUROCHIP_API_TOKEN),
which every request then sends as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_device_option,
    add_home_option,
    add_model_options,
    load_spec,
    model_spec,
)
from neurochip.errors import NeuroChipError
from neurochip.io.decode import DEFAULT_MAX_DURATION_S
from neurochip.server.renders import DEFAULT_MAX_WORK

#: How long a stopping server waits for its connections before it closes them.
STOP_GRACE_S = 3

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve NeuroChip as an HTTP API (docs at /docs)",
        description="Serve renders, progress and takes over HTTP (FastAPI; OpenAPI docs at "
        "/docs). Listens on 127.0.0.1 unless told otherwise; on any other address it needs "
        "an API token in NEUROCHIP_API_TOKEN, sent by clients as 'Authorization: Bearer "
        "<token>'. Renders are kept in the take library the app shows.",
        epilog=EPILOG,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--allow-folder",
        type=Path,
        default=None,
        metavar="DIR",
        help="also take sketches by path, from this folder only (default: uploads only)",
    )
    parser.add_argument(
        "--seed-images",
        type=Path,
        default=None,
        metavar="DIR",
        help="seed spectrograms (<id>.png, e.g. Riffusion's seed_images folder) for Riffusion's "
        "/run_inference/ endpoint",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=128,
        help="largest upload taken, in MB (default 128)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer to this host name (e.g. studio.local); IP addresses and localhost "
        "always work. Other names are refused, so that no web page can reach the server "
        "under a name of its own (DNS rebinding)",
    )
    parser.add_argument(
        "--cors",
        "--cors-origin",
        dest="cors_origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let the web page at this origin (e.g. http://localhost:3000, Riffusion's web "
        "app) call the server from the browser (CORS); repeat for more. Pages of other "
        "origins are refused",
    )
    parser.add_argument(
        "--riffusion-open",
        action="append",
        default=[],
        metavar="CIDR",
        help="let machines of this network (e.g. 192.168.0.0/16) use Riffusion's endpoints "
        "(/run_inference/, /run_vst/: RiffusionVST, the web app) without the API token, which "
        "they cannot send; /v1 still needs it. Needs --host beyond 127.0.0.1; repeat for more",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=8,
        metavar="N",
        help="renders that may wait for the model (default 8); more get '429 Too Many "
        "Requests' with a time to retry",
    )
    parser.add_argument(
        "--max-work",
        type=float,
        default=DEFAULT_MAX_WORK,
        metavar="N",
        help="the most one request may ask, in seconds of song x denoising steps x takes "
        f"(default {DEFAULT_MAX_WORK:,.0f}: a 20-minute stereo pair at 50 steps)",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=DEFAULT_MAX_DURATION_S,
        metavar="SEC",
        help=f"longest sketch taken, in seconds (default {DEFAULT_MAX_DURATION_S:g})",
    )
    add_home_option(parser)
    add_model_options(parser)
    add_device_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    token = os.environ.get("NEUROCHIP_API_TOKEN") or None
    if args.host not in LOCAL_HOSTS and not token:
        raise NeuroChipError(
            f"Serving on {args.host} lets other machines in: set an API token first, e.g. "
            "NEUROCHIP_API_TOKEN=$(openssl rand -hex 16), and give it to your clients "
            "(Riffusion's clients, from a --riffusion-open network, need none)."
        )
    networks = [_network(cidr) for cidr in args.riffusion_open]
    for origin in args.cors_origin:
        if origin.strip() in ("*", "null") or "://" not in origin:
            raise NeuroChipError(
                f"--cors {origin}: name one web page's origin, as the browser sends it "
                "(scheme, host and port, e.g. http://192.168.1.20:3000); every origin would "
                "let any site you visit use the server."
            )
    if args.allow_folder is not None and not args.allow_folder.is_dir():
        raise NeuroChipError(f"--allow-folder {args.allow_folder} is not a folder.")
    if args.seed_images is not None and not args.seed_images.is_dir():
        raise NeuroChipError(f"--seed-images {args.seed_images} is not a folder.")
    if args.max_upload_mb < 1:
        raise NeuroChipError("--max-upload-mb must be 1 or more.")
    if args.queue < 0 or not args.max_work > 0:
        raise NeuroChipError("--queue must be 0 or more, and --max-work more than 0.")

    import uvicorn

    from neurochip.library.store import TakeLibrary
    from neurochip.server import Renders, ServerLimits, create_app

    spec = model_spec(args)  # checked as it loads: what is wrong, renders say too
    library = TakeLibrary(args.home)
    limits = ServerLimits(
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_duration_s=args.max_duration,
        allowed_folder=args.allow_folder,
        seed_images=args.seed_images,
    )
    renders = Renders(lambda: load_spec(spec), library, depth=args.queue, max_work=args.max_work)
    api = create_app(
        renders,
        limits,
        token,
        allowed_hosts=tuple(args.allow_host),
        cors_origins=tuple(args.cors_origin),
        riffusion_open=tuple(str(network) for network in networks),
    )
    # The model loads before the server listens: loading it (Python imports, mostly) holds the
    # interpreter for seconds, which would stall every request that came meanwhile.
    print("Loading the model...", file=sys.stderr, flush=True)
    try:
        renders.engine()
    except NeuroChipError as err:
        print(f"neurochip: {err} (renders will say so)", file=sys.stderr, flush=True)
    print(
        f"NeuroChip API on http://{args.host}:{args.port} (docs at /docs); takes in "
        f"{library.root}.",
        file=sys.stderr,
        flush=True,
    )
    for line in access_lines(args.host, token, tuple(args.cors_origin), networks):
        print(f"  {line}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        api,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=STOP_GRACE_S,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Ctrl+C or SIGTERM cancels the renders at once (their kept takes stay), so the
            # server stops in seconds. On a thread: a signal handler must never wait for a
            # lock that the code it interrupted holds.
            threading.Thread(target=renders.close, args=(5.0,), daemon=True).start()
            super().handle_exit(sig, frame)

    Server(config).run()


def access_lines(
    host: str, token: str | None, origins: tuple[str, ...], networks: list
) -> list[str]:
    """What is open to whom, said at start."""
    local = host in LOCAL_HOSTS
    lines = [
        "Open to this machine only."
        if local
        else f"Listening on {host}: other machines can reach it.",
        "Every route needs the API token (Authorization: Bearer ...)."
        if token
        else "No token: only this machine's programs can call it.",
    ]
    if networks:
        named = ", ".join(str(n) for n in networks)
        lines.append(
            f"Riffusion's /run_inference/ and /run_vst/ take no token from {named}"
            + (
                " (but this server listens on this machine only: start it with --host "
                "0.0.0.0 to let them in)."
                if local
                else "; /v1 still needs it."
            )
        )
    if origins:
        lines.append("Web pages that may call it from the browser: " + ", ".join(origins) + ".")
    return lines


def _network(cidr: str):
    """``--riffusion-open``'s network, refused where it is every address."""
    from neurochip.server.gate import open_network

    try:
        network = open_network(cidr)
    except ValueError as err:
        raise NeuroChipError(f"--riffusion-open: {err}") from None
    if network.prefixlen == 0:
        raise NeuroChipError(
            f"--riffusion-open {cidr} is every address on the internet: name your own "
            "network, e.g. 192.168.0.0/16."
        )
    return network
