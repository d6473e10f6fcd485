"""``neurochip render``: a sketch through Riffusion, as one piece, with its takes.

Collects settings, shows progress and reports the files: the work itself is
:func:`neurochip.takeset.render_take_set`, the same call the app makes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_engine_options,
    add_input_options,
    add_library_option,
    add_model_options,
    add_output_options,
    add_phase_options,
    check_outputs,
    load_engine,
    non_negative,
    positive,
    progress_bar,
    render_settings,
)
from neurochip.cli.common import add_setting as _setting
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import format_duration
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions, default_of, describe
from neurochip.sketch import load_sketch
from neurochip.timeline import one_bar_s, parse_timeline

OUTPUT_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "render",
        help="render a song as a live cover with Riffusion",
        description="Render a song (or a span of it) through Riffusion img2img as one piece: "
        "the output has exactly the input's length and stays aligned with it. Each output "
        "file carries its settings, so any take can be reproduced, and every take is also "
        "kept in the take library the app shows.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "input", type=Path, help="your sketch: WAV, MP3, FLAC, OGG, MIDI, tracker file..."
    )
    add_output_options(parser)
    parser.add_argument("--prompt", required=True, help=describe(RenderSettings, "prompt").help)
    _setting(parser, "--negative-prompt", RenderSettings, "negative_prompt", metavar="TEXT")
    _setting(parser, "--denoise", RenderSettings, "denoise", type=float)
    _setting(parser, "--guidance", RenderSettings, "guidance", type=float)
    _setting(parser, "--steps", RenderSettings, "steps", type=int)
    _setting(parser, "--seed", RenderSettings, "seed", type=int)
    _setting(parser, "--scheduler", RenderSettings, "scheduler", metavar="NAME")
    add_model_options(parser)
    add_input_options(parser)
    add_engine_options(parser)
    _setting(parser, "--stereo-pair", TakeSetOptions, "stereo_pair", action="store_true")
    _setting(parser, "--seed-b", TakeSetOptions, "seed_b", type=int, metavar="SEED")
    _setting(parser, "--width", TakeSetOptions, "width", type=float)
    _setting(parser, "--crossfade-compare", TakeSetOptions, "compare", action="store_true")
    _setting(
        parser, "--crossfade-at", TakeSetOptions, "compare_at_s", type=non_negative, metavar="SEC"
    )
    _setting(
        parser, "--crossfade-length", TakeSetOptions, "compare_fade_s", type=positive, metavar="SEC"
    )
    _setting(
        parser,
        "--crossfade-back",
        TakeSetOptions,
        "compare_back_s",
        type=non_negative,
        metavar="SEC",
    )
    parser.add_argument(
        "--section",
        action="append",
        default=[],
        dest="sections",
        metavar="START=PROMPT",
        help="a prompt timeline: from START (seconds, or 'bar N' of a MIDI sketch) this "
        "prompt, e.g. --section '0=soft strings' --section 'bar 17=full funk band:0.5' (the "
        "number after ':' is that section's denoise). Repeat for each section.",
    )
    parser.add_argument(
        "--transition",
        type=non_negative,
        default=None,
        metavar="SEC",
        help="how long the band takes to change at a section boundary (default: one bar where "
        "the sketch's bars are known, else "
        f"{default_of(RenderSettings, 'transition_s'):g} s)",
    )
    parser.add_argument(
        "--loop",
        nargs="*",
        type=non_negative,
        default=None,
        metavar="SEC",
        help=describe(RenderSettings, "loop").help
        + " --loop alone loops the span (--start, --duration); --loop START END loops that "
        "part of the song. WAV files get a smpl chunk, OGG and FLAC LOOPSTART/LOOPLENGTH.",
    )
    add_library_option(parser)
    add_phase_options(parser, with_mode=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from neurochip.takeset import ROLES, check_take_set, output_paths, render_take_set, roles

    # Every setting is checked before the (slow) model load.
    if args.loop is not None:
        if len(args.loop) not in (0, 2) or (args.loop and args.loop[1] <= args.loop[0]):
            raise NeuroChipError("Give --loop alone, or --loop START END with END after START.")
        if args.loop:
            args.start, args.duration = args.loop[0], args.loop[1] - args.loop[0]
    settings = render_settings(
        args,
        denoise=args.denoise,
        guidance=args.guidance,
        seed=args.seed,
        loop=args.loop is not None,
    )
    for warning in settings.warnings():
        print(f"neurochip: note: {warning}", file=sys.stderr)
    options = TakeSetOptions(
        stereo_pair=args.stereo_pair,
        seed_b=args.seed_b,
        width=args.width,
        compare=args.compare,
        compare_at_s=args.compare_at_s,
        compare_fade_s=args.compare_fade_s,
        compare_back_s=args.compare_back_s,
    )
    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise NeuroChipError(
            f"Write renders as {', '.join(OUTPUT_SUFFIXES)}, not "
            f"{args.output.suffix or 'no extension'}."
        )
    made = roles(options, settings)
    check_outputs(args, output_paths(args.output, made).values(), [args.input])
    sketch = load_sketch(args.input, max_duration_s=args.max_duration)
    if args.sections:
        bars = sketch_bar_times(sketch)
        transition = args.transition if args.transition is not None else one_bar_s(bars)
        settings = settings.replace(
            sections=parse_timeline(args.sections, bars),
            **({"transition_s": transition} if transition is not None else {}),
        )
    check_take_set(sketch.audio, settings, options)  # all of it, before the slow model load
    library = None if args.no_library else TakeLibrary()
    engine = load_engine(args)
    print(f"Model: {engine.model.describe()}", file=sys.stderr)
    if engine.model.device.type != "cuda":
        # Off a CUDA GPU a render can take many minutes: say how many before it starts, from
        # a probe of this machine (seconds).
        engine.calibrate(settings)
        planned = [settings, options.take_b(settings)] if options.stereo_pair else [settings]
        estimate = engine.estimate_s(sketch.audio, planned)
        if estimate is not None:
            print(
                f"About {format_duration(estimate)} on this {engine.model.device.type.upper()} "
                "(Ctrl+C stops it; --draft is about 3x faster).",
                file=sys.stderr,
            )

    with progress_bar("render") as update:
        takes = render_take_set(engine, sketch, settings, options, library=library, progress=update)
    for path, role in zip(takes.write(args.output, args.bit_depth), takes.files, strict=True):
        print(f"Wrote {path} ({ROLES[role].lower()})")
    if library is not None:
        print(f"Kept {len(takes.saved)} take(s) in the take library {library.root}:")
        for role, take_id in takes.saved.items():
            print(f"  {take_id}  {ROLES[role].lower()}")
