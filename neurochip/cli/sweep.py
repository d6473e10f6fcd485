"""``neurochip sweep``: one span of a sketch across seeds x denoise (or guidance), side by side.

Every cell is rendered in one denoising loop and scored for note faithfulness: the work is
:func:`neurochip.variations.render_variations`, the same call the app's variation grid makes.
Writes one file per cell (its settings inside) and a summary table (CSV and JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_engine_options,
    add_input_options,
    add_library_option,
    add_model_options,
    add_phase_options,
    add_setting,
    check_outputs,
    load_spec,
    model_spec,
    progress_bar,
    render_settings,
)
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.write import write_text_atomically
from neurochip.library.metadata import save_take
from neurochip.library.names import take_filename
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions, default_of, describe
from neurochip.sketch import load_sketch
from neurochip.takeset import check_take_set
from neurochip.variations import (
    KIND,
    MAX_VALUES,
    Variation,
    VariationGrid,
    best_variation,
    keep_variations,
    render_variations,
    summary,
    summary_csv,
    variation_grid,
    variation_metadata,
)

SUMMARY_FILES = ("summary.csv", "summary.json")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "sweep",
        help="render one span across seeds x denoise (or guidance), with note faithfulness",
        description="Render the same span of a song with several seeds (rows) and several "
        "denoise or guidance values (columns), up to 4 x 4, all in one denoising loop. "
        "Writes one take per cell into OUT_DIR, each carrying its settings, and a summary "
        "(summary.csv, summary.json) with each take's note faithfulness: how well it keeps "
        "the sketch's notes (1.00 keeps every note).",
        epilog=EPILOG,
    )
    parser.add_argument(
        "input", type=Path, help="your sketch: WAV, MP3, FLAC, OGG, MIDI, tracker file..."
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT_DIR",
        help="the folder to write the takes and the summary into (made if missing)",
    )
    parser.add_argument("--prompt", required=True, help=describe(RenderSettings, "prompt").help)
    parser.add_argument(
        "--seeds",
        required=True,
        metavar="S1,S2,...",
        help=f"the seeds of the rows, 1 to {MAX_VALUES}, e.g. 1,2,3",
    )
    parser.add_argument(
        "--denoise",
        default=None,
        metavar="D1,D2,...",
        help=f"the denoise values of the columns, 1 to {MAX_VALUES}, e.g. 0.25,0.35,0.45 "
        f"(default: one column at {default_of(RenderSettings, 'denoise')}). "
        + describe(RenderSettings, "denoise").help,
    )
    parser.add_argument(
        "--guidance",
        default=None,
        metavar="G1,G2,...",
        help=f"the guidance values of the columns instead, 1 to {MAX_VALUES}, e.g. 5,7,9; "
        "with a single --denoise value, that denoise is used in every cell. "
        + describe(RenderSettings, "guidance").help,
    )
    add_setting(parser, "--negative-prompt", RenderSettings, "negative_prompt", metavar="TEXT")
    add_setting(parser, "--steps", RenderSettings, "steps", type=int)
    add_setting(parser, "--scheduler", RenderSettings, "scheduler", metavar="NAME")
    add_model_options(parser)
    add_input_options(parser)
    add_engine_options(parser)
    parser.add_argument(
        "--bit-depth",
        choices=("16", "24", "float"),
        default="16",
        help="sample format of the WAV files (default: 16-bit)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files of the same names already in OUT_DIR that NeuroChip did not "
        "write (takes it wrote are replaced without it; your inputs and the take library's "
        "files never are)",
    )
    add_library_option(parser)
    add_phase_options(parser, with_mode=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:

    # Every setting, the grid and the files are checked before the (slow) model load.
    grid = _grid(args)
    source_name = args.input.name
    names = _file_names(grid, source_name)
    _check_folder(args, names)
    sketch = load_sketch(args.input, max_duration_s=args.max_duration)
    check_take_set(sketch.audio, grid.base, TakeSetOptions())  # the span lies in the song
    bars = sketch_bar_times(sketch)
    library = None if args.no_library else TakeLibrary()
    engine = load_spec(model_spec(args))
    print(f"Model: {engine.describe()}", file=sys.stderr)

    rows, columns = grid.shape
    with progress_bar(f"sweep ({rows} x {columns})") as update:
        variations = render_variations(engine, sketch, grid, bar_times_s=bars, progress=update)
    if library is not None:
        kept = keep_variations(library, variations, sketch.name)

    folder: Path = args.output
    for name, variation in zip(names, variations, strict=True):
        metadata = variation_metadata(variation, sketch.name)
        save_take(folder / name, variation.render.audio, metadata, args.bit_depth)
    write_text_atomically(folder / "summary.csv", summary_csv(grid, variations, names))
    data = {**summary(grid, variations, names, sketch.name), **variations[0].render.info}
    write_text_atomically(
        folder / "summary.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    )
    print(table(grid, variations, names))
    print(f"Wrote {len(names)} takes and {', '.join(SUMMARY_FILES)} to {folder}.")
    if library is not None:
        print(f"Kept {len(kept)} take(s) in the take library {library.root}.")


def _grid(args: argparse.Namespace) -> VariationGrid:
    seeds = _numbers(args.seeds, "--seeds", whole=True)
    denoise = None if args.denoise is None else _numbers(args.denoise, "--denoise")
    guidance = None if args.guidance is None else _numbers(args.guidance, "--guidance")
    fixed = {}
    if denoise is not None and guidance is not None:
        # One value of either is a setting for every cell, not a column.
        if len(denoise) == 1:
            fixed["denoise"], denoise = denoise[0], None
        elif len(guidance) == 1:
            fixed["guidance"], guidance = guidance[0], None
    base = render_settings(args, **fixed)
    return variation_grid(base, seeds, denoise=denoise, guidance=guidance)


def _numbers(text: str, flag: str, whole: bool = False) -> list:
    """``1,2,3`` -> [1, 2, 3]; anything else is one clear message."""
    kind = "whole numbers" if whole else "numbers"
    example = "1,2,3" if whole else "0.25,0.35,0.45"
    items = [item.strip() for item in text.split(",")]
    try:
        if not all(items):
            raise ValueError
        return [int(item) if whole else float(item) for item in items]
    except ValueError:
        raise NeuroChipError(
            f"{flag} takes {kind} separated by commas, e.g. {flag} {example}; not {text!r}."
        ) from None


def _file_names(grid: VariationGrid, source_name: str) -> list[str]:
    names = [take_filename(source_name, cell, KIND, ".wav") for cell in grid.cells]
    if len(set(names)) < len(names):
        raise NeuroChipError(
            "Two cells of this grid would get the same file name: their values differ only "
            "past the sixth digit. Choose values further apart."
        )
    return names


def _check_folder(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse, before any work, a folder that is a file, and files the one rule keeps
    (:func:`~neurochip.cli.common.check_outputs`): the takes and their sidecars, and the
    summaries (which carry no mark of ours: replaced only with --overwrite).
    """
    folder: Path = args.output
    if folder.exists() and not folder.is_dir():
        raise NeuroChipError(
            f"{folder} is a file, not a folder: -o takes the folder to write the takes into."
        )
    elsewhere = "choose another folder (-o)"
    check_outputs(
        args, [folder / name for name in names], [args.input], sidecars=True, elsewhere=elsewhere
    )
    check_outputs(args, [folder / s for s in SUMMARY_FILES], [args.input], elsewhere=elsewhere)


def table(grid: VariationGrid, variations: Sequence[Variation], names: Sequence[str]) -> str:
    """One line per cell, in the grid's order; the cell that keeps the notes best marked."""
    best = best_variation(variations)
    axis = grid.column_axis
    header = ["cell", "seed"] + ([axis] if axis else []) + ["faithfulness", "", "file"]
    lines = []
    for i, (variation, name) in enumerate(zip(variations, names, strict=True)):
        s = variation.settings
        line = [str(i + 1), str(s.seed)]
        if axis:
            line.append(f"{getattr(s, axis):g}")
        line += [f"{variation.faithfulness.score:.2f}", "best" if i == best else "", name]
        lines.append(line)
    widths = [max(len(r[k]) for r in [header, *lines]) for k in range(len(header))]
    text = [
        "Note faithfulness of each take (1.00 keeps every note; unrelated music scores about "
        "0.5 or less):"
    ]
    for line in [header, *lines]:
        # Numbers right-aligned; the mark and the file name left-aligned.
        cells = [
            c.rjust(w) if k < len(line) - 2 else c.ljust(w)
            for k, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  " + "  ".join(cells).rstrip())
    return "\n".join(text)
