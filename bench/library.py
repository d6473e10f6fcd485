"""Benchmark: listing, searching and sorting a take library of 10,000 takes.

The target (issue 4): listing 10,000 takes takes under 200 ms.

**How the library is built.** Adding 10,000 takes through :meth:`TakeLibrary.add` flushes
every file and commits every row to disk, which takes minutes and measures the disk, not the
index. So the benchmark writes the take folders itself, with the library's own writers
(:func:`save_take` for ``take.wav`` + ``take.json``, :func:`write_png` for ``thumb.png``, the
``entry.json`` that ``add`` writes) but with ``os.fsync`` switched off while it does, straight
into ``takes/<id>/``, exactly as a crash between "folder complete" and "row inserted" would
leave them. Each take is 0.05 s of mono 44.1 kHz audio; prompts, songs, seeds and stars vary
(one take in ten is starred). Opening the library then runs :meth:`TakeLibrary.recover`, which
indexes every folder from its files: that is the "recover from scratch" time (what a lost or
damaged index costs). The files are in the page cache by then, as on a machine that has been
running; a cold disk is slower.

**What is timed**, each the median of ``--repeat`` runs after an untimed warm-up, as wall
time and as this process's CPU time (what the call costs, without waiting for the disk or, on
a shared machine, for other processes):

* ``list()`` and variants (starred only, a text search, sorts, one page of 50) on a library
  whose ``takes/`` folder has not changed for :data:`~neurochip.library.store.RACY_S`
  seconds (the benchmark waits for that): one query on the index, no folder listing. This is
  the listing the target is about. Every call builds all the :class:`Take` objects it returns
  (their metadata and paths only when asked for, as in the app);
* ``list()`` right after something changed ``takes/`` (here: a folder made and removed
  beside the takes): it lists ``takes/`` and the index's ids and compares them first;
* ``recover()`` on the indexed library (the clean-up sweep plus one ``stat`` per take's
  audio) and opening the library again (which runs it);
* a few real ``add()`` calls into the full library (fsync included), and ``get()``.

Run it from the repository root::

    .venv/bin/python bench/library.py                    # 10,000 takes, in a temporary folder
    .venv/bin/python bench/library.py --takes 2000 --repeat 9
    .venv/bin/python bench/library.py --home /tmp/lib --keep   # reuse it on the next run

Timings are of the whole machine: on a busy one they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from neurochip.io.audio import Audio
from neurochip.library import folders, store
from neurochip.library.metadata import save_take, take_metadata
from neurochip.library.names import default_take_name
from neurochip.library.store import TakeLibrary
from neurochip.library.thumbnails import write_png
from neurochip.settings import RenderSettings

PROMPTS = [
    "a funk band with slap bass",
    "a string quartet in a concert hall",
    "synthwave with gated drums",
    "a brass section, big band swing",
    "solo piano, late romantic",
    "an orchestra, film score, epic",
    "a jazz trio with upright bass",
    "heavy metal with double kick drums",
    "lo-fi hip hop with vinyl crackle",
    "a salsa band, a brass section",
    "Bossa nova guitar and soft vocals",
    "a celtic folk band with fiddles",
]
SONGS = ["minuet.nsf", "Boss Theme.it", "overworld.mod", "Für Elise.mid", "title.vgm"]


def populate(home: Path, count: int) -> float:
    """Write ``count`` take folders into ``home/takes`` (see the module docstring)."""
    takes_dir = home / "takes"
    takes_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    audio = Audio((0.1 * rng.standard_normal((1, 2205))).astype(np.float32), 44100)
    thumbnail = Image.new("RGB", (40, 96), "white")
    start = time.perf_counter()
    now = time.time()
    with mock.patch("os.fsync"):
        for i in range(count):
            take_id = uuid.uuid4().hex[:12]
            folder = takes_dir / take_id
            settings = RenderSettings(prompt=PROMPTS[i % len(PROMPTS)], seed=i)
            metadata = take_metadata(
                "take",
                {"A": settings},
                SONGS[i % len(SONGS)],
                {"model": "riffusion/riffusion-model-v1", "device": "cuda:0", "seconds": 12.5},
            )
            save_take(folder / store.AUDIO_FILE, audio, metadata, bit_depth="24")
            write_png(folder / store.THUMBNAIL_FILE, thumbnail)
            entry = {
                "format": store.ENTRY_FORMAT,
                "id": take_id,
                "created": now - (count - i) * 60.0,
                "name": default_take_name(metadata),
                "source_name": metadata["source"],
                "starred": i % 10 == 0,
            }
            (folder / store.ENTRY_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    return time.perf_counter() - start


def timed(call: Callable[[], object], repeat: int, before: Callable[[], None] | None = None):
    """Median wall and CPU milliseconds of ``call`` over ``repeat`` runs, after an untimed one.

    CPU time (this process's) is what the call costs; wall time also holds waiting for the
    disk and, on a shared machine, for other processes.
    """
    if before:
        before()
    result = call()
    walls, cpus = [], []
    for _ in range(repeat):
        if before:
            before()
        start, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return (statistics.median(walls), statistics.median(cpus)), result


def wait_until_trusted(library: TakeLibrary) -> float:
    """Sleep until the takes folder's time is old enough to be trusted; returns the wait."""
    age = time.time() - os.stat(library.takes_dir).st_mtime
    wait = max(0.0, store.RACY_S - age + 0.05)
    time.sleep(wait)
    return wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--takes", type=int, default=10_000, help="how many takes (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (5)")
    parser.add_argument("--adds", type=int, default=5, help="real add() calls to time (5)")
    parser.add_argument("--home", type=Path, help="library folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the library afterwards")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="neurochip-bench-library-"))
    takes_dir = home / "takes"
    print(f"Library: {home} ({os.cpu_count()} CPUs)")
    try:
        existing = sum(1 for _ in takes_dir.iterdir()) if takes_dir.is_dir() else 0
        if existing < args.takes:
            seconds = populate(home, args.takes - existing)
            print(f"Wrote {args.takes - existing} take folders (no fsync) in {seconds:.1f} s")
        index = home / "library.sqlite3"
        for extra in ("", "-wal", "-shm"):
            index.with_name(index.name + extra).unlink(missing_ok=True)

        rows = []
        start, cpu = time.perf_counter(), time.process_time()
        library = TakeLibrary(home)  # no index: recover() indexes every folder
        scratch = (1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu))
        rows.append(("open + recover from scratch (index every folder), once", scratch))
        total = len(library.list())
        print(f"Indexed {total} takes")

        ms, _ = timed(library.recover, max(1, args.repeat // 2))
        rows.append(("recover() on an indexed library", ms))
        ms, _ = timed(lambda: TakeLibrary(home), max(1, args.repeat // 2))
        rows.append(("open an indexed library (runs recover)", ms))

        waited = wait_until_trusted(library)
        print(f"(waited {waited:.1f} s for takes/ to be older than RACY_S = {store.RACY_S} s)")
        listings: list[tuple[str, Callable[[], list]]] = [
            ("list()  [all, newest first]", lambda: library.list()),
            ("list(starred_only=True)", lambda: library.list(starred_only=True)),
            ('list(text="funk")', lambda: library.list(text="funk")),
            ('list(song="minuet.nsf")', lambda: library.list(song="minuet.nsf")),
            ('list(sort="name")', lambda: library.list(sort="name")),
            ('list(sort="song")', lambda: library.list(sort="song")),
            (
                'list(sort="prompt", descending=True)',
                lambda: library.list(sort="prompt", descending=True),
            ),
            ("list(limit=50, offset=5000)", lambda: library.list(limit=50, offset=5000)),
        ]
        scans = 0
        real_scan = folders._scan

        def counting(path):
            nonlocal scans
            scans += Path(path) == library.takes_dir
            return real_scan(path)

        with mock.patch.object(folders, "_scan", counting):
            for label, call in listings:
                ms, result = timed(call, args.repeat)
                rows.append((f"{label}  -> {len(result)} takes", ms))
        rows.append(
            (f"  (folder listings of takes/ during those, warm-ups included: {scans})", None)
        )

        touch = takes_dir / "bench-touch"

        def change_takes_folder() -> None:
            touch.mkdir()
            touch.rmdir()

        ms, result = timed(library.list, args.repeat, before=change_takes_folder)
        rows.append((f"list() right after takes/ changed  -> {len(result)} takes", ms))

        first = library.list(limit=1)[0]
        ms, _ = timed(lambda: library.get(first.id), args.repeat)
        rows.append(("get(id)", ms))
        ms, _ = timed(lambda: [t.metadata for t in library.list()], args.repeat)
        rows.append(("list() and parse every take's metadata", ms))

        if args.adds > 0:
            audio = Audio(np.zeros((1, 2205), np.float32), 44100)
            metadata = take_metadata("take", {"A": RenderSettings(prompt="added")}, "new.nsf")
            ms, _ = timed(lambda: library.add(audio, metadata), args.adds)
            rows.append(("add() a 0.05 s take (fsync included)", ms))

        width = max(len(label) for label, _ in rows)
        print(f"\n{'median ms':>{width + 11}}  {'CPU ms':>9}")
        for label, ms in rows:
            print(f"{label:{width}}" + ("" if ms is None else f"  {ms[0]:9.1f}  {ms[1]:9.1f}"))
        print(f"\nLoad average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if not args.keep and args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
