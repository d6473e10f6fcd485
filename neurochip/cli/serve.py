"""``neurochip serve``: NeuroChip as an HTTP API (FastAPI + uvicorn), for plugins and scripts.

On 127.0.0.1 by default; anything beyond this machine needs a token (NEUROCHIP_API_TOKEN),
which every request then sends as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_device_option,
    add_home_option,
    add_model_options,
    load_engine,
)
from neurochip.errors import NeuroChipError
from neurochip.io.decode import DEFAULT_MAX_DURATION_S

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
            "NEUROCHIP_API_TOKEN=$(openssl rand -hex 16), and give it to your clients."
        )
    if args.allow_folder is not None and not args.allow_folder.is_dir():
        raise NeuroChipError(f"--allow-folder {args.allow_folder} is not a folder.")
    if args.seed_images is not None and not args.seed_images.is_dir():
        raise NeuroChipError(f"--seed-images {args.seed_images} is not a folder.")
    if args.max_upload_mb < 1:
        raise NeuroChipError("--max-upload-mb must be 1 or more.")

    import uvicorn

    from neurochip.library.store import TakeLibrary
    from neurochip.server import Renders, ServerLimits, create_app

    library = TakeLibrary(args.home)
    limits = ServerLimits(
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_duration_s=args.max_duration,
        allowed_folder=args.allow_folder,
        seed_images=args.seed_images,
    )
    api = create_app(Renders(lambda: load_engine(args), library), limits, token)
    print(
        f"NeuroChip API on http://{args.host}:{args.port} (docs at /docs); takes in "
        f"{library.root}.",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(api, host=args.host, port=args.port, log_level="warning")
