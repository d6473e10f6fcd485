"""Benchmark: how well, and how fast, phase reconstruction brings a round trip back.

A round trip is what the model "hears" at denoise 0: audio -> 8-bit Riffusion spectrogram image
-> audio (``neurochip.phase.roundtrip``). The image keeps only mel magnitudes up to 10 kHz, so
the phase must be rebuilt. This script compares the two phase modes:

* ``source``: Griffin-Lim started from the input's own STFT phase (NeuroChip's method), and
* ``random``: Griffin-Lim from random phase (Riffusion's method, the baseline).

Quality is the **multi-resolution STFT spectral convergence** (SC) between the input and the
round trip, in dB; lower (more negative) is better. For FFT sizes 512, 1024 and 2048 (Hann
window, hop n/4), with STFT bins up to 10 kHz only::

    SC_n = 20 log10(||S_ref - g S_est||_F / ||S_ref||_F)

where S_ref is the magnitude STFT of the input band-limited to 10 kHz, S_est that of the round
trip, g the least-squares gain between them, and ||.||_F runs over every channel, bin and frame.
The SC in the table is the mean of the three. Speed is the wall time of one ``roundtrip`` call
(after an untimed warm-up), also given as a multiple of real time.

The goal (from the issue): on real chip music, ``source`` should be at least 6 dB better than
``random`` and faster. PASS/MISS is printed per file, for information; the exit status is 0
either way.

Run it from the repository root::

    .venv/bin/python bench/roundtrip.py                      # 10 s synthesised chip tune
    .venv/bin/python bench/roundtrip.py song.nsf tune.wav --duration 10 --start 30
    .venv/bin/python bench/roundtrip.py --device cuda --repeat 3 --json bench.json

With no files it uses the NES-style tune synthesised by ``tests/chiptune.py`` (labelled as
such: it is not a recording, and the goal is stated for real music). Timings are of the whole
machine: on a busy CPU, ``--threads 1`` and ``--repeat 3`` give steadier numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from neurochip.device import describe_device, resolve_device
from neurochip.errors import NeuroChipError
from neurochip.io import load_audio
from neurochip.phase import PHASE_MODES, PhaseSettings, roundtrip
from neurochip.spectrogram import SpectrogramParams

SAMPLE_RATE = 44100
SYNTH_LABEL = "synthesised chip tune (tests/chiptune.py)"
REPO_ROOT = Path(__file__).resolve().parents[1]

#: FFT sizes of the multi-resolution SC; hop is a quarter of each.
FFT_SIZES: tuple[int, ...] = (512, 1024, 2048)
#: The spectrogram format stores nothing above this, so nothing above it is scored.
MAX_FREQUENCY_HZ = 10_000.0
#: The issue's goal: source phase at least this many dB better than random phase.
GOAL_DB = 6.0
#: Length of the untimed warm-up clip (long enough for the STFT's reflect padding).
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class Clip:
    """One excerpt to benchmark."""

    label: str
    samples: np.ndarray  # (channels, frames) float32 at SAMPLE_RATE
    start_s: float
    synthesised: bool

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE


@dataclass
class RunResult:
    """One clip through one phase mode: a JSON row."""

    file: str
    synthesised: bool
    channels: int
    start_s: float
    duration_s: float
    mode: str
    iterations: int
    sc_db: float
    sc_db_by_fft: dict[str, float]
    gain_db: float  # the least-squares gain the metric applied (mean over resolutions)
    wall_s: float  # best of the repeats: the least disturbed by other processes
    wall_s_all: list[float]
    realtime_x: float
    device: str
    torch_threads: int
    record: str = field(default="run")


# --- input ---------------------------------------------------------------------------------------


def synthesised_clip(duration_s: float, start_s: float, stereo: bool = False) -> Clip:
    # tests/ is a package at the repository root, which is not on sys.path when this file is
    # run as a script (only bench/ is); imported here so the module imports stay clean.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.chiptune import make_chiptune

    tune = make_chiptune(start_s + duration_s, stereo=stereo, seed=0)
    first = round(start_s * SAMPLE_RATE)
    return Clip(SYNTH_LABEL, np.ascontiguousarray(tune[:, first:]), start_s, synthesised=True)


def file_clip(path: str, duration_s: float, start_s: float) -> Clip:
    audio = load_audio(path).span(start_s, duration_s)
    return Clip(Path(path).name, audio.samples, start_s, synthesised=False)


# --- quality -------------------------------------------------------------------------------------


def band_limited(waveform: torch.Tensor, max_hz: float, sample_rate: int) -> torch.Tensor:
    """The waveform with every FFT bin above ``max_hz`` zeroed (one FFT of the whole clip).

    The spectrogram image holds nothing above 10 kHz, so content there cannot come back;
    scoring it would only measure the format, not the phase reconstruction.
    """
    spectrum = torch.fft.rfft(waveform, dim=-1)
    freqs = torch.fft.rfftfreq(waveform.shape[-1], d=1.0 / sample_rate)
    spectrum[..., freqs > max_hz] = 0
    return torch.fft.irfft(spectrum, n=waveform.shape[-1], dim=-1)


def stft_magnitude(waveform: torch.Tensor, n_fft: int, max_hz: float) -> torch.Tensor:
    """(channels, bins up to max_hz, frames) magnitudes, Hann window, hop n_fft / 4."""
    spec = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=n_fft // 4,
        window=torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype),
        center=True,
        return_complex=True,
    )
    top_bin = math.floor(max_hz * n_fft / SAMPLE_RATE)
    return spec[:, : top_bin + 1].abs()


def spectral_convergence(
    reference: torch.Tensor, estimate: torch.Tensor, n_fft: int
) -> tuple[float, float]:
    """SC in dB of one resolution, and the gain applied to the estimate.

    Level is matched by the least-squares gain on the magnitudes, g = <R, E> / <E, E>, which
    minimises ||R - g E||: a round trip slightly louder or quieter overall is not a phase
    error, so SC measures shape only.
    """
    ref = stft_magnitude(reference, n_fft, MAX_FREQUENCY_HZ)
    est = stft_magnitude(estimate, n_fft, MAX_FREQUENCY_HZ)
    energy = float((est * est).sum())
    gain = float((ref * est).sum()) / energy if energy > 0 else 1.0
    error = torch.linalg.vector_norm(ref - gain * est)
    norm = torch.linalg.vector_norm(ref)
    # A floor keeps a perfect match (or silent input) from giving log10(0).
    ratio = max(float(error) / max(float(norm), 1e-30), 1e-12)
    return 20.0 * math.log10(ratio), gain


def multi_resolution_sc(
    original: torch.Tensor, rebuilt: torch.Tensor
) -> tuple[dict[str, float], float]:
    """SC per FFT size (keys "512", ...) and the mean gain in dB, on the CPU in float64.

    float64 because the error of a good reconstruction is ~1e-3 of the signal, where float32
    rounding in a long FFT starts to matter.
    """
    reference = band_limited(original.double().cpu(), MAX_FREQUENCY_HZ, SAMPLE_RATE)
    estimate = rebuilt.double().cpu()
    by_fft: dict[str, float] = {}
    gains_db: list[float] = []
    for n_fft in FFT_SIZES:
        sc_db, gain = spectral_convergence(reference, estimate, n_fft)
        by_fft[str(n_fft)] = sc_db
        gains_db.append(20.0 * math.log10(max(gain, 1e-12)))
    return by_fft, statistics.fmean(gains_db)


# --- speed ---------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    # CUDA runs asynchronously: without this the clock stops before the GPU has finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_roundtrip(
    waveform: torch.Tensor, params: SpectrogramParams, settings: PhaseSettings
) -> tuple[torch.Tensor, float]:
    synchronize(waveform.device)
    began = time.perf_counter()
    rebuilt = roundtrip(waveform, params, settings)
    synchronize(waveform.device)
    return rebuilt, time.perf_counter() - began


def warm_up(waveform: torch.Tensor, params: SpectrogramParams, settings: PhaseSettings) -> None:
    """One short untimed round trip: first calls pay for caches (mel filters, band pairs,
    windows), kernel loading and allocator growth, which a song-length run would not."""
    length = min(waveform.shape[-1], round(WARMUP_SECONDS * SAMPLE_RATE))
    roundtrip(waveform[:, :length], params, settings)
    synchronize(waveform.device)


# --- one clip ------------------------------------------------------------------------------------


def bench_clip(
    clip: Clip,
    modes: Sequence[str],
    iterations: dict[str, int | None],
    device: torch.device,
    repeat: int,
) -> list[RunResult]:
    params = SpectrogramParams(stereo=clip.channels == 2)
    original = torch.from_numpy(clip.samples)
    waveform = original.to(device)
    results: list[RunResult] = []
    for mode in modes:
        settings = PhaseSettings(mode=mode, iterations=iterations[mode])  # type: ignore[arg-type]
        # Progress on stderr, so the table on stdout stays clean when redirected.
        print(f"{clip.label}: {mode} ...", file=sys.stderr, flush=True)
        warm_up(waveform, params, settings)
        walls: list[float] = []
        for _ in range(repeat):
            rebuilt, wall = timed_roundtrip(waveform, params, settings)
            walls.append(wall)
        # Every repeat gives the same audio (the random phase is seeded), so score the last.
        by_fft, gain_db = multi_resolution_sc(original, rebuilt)
        best = min(walls)
        results.append(
            RunResult(
                file=clip.label,
                synthesised=clip.synthesised,
                channels=clip.channels,
                start_s=clip.start_s,
                duration_s=clip.duration_s,
                mode=mode,
                iterations=settings.griffin_lim_iterations,
                sc_db=statistics.fmean(by_fft.values()),
                sc_db_by_fft=by_fft,
                gain_db=gain_db,
                wall_s=best,
                wall_s_all=walls,
                realtime_x=clip.duration_s / best,
                device=describe_device(device),
                torch_threads=torch.get_num_threads(),
            )
        )
    return results


@dataclass(frozen=True)
class Comparison:
    """Source against random phase for one clip: a JSON row."""

    file: str
    db_better: float  # SC(random) - SC(source): positive when source is better
    times_faster: float  # wall(random) / wall(source)
    goal: str  # "PASS" or "MISS"
    record: str = "comparison"


def compare(results: Sequence[RunResult]) -> Comparison | None:
    by_mode = {r.mode: r for r in results}
    if "source" not in by_mode or "random" not in by_mode:
        return None
    source, random = by_mode["source"], by_mode["random"]
    db_better = random.sc_db - source.sc_db
    times_faster = random.wall_s / source.wall_s
    passed = db_better >= GOAL_DB and times_faster > 1.0
    return Comparison(source.file, db_better, times_faster, "PASS" if passed else "MISS")


# --- report --------------------------------------------------------------------------------------


def print_table(results: Sequence[RunResult]) -> None:
    file_width = max([len("file"), *(len(r.file) for r in results)])
    sizes = " ".join(f"{f'@{n}':>7}" for n in FFT_SIZES)
    header = (
        f"{'file':<{file_width}}  {'dur s':>5} {'ch':>2}  {'mode':<6} {'GL it':>5}  "
        f"{'SC dB':>7} {sizes}  {'gain dB':>7}  {'wall s':>7} {'x RT':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        per_size = " ".join(f"{r.sc_db_by_fft[str(n)]:7.2f}" for n in FFT_SIZES)
        print(
            f"{r.file:<{file_width}}  {r.duration_s:5.1f} {r.channels:>2}  {r.mode:<6} "
            f"{r.iterations:>5}  {r.sc_db:7.2f} {per_size}  {r.gain_db:7.2f}  "
            f"{r.wall_s:7.2f} {r.realtime_x:6.2f}"
        )


def print_comparison(comparison: Comparison, synthesised: bool) -> None:
    print(
        f"{comparison.file}: source vs random: {comparison.db_better:.2f} dB better, "
        f"{comparison.times_faster:.2f} x faster"
    )
    note = " (the goal is stated for real chip music; this tune is synthesised)"
    print(
        f"  goal: source >= {GOAL_DB:g} dB better than random and faster: "
        f"{comparison.goal}{note if synthesised else ''}"
    )


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark phase reconstruction of the spectrogram round trip: "
        "multi-resolution spectral convergence (dB, lower is better) and speed.",
    )
    parser.add_argument("files", nargs="*", help=f"audio files (default: a {SYNTH_LABEL}, mono)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per file (10)")
    parser.add_argument("--start", type=float, default=0.0, help="start of the excerpt (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (auto)")
    parser.add_argument(
        "--modes", nargs="+", choices=PHASE_MODES, default=list(PHASE_MODES), help="phase modes"
    )
    parser.add_argument(
        "--iterations-source", type=int, default=None, help="GL iterations (library default)"
    )
    parser.add_argument(
        "--iterations-random", type=int, default=None, help="GL iterations (library default)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per mode; best kept")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    if not args.duration > 0:
        parser.error("--duration must be more than 0")
    if args.start < 0:
        parser.error("--start must be 0 or more")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        # The round trip is hundreds of small ops; when other processes hold the cores, every
        # multi-threaded op can wait a scheduler tick for its second thread, so fewer threads
        # can be faster.
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        clips = (
            [file_clip(path, args.duration, args.start) for path in args.files]
            if args.files
            else [synthesised_clip(args.duration, args.start)]
        )
    except NeuroChipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    iterations = {"source": args.iterations_source, "random": args.iterations_random}
    print(
        f"device: {describe_device(device)}, torch {torch.__version__}, "
        f"threads: {torch.get_num_threads()}; SC: mean over FFT {'/'.join(map(str, FFT_SIZES))}, "
        f"bins <= {MAX_FREQUENCY_HZ / 1000:g} kHz, lower is better; wall: best of {args.repeat}"
    )
    print()

    results: list[RunResult] = []
    comparisons: list[tuple[Comparison, bool]] = []
    for clip in clips:
        try:
            clip_results = bench_clip(clip, args.modes, iterations, device, args.repeat)
        except NeuroChipError as err:  # e.g. a clip too short for one spectrogram window
            print(f"error: {clip.label}: {err}", file=sys.stderr)
            return 2
        results.extend(clip_results)
        comparison = compare(clip_results)
        if comparison is not None:
            comparisons.append((comparison, clip.synthesised))

    print_table(results)
    if comparisons:
        print()
    for comparison, synthesised in comparisons:
        print_comparison(comparison, synthesised)

    if args.json is not None:
        rows = [asdict(r) for r in results] + [asdict(c) for c, _ in comparisons]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
