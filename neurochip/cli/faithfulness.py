"""``neurochip faithfulness``: how well a take keeps the notes of its sketch.

Both measures: notes kept (the sketch's notes found in the take's transcription, with
precision, recall and F1, and the pitch-class variant; the notes lost, by bar) and the chroma
score with its strip per bar or second. ``--json`` writes (or, without a file, prints) all of
it, the notes included.
"""

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
from neurochip.notes_kept import NoteScore, NotesKept
from neurochip.sketch import load_sketch
from neurochip.transcription import reference_notes

LOW_MARGIN = 0.15  # a segment this far below the take's score is a low spot
PER_ROW = {"bar": 8, "second": 10}  # segments per printed row: phrases, tens
RAMP = "▁▂▃▄▅▆▇█"
ASCII_RAMP = "_.-:=+*#"
LOST_SHOWN = 20  # lost notes listed; the rest counted


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "faithfulness",
        help="how well a take keeps the sketch's notes (0 to 1, per bar or second)",
        description="Compare a take with its sketch, note for note. Notes kept: the take is "
        "transcribed (basic-pitch) and the sketch's notes (a MIDI file's own, an audio "
        "sketch's transcription) are counted in it: recall is the share kept, precision the "
        "share of the take's notes that are the sketch's; the notes lost are listed by bar. "
        "Chroma: the 12 pitch classes of both, frame by frame, as cosine similarity (1.00 "
        "keeps every note; unrelated music scores about 0.5 or less; where the sketch is "
        "silent nothing is counted), shown per bar for a MIDI sketch, per second otherwise, "
        "with low spots marked.",
        epilog=EPILOG,
    )
    parser.add_argument("sketch", type=Path, help="the sketch: audio, chip music or MIDI")
    parser.add_argument("take", type=Path, help="the take rendered from it")
    parser.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=Path("-"),
        default=None,
        metavar="FILE",
        help="also write both measures (notes kept, lost and extra notes, the chroma strip) "
        "to this JSON file; without FILE, print that JSON instead of the report",
    )
    add_overwrite_option(parser)
    add_max_duration(parser, "inputs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    printing = args.json is not None and str(args.json) == "-"
    if args.json is not None and not printing:
        check_outputs(args, [args.json], [args.sketch, args.take])
    sketch = load_sketch(args.sketch, max_duration_s=args.max_duration)
    take = load_sketch(args.take, max_duration_s=args.max_duration)
    result = note_faithfulness(
        sketch.audio,
        take.audio,
        sketch_bar_times(sketch),
        # The sketch's own notes: a MIDI file's, an audio sketch's transcription.
        reference=reference_notes(sketch, 0.0, take.audio.duration_s),
    )
    data = {"sketch": sketch.name, "take": take.name, **result.to_dict(LOW_MARGIN)}
    if printing:
        print(json.dumps(data, indent=2))
        return
    print(report(result, sketch.name, take.name))
    if args.json is not None:
        with atomic_write(args.json) as temporary:
            temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}.")


def report(result: Faithfulness, sketch: str, take: str) -> str:
    """Notes kept (scores, lost notes), then the chroma score, the strip as rows of values
    with a bar chart, and the low spots."""
    ramp = RAMP if _can_print(RAMP) else ASCII_RAMP
    unit = result.segment
    lines = [f"Note faithfulness of {take} to {sketch}:", *notes_report(result.notes)]
    lines += [
        f"Chroma: {result.score:.2f} "
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


def notes_report(notes: NotesKept | None) -> list[str]:
    """Notes kept: the headline, the scores of both matchings, the lost notes by bar."""
    if notes is None:
        return ["Notes kept: not counted (basic-pitch is not installed: `make install`)."]
    lines = [
        notes.headline(),
        _score_line("notes", notes.notes, ""),
        _score_line("pitch classes", notes.pitch_classes, "; octaves folded"),
    ]
    lost = notes.lost(heard_only=True)
    unheard = len(notes.lost()) - len(lost)
    if unheard:
        lines.append(
            f"  {unheard} of the sketch's notes are not heard in the sketch's own audio "
            "either (the transcriber misses them): they are not listed as lost."
        )
    if lost:
        lines.append("Lost notes (in the sketch, not in the take):")
        for place in lost[:LOST_SHOWN]:
            where = f"bar {place.bar}" if place.bar is not None else ""
            said = [where, place.name, f"({place.start_s:.2f} s)"]  # bar 12  E5  (22.41 s)
            lines.append("  " + "  ".join(part for part in said if part))
        if len(lost) > LOST_SHOWN:
            lines.append(f"  ... and {len(lost) - LOST_SHOWN} more")
    return lines


def _score_line(what: str, score: NoteScore, how: str) -> str:
    return (
        f"  {what + ':':<15}precision {score.precision:.2f} · recall {score.recall:.2f} · "
        f"F1 {score.f1:.2f}  ({score.matched} of {score.sketch} kept, {score.take} in the "
        f"take{how})"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
