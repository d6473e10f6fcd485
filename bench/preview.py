"""Benchmark: slider change to audio -- how long a composer waits for a preview.

A preview is ``Engine.preview``: one 5.12 s region of the song rendered with the current
settings, reusing the song's cached encoding. Two cases, both on the same song:

* **first**: the song was just loaded (a fresh engine, nothing cached): the preview pays for
  encoding the song first;
* **cached**: the song's encoding is kept and a setting changed (the seed, here: every repeat
  is a new seed, as a composer trying seeds would make), so only the region is rendered.

Each case runs twice: as the default (``FAITHFUL_PREVIEW``) and as a quick preview
(``QUICK_PREVIEW``: a quarter window of context, 2 Griffin-Lim iterations). ``--accuracy N``
also measures what quick costs: how far each kind of preview's picture lies from the same
region of the full render, at N positions of a 30 s song (RMS of the [0, 1] picture; another
seed's full render is the scale).

Each row has the wall time and where it went (encode, denoise, decode, phase: read off the
engine's progress reports; on CUDA each report waits for the GPU first, so a stage's time is
its own), the UNet items and calls, and the peak GPU memory.

Models: ``tiny`` is the tests' tiny random-weight model (``tests/tiny_model.py``), the one the
issue's CPU targets are stated for; ``quick`` and ``full`` are ``bench/render.py``'s reduced
and real-size Stable Diffusion 1.5 architectures. **All weights are random**: the previews are
noise; only the times and counts mean anything.

    .venv/bin/python bench/preview.py                       # tiny model, CPU
    .venv/bin/python bench/preview.py --model full          # SD 1.5 size (GPU; minutes on CPU)
    .venv/bin/python bench/preview.py --song-seconds 180 --repeat 5 --json preview.json
    .venv/bin/python bench/preview.py --accuracy 5          # quick vs faithful vs full render
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

# bench/render.py (next to this file, so importable when this runs as a script) owns the
# random-weight SD 1.5 builder, the work counter and the benchmark's settings.
from render import (
    FULL,
    QUICK,
    StageTimer,
    build_model,
    count_work,
    import_tests,
    neurochip_settings,
    synchronize,
)

from neurochip.device import describe_device, resolve_device
from neurochip.engine import (
    FAITHFUL_PREVIEW,
    PREVIEW_SECONDS,
    QUICK_PREVIEW,
    STAGES,
    Engine,
    PreviewQuality,
)
from neurochip.io import Audio
from neurochip.model import RiffusionModel, load_model, resolve_dtype


@dataclass
class PreviewRun:
    """One timed preview: a JSON row."""

    case: str  # "first" or "cached"
    wall_s: float
    stages_s: dict[str, float]
    unet_items: int
    unet_calls: int
    peak_gpu_mib: float | None


@dataclass
class Summary:
    case: str
    runs: int
    median_s: float
    best_s: float
    stages_median_s: dict[str, float]
    unet_items: int
    unet_calls: int
    peak_gpu_mib: float | None
    wall_s_all: list[float] = field(default_factory=list)


def timed_preview(
    engine: Engine,
    song: Audio,
    settings,
    start_s: float,
    case: str,
    grid: list | None = None,
    quality: PreviewQuality = FAITHFUL_PREVIEW,
) -> PreviewRun:
    device = engine.model.device
    timer = StageTimer(device)
    progress = timer.progress

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with count_work(engine.model) as work:
        synchronize(device)
        began = time.perf_counter()
        timer.start()
        if grid:
            engine.preview_many(song, grid, start_s, progress=progress, quality=quality)
        else:
            engine.preview(song, settings, start_s, progress=progress, quality=quality)
        synchronize(device)
        wall = time.perf_counter() - began
    stages = timer.seconds()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return PreviewRun(case, wall, stages, work.unet_items, work.unet_calls, peak)


def summarise(runs: Sequence[PreviewRun]) -> Summary:
    walls = [r.wall_s for r in runs]
    return Summary(
        case=runs[0].case,
        runs=len(runs),
        median_s=statistics.median(walls),
        best_s=min(walls),
        stages_median_s={
            s: statistics.median(r.stages_s.get(s, 0.0) for r in runs) for s in STAGES
        },
        unet_items=runs[0].unet_items,
        unet_calls=runs[0].unet_calls,
        peak_gpu_mib=max((r.peak_gpu_mib or 0.0) for r in runs) if runs[0].peak_gpu_mib else None,
        wall_s_all=walls,
    )


def build(model_name: str, device: torch.device, dtype: torch.dtype) -> RiffusionModel:
    if model_name == "tiny":
        import_tests()
        from tests.tiny_model import build_tiny_model

        folder = build_tiny_model(Path(tempfile.mkdtemp(prefix="neurochip-bench-")) / "tiny")
        return load_model(str(folder), str(device), {torch.float16: "fp16"}.get(dtype, "fp32"))
    return build_model(FULL if model_name == "full" else QUICK, device, dtype)


def attach_random_preview_vae(model: RiffusionModel, model_name: str) -> None:
    """A random-weight tiny VAE for quick previews: TAESD's own architecture (diffusers'
    ``AutoencoderTiny`` defaults), or for the tiny model the tests' tinier one."""
    from diffusers import AutoencoderTiny

    from neurochip.preview_vae import attach_preview_vae

    if model_name == "tiny":
        import_tests()
        from tests.tiny_model import build_tiny_preview_vae

        folder = build_tiny_preview_vae(Path(tempfile.mkdtemp(prefix="neurochip-bench-")) / "t")
        vae = AutoencoderTiny.from_pretrained(folder)
    else:
        vae = AutoencoderTiny()
    attach_preview_vae(model, vae.eval().requires_grad_(False), "random TAESD")


def print_table(summaries: Sequence[Summary]) -> None:
    header = (
        f"{'case':<12} {'runs':>4} {'median s':>9} {'best s':>7}  "
        + " ".join(f"{s:>8}" for s in STAGES)
        + f"  {'UNet items':>10} {'calls':>5}  {'peak GPU MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        peak = f"{s.peak_gpu_mib:12.0f}" if s.peak_gpu_mib else f"{'n/a':>12}"
        stages = " ".join(f"{s.stages_median_s[k]:8.3f}" for k in STAGES)
        print(
            f"{s.case:<12} {s.runs:>4} {s.median_s:9.3f} {s.best_s:7.3f}  {stages}  "
            f"{s.unet_items:>10} {s.unet_calls:>5}  {peak}"
        )
    print("stage columns: median seconds; 'first' includes encoding the whole song")


def measure_accuracy(model: RiffusionModel, settings, positions: int) -> dict[str, float]:
    """Mean RMS distance of previews' pictures from the full render's, at ``positions``."""
    from tests.chiptune import make_chiptune

    song = Audio(make_chiptune(30.0, stereo=False, seed=1), 44100)
    engine = Engine(model)
    print("accuracy: two full renders of a 30 s song ...", file=sys.stderr, flush=True)
    full = engine.render(song, settings).output_image
    other = engine.render(song, replace(settings, seed=settings.seed + 1)).output_image
    starts = [
        2.0 + k * (30.0 - 4.0 - PREVIEW_SECONDS) / max(1, positions - 1) for k in range(positions)
    ]
    distances: dict[str, list[float]] = {"faithful": [], "quick": [], "another seed": []}
    for start in starts:
        for name, quality in (("faithful", FAITHFUL_PREVIEW), ("quick", QUICK_PREVIEW)):
            preview = engine.preview(song, settings, start, quality=quality)
            first = round(preview.start_s * 100)
            region = full[..., first : first + preview.output_image.shape[-1]]
            distances[name].append(float((preview.output_image - region).pow(2).mean().sqrt()))
        seed_region = other[..., first : first + preview.output_image.shape[-1]]
        distances["another seed"].append(float((seed_region - region).pow(2).mean().sqrt()))
    result = {name: statistics.mean(values) for name, values in distances.items()}
    print(
        f"\npicture RMS from the full render, mean of {positions} positions: "
        + ", ".join(f"{name} {value:.4f}" for name, value in result.items())
    )
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Preview latency (slider change to audio), random weights: speed only."
    )
    parser.add_argument(
        "--model",
        choices=("tiny", "quick", "full"),
        default=None,
        help="tiny: the tests' model; quick/full: SD 1.5 layout reduced/real size "
        "(default: full on CUDA, tiny elsewhere)",
    )
    parser.add_argument("--song-seconds", type=float, default=180.0, help="song length (180)")
    parser.add_argument("--start", type=float, default=60.0, help="preview start, s (60)")
    parser.add_argument("--steps", type=int, default=50, help="scheduler steps (50)")
    parser.add_argument("--denoise", type=float, default=0.35, help="img2img strength (0.35)")
    parser.add_argument("--repeat", type=int, default=5, help="cached previews timed (5)")
    parser.add_argument("--first-repeat", type=int, default=2, help="first previews timed (2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument(
        "--grid",
        type=int,
        default=3,
        help="also time a variation grid of N seeds x N denoise values of the region in one "
        "loop (3; 0 for none)",
    )
    parser.add_argument(
        "--accuracy",
        type=int,
        default=0,
        help="also measure how close faithful and quick previews come to the full render, at "
        "N positions of a 30 s song (0: skip)",
    )
    parser.add_argument(
        "--preview-vae",
        action="store_true",
        help="quick previews decode with a tiny VAE: TAESD's architecture (the tests' tiny "
        "one for --model tiny), random weights",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.start + PREVIEW_SECONDS > args.song_seconds:
        parser.error("--start must leave a whole preview (5.12 s) before the song's end")
    if args.repeat < 1 or args.first_repeat < 1:
        parser.error("--repeat and --first-repeat must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model_name = args.model or ("full" if device.type == "cuda" else "tiny")
    print(f"building the {model_name} model on {device} ...", file=sys.stderr, flush=True)
    model = build(model_name, device, dtype)
    if args.preview_vae:
        attach_random_preview_vae(model, model_name)
    import_tests()
    from tests.chiptune import make_chiptune

    song = Audio(make_chiptune(args.song_seconds, stereo=False, seed=0), 44100)
    settings = neurochip_settings("a funk band with slap bass", args.denoise, args.steps)

    # Untimed warm-up on a short song: kernels chosen, allocator grown, prompt path exercised.
    warm = Audio(song.samples[:, : round(12 * 44100)], 44100)
    Engine(model).preview(warm, settings, 2.0)

    summaries, all_runs = [], []
    for quality, suffix in ((FAITHFUL_PREVIEW, ""), (QUICK_PREVIEW, " quick")):
        first = []
        for k in range(args.first_repeat):
            print(f"first{suffix} preview {k + 1} ...", file=sys.stderr, flush=True)
            engine = Engine(model)  # nothing cached: the song was just loaded
            first.append(
                timed_preview(engine, song, settings, args.start, "first" + suffix, None, quality)
            )
        cached = []
        for k in range(args.repeat):
            print(f"cached{suffix} preview {k + 1} ...", file=sys.stderr, flush=True)
            changed = replace(settings, seed=settings.seed + 1 + k)  # a slider moved
            cached.append(
                timed_preview(engine, song, changed, args.start, "cached" + suffix, None, quality)
            )
        summaries += [summarise(first), summarise(cached)]
        all_runs += first + cached
    if args.grid:
        spread = [0.1 * (k - (args.grid - 1) / 2) for k in range(args.grid)]
        grid = [
            replace(settings, seed=100 + i, denoise=round(args.denoise + d, 3))
            for i in range(args.grid)
            for d in spread
        ]
        runs = []
        for k in range(max(1, args.repeat // 2)):
            print(f"grid {args.grid}x{args.grid} {k + 1} ...", file=sys.stderr, flush=True)
            runs.append(timed_preview(engine, song, settings, args.start, "grid", grid))
        summary = summarise(runs)
        summary.case = f"grid {args.grid}x{args.grid}"
        summaries.append(summary)
    print(
        f"model: {model.source} (random weights: timings only, never sound)\n"
        f"device: {describe_device(device)}, {str(dtype).removeprefix('torch.')}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}\n"
        f"song: {args.song_seconds:.0f} s synthesised chip tune; preview {PREVIEW_SECONDS} s at "
        f"{args.start:.0f} s; steps {args.steps}, denoise {args.denoise} "
        f"({settings.denoise_steps} denoising steps), guidance {settings.guidance}, phase "
        f"{settings.phase}\n"
    )
    print_table(summaries)
    accuracy = measure_accuracy(model, settings, args.accuracy) if args.accuracy else None
    if args.json:
        report = {
            "model": model.source,
            "model_size": model_name,
            "preview_vae": args.preview_vae,  # quick rows decoded by a random-weight TAESD
            "device": describe_device(device),
            "dtype": str(dtype),
            "torch": torch.__version__,
            "song_seconds": args.song_seconds,
            "settings": asdict(settings),
            "summaries": [asdict(s) for s in summaries],
            "runs": [asdict(r) for r in all_runs],
            "accuracy": accuracy,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
