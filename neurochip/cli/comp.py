"""``neurochip comp``: one take from the best bars of several, switching at bar lines.

Parses the picks, finds the song's bars, writes the file: the work itself is
:func:`neurochip.comp.comp_takes`, the same call the app's comp lanes make.
"""

from __future__ import annotations

import argparse

from neurochip.cli.common import EPILOG, add_output_options, check_outputs
from neurochip.comp import (
    COMP_CROSSFADE_S,
    CompPart,
    comp_takes,
    parts_from_bars,
    take_bar_times,
)
from neurochip.errors import NeuroChipError
from neurochip.library.metadata import save_take
from neurochip.library.store import TakeLibrary
from neurochip.reroll import parse_range

OUTPUT_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "comp",
        help="build one take from the best bars of several takes of the same span",
        description="Comp takes from the take library (the ids the app's Takes page and "
        "`neurochip render` report): each --take ID:FIRST-LAST plays those bars of the song, "
        "the next one the bars after it, switching with a short equal-power crossfade on the "
        "bar line. ID:START-ENDs picks seconds of the take instead. The comp is kept in the "
        "library too.",
        epilog=EPILOG
        + "\n\nExample: neurochip comp chorus.wav --take 3f2a9c1d0b4e:1-8 --take 8e1f22aa9d01:9-12",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_output_options(parser)
    parser.add_argument(
        "--take",
        action="append",
        required=True,
        dest="picks",
        metavar="ID:BARS",
        help="a take id and the bars it plays, e.g. 3f2a9c1d0b4e:9-12 (or 0-7.5s for seconds)",
    )
    parser.add_argument(
        "--crossfade",
        type=float,
        default=COMP_CROSSFADE_S,
        metavar="SEC",
        help=f"the switch at each bar line (default {COMP_CROSSFADE_S} s)",
    )
    parser.add_argument("--name", default=None, help="the comp's name in the library")
    parser.set_defaults(run=run)


def parse_pick(text: str) -> tuple[str, str, bool]:
    """``"ID:9-12"`` -> (id, "9-12", False); ``"ID:0-7.5s"`` -> (id, "0-7.5", True)."""
    take_id, sep, where = text.partition(":")
    if not sep or not take_id or not where:
        raise NeuroChipError(
            f"Write each --take as ID:FIRST-LAST (e.g. 3f2a9c1d0b4e:9-12), not {text!r}."
        )
    seconds = where.endswith("s")
    return take_id.strip(), where.removesuffix("s"), seconds


def run(args: argparse.Namespace) -> None:
    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise NeuroChipError(
            f"Write the comp as {', '.join(OUTPUT_SUFFIXES)}, not "
            f"{args.output.suffix or 'no extension'}."
        )
    check_outputs(args, [args.output], [], sidecars=True)
    library = TakeLibrary()
    picks = [parse_pick(p) for p in args.picks]
    first = library.get(picks[0][0])
    span_start, duration = first.settings().start_s, first.duration_s
    if all(seconds for _, _, seconds in picks):
        parts = [CompPart(take_id, *parse_range(where, "seconds")) for take_id, where, _ in picks]
    elif any(seconds for _, _, seconds in picks):
        raise NeuroChipError("Give every --take in bars, or every one in seconds (…s).")
    else:
        bars = take_bar_times(library, first)
        if not bars:
            raise NeuroChipError(
                f"The bars of {first.name}'s song are not known (an audio sketch with no bar "
                "grid): pick seconds instead, e.g. ID:0-7.5s."
            )
        ranges = [(take_id, *parse_range(where, "bars")) for take_id, where, _ in picks]
        parts = parts_from_bars(
            [(take_id, int(a), int(b)) for take_id, a, b in ranges], bars, span_start, duration
        )
    comp = comp_takes(library, parts, args.crossfade, name=args.name)
    written = save_take(args.output, library.load_audio(comp.id), comp.metadata, args.bit_depth)
    print(f"Wrote {written} (comp of {len({p.take for p in parts})} takes)")
    print(f"Kept in the take library as {comp.id}: {comp.name}")
