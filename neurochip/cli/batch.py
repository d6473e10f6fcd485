"""``neurochip batch``: a soundtrack's songs x prompts x seeds from a TOML manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_device_option,
    add_library_option,
    add_model_options,
    load_spec,
    model_spec,
    progress_bar,
)
from neurochip.errors import NeuroChipError


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "batch",
        help="render songs x prompts x seeds from a manifest (resumable)",
        description="Render every song of a TOML manifest with every prompt and seed it "
        "lists (see neurochip.batch for the format), into its output folder with an index "
        "(index.json, index.csv). Run it again after a stop: finished items are skipped.",
        epilog=EPILOG,
    )
    parser.add_argument("manifest", type=Path, help="the manifest (.toml)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="the folder to write into instead of the manifest's output (which must lie in "
        "the manifest's folder)",
    )
    parser.add_argument(
        "--bit-depth", choices=("16", "24", "float"), default="16", help="WAV sample format"
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS|local",
        help="render on a Ray cluster: 'auto' joins the one this machine is part of, an "
        "address (ray://host:10001) a remote one, 'local' starts one here; one worker per "
        "GPU, each loading the model once (see docs/CLUSTER.md)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: how many workers (default: one per GPU of the cluster)",
    )
    add_model_options(parser)
    add_device_option(parser)
    add_library_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from neurochip.batch import is_finished, load_manifest, run_batch
    from neurochip.library.store import TakeLibrary

    # All of it checked before the model loads, what the files would replace too.
    items = load_manifest(args.manifest, output=args.output)
    todo = [item for item in items if not is_finished(item)]
    print(
        f"{len(items)} item(s) in {args.manifest.name}: {len(items) - len(todo)} done before, "
        f"{len(todo)} to render.",
        file=sys.stderr,
    )
    if not todo:
        return
    library = None if args.no_library else TakeLibrary()
    if args.ray is not None:
        report = run_on_ray(args, items, library)
    else:
        engine = load_spec(model_spec(args))
        with progress_bar("batch") as update:
            report = run_batch(
                engine, items, library=library, progress=update, bit_depth=args.bit_depth
            )
    folder = items[0].output.parents[1]
    print(f"Rendered {len(report.rendered)}, skipped {len(report.skipped)}; index in {folder}.")
    if report.failed:
        listing = "; ".join(f"{key}: {why}" for key, why in report.failed.items())
        raise NeuroChipError(f"{len(report.failed)} item(s) failed ({listing}).")


def run_on_ray(args: argparse.Namespace, items, library):
    try:
        import ray
    except ImportError:
        raise NeuroChipError(
            "--ray needs Ray: pip install 'neurochip[cluster]' (or pip install ray)."
        ) from None
    from neurochip.cluster import run_batch_on_ray

    if args.workers is not None and args.workers < 1:
        raise NeuroChipError("--workers must be 1 or more.")
    model = model_spec(args)
    model.check(files=False)  # its files are the workers' to find: they may not be here
    if args.ray == "local":
        ray.init(include_dashboard=False)
    else:
        ray.init(address=args.ray)
    try:
        with progress_bar("batch on Ray") as update:
            return run_batch_on_ray(
                items,
                model,
                workers=args.workers,
                library=library,
                progress=update,
                bit_depth=args.bit_depth,
            )
    finally:
        ray.shutdown()
