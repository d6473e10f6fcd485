"""Benchmark: how fast the note-faithfulness meter scores a whole song, on one CPU core.

Both measures of ``neurochip.faithfulness.note_faithfulness`` on a stereo song at 44.1 kHz
(the chip tune of ``tests/chiptune.py``, looped) against a take of the same length (the
same tune with other drums and a little noise, as a take differs from its sketch):

* **transcription**: basic-pitch's ONNX model (``neurochip.transcription.transcribe``),
  reported per minute of audio (issue 27's target: under 2 s a minute on one core);
* **note matching**: mir_eval's matching of the two transcriptions, per bar strip and lists;
* **chroma**: the older measure (mono + resampling both, and the chroma of each).

The process is pinned to one core (``sched_setaffinity``) where the OS allows it. Prints the
first call (imports, model load) and the median of the warm ones; ``--json`` writes them.

Run it from the repository root::

    .venv/bin/python bench/faithfulness.py
    .venv/bin/python bench/faithfulness.py --seconds 600 --repeat 5 --json out.json

Timings are of the whole machine: on a busy CPU, take the median of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for the chip tune

from neurochip.faithfulness import ANALYSIS_RATE, chroma, note_faithfulness  # noqa: E402
from neurochip.io.audio import Audio  # noqa: E402
from neurochip.notes_kept import notes_kept  # noqa: E402
from neurochip.transcription import TRANSCRIBER, transcribe  # noqa: E402
from tests.chiptune import make_chiptune  # noqa: E402

SAMPLE_RATE = 44100


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="song length (180)")
    parser.add_argument("--repeat", type=int, default=5, help="warm calls to time (5)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)

    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(allowed)})
    try:
        return measure(args, "1" if pinned else "all")
    finally:
        if pinned:
            os.sched_setaffinity(0, allowed)  # as it was: a test may call main()


def measure(args: argparse.Namespace, cores: str) -> int:
    sketch = Audio(make_chiptune(args.seconds, stereo=True, seed=0), SAMPLE_RATE)
    noise = np.random.default_rng(1).standard_normal(sketch.samples.shape) * 0.01
    take = Audio(make_chiptune(args.seconds, stereo=True, seed=1) + noise, SAMPLE_RATE)

    first_s, result = timed(lambda: note_faithfulness(sketch, take))
    sketch_notes, take_notes = transcribe(sketch), transcribe(take)

    whole, transcribing, matching, resampling, chromas = [], [], [], [], []
    for i in range(args.repeat):
        # A new take each time, as in the app: its transcription is made, the sketch's is
        # remembered from the first call.
        fresh = Audio(take.samples * (1 - 1e-3 * (i + 1)), SAMPLE_RATE)
        whole.append(timed(lambda fresh=fresh: note_faithfulness(sketch, fresh))[0])
        transcribing.append(timed(lambda: transcribe(take, remember=False))[0])
        matching.append(timed(lambda: notes_kept(sketch_notes, take_notes, sketch.duration_s))[0])
        seconds, mono = timed(lambda: sketch.to_mono().resample(ANALYSIS_RATE).samples[0])
        resampling.append(seconds + timed(lambda: take.to_mono().resample(ANALYSIS_RATE))[0])
        chromas.append(timed(lambda mono=mono: chroma(mono))[0])

    minutes = args.seconds / 60
    numbers = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores ({cores} used)",
        "transcriber": TRANSCRIBER,
        "seconds": args.seconds,
        "notes_kept": round(result.notes.score, 4) if result.notes else None,
        "chroma": round(result.score, 4),
        "sketch_notes": len(sketch_notes),
        "first_call_s": round(first_s, 3),
        "both_measures_s": round(statistics.median(whole), 3),
        "transcription_s": round(statistics.median(transcribing), 3),
        "transcription_s_per_minute": round(statistics.median(transcribing) / minutes, 3),
        "note_matching_s": round(statistics.median(matching), 4),
        "chroma_resampling_s": round(statistics.median(resampling), 4),
        "chroma_of_one_s": round(statistics.median(chromas), 4),
    }
    print(f"{args.seconds:g} s stereo song at {SAMPLE_RATE} Hz on {numbers['machine']}")
    print(f"notes kept {numbers['notes_kept']}, chroma {numbers['chroma']}")
    print(f"first call (imports, model load): {first_s:8.2f} s")
    print(f"both measures of a new take:      {numbers['both_measures_s']:8.2f} s")
    print(
        f"  transcription of one:           {numbers['transcription_s']:8.2f} s "
        f"({numbers['transcription_s_per_minute']:.2f} s per minute of audio)"
    )
    print(f"  note matching:                  {numbers['note_matching_s'] * 1000:8.1f} ms")
    print(f"  chroma: mono + resample both:   {numbers['chroma_resampling_s'] * 1000:8.1f} ms")
    print(f"  chroma of one:                  {numbers['chroma_of_one_s'] * 1000:8.1f} ms")
    if args.json is not None:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
