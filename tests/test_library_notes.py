"""Notes counted later (issue 27): a take kept before the note measure gets it on demand,
against the song copy the library kept, written into its file and its index row together."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.faithfulness import note_faithfulness
from neurochip.library.metadata import read_take_metadata, take_metadata
from neurochip.library.notes import count_notes, has_notes
from neurochip.library.store import TakeLibrary
from neurochip.mix import stereo_pair
from neurochip.settings import RenderSettings
from neurochip.sketch import load_sketch
from tests.test_faithfulness import tune_midi

START_S = 2.0
LENGTH_S = 6.0


@pytest.fixture(scope="module")
def sketch(tmp_path_factory):
    return load_sketch(tune_midi(tmp_path_factory.mktemp("notes") / "tune.mid"))


def old_take(library: TakeLibrary, sketch, key: str | None = None, kind="take", **extra):
    """A take as one made before notes were counted: the chroma score alone in its metadata.
    Its audio is the sketch's span itself (it keeps every note)."""
    audio = sketch.audio.span(START_S, LENGTH_S)
    chroma = note_faithfulness(audio, audio, count_notes=False).to_dict()
    takes = {"A": RenderSettings(prompt="chip", seed=1, start_s=START_S, duration_s=LENGTH_S)}
    if kind == "stereo pair":
        takes["B"] = RenderSettings(prompt="chip", seed=2, start_s=START_S, duration_s=LENGTH_S)
        audio = stereo_pair(audio, audio, extra.get("width", 1.0))
        chroma = {"score": chroma["score"], "takes": {"A": chroma, "B": chroma}}
    meta = take_metadata(
        kind,
        takes,
        sketch.name,
        {"sketch_key": key or sketch.key},
        faithfulness=chroma,
        **extra,
    )
    return library.add(audio, meta)


def samples(path: Path) -> np.ndarray:
    return sf.read(path, dtype="int32", always_2d=True)[0]


def test_counting_notes_writes_metadata_and_index_and_survives_a_reopen(tmp_path, sketch):
    library = TakeLibrary(tmp_path / "home")
    library.keep_source(sketch)
    take = old_take(library, sketch)
    before = samples(take.audio_path)
    assert take.notes_kept is None and not has_notes(take)
    assert "notes kept" not in take.label

    counted = count_notes(library, take.id)

    assert counted.notes_kept is not None and counted.notes_kept > 0.8
    notes = counted.metadata["faithfulness"]["notes"]
    assert notes["score"] == pytest.approx(counted.notes_kept)
    assert {"precision", "recall", "f1"} <= set(notes["notes"])
    assert counted.metadata["faithfulness"]["segment"] == "bar"  # the MIDI's bars
    assert notes["first_bar"] == counted.metadata["faithfulness"]["first_bar"] > 1
    assert " · notes kept " in counted.label and " · chroma " in counted.label
    # The file carries it (embedded and in its sidecar), its samples bit for bit the same.
    assert read_take_metadata(counted.audio_path)["faithfulness"]["notes"] == notes
    assert np.array_equal(samples(counted.audio_path), before)
    assert not counted.damaged
    # Another library opening the same folder, and an index rebuilt from the folders alone.
    assert TakeLibrary(library.root).get(take.id).notes_kept == counted.notes_kept
    for extra in ("", "-wal", "-shm"):
        Path(f"{library.index_path}{extra}").unlink(missing_ok=True)
    rebuilt = TakeLibrary(library.root).get(take.id)
    assert rebuilt.notes_kept == counted.notes_kept and has_notes(rebuilt)
    assert [t.id for t in rebuilt_list(library.root)] == [take.id]


def rebuilt_list(root: Path):
    return TakeLibrary(root).list(sort="notes_kept")


def test_a_take_whose_song_copy_is_missing_gets_a_clear_error_and_is_untouched(tmp_path, sketch):
    library = TakeLibrary(tmp_path / "home")
    take = old_take(library, sketch, key="0123456789abcdef")  # never kept
    folder = take.audio_path.parent
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    with contextlib.closing(sqlite3.connect(library.index_path)) as conn:
        row = conn.execute("SELECT * FROM takes WHERE id = ?", (take.id,)).fetchone()

    with pytest.raises(NeuroChipError, match="was not kept with it.*neurochip faithfulness"):
        count_notes(library, take.id)

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    with contextlib.closing(sqlite3.connect(library.index_path)) as conn:
        assert conn.execute("SELECT * FROM takes WHERE id = ?", (take.id,)).fetchone() == row
    assert library.get(take.id) == take


def test_a_comparison_is_refused_and_a_stereo_pair_counts_both_takes(tmp_path, sketch):
    library = TakeLibrary(tmp_path / "home")
    library.keep_source(sketch)
    comparison = old_take(library, sketch, kind="crossfade comparison")
    with pytest.raises(NeuroChipError, match="comparison starts as the sketch"):
        count_notes(library, comparison.id)
    assert library.get(comparison.id).notes_kept is None

    pair = old_take(library, sketch, kind="stereo pair", width=0.6)
    counted = count_notes(library, pair.id)
    found = counted.metadata["faithfulness"]
    kept = [found["takes"][k]["notes"]["score"] for k in "AB"]
    assert min(kept) > 0.8  # both takes, taken apart again, keep the sketch's notes
    assert found["notes"]["score"] == pytest.approx(sum(kept) / 2, abs=1e-4)
    assert counted.notes_kept == pytest.approx(found["notes"]["score"])
