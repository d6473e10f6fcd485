"""``neurochip reroll``: render one part of a take again, the rest kept sample for sample.

Collects the region and the changes, shows progress, writes the files: the work itself is
:func:`neurochip.reroll.reroll_take`.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from neurochip.bars import BarGrid, estimate_bar_grid
from neurochip.cli.common import (
    EPILOG,
    add_device_option,
    add_library_option,
    add_model_options,
    add_output_options,
    check_outputs,
    load_spec,
    model_spec,
    progress_bar,
)
from neurochip.engine import REROLL_MARGIN_S
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.decode import load_audio
from neurochip.library.metadata import read_take_metadata, save_take, settings_in
from neurochip.library.store import TakeLibrary
from neurochip.model_spec import ModelSpec
from neurochip.settings import RenderSettings, describe
from neurochip.sketch import load_sketch

OUTPUT_SUFFIXES = (".wav", ".flac", ".ogg")

#: Most candidates for a region in one pass (like a row of the variation grid).
MAX_CANDIDATES = 8


def candidates_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_CANDIDATES:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_CANDIDATES}, not {text}")
    return value


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "reroll",
        help="render one part of a take again (a bar that went wrong), keeping the rest",
        description="Render a region of a take again with a new seed (or other settings): "
        "everything outside the region and a short blend on each side stays exactly as it "
        "was, sample for sample, and the new bars grow out of the music around them. TAKE is "
        "a file `neurochip render` wrote (its settings are inside); SKETCH is the song it was "
        "rendered from.",
        epilog=EPILOG,
    )
    parser.add_argument("sketch", type=Path, help="the sketch the take was rendered from")
    parser.add_argument("take", type=Path, help="the take: take A or B (not the stereo pair)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bars", metavar="FIRST-LAST", help="bars of the song, e.g. 9-12 (MIDI sketches)"
    )
    where.add_argument("--seconds", metavar="START-END", help="seconds of the song, e.g. 12.5-20")
    add_output_options(parser)
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the region's new seed (default: a random one, printed)",
    )
    parser.add_argument(
        "--candidates",
        type=candidates_count,
        default=1,
        metavar="N",
        help="render N candidates (seeds SEED, SEED+1, ...) in one pass: OUT-1, OUT-2, ...",
    )
    for flag, name in (("--denoise", "denoise"), ("--guidance", "guidance")):
        about = describe(RenderSettings, name)
        parser.add_argument(
            flag, type=float, default=None, help=f"{about.help} (default: the take's own)"
        )
    parser.add_argument("--prompt", default=None, help="a new prompt for the region")
    parser.add_argument(
        "--margin",
        type=float,
        default=REROLL_MARGIN_S,
        metavar="SEC",
        help=f"the blend into the take on each side (default {REROLL_MARGIN_S} s)",
    )
    grid = parser.add_argument_group(
        "bars of an audio sketch",
        "A MIDI sketch brings its bars. For audio, --bars counts on the grid the take was "
        "rendered with (set in the app), else on one found by beat tracking; these correct it.",
    )
    grid.add_argument("--bpm", type=float, default=None, help="the song's tempo")
    grid.add_argument(
        "--downbeat", type=float, default=None, metavar="SEC", help="where bar 1 starts"
    )
    grid.add_argument(
        "--beats-per-bar", type=int, default=None, metavar="N", help="beats to a bar (default 4)"
    )
    parser.add_argument(
        "--which",
        choices=("A", "B"),
        default=None,
        help="which take's settings, where the file holds two (default: its own)",
    )
    add_model_options(parser)
    add_device_option(parser)
    add_library_option(parser)
    parser.set_defaults(run=run)


def output_paths(output: Path, candidates: int) -> list[Path]:
    if candidates == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(candidates)]


def audio_bar_grid(args: argparse.Namespace, sketch, metadata: dict) -> BarGrid | None:
    """The bars of an audio sketch: the take's grid, else beat tracking's, with the options'
    corrections; said on stderr, so a wrong guess is seen before the render."""
    grid = BarGrid.from_dict(metadata.get("bar_grid"))
    found = "the take's grid"
    if grid is None:
        grid = estimate_bar_grid(sketch.audio)
        found = "beat tracking"
    if grid is None and args.bpm is None:
        raise NeuroChipError(
            f"No steady beat found in {sketch.name}: give --bpm and --downbeat, or the region "
            "in seconds."
        )
    base = grid or BarGrid(args.bpm)
    changed = {
        "bpm": args.bpm if args.bpm is not None else base.bpm,
        "downbeat_s": args.downbeat if args.downbeat is not None else base.downbeat_s,
        "beats_per_bar": args.beats_per_bar or base.beats_per_bar,
    }
    grid = BarGrid(**changed)
    print(
        f"Bars from {found}: {grid.bpm:g} BPM, {grid.beats_per_bar} beats, bar 1 at "
        f"{grid.downbeat_s:.2f} s (correct with --bpm, --downbeat, --beats-per-bar).",
        file=sys.stderr,
    )
    return grid


def _note_other_model(name: str, metadata: dict, spec: ModelSpec) -> None:
    """Say so where the take was rendered with other weights than the re-roll's model."""
    made = ModelSpec.of_take_if_known(metadata)
    if made is not None and not made.same_model(spec):
        print(
            f"neurochip: note: {name} was rendered with {made.describe()}, not "
            f"{spec.describe()} (--model, --lora): the new bars may not match the rest.",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> None:
    from neurochip.reroll import candidate_settings, region_of_take, reroll_take

    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise NeuroChipError(
            f"Write re-rolled takes as {', '.join(OUTPUT_SUFFIXES)} (the rest of the take must "
            f"stay sample for sample), not {args.output.suffix or 'no extension'}."
        )
    outputs = output_paths(args.output, args.candidates)
    check_outputs(args, outputs, [args.sketch, args.take], sidecars=True)
    # All of it is checked before the slow model load.
    metadata = read_take_metadata(args.take)
    parent_settings = settings_in(metadata, args.which, args.take.name)
    parent = load_audio(args.take, sample_rate=None)  # as written: a 48 kHz take stays 48 kHz
    sketch = load_sketch(args.sketch)
    if sketch.name and metadata.get("source") and metadata["source"] != sketch.name:
        print(
            f"neurochip: note: {args.take.name} was rendered from {metadata['source']}, "
            f"not {sketch.name}.",
            file=sys.stderr,
        )
    made = ModelSpec.of_take_if_known(metadata)
    if made is not None and args.model is None and made.kind != args.engine:
        # The model that made the take, where none is named: another kind cannot repaint it.
        args.engine, args.model = made.kind, made.source
    spec = model_spec(args)
    _note_other_model(args.take.name, metadata, spec)
    if args.bars and sketch.midi is None:
        sketch = sketch.with_bar_grid(audio_bar_grid(args, sketch, metadata))
    duration = parent.duration_s
    region = region_of_take(
        parent_settings.start_s,
        duration,
        bars=args.bars,
        seconds=args.seconds,
        bar_times_s=sketch_bar_times(sketch) if args.bars else None,
    )
    seed = args.seed if args.seed is not None else random.randrange(0, 2**31)
    seeds = [(seed + i) % 2**32 for i in range(args.candidates)]
    candidates = candidate_settings(
        parent_settings,
        seeds,
        denoise=args.denoise,
        guidance=args.guidance,
        prompt=args.prompt,
        duration_s=duration,
    )
    library = None if args.no_library else TakeLibrary()
    engine = load_spec(spec)
    what = f"bars {region.bars[0]}-{region.bars[1]}" if region.bars else "the region"
    print(
        f"Re-rolling {what} ({parent_settings.start_s + region.start_s:.2f}-"
        f"{parent_settings.start_s + region.end_s:.2f} s of the song) with seed "
        + ", ".join(str(s) for s in seeds),
        file=sys.stderr,
    )
    with progress_bar("reroll") as update:
        results = reroll_take(
            engine,
            sketch,
            parent,
            metadata,
            region,
            candidates,
            parent_ref=args.take.name,
            margin_s=args.margin,
            library=library,
            progress=update,
        )
    for path, result in zip(outputs, results, strict=True):
        written = save_take(path, result.render.audio, result.metadata, args.bit_depth)
        score = (result.metadata.get("faithfulness") or {}).get("score")
        kept = f", notes kept {score:.2f}" if isinstance(score, float) else ""
        print(f"Wrote {written} (seed {result.render.settings.seed}{kept})")
    if library is not None:
        print(f"Kept {len(results)} take(s) in the take library {library.root}:")
        for result in results:
            print(f"  {result.take_id}  seed {result.render.settings.seed}")
