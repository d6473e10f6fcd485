"""The ``neurochip`` command line: one module per command.

Each command is a thin layer over the library: parse options, call the library, show
progress, write the file. Every problem a user can cause ends as a one-line message and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from neurochip.cli import (
    app,
    batch,
    comp,
    doctor,
    faithfulness,
    invert,
    render,
    reroll,
    roundtrip,
    serve,
    spectrogram,
    sweep,
    synth,
)
from neurochip.cli.common import EPILOG
from neurochip.errors import NeuroChipError, TooLongError

COMMANDS = (
    spectrogram,
    invert,
    roundtrip,
    render,
    reroll,
    comp,
    sweep,
    batch,
    synth,
    faithfulness,
    app,
    serve,
    doctor,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurochip",
        description="Turn chiptune and MIDI sketches into live arrangement mockups with "
        "Riffusion: a song's spectrogram is re-imagined by Stable Diffusion and comes back as "
        "a note-for-note cover.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int | None] = args.run
    try:
        return run(args) or 0
    except NeuroChipError as err:
        advice = ""
        if isinstance(err, TooLongError) and hasattr(args, "max_duration"):
            advice = " Or raise the limit with --max-duration SEC."
        print(f"neurochip: {err}{advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurochip: cancelled.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
