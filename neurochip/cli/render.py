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
    ace_step_settings,
    add_ace_step_options,
    add_engine_options,
    add_input_options,
    add_library_option,
    add_model_options,
    add_output_options,
    add_phase_options,
    check_outputs,
    default_steps,
    load_spec,
    model_spec,
    non_negative,
    positive,
    progress_bar,
    render_settings,
)
from neurochip.cli.common import add_setting as _setting
from neurochip.engine.ace_step.backend import TRACKS
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import format_duration
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions, default_of, describe
from neurochip.sketch import load_sketch
from neurochip.stems import apply_overrides, check_stems, default_stems, parse_stem
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
    parser.set_defaults(steps=None)  # the engine's own (Riffusion 50, ACE-Step 8)
    add_model_options(parser)
    add_ace_step_options(parser)
    parser.add_argument(
        "--add-part",
        action="append",
        default=[],
        dest="parts",
        metavar="INSTRUMENT=PROMPT",
        help="ACE-Step: also make one instrument alone, playing along with the sketch, as a "
        "stem of its own beside -o (e.g. --add-part 'drums=a live drum kit, dry'). "
        "INSTRUMENT is one of: " + ", ".join(TRACKS) + ". Repeat for each part.",
    )
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
    stems = parser.add_argument_group(
        "stems", "a MIDI sketch's parts, each rendered with an instrument of its own"
    )
    stems.add_argument(
        "--stems",
        action="store_true",
        help="render every part of a MIDI sketch as a stem with its default instrument (from "
        "its GM program and chip voice); -o gets their mix, each stem is written beside it",
    )
    stems.add_argument(
        "--stem",
        action="append",
        default=[],
        dest="stem_overrides",
        metavar="PART=INSTRUMENT",
        help="one stem's instrument (implies --stems): PART is a stem's name or a part's key, "
        "'2+3' plays parts 2 and 3 as one stem; after ':' its denoise and guidance, e.g. "
        "--stem 'Bass=slap bass:0.25'. Repeat for each stem.",
    )
    stems.add_argument(
        "--stems-zip",
        type=Path,
        default=None,
        metavar="ZIP",
        help="also write a ZIP for a DAW (implies --stems): a WAV per stem from the song's "
        "start, the mix, the tempo map as MIDI and stems.json with every setting",
    )
    add_library_option(parser)
    add_phase_options(parser, with_mode=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from neurochip.arrangement import estimate_s
    from neurochip.takeset import ROLES, check_take_set, output_paths, render_take_set, roles

    # Every setting is checked before the (slow) model load.
    if args.loop is not None:
        if len(args.loop) not in (0, 2) or (args.loop and args.loop[1] <= args.loop[0]):
            raise NeuroChipError("Give --loop alone, or --loop START END with END after START.")
        if args.loop:
            args.start, args.duration = args.loop[0], args.loop[1] - args.loop[0]
    default_steps(args)
    settings = render_settings(
        args,
        denoise=args.denoise,
        guidance=args.guidance,
        seed=args.seed,
        loop=args.loop is not None,
        **ace_step_settings(args),
    )
    parts = [parse_part(text) for text in args.parts]
    if parts and args.engine != "ace-step":
        raise NeuroChipError("--add-part needs ACE-Step: add --engine ace-step.")
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
    wants_stems = bool(args.stems or args.stem_overrides or args.stems_zip)
    if wants_stems and options.compare:
        raise NeuroChipError(
            "--stems writes the stems and their mix: leave out --crossfade-compare."
        )
    made = roles(options, settings)
    if not wants_stems:
        check_outputs(args, output_paths(args.output, made).values(), [args.input], sidecars=True)
    sketch = load_sketch(args.input, max_duration_s=args.max_duration)
    if args.engine == "ace-step":  # the song's tempo, metre and key, told to the model
        settings = settings.replace(**ace_step_settings(args, sketch))
    part_paths = {
        name: args.output.with_name(f"{args.output.stem}-part-{name}.wav") for name, _ in parts
    }
    check_outputs(args, part_paths.values(), [args.input], sidecars=True)
    if args.sections:
        bars = sketch_bar_times(sketch)
        transition = args.transition if args.transition is not None else one_bar_s(bars)
        settings = settings.replace(
            sections=parse_timeline(args.sections, bars),
            **({"transition_s": transition} if transition is not None else {}),
        )
    check_take_set(sketch.audio, settings, options)  # all of it, before the slow model load
    stems = None
    if wants_stems:
        stems = apply_overrides(default_stems(sketch), dict(map(parse_stem, args.stem_overrides)))
        check_stems(sketch, stems)
        targets = [args.output, *stem_paths(args.output, stems).values()]
        check_outputs(args, targets, [args.input], sidecars=True)
        if args.stems_zip:
            check_outputs(args, [args.stems_zip], [args.input])  # a ZIP has no sidecar
    library = None if args.no_library else TakeLibrary()
    engine = load_spec(model_spec(args))
    print(f"Model: {engine.describe()}", file=sys.stderr)
    if engine.device.type != "cuda":
        # Off a CUDA GPU a render can take many minutes: say how many before it starts, from
        # a probe of this machine (seconds).
        engine.calibrate(settings)
        estimate = estimate_s(engine, sketch, settings, options, stems)
        if estimate is not None:
            print(
                f"About {format_duration(estimate)} on this {engine.device.type.upper()} "
                "(Ctrl+C stops it; --draft is about 3x faster).",
                file=sys.stderr,
            )

    if stems is not None:
        pair_width = options.width if options.stereo_pair else None
        write_stems(args, engine, sketch, settings, stems, library, pair_width)
        return
    with progress_bar("render") as update:
        takes = render_take_set(engine, sketch, settings, options, library=library, progress=update)
    for path, role in zip(takes.write(args.output, args.bit_depth), takes.files, strict=True):
        print(f"Wrote {path} ({ROLES[role].lower()})")
    if library is not None:
        print(f"Kept {len(takes.saved)} take(s) in the take library {library.root}:")
        for role, take_id in takes.saved.items():
            print(f"  {take_id}  {ROLES[role].lower()}")
    for name, prompt in parts:
        write_part(
            args, engine, sketch, settings.replace(prompt=prompt), name, part_paths[name], library
        )


def parse_part(text: str) -> tuple[str, str]:
    """``INSTRUMENT=PROMPT`` of --add-part."""
    name, _, prompt = text.partition("=")
    name = name.strip().lower()
    if name not in TRACKS:
        raise NeuroChipError(f"--add-part {text!r}: choose an instrument of {', '.join(TRACKS)}.")
    return name, prompt.strip() or name


def write_part(args, engine, sketch, settings, name, path, library) -> None:
    """One instrument alone over the sketch, written beside the mix and kept as a take."""
    from neurochip.parts import render_part

    with progress_bar(f"part: {name}") as update:
        _, take_id = render_part(
            engine, sketch, settings, name, path, library, update, args.bit_depth
        )
    print(f"Wrote {path} (the {name} part, alone)")
    if take_id is not None:
        print(f"  {take_id}  {name} part")


def stem_paths(output: Path, stems) -> dict[str, Path]:
    """Where each stem is written: beside the mix, named after it (``mix-Bass.wav``)."""
    from neurochip.stems_zip import stem_file_names

    names = stem_file_names([stem.name for stem in stems])  # never one file for two stems
    return {
        stem.name: output.with_name(f"{output.stem}-{name}{output.suffix}")
        for stem, name in zip(stems, names, strict=True)
    }


def write_stems(args, engine, sketch, settings, stems, library, pair_width) -> None:
    from neurochip.library.metadata import save_take
    from neurochip.stems import StemMix, render_stems
    from neurochip.stems_zip import write_stems_zip

    mixes = [StemMix()] * len(stems)
    with progress_bar("stems") as update:
        result = render_stems(
            engine,
            sketch,
            settings,
            stems,
            mixes,
            library=library,
            progress=update,
            pair_width=pair_width,
        )
    mix = save_take(args.output, result.mix(mixes), result.mix_metadata(mixes), args.bit_depth)
    print(f"Wrote {mix} (mix of the stems)")
    paths = stem_paths(args.output, stems).values()
    for path, audio, meta in zip(paths, result.audios, result.metadata, strict=True):
        save_take(path, audio, meta, args.bit_depth)
        print(f"Wrote {path} (stem {meta['stem']['name']}: {meta['stem']['prompt']})")
    if args.stems_zip:
        write_stems_zip(args.stems_zip, sketch, result, mixes)
        print(f"Wrote {args.stems_zip} (stems, mix, tempo map and settings for a DAW)")
    if library is not None:
        print(f"Kept {len(result.saved)} take(s) in the take library {library.root}:")
        for name, take_id in result.saved.items():
            print(f"  {take_id}  {'mix of the stems' if name == 'mix' else 'stem ' + name}")
