"""``neurochip doctor``: what this machine can do, with a fix for anything missing."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check Python, PyTorch, GPU, ffmpeg, chip formats and model weights",
        description="Check what this machine can do, with a fix for anything missing.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neurochip.doctor import run_checks

    ok = True
    for check in run_checks():
        print(check.line())
        ok &= check.ok or not check.essential
    print("All essentials are in place." if ok else "Something essential is missing: see above.")
    return 0 if ok else 1
