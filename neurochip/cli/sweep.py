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
    engine_specs,
    load_spec,
    model_spec,
    progress_bar,
    render_settings,
)
from neurochip.engine_comparison import (
    EngineRow,
    best_engines,
    compare_engines,
    comparison_csv,
    comparison_summary,
    engine_grid,
    parse_kinds,
)
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.write import write_text_atomically
from neurochip.kinds import KINDS
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
    parser.add_argument(
        "--engines",
        default=None,
        metavar="KIND,KIND,...",
        help="compare engines instead: render the span with each of these ("
        + ", ".join(KINDS)
        + "), the same seeds each (one batch per engine), each with its own default steps; "
        "each engine's model is its default unless --model KIND=SOURCE names one. "
        "--denoise and --guidance then take one value. An engine that cannot render says why "
        "in the table; the others still do.",
    )
    add_model_options(parser, per_engine=True)
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
    if args.engines is not None:
        run_engines(args)
        return
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
    header = ["cell", "seed"] + ([axis] if axis else []) + ["notes kept", "chroma", "", "file"]
    lines = []
    for i, (variation, name) in enumerate(zip(variations, names, strict=True)):
        s = variation.settings
        line = [str(i + 1), str(s.seed)]
        if axis:
            line.append(f"{getattr(s, axis):g}")
        notes = variation.faithfulness.notes
        line += [
            "-" if notes is None else f"{notes.score:.0%}",
            f"{variation.faithfulness.score:.2f}",
            "best" if i == best else "",
            name,
        ]
        lines.append(line)
    widths = [max(len(r[k]) for r in [header, *lines]) for k in range(len(header))]
    text = [
        "Notes kept by each take (the share of the sketch's notes it plays), and the chroma "
        "match beside it (1.00: the same pitch classes; unrelated music about 0.5 or less):"
    ]
    for line in [header, *lines]:
        # Numbers right-aligned; the mark and the file name left-aligned.
        cells = [
            c.rjust(w) if k < len(line) - 2 else c.ljust(w)
            for k, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  " + "  ".join(cells).rstrip())
    return "\n".join(text)


# --- --engines: engines compared -----------------------------------------------------------------


def run_engines(args: argparse.Namespace) -> None:
    """``sweep --engines``: the span with each engine, the same seeds each, one batch each."""
    kinds = parse_kinds(args.engines)
    seeds = _numbers(args.seeds, "--seeds", whole=True)
    fixed = {}
    for axis in ("denoise", "guidance"):
        text = getattr(args, axis)
        if text is not None:
            values = _numbers(text, f"--{axis}")
            if len(values) != 1:
                raise NeuroChipError(
                    f"--engines compares engines across seeds: give --{axis} one value (every "
                    f"take's), not {text!r}; sweep {axis} values with one engine at a time."
                )
            fixed[axis] = values[0]
    base = render_settings(args, **fixed)
    specs = engine_specs(args, kinds)
    for spec in specs:
        spec.check()  # a LoRA's path, a device's name: said before any work
    source_name = args.input.name
    names = [
        [take_filename(source_name, cell, KIND, ".wav", engine=kind) for cell in grid.cells]
        for kind, grid in ((k, engine_grid(base, k, seeds)) for k in kinds)
    ]
    every = [name for row in names for name in row]
    if len(set(every)) < len(every):
        raise NeuroChipError("Two takes would get the same file name: choose other seeds.")
    _check_folder(args, every)
    sketch = load_sketch(args.input, max_duration_s=args.max_duration)
    check_take_set(sketch.audio, base, TakeSetOptions())  # the span lies in the song
    library = None if args.no_library else TakeLibrary()

    with progress_bar(f"{len(kinds)} engine(s) x {len(seeds)} seed(s)") as update:
        rows = compare_engines(
            specs,
            sketch,
            base,
            seeds,
            bar_times_s=sketch_bar_times(sketch),
            progress=update,
            load=load_spec,
        )
    if not any(row.ok for row in rows):
        said = "; ".join(f"{row.name}: {row.error}" for row in rows)
        raise NeuroChipError(f"No engine rendered the span. {said}")

    folder: Path = args.output
    files = [row_names if row.ok else [] for row, row_names in zip(rows, names, strict=True)]
    kept = 0
    for row, row_files in zip(rows, files, strict=True):
        for name, cell in zip(row_files, row.cells, strict=True):
            save_take(
                folder / name,
                cell.render.audio,
                variation_metadata(cell, sketch.name),
                args.bit_depth,
            )
        if library is not None and row.ok:
            kept += len(keep_variations(library, row.cells, sketch.name))
    write_text_atomically(folder / "summary.csv", comparison_csv(rows, files))
    data = comparison_summary(rows, files, sketch.name)
    write_text_atomically(
        folder / "summary.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    )
    print(engines_table(rows, files))
    written = sum(len(f) for f in files)
    print(f"Wrote {written} takes and {', '.join(SUMMARY_FILES)} to {folder}.")
    if library is not None:
        print(f"Kept {kept} take(s) in the take library {library.root}.")


def engines_table(rows: Sequence[EngineRow], files: Sequence[Sequence[str]]) -> str:
    """One line per take: engine, seed, notes kept, chroma, seconds (the engine's time per
    seed), file; the engine that keeps the most notes marked; an engine that could not render
    says why on its line."""
    best = best_engines(rows)
    header = ["engine", "seed", "notes kept", "chroma", "seconds", "", "file"]
    lines, refused = [], []
    for i, (row, row_files) in enumerate(zip(rows, files, strict=True)):
        if not row.ok:
            refused.append(f"  {row.kind}: {row.error}")
            continue
        mark = ("best" if len(best) == 1 else "tied best") if i in best else ""
        for cell, name in zip(row.cells, row_files, strict=True):
            faith = cell.faithfulness
            lines.append(
                [
                    row.kind,
                    str(cell.settings.seed),
                    f"{faith.kept:.2f}",
                    f"{faith.score:.2f}",
                    f"{row.seconds_per_seed:.1f}",
                    mark,
                    name,
                ]
            )
    widths = [max(len(r[k]) for r in [header, *lines]) for k in range(len(header))]
    text = [
        "Notes kept by each engine's takes (1.00 keeps every note; chroma: unrelated music "
        "scores about 0.5 or less; seconds: the engine's time per seed, rendered together):"
    ]
    for line in [header, *lines]:
        cells = [
            c.ljust(w) if k in (0, 5, 6) else c.rjust(w)
            for k, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  " + "  ".join(cells).rstrip())
    if refused:
        text += ["Engines that could not render:", *refused]
    return "\n".join(text)
