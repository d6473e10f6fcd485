"""Chaos: a process using the take library is killed (SIGKILL) at random points.

The worker adds, stars, renames, notes, deletes and exports takes, printing BEGIN before and ACK
after each operation. After each kill the library is opened again, and:

- every take whose add was acknowledged and whose delete was not begun is there, and plays;
- a take is gone for good once its delete was acknowledged;
- each take's star, name and note are the last acknowledged value, or the one in flight at the
  kill, in the index and in its entry.json alike;
- the index lists exactly the complete take folders, and no half-written file is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from neurochip.library.store import TakeLibrary

WORKER = textwrap.dedent(
    """
    import random, sys
    import numpy as np
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import take_metadata
    from neurochip.library.store import TakeLibrary
    from neurochip.settings import RenderSettings

    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    library = TakeLibrary(root)
    ids = [t.id for t in library.list()]
    audio = Audio(np.zeros((1, 2205), np.float32) + 0.1, 44100)

    def say(*words):
        print(*words, flush=True)

    for step in range(400):
        ops = ["add", "add", "star", "rename", "note", "delete", "export"]
        op = rng.choice(ops) if ids else "add"
        if op == "add":
            say("BEGIN", "add", "-", "-")
            meta = take_metadata("take", {"A": RenderSettings(seed=step)}, "chaos.wav")
            take = library.add(audio, meta)
            ids.append(take.id)
            say("ACK", "add", take.id, "-")
            continue
        take_id = rng.choice(ids)
        if op == "star":
            value = rng.choice(["1", "0"])
            say("BEGIN", "star", take_id, value)
            library.star(take_id, value == "1")
        elif op == "rename":
            value = f"name-{step}"
            say("BEGIN", "rename", take_id, value)
            library.rename(take_id, value)
        elif op == "note":
            value = rng.choice([f"note-{step}", "-"])  # "-": the note is cleared
            say("BEGIN", "note", take_id, value)
            library.set_note(take_id, "" if value == "-" else value)
        elif op == "delete":
            value = "-"
            say("BEGIN", "delete", take_id, value)
            library.delete(take_id)
            ids.remove(take_id)
        else:
            value = rng.choice([".wav", ".flac", ".mp3"])
            say("BEGIN", "export", take_id, value)
            library.export(take_id, value)
        say("ACK", op, take_id, value)
    """
)


def run_until_killed(root: Path, seed: int, lines_before_kill: int) -> list[list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    log = []
    assert process.stdout is not None
    for line in process.stdout:
        log.append(line.split())
        if len(log) >= lines_before_kill:
            os.kill(process.pid, signal.SIGKILL)
            break
    # What it printed between our last read and its death happened too.
    log += [line.split() for line in process.stdout if len(line.split()) == 4]
    process.wait(timeout=60)
    return log


def test_a_killed_writer_loses_nothing_acknowledged(tmp_path):
    root = tmp_path / "library"
    rng = random.Random(2026)
    alive: set[str] = set()  # acknowledged adds, not (begun to be) deleted
    deleted: set[str] = set()  # acknowledged deletes
    maybe_deleted: set[str] = set()  # a delete in flight at a kill
    # (id, "star"|"rename"|"note") -> allowed values
    allowed: dict[tuple[str, str], set[str]] = {}
    history: list[list[str]] = []

    for round_number in range(6):
        log = run_until_killed(root, seed=round_number, lines_before_kill=rng.randint(5, 120))
        history += [["round", str(round_number), "-", "-"], *log]
        in_flight = log[-1] if log and log[-1][0] == "BEGIN" else None
        for kind, op, take_id, value in log:
            if kind != "ACK":
                continue
            if op == "add":
                alive.add(take_id)
            elif op == "delete":
                alive.discard(take_id)
                deleted.add(take_id)
            elif op in ("star", "rename", "note"):
                allowed[(take_id, op)] = {value}
        if in_flight is not None:
            _, op, take_id, value = in_flight
            if op == "delete":
                alive.discard(take_id)
                maybe_deleted.add(take_id)
            elif op == "star":
                allowed.setdefault((take_id, op), {"0"}).add(value)  # a new take is unstarred
            elif op == "note":
                allowed.setdefault((take_id, op), {"-"}).add(value)  # a new take has none
            elif op == "rename" and (take_id, op) in allowed:
                allowed[(take_id, op)].add(value)  # never renamed before: any default name

        library = TakeLibrary(root)
        library.recover(stale_after_s=0)  # the killed writer is gone for sure
        listed = {take.id: take for take in library.list()}
        folders = {p.name for p in (root / "takes").iterdir() if p.is_dir()}
        assert set(listed) == folders, "the index and the folders disagree"
        assert alive <= set(listed), "an acknowledged take was lost"
        assert not deleted & set(listed), "a deleted take came back"
        for take_id, take in listed.items():
            assert take_id in alive | maybe_deleted or take_id not in deleted
            assert library.load_audio(take_id).frames == 2205
            entry = json.loads((take.audio_path.parent / "entry.json").read_text())
            stars = allowed.get((take_id, "star"), {"0"})
            in_index, in_entry = str(int(take.starred)), str(int(entry["starred"]))
            assert in_index in stars and in_entry in stars, (
                take_id,
                in_index,
                in_entry,
                stars,
                " | ".join(" ".join(x) for x in history if take_id in x or x[0] == "round"),
            )
            names = allowed.get((take_id, "rename"))
            if names:
                assert take.name in names and entry["name"] in names
            notes = allowed.get((take_id, "note"), {"-"})
            assert (take.note or "-") in notes and (entry.get("note") or "-") in notes, (
                take_id,
                take.note,
                entry.get("note"),
                notes,
            )
        # A delete that was in flight has settled one way or the other by now.
        maybe_deleted -= set(listed)
        deleted |= maybe_deleted
        maybe_deleted.clear()
        leftovers = [p for p in (root / "takes").rglob("*") if ".tmp" in p.name]
        assert not leftovers, leftovers
