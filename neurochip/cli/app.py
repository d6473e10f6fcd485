"""``neurochip app``: start the Streamlit app on this machine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neurochip.cli.common import EPILOG, add_home_option
from neurochip.errors import NeuroChipError


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "app",
        help="start the NeuroChip app in your browser",
        description="Start the Streamlit app (Arrange, Takes, Model & device) on this machine.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=int(os.environ.get("NEUROCHIP_MAX_UPLOAD_MB", 200)),
        help="largest upload accepted, in MB (default 200)",
    )
    parser.add_argument("--model", default=None, metavar="ID|DIR|FILE", help="model to load")
    add_home_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    root = Path(__file__).resolve().parents[2]
    script = root / "app" / "main.py"
    if not script.is_file():
        raise NeuroChipError(
            "The app is not part of this installation: run it from the NeuroChip source folder "
            "(make run)."
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"neurochip: serving on {args.host}: anyone who can reach this machine can use "
            "the app and its takes.",
            file=sys.stderr,
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    if args.model:
        env["NEUROCHIP_MODEL"] = args.model
    if args.home:
        env["NEUROCHIP_HOME"] = str(args.home)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.maxUploadSize",
        str(args.max_upload_mb),
    ]
    print(
        f"NeuroChip is starting: open http://{args.host}:{args.port} in your browser.", flush=True
    )
    # Streamlit replaces this process (so Ctrl-C and kill reach the server itself), started
    # from the repository root so that it reads .streamlit/config.toml (XSRF, limits).
    os.chdir(root)
    os.execve(sys.executable, command, env)
