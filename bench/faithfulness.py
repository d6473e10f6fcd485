"""Benchmark: how fast the note-faithfulness meter scores a whole song.

``neurochip.faithfulness.note_faithfulness`` on a 3-minute stereo song at 44.1 kHz (the chip
tune of ``tests/chiptune.py``, looped) against a take of the same length (the same tune with
other drums and a little noise, as a take differs from its sketch). Prints the first call
(which imports librosa and numba, once per process) and the median of the warm calls, in ms,
with the warm call's stages: mono + resampling both, and the chroma of one.

Run it from the repository root::

    .venv/bin/python bench/faithfulness.py
    .venv/bin/python bench/faithfulness.py --seconds 600 --repeat 5

Timings are of the whole machine: on a busy CPU, take the median of several runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for the chip tune

from neurochip.faithfulness import ANALYSIS_RATE, chroma, note_faithfulness  # noqa: E402
from neurochip.io.audio import Audio  # noqa: E402
from tests.chiptune import make_chiptune  # noqa: E402

SAMPLE_RATE = 44100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="song length (180)")
    parser.add_argument("--repeat", type=int, default=5, help="warm calls to time (5)")
    args = parser.parse_args()

    sketch = Audio(make_chiptune(args.seconds, stereo=True, seed=0), SAMPLE_RATE)
    noise = np.random.default_rng(1).standard_normal(sketch.samples.shape) * 0.01
    take = Audio(make_chiptune(args.seconds, stereo=True, seed=1) + noise, SAMPLE_RATE)

    start = time.perf_counter()
    result = note_faithfulness(sketch, take)
    first_ms = (time.perf_counter() - start) * 1000

    totals, resampling, chromas = [], [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        note_faithfulness(sketch, take)
        totals.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        mono = sketch.to_mono().resample(ANALYSIS_RATE).samples[0]
        take.to_mono().resample(ANALYSIS_RATE)
        resampling.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        chroma(mono)
        chromas.append((time.perf_counter() - start) * 1000)

    print(f"{args.seconds:g} s stereo song at {SAMPLE_RATE} Hz; score {result.score:.4f}")
    print(f"first call (imports librosa):  {first_ms:8.1f} ms")
    print(f"warm call, median of {args.repeat}:     {statistics.median(totals):8.1f} ms")
    print(f"  mono + resample both:        {statistics.median(resampling):8.1f} ms")
    print(f"  chroma of one:               {statistics.median(chromas):8.1f} ms")


if __name__ == "__main__":
    main()
