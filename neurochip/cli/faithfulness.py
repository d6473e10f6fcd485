"""``neurochip faithfulness``: how well a take keeps the notes of its sketch."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from neurochip.cli.common import EPILOG, add_max_duration, add_overwrite_option, check_outputs
from neurochip.faithfulness import (
    Faithfulness,
    note_faithfulness,
    sketch_bar_times,
)
from neurochip.io.write import atomic_write
from neurochip.sketch import load_sketch

LOW_MARGIN = 0.15  # a segment this far below the take's score is a low spot
PER_ROW = {"bar": 8, "second": 10}  # segments per printed row: phrases, tens
RAMP = "▁▂▃▄▅▆▇█"
ASCII_RAMP = "_.-:=+*#"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "faithfulness",
        help="how well a take keeps the sketch's notes (0 to 1, per bar or second)",
        description="Compare a take with its sketch, note for note: the chroma (the 12 pitch "
        "classes) of both, frame by frame, as cosine similarity. 1.00 keeps every note; "
        "unrelated music scores about 0.5 or less. Where the sketch is silent nothing is "
        "counted. Shown per bar for a MIDI sketch, per second otherwise, with low spots marked.",
        epilog=EPILOG,
    )
    parser.add_argument("sketch", type=Path, help="the sketch: audio, chip music or MIDI")
    parser.add_argument("take", type=Path, help="the take rendered from it")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the score and the strip to this JSON file",
    )
    add_overwrite_option(parser)
    add_max_duration(parser, "inputs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.json is not None:
        check_outputs(args, [args.json], [args.sketch, args.take])
    sketch = load_sketch(args.sketch, max_duration_s=args.max_duration)
    take = load_sketch(args.take, max_duration_s=args.max_duration)
    result = note_faithfulness(sketch.audio, take.audio, sketch_bar_times(sketch))
    print(report(result, sketch.name, take.name))
    if args.json is not None:
        data = {"sketch": sketch.name, "take": take.name, **result.to_dict(LOW_MARGIN)}
        with atomic_write(args.json) as temporary:
            temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}.")


def report(result: Faithfulness, sketch: str, take: str) -> str:
    """The score, the strip as rows of values with a bar chart, and the low spots."""
    ramp = RAMP if _can_print(RAMP) else ASCII_RAMP
    unit = result.segment
    lines = [
        f"Note faithfulness of {take} to {sketch}: {result.score:.2f} "
        "(1.00 keeps every note; unrelated music scores about 0.5 or less)",
        f"Compared {_clock(result.duration_s)}, of which the sketch sounds in "
        f"{_clock(result.counted_s)}.",
        f"Per {unit} ({ramp[0]} = 0 .. {ramp[-1]} = 1; * = more than {LOW_MARGIN:.2f} below "
        "the score; -- = the sketch is silent):",
    ]
    low = result.strip < result.score - LOW_MARGIN
    per_row = PER_ROW[unit]
    for first in range(0, len(result.strip), per_row):
        values = result.strip[first : first + per_row]
        chart = "".join(
            " " if math.isnan(v) else ramp[min(int(max(v, 0.0) * len(ramp)), len(ramp) - 1)]
            for v in values
        )
        numbers = " ".join(
            " -- " if math.isnan(v) else f"{v:.2f}" + ("*" if low[first + i] else " ")
            for i, v in enumerate(values)
        )
        label = f"{unit}s {first + 1}-{first + len(values)}"
        start = _clock(float(result.times_s[first]))
        lines.append(f"  {label:<13} {start:>7}  {chart:<{per_row}}  {numbers.rstrip()}")
    spots = result.low_spots(LOW_MARGIN)
    if spots:
        lines.append("Low spots (listen here first):")
        for spot in spots:
            which = (
                f"{unit} {spot.first + 1}"
                if spot.first == spot.last
                else f"{unit}s {spot.first + 1}-{spot.last + 1}"
            )
            lines.append(
                f"  {which:<13} {_clock(spot.start_s)}-{_clock(spot.end_s)}  {spot.score:.2f}"
            )
    else:
        lines.append(f"No low spots: no {unit} is more than {LOW_MARGIN:.2f} below the score.")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
