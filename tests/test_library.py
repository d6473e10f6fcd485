from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import save_audio
from neurochip.library import folders, names, query, store, sync
from neurochip.library.metadata import (
    read_take_metadata,
    save_take,
    settings_from_take,
    sidecar_path,
    take_metadata,
)
from neurochip.library.names import take_filename
from neurochip.library.store import TakeLibrary
from neurochip.library.thumbnails import spectrogram_thumbnail
from neurochip.settings import MAX_SEED, RenderSettings
from neurochip.takeset import pair_takes

SETTINGS = RenderSettings(prompt="a funk band with slap bass, ünïcödé", seed=9, denoise=0.3)
AUDIO = Audio(np.zeros((1, 4410), np.float32), 44100)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_settings_round_trip_from_the_file(tmp_path, suffix):
    path = save_take(tmp_path / f"take{suffix}", AUDIO, take_metadata("take", {"A": SETTINGS}))
    sidecar_path(path).unlink()  # the embedded copy alone must do
    assert settings_from_take(path) == SETTINGS


def test_sidecar_is_written_and_used_when_the_file_lost_its_metadata(tmp_path):
    meta = take_metadata("stereo pair", {"A": SETTINGS, "B": SETTINGS}, "sketch.wav", width=0.8)
    path = save_take(tmp_path / "pair.wav", AUDIO, meta)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["kind"] == "stereo pair" and sidecar["width"] == 0.8
    save_audio(path, AUDIO)  # e.g. re-exported by a tool that drops metadata
    assert settings_from_take(path, "B") == SETTINGS


def test_file_without_settings_is_a_clear_error(tmp_path):
    path = save_audio(tmp_path / "plain.wav", AUDIO)
    with pytest.raises(NeuroChipError, match="no NeuroChip settings"):
        read_take_metadata(path)
    take = save_take(tmp_path / "t.wav", AUDIO, take_metadata("take", {"A": SETTINGS}))
    with pytest.raises(NeuroChipError, match="not 'B'"):
        settings_from_take(take, "B")


# --- the take library ---------------------------------------------------------------------------

RATE = 44100


def sine(seconds: float = 0.5, freq: float = 440.0, channels: int = 1) -> Audio:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return Audio(np.repeat(wave[None], channels, axis=0), RATE)


def settings(seed: int = 42, prompt: str = "a funk band with slap bass") -> RenderSettings:
    return RenderSettings(prompt=prompt, seed=seed, denoise=0.35, guidance=7.0)


def add_take(library, seed=42, source="sketch.wav", seconds=0.5, freq=440.0, **kwargs):
    meta = take_metadata("take", {"A": settings(seed)}, source, {"model": "tiny"})
    return library.add(sine(seconds, freq), meta, **kwargs)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def make_old(path: Path, age_s: float = 3600.0) -> None:
    """Backdate a folder and its files, as if a crashed process had left them long ago."""
    old = time.time() - age_s
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


@pytest.fixture
def library(tmp_path):
    return TakeLibrary(tmp_path / "home")


def test_add_list_get_round_trip(library):
    thumb = Image.new("RGB", (40, 96), "white")
    take = add_take(library, seed=7, source="minuet.nsf", thumbnail=thumb)
    assert re.fullmatch(r"[0-9a-f]{12}", take.id)
    assert take.name == "minuet — a funk band with slap bass (seed 7)"
    assert (take.kind, take.source_name, take.channels, take.starred) == (
        "take",
        "minuet.nsf",
        1,
        False,
    )
    assert take.duration_s == pytest.approx(0.5)
    assert take.audio_path == library.root / "takes" / take.id / "take.wav"
    assert take.thumbnail_path is not None and Image.open(take.thumbnail_path).size == (40, 96)
    assert take.settings() == settings(7)
    assert take.metadata["model"] == "tiny"
    assert settings_from_take(take.audio_path) == settings(7)  # the file carries them too
    assert library.list() == [take]
    assert library.get(take.id) == take
    audio = library.load_audio(take.id)
    np.testing.assert_allclose(audio.samples, sine().samples, atol=1e-6)  # 24-bit WAV


def test_list_is_newest_first_and_can_show_only_starred(library):
    takes = [add_take(library, seed=s) for s in range(4)]
    assert [t.id for t in library.list()] == [t.id for t in reversed(takes)]
    assert library.list(starred_only=True) == []
    library.star(takes[1].id)
    library.star(takes[3].id)
    assert [t.id for t in library.list(starred_only=True)] == [takes[3].id, takes[1].id]


def test_star_unstar_and_rename(library):
    take = add_take(library)
    starred = library.star(take.id)
    assert starred.starred and library.get(take.id).starred
    assert not library.star(take.id, False).starred and not library.get(take.id).starred
    renamed = library.rename(take.id, "  keeper:\n the\tgood one  ")
    assert renamed.name == library.get(take.id).name == "keeper: the good one"
    with pytest.raises(NeuroChipError, match="cannot be empty"):
        library.rename(take.id, " \n ")


def test_notes_are_kept_searched_and_survive_a_rebuild(library):
    a, b = add_take(library, seed=1), add_take(library, seed=2)
    entry = json.loads((a.audio_path.parent / "entry.json").read_text())
    assert a.note == "" and entry["note"] == ""
    noted = library.set_note(a.id, "  Bass drifts in bar 12.\r\n\tKeep the\x00 intro!  \n\n")
    assert noted.note == library.get(a.id).note == "Bass drifts in bar 12.\n Keep the intro!"
    entry = json.loads((a.audio_path.parent / "entry.json").read_text())
    assert entry["note"] == noted.note and entry["name"] == a.name
    assert ids(library.list(text="BAR 12")) == [a.id]
    assert ids(library.list(text="12. keep")) == [a.id]  # lines are spaces to search
    assert ids(library.list(text="seed 1")) == [a.id]  # the name still is searched
    assert library.list(text="bar 12 keep") == []
    library.rename(a.id, "renamed")  # a rename keeps the note, and the note its search
    assert ids(library.list(text="drifts")) == [a.id] == ids(library.list(text="renamed"))
    assert library.set_note(b.id, "x" * 5000).note == "x" * 1999 + "…"
    # The index is lost: the note comes back from entry.json.
    before = library.list()
    for extra in ("", "-wal", "-shm"):
        Path(f"{library.index_path}{extra}").unlink(missing_ok=True)
    rebuilt = TakeLibrary(library.root)
    assert rebuilt.list() == before and rebuilt.get(a.id).note == noted.note
    assert ids(rebuilt.list(text="drifts")) == [a.id]
    assert rebuilt.set_note(a.id, " \n ").note == ""  # an empty note removes it
    assert rebuilt.list(text="drifts") == []
    with pytest.raises(NeuroChipError, match="No take with id"):
        rebuilt.set_note("0123456789ab", "hello")


def test_takes_are_labelled_and_sorted_by_faithfulness(library):
    def faithful(seed, score):
        measured = None if score is None else {"score": score}
        meta = take_metadata("take", {"A": settings(seed)}, "a.wav", faithfulness=measured)
        return library.add(sine(0.5), meta)

    low, unmeasured, high, failed = (
        faithful(1, 0.41),
        add_take(library, seed=2),
        faithful(3, 0.97),
        faithful(4, None),  # the meter failed: no score
    )
    assert (low.faithfulness, high.faithfulness, unmeasured.faithfulness) == (0.41, 0.97, None)
    assert failed.faithfulness is None
    assert high.label == "seed 3 · denoise 0.35 · guidance 7 · 50 steps · faithfulness 0.97"
    assert unmeasured.label == "seed 2 · denoise 0.35 · guidance 7 · 50 steps"
    assert library.get(high.id).label == high.label
    newest_unmeasured = [failed.id, unmeasured.id]
    assert ids(library.list(sort="faithfulness")) == [high.id, low.id, *newest_unmeasured]
    assert ids(library.list(sort="faithfulness", descending=False)) == [
        unmeasured.id,
        failed.id,
        low.id,
        high.id,
    ]
    pair = pair_takes(library, low.id, high.id)  # the mean of the two takes'
    assert pair.faithfulness == pytest.approx(0.69)
    assert pair.label == "seeds 1, 3 · denoise 0.35 · guidance 7 · 50 steps · faithfulness 0.69"
    assert pair_takes(library, low.id, unmeasured.id).faithfulness == 0.41


def test_count_counts_what_list_lists(library, songs):
    funk, quartet, strasse, pair = songs
    assert library.count() == 4 == len(library.list())
    assert library.count(starred_only=True) == 2
    assert library.count(song="minuet.nsf", text="FUNK") == 2
    assert library.count(text="nothing like it") == 0


def test_take_labels():
    a, b = settings(42), settings(43)
    assert names.take_label({}) == "no settings"
    assert names.take_label(take_metadata("take", {"B": b})) == (
        "seed 43 · denoise 0.35 · guidance 7 · 50 steps"
    )
    other = dataclasses.replace(b, denoise=0.5, steps=30)
    assert names.take_label(take_metadata("stereo pair", {"A": a, "B": other})) == (
        "A: seed 42 · denoise 0.35 · guidance 7 · 50 steps | "
        "B: seed 43 · denoise 0.5 · guidance 7 · 30 steps"
    )
    measured = take_metadata("take", {"A": a}, faithfulness={"score": 0.876})
    assert names.take_label(measured).endswith(" · faithfulness 0.88")
    assert " · faithfulness" not in names.take_label(measured, faithfulness=False)
    # Another engine is named, and the knobs it does not read are not shown.
    sa3 = take_metadata("take", {"A": a}, info={"engine": "stable-audio-3"})
    assert names.take_label(sa3) == "Stable Audio 3 · seed 42 · denoise 0.35 · 50 steps"
    ace = take_metadata("take", {"A": a}, info={"engine": "ace-step"})
    assert names.take_label(ace) == "ACE-Step 1.5 · seed 42 · 50 steps"
    # Takes of one sketch by three engines: three names, three file names.
    assert {names.default_take_name(m) for m in (sa3, ace, take_metadata("take", {"A": a}))} == {
        "untitled — a funk band with slap bass (seed 42, Stable Audio 3)",
        "untitled — a funk band with slap bass (seed 42, ACE-Step 1.5)",
        "untitled — a funk band with slap bass (seed 42)",
    }
    assert take_filename("minuet.nsf", a, "take", ".wav", engine="stable-audio-3") == (
        "minuet_stable-audio-3_funk-band-with-slap-bass_d0.35_seed42.wav"
    )
    assert take_filename("minuet.nsf", a, "take", ".wav", engine="ace-step") == (
        "minuet_ace-step_funk-band-with-slap-bass_seed42.wav"
    )
    for broken in ({"score": "high"}, {"score": float("nan")}, "0.9", {"score": True}):
        assert names.take_label(take_metadata("take", {"A": a}, faithfulness=broken)) == (
            "seed 42 · denoise 0.35 · guidance 7 · 50 steps"
        )


def test_unknown_ids_are_clear_errors(library):
    add_take(library)
    for call in (
        lambda: library.get("0123456789ab"),
        lambda: library.get("../../etc"),
        lambda: library.star("nope"),
        lambda: library.rename("0123456789ab", "x"),
        lambda: library.set_note("0123456789ab", "x"),
        lambda: library.delete("0123456789ab"),
        lambda: library.export("0123456789ab"),
        lambda: pair_takes(library, "0123456789ab", "0123456789ab"),
    ):
        with pytest.raises(NeuroChipError, match="No take with id"):
            call()


def test_delete_removes_the_row_and_the_folder(library):
    keep, gone = add_take(library, seed=1), add_take(library, seed=2)
    library.delete(gone.id)
    assert [t.id for t in library.list()] == [keep.id]
    assert sorted(p.name for p in (library.root / "takes").iterdir()) == [keep.id]
    assert not gone.audio_path.exists()
    with pytest.raises(NeuroChipError, match="No take"):
        library.get(gone.id)
    assert [t.id for t in TakeLibrary(library.root).list()] == [keep.id]  # stays deleted


def test_a_new_session_sees_the_same_takes(library):
    a, b = add_take(library, seed=1), add_take(library, seed=2)
    library.star(a.id)
    library.rename(b.id, "B, renamed")
    again = TakeLibrary(library.root)
    assert again.recover() == 0
    assert again.list() == library.list()
    assert [(t.id, t.starred, t.name) for t in again.list()] == [
        (b.id, False, "B, renamed"),
        (a.id, True, a.name),
    ]


@pytest.mark.parametrize("damage", ["lost", "garbage"])
def test_the_index_is_rebuilt_from_the_folders(library, damage):
    a, b = add_take(library, seed=1), add_take(library, seed=2, name="my take")
    library.star(a.id)
    before = library.list()
    assert [(t.id, t.name, t.starred) for t in before] == [
        (b.id, "my take", False),
        (a.id, a.name, True),
    ]
    index = library.root / "library.sqlite3"
    for extra in ("-wal", "-shm"):
        index.with_name(index.name + extra).unlink(missing_ok=True)
    if damage == "lost":
        index.unlink()
    else:
        index.write_bytes(b"this is not a database" * 100)
    rebuilt = TakeLibrary(library.root)
    assert rebuilt.list() == before  # names, stars and order survive
    if damage == "garbage":
        assert list(library.root.glob("library.sqlite3.damaged-*"))


def test_default_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "elsewhere"))
    assert store.default_home() == store.DEFAULT_HOME == tmp_path / "elsewhere"
    assert TakeLibrary().root == tmp_path / "elsewhere"
    assert (tmp_path / "elsewhere" / "takes").is_dir()
    assert (tmp_path / "elsewhere" / "library.sqlite3").is_file()
    monkeypatch.delenv("NEUROCHIP_HOME")
    home = store.DEFAULT_HOME  # read again: follows the variable
    assert home == Path("~/.neurochip").expanduser()


def test_a_newer_index_is_refused_clearly(library):
    with sqlite3.connect(library.root / "library.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(NeuroChipError, match="newer NeuroChip"):
        TakeLibrary(library.root)


# --- search, sort and the index ------------------------------------------------------------------


def add_with(library, prompts, source, seed=1, kind="take", **kwargs):
    """A take whose takes ("A", then "B") have these prompts."""
    chosen = {k: settings(seed + i, p) for i, (k, p) in enumerate(zip("AB", prompts, strict=False))}
    return library.add(sine(0.1), take_metadata(kind, chosen, source), **kwargs)


@pytest.fixture
def songs(library):
    """Four takes of three songs (one without), added in this order."""
    funk = add_with(library, ["a Funk band"], "minuet.nsf", seed=1)
    quartet = add_with(library, ["string quartet"], "Boss Theme.it", seed=2, name="Élan vital")
    strasse = add_with(library, ["Straße  music"], None, seed=3)
    pair = add_with(library, ["brass", "funk"], "minuet.nsf", seed=4, kind="stereo pair")
    library.star(quartet.id)
    library.star(strasse.id)
    return funk, quartet, strasse, pair


def ids(takes):
    return [t.id for t in takes]


def test_list_searches_names_and_prompts_ignoring_case(library, songs):
    funk, quartet, strasse, pair = songs
    assert (pair.prompt, funk.prompt) == ("brass / funk", "a Funk band")
    assert ids(library.list(text="FUNK")) == [pair.id, funk.id]  # B's prompt counts too
    assert ids(library.list(text="élan")) == ids(library.list(text="ÉLAN")) == [quartet.id]
    assert ids(library.list(text="strasse MUSIC")) == [strasse.id]  # ß, runs of spaces
    assert ids(library.list(text="minuet")) == [pair.id, funk.id]  # in the default names
    assert library.list(text="  ") == library.list()
    assert library.list(text="vital string") == []  # no match across name and prompt
    assert library.list(text="%") == library.list(text="_") == []  # no wildcards
    library.rename(strasse.id, "Keeper")
    assert ids(library.list(text="keeper")) == [strasse.id]
    assert library.list(text="untitled") == []  # its old name is no longer searched
    assert ids(library.list(text="straße")) == [strasse.id]  # its prompt still is


def test_list_filters_by_song_and_star(library, songs):
    funk, quartet, strasse, pair = songs
    assert ids(library.list(song="minuet.nsf")) == [pair.id, funk.id]
    assert library.list(song="minuet") == []  # the song's name exactly
    assert ids(library.list(starred_only=True)) == [strasse.id, quartet.id]
    assert ids(library.list(starred_only=True, song="Boss Theme.it")) == [quartet.id]
    assert ids(library.list(starred_only=True, text="funk")) == []
    assert library.songs() == ["Boss Theme.it", "minuet.nsf"]


def test_list_sorts_and_pages(library, songs):
    funk, quartet, strasse, pair = songs
    newest = [pair.id, strasse.id, quartet.id, funk.id]
    assert ids(library.list()) == ids(library.list(sort="created")) == newest
    assert ids(library.list(sort="created", descending=False)) == newest[::-1]
    # Starred first; ties newest first.
    assert ids(library.list(sort="starred")) == [strasse.id, quartet.id, pair.id, funk.id]
    # Names A to Z ignoring case: "Élan", "minuet — a Funk", "minuet — stereo", "untitled".
    assert ids(library.list(sort="name")) == [quartet.id, funk.id, pair.id, strasse.id]
    # Songs A to Z, then takes without one; one song's takes newest first.
    by_song = [quartet.id, pair.id, funk.id, strasse.id]
    assert ids(library.list(sort="song")) == by_song
    assert ids(library.list(sort="song", descending=True)) == by_song[::-1]  # all reversed
    assert ids(library.list(sort="starred", descending=False)) == [
        funk.id,
        pair.id,
        quartet.id,
        strasse.id,
    ]
    # "a funk band", "brass / funk", "strasse music" (ß folds to ss), "string quartet".
    by_prompt = [funk.id, pair.id, strasse.id, quartet.id]
    assert ids(library.list(sort="prompt")) == by_prompt
    assert ids(library.list(sort="prompt", descending=True)) == by_prompt[::-1]
    assert ids(library.list(limit=2)) == newest[:2]
    assert ids(library.list(limit=2, offset=2)) == newest[2:]
    assert ids(library.list(offset=3)) == newest[3:]
    assert library.list(limit=0) == []
    assert ids(library.list(sort="name", starred_only=True, limit=1)) == [quartet.id]
    with pytest.raises(ValueError, match="sorted by created"):
        library.list(sort="size")
    with pytest.raises(ValueError, match="negative"):
        library.list(limit=-1)


def test_every_sort_walks_an_index(library, songs):
    with contextlib.closing(sqlite3.connect(library.root / "library.sqlite3")) as conn:
        for sort, terms in store._SORTS.items():
            for reverse in (False, True):
                order = ", ".join(f"{t} {store._REVERSE[w] if reverse else w}" for t, w in terms)
                plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM takes ORDER BY {order}")
                details = " ".join(row[-1] for row in plan)
                assert "USING INDEX" in details and "TEMP B-TREE" not in details, (sort, details)


def test_listed_takes_equal_what_add_and_get_return(library, songs):
    listed = {t.id: t for t in library.list()}
    for take in songs:
        fresh = library.get(take.id)
        assert listed[take.id] == fresh
        rebuilt = dataclasses.replace(fresh)  # through Take.__init__
        assert rebuilt == fresh and repr(rebuilt) == repr(fresh)
        assert rebuilt.audio_path == fresh.audio_path == take.audio_path
        assert listed[take.id].metadata == fresh.metadata and fresh.metadata["takes"]
        assert hash(listed[take.id]) == hash(take)
    assert songs[0] == listed[songs[0].id]  # as add() returned it (not starred since)


def rewind_index(library, version: int, columns: int, edit=None) -> Path:
    """Rebuild ``library``'s index as schema ``version`` had it: its first ``columns``
    columns, the rows kept; ``edit(conn)`` runs before the version is set. Returns the index."""
    index = library.root / "library.sqlite3"
    kept = ", ".join(store._COLUMNS[:columns])
    with contextlib.closing(sqlite3.connect(index)) as conn:
        rows = conn.execute(f"SELECT {kept} FROM takes").fetchall()
    for extra in ("", "-wal", "-shm"):
        index.with_name(index.name + extra).unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(index)) as conn, conn:
        for step in range(1, version + 1):
            for statement in store._MIGRATIONS[step]:
                statement(conn) if callable(statement) else conn.execute(statement)
        conn.executemany(f"INSERT INTO takes ({kept}) VALUES ({', '.join('?' * columns)})", rows)
        if edit is not None:
            edit(conn)
        conn.execute(f"PRAGMA user_version = {version}")
    return index


def test_a_version_1_index_is_migrated_and_backfilled(library):
    a = add_with(library, ["a Funk band"], "minuet.nsf", seed=1)
    b = add_with(library, ["brass", "Ünïcode strings"], "tune.mod", seed=2, kind="stereo pair")
    index = rewind_index(
        library,
        1,
        12,  # the columns version 1 had
        # Only in the index, so a row rebuilt from the folder would not say it.
        lambda conn: conn.execute(
            "UPDATE takes SET name = 'named in version 1' WHERE id = ?", (a.id,)
        ),
    )

    migrated = TakeLibrary(library.root)
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 5
        # Version 3's sizes: from the files' headers, by recover() (a migration sees no files).
        sizes = dict(conn.execute("SELECT id, audio_size FROM takes").fetchall())
        assert sizes == {t.id: t.audio_path.stat().st_size for t in (a, b)}
        backfilled = dict(
            ((take_id, (prompt, search)))
            for take_id, prompt, search in conn.execute("SELECT id, prompt, search FROM takes")
        )
    assert backfilled[a.id] == ("a Funk band", "named in version 1\na funk band")
    assert backfilled[b.id][0] == "brass / Ünïcode strings"
    assert ids(migrated.list(text="version 1")) == [a.id]
    assert ids(migrated.list(text="ÜNÏCODE")) == [b.id]
    assert ids(migrated.list(sort="prompt")) == [a.id, b.id]
    assert migrated.get(b.id).prompt == "brass / Ünïcode strings"
    assert migrated.recover() == 0  # the rows were migrated, not rebuilt


def with_faithfulness(score, **more):
    return {"score": score, "segment": "second", "strip": [score], **more}


def test_a_version_3_index_gets_faithfulness_scores_and_notes(library):
    measured = library.add(
        sine(0.1),
        take_metadata("take", {"A": settings(1)}, "a.wav", faithfulness=with_faithfulness(0.8)),
    )
    pair = library.add(
        sine(0.1),
        take_metadata(
            "stereo pair",
            {"A": settings(2), "B": settings(3)},
            "a.wav",
            faithfulness={"score": 0.9, "takes": {"A": with_faithfulness(0.85)}},
        ),
    )
    old = add_take(library, seed=4)  # before the meter: no score
    index = rewind_index(library, 3, 18)  # the columns version 3 had

    migrated = TakeLibrary(library.root)
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
        scores = dict(conn.execute("SELECT id, faithfulness FROM takes").fetchall())
    assert scores == {measured.id: 0.8, pair.id: 0.9, old.id: None}
    assert ids(migrated.list(sort="faithfulness")) == [pair.id, measured.id, old.id]
    assert [t.note for t in migrated.list()] == ["", "", ""]
    assert migrated.recover() == 0  # migrated, not rebuilt
    migrated.set_note(old.id, "keeper")
    assert ids(migrated.list(text="KEEPER")) == [old.id]


def with_notes(score, kept, **more):
    return with_faithfulness(score, notes={"score": kept, "notes": {"recall": kept}}, **more)


def test_a_version_4_index_gets_notes_kept_from_the_metadata(library):
    counted = library.add(
        sine(0.1),
        take_metadata("take", {"A": settings(1)}, "a.wav", faithfulness=with_notes(0.7, 0.9)),
    )
    pair = library.add(
        sine(0.1),
        take_metadata(
            "stereo pair",
            {"A": settings(2), "B": settings(3)},
            "a.wav",
            faithfulness={"score": 0.8, "notes": {"score": 0.5}, "takes": {}},
        ),
    )
    chroma_only = library.add(
        sine(0.1),
        take_metadata("take", {"A": settings(4)}, "a.wav", faithfulness=with_faithfulness(0.95)),
    )
    old = add_take(library, seed=5)  # before any meter
    index = rewind_index(library, 4, 20)  # the columns version 4 had

    migrated = TakeLibrary(library.root)
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 5
        kept = dict(conn.execute("SELECT id, notes_kept FROM takes").fetchall())
    assert kept == {counted.id: 0.9, pair.id: 0.5, chroma_only.id: None, old.id: None}
    assert migrated.get(counted.id).notes_kept == 0.9
    assert migrated.get(chroma_only.id).notes_kept is None
    assert migrated.recover() == 0  # migrated, not rebuilt
    # Notes kept first, NULLs after every counted take (by chroma), never measured last; the
    # old sort name sorts the same way.
    order = [counted.id, pair.id, chroma_only.id, old.id]
    assert ids(migrated.list(sort="notes_kept")) == order
    assert ids(migrated.list(sort="faithfulness")) == order
    assert ids(migrated.list(sort="notes_kept", descending=False)) == order[::-1]


def test_notes_kept_sorts_first_and_chroma_breaks_ties(library):
    def add(score, kept, seed):
        found = with_faithfulness(score) if kept is None else with_notes(score, kept)
        meta = take_metadata("take", {"A": settings(seed)}, "a.wav", faithfulness=found)
        return library.add(sine(0.1), meta)

    low_notes_high_chroma = add(0.99, 0.2, 1)
    tie_low_chroma = add(0.5, 0.8, 2)
    tie_high_chroma = add(0.9, 0.8, 3)
    uncounted_high_chroma = add(1.0, None, 4)
    never = add_take(library, seed=5)
    expected = [
        tie_high_chroma.id,
        tie_low_chroma.id,
        low_notes_high_chroma.id,
        uncounted_high_chroma.id,
        never.id,
    ]
    assert ids(library.list(sort="notes_kept")) == expected
    assert ids(library.list(sort="faithfulness")) == expected
    assert "faithfulness" not in store.SORTS and "notes_kept" in store.SORTS
    assert query.SORT_NAMES["notes_kept"] == "Notes kept"
    assert set(query.SORT_NAMES) == set(store.SORTS)
    label = library.get(tie_low_chroma.id).label
    assert label.endswith(" · notes kept 80% · chroma 0.50"), label
    assert library.get(uncounted_high_chroma.id).label.endswith(" · faithfulness 1.00")


def scans_of(monkeypatch, folder: Path) -> list[Path]:
    """A list that grows by one each time ``folder`` is listed."""
    scans: list[Path] = []
    real = folders._scan

    def counting(path):
        if Path(path) == folder:
            scans.append(Path(path))
        return real(path)

    monkeypatch.setattr(folders, "_scan", counting)
    return scans


def test_listing_reads_only_the_index_until_the_takes_folder_changes(library, monkeypatch):
    first = add_take(library, seed=1)
    takes_dir = library.root / "takes"
    make_old(takes_dir)  # as if nothing had changed for an hour
    scans = scans_of(monkeypatch, takes_dir)
    assert ids(library.list()) == [first.id]
    assert len(scans) == 1  # compared once, and remembered
    for _ in range(3):
        assert ids(library.list()) == [first.id]
        library.list(starred_only=True, text="funk", sort="name")
    library.star(first.id)  # an edit touches the index and the take's own folder only
    assert library.list(starred_only=True)[0].starred
    assert len(scans) == 1

    # Another process adds a take: takes/ changes, so the next listing looks again.
    other = add_take(TakeLibrary(library.root), seed=2)
    assert ids(library.list()) == [other.id, first.id]
    assert len(scans) >= 2


def test_a_recent_folder_time_is_not_trusted(library, monkeypatch):
    add_take(library)
    monkeypatch.setattr(sync, "RACY_S", 1e9)  # every time is "recent"
    scans = scans_of(monkeypatch, library.root / "takes")
    library.list()
    library.list()
    assert len(scans) == 2  # a change in the same clock tick could hide: keep looking


def test_folders_added_and_deleted_by_hand_show_in_a_synced_listing(library):
    first = add_take(library, seed=1)
    takes_dir = library.root / "takes"
    make_old(takes_dir)
    assert ids(library.list()) == [first.id]  # remembered as in line
    by_hand = "00112233aabb"
    meta = take_metadata("take", {"A": settings(3)}, "tune.mod")
    save_take(takes_dir / by_hand / "take.wav", sine(), meta)  # e.g. copied from a backup
    assert ids(library.list()) == [by_hand, first.id]  # "created" from its file's time
    assert library.get(by_hand).source_name == "tune.mod"

    make_old(takes_dir)
    assert len(library.list()) == 2
    shutil.rmtree(takes_dir / first.id)  # deleted by hand
    assert ids(library.list()) == [by_hand]
    with contextlib.closing(sqlite3.connect(library.root / "library.sqlite3")) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM takes")] == [by_hand]


def test_a_take_whose_insert_failed_shows_up_in_a_synced_listing(library, monkeypatch):
    first = add_take(library, seed=1)
    make_old(library.root / "takes")
    assert ids(library.list()) == [first.id]  # remembered as in line

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_insert", locked)
    with pytest.raises(NeuroChipError, match="saved in"):
        add_take(library, seed=2, name="survivor")
    monkeypatch.undo()
    assert [t.name for t in library.list()] == ["survivor", first.name]


def test_an_unreadable_folder_is_retried_once_it_changes(library, caplog, monkeypatch):
    take = add_take(library)
    takes_dir = library.root / "takes"
    broken = takes_dir / "cccccccccccc"
    broken.mkdir()
    (broken / "take.wav").write_bytes(b"half a copy")
    make_old(takes_dir)
    assert ids(library.list()) == [take.id]
    assert "could not be indexed" in caplog.text
    caplog.clear()
    scans = scans_of(monkeypatch, takes_dir)
    assert ids(library.list()) == [take.id]
    assert not caplog.records and scans == []  # in line: neither read nor reported again
    # The copy finishes: the folder changes (takes/ itself does not).
    save_take(broken / "take.wav", sine(), take_metadata("take", {"A": settings(8)}))
    assert set(ids(library.list())) == {take.id, broken.name}
    assert library.get(broken.name).settings() == settings(8)


# --- stereo pairs --------------------------------------------------------------------------------


def test_pair_makes_a_stereo_take_with_both_settings(library):
    a = add_take(library, seed=1, freq=440.0, thumbnail=Image.new("RGB", (8, 8)))
    b = add_take(library, seed=2, freq=660.0)
    pair = pair_takes(library, a.id, b.id, width=1.0)
    assert (pair.kind, pair.channels) == ("stereo pair", 2)
    assert pair.settings("A") == settings(1) and pair.settings("B") == settings(2)
    assert pair.metadata["width"] == 1.0 and pair.metadata["from_takes"] == [a.id, b.id]
    assert pair.source_name == "sketch.wav" and "seeds 1, 2" in pair.name
    assert pair.thumbnail_path is not None  # take A's
    mix = library.load_audio(pair.id).samples
    np.testing.assert_allclose(mix[0], library.load_audio(a.id).samples[0], atol=1e-5)
    np.testing.assert_allclose(mix[1], library.load_audio(b.id).samples[0], atol=1e-5)
    assert library.list()[0].id == pair.id

    centre = library.load_audio(pair_takes(library, a.id, b.id, width=0.0).id).samples
    np.testing.assert_array_equal(centre[0], centre[1])


def test_pair_refuses_takes_of_different_lengths_and_bad_widths(library):
    a, b = add_take(library, seconds=0.5), add_take(library, seconds=0.4)
    with pytest.raises(NeuroChipError, match="same length"):
        pair_takes(library, a.id, b.id)
    with pytest.raises(NeuroChipError, match="between 0 and 1"):
        pair_takes(library, a.id, a.id, width=1.5)
    assert len(library.list()) == 2


# --- crash safety --------------------------------------------------------------------------------


def test_a_crash_between_folder_and_index_is_recovered(library, monkeypatch):
    def killed(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")  # or the process died here

    monkeypatch.setattr(store, "_insert", killed)
    with pytest.raises(NeuroChipError, match="saved in"):
        add_take(library, seed=5, name="survivor")
    monkeypatch.undo()
    (folder,) = (library.root / "takes").iterdir()
    assert re.fullmatch(r"[0-9a-f]{12}", folder.name)

    fresh = TakeLibrary(library.root)
    (take,) = fresh.list()
    assert (take.id, take.name, take.settings()) == (folder.name, "survivor", settings(5))
    assert library.list() == [take]  # the open library notices too, without a restart


def test_recover_counts_and_indexes_a_folder_written_by_hand(library):
    take_id = "00112233aabb"
    meta = take_metadata("crossfade comparison", {"A": settings(3)}, "tune.mod")
    save_take(library.root / "takes" / take_id / "take.wav", sine(channels=2), meta)
    assert library.recover() == 1
    take = library.get(take_id)
    assert (take.kind, take.channels, take.source_name) == ("crossfade comparison", 2, "tune.mod")
    assert take.name == "tune — crossfade comparison: a funk band with slap bass (seed 3)"
    assert library.recover() == 0


def test_a_failed_add_leaves_nothing_behind(library, monkeypatch):
    def disk_full(path, image):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folders, "write_png", disk_full)
    with pytest.raises(NeuroChipError, match="the disk is full: free some space"):
        add_take(library, thumbnail=Image.new("RGB", (4, 4)))
    assert list((library.root / "takes").iterdir()) == []
    assert library.list() == []


def test_partial_folders_are_never_listed_and_removed_once_stale(library):
    done = add_take(library)
    stale = library.root / "takes" / "aaaaaaaaaaaa.partial"
    live = library.root / "takes" / "bbbbbbbbbbbb.partial"  # another process writing now
    for partial in (stale, live):
        save_take(partial / "take.wav", sine(), take_metadata("take", {"A": settings()}))
    make_old(stale)
    reopened = TakeLibrary(library.root)
    assert [t.id for t in reopened.list()] == [done.id]
    assert not stale.exists() and live.exists()
    assert reopened.recover(stale_after_s=0) == 0 and not live.exists()


def test_rows_whose_folder_vanished_are_dropped(library):
    keep, lost = add_take(library, seed=1), add_take(library, seed=2)
    shutil.rmtree(lost.audio_path.parent)
    assert [t.id for t in TakeLibrary(library.root).list()] == [keep.id]
    with sqlite3.connect(library.root / "library.sqlite3") as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM takes")] == [keep.id]
    with pytest.raises(NeuroChipError, match="No take"):
        library.get(lost.id)


def test_a_delete_interrupted_after_the_rename_stays_deleted(library):
    keep, doomed = add_take(library, seed=1), add_take(library, seed=2)
    folder = doomed.audio_path.parent
    # Killed after the rename, before the row's deletion committed.
    folder.rename(folder.with_name(f"{doomed.id}.deleted"))
    assert [t.id for t in TakeLibrary(library.root).list()] == [keep.id]
    assert sorted(p.name for p in (library.root / "takes").iterdir()) == [keep.id]


def test_stale_temporary_files_are_removed(library):
    take = add_take(library)
    folder = take.audio_path.parent
    leftovers = [folder / ".take.wav.tmp-1a2b3c4d", folder / ".entry.json.k2j1x9.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
        make_old(path)
    TakeLibrary(library.root)
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in folder.iterdir()) == ["entry.json", "take.json", "take.wav"]


def test_concurrent_writers_lose_nothing(library):
    root = library.root
    start = threading.Barrier(3)
    errors: list[BaseException] = []
    ids: list[str] = []

    def writer(offset: int) -> None:
        own = TakeLibrary(root)  # another tab, or another process
        start.wait()
        try:
            for i in range(10):
                ids.append(add_take(own, seed=offset + i).id)
        except BaseException as err:
            errors.append(err)

    def opener() -> None:
        start.wait()
        try:
            for _ in range(5):
                TakeLibrary(root).list()  # new sessions recovering while others write
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(2)]
    threads.append(threading.Thread(target=opener))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 20
    assert {t.id for t in library.list()} == set(ids)
    assert {p.name for p in (root / "takes").iterdir()} == set(ids)


def test_one_library_shared_by_threads(library):
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            take = add_take(library, seed=seed)
            library.star(take.id)
            library.list()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(library.list(starred_only=True)) == 6


# --- user text never reaches a path --------------------------------------------------------------


@pytest.mark.parametrize("source", ["../../etc/passwd", "a/b\\c:d*?.wav", "/abs/x.wav", ".."])
def test_names_from_users_stay_text(tmp_path, source):
    library = TakeLibrary(tmp_path / "home")
    take = add_take(library, source=source, name="../../../escape/" + source)
    assert take.source_name == source == library.get(take.id).source_name
    assert take.name.startswith("../../../escape/")
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == files_under(library.root)
    for path in files_under(library.root / "takes"):
        assert path.parent.parent == library.root / "takes"
        assert re.fullmatch(r"[0-9a-f]{12}", path.parent.name)
    _, file_name = library.export(take.id)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", file_name)


# --- download names ------------------------------------------------------------------------------

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def test_take_filename_is_made_from_song_and_settings():
    assert (
        take_filename("minuet.nsf", settings(), "take", ".wav")
        == "minuet_funk-band-with-slap-bass_d0.35_g7_seed42.wav"
    )
    assert (
        take_filename("minuet.nsf", settings(), "stereo pair", ".flac")
        == "minuet_stereo-pair_funk-band-with-slap-bass_d0.35_g7_seed42.flac"
    )
    assert (  # a file of two takes says both seeds
        take_filename("minuet.nsf", settings(), "stereo pair", ".flac", seeds=[42, 43])
        == "minuet_stereo-pair_funk-band-with-slap-bass_d0.35_g7_seeds42-43.flac"
    )
    assert take_filename("m.nsf", settings(), "comp", ".wav", seeds=[42, 42]).endswith(
        "_seed42.wav"
    )
    odd = RenderSettings(prompt="The Orchestra", denoise=0.5, guidance=7.5, seed=3)
    assert take_filename("C:\\songs\\boss theme.it", odd, "take", "mp3") == (
        "boss-theme_orchestra_d0.5_g7.5_seed3.mp3"
    )
    salsa = RenderSettings(prompt="salsa band, a brass section", denoise=1.0, guidance=0.0)
    assert take_filename("a.wav", salsa, "take", ".ogg") == (
        "a_salsa-band-a-brass-section_d1_g0_seed42.ogg"
    )


@pytest.mark.parametrize(
    "source",
    [
        None,
        "",
        "!!!.wav",
        "?*:<>|",
        "ミヌエット.nsf",
        "Für Élise.mid",
        "x" * 500 + ".wav",
        ".hidden",
    ],
)
@pytest.mark.parametrize("with_settings", [True, False])
def test_take_filename_is_always_safe(source, with_settings):
    long_prompt = RenderSettings(prompt="ünïcödé 音楽 " + "word " * 80, seed=MAX_SEED)
    chosen = long_prompt if with_settings else None
    name = take_filename(source, chosen, "crossfade comparison", ".flac")
    assert SAFE_NAME.fullmatch(name) and name.endswith(".flac")
    assert len(name) <= names.MAX_FILENAME_CHARS
    assert name == take_filename(source, chosen, "crossfade comparison", ".flac")
    if with_settings:
        assert "unicode" in name and f"seed{MAX_SEED}" in name


def test_take_filename_edge_cases():
    assert take_filename(None, None, "take", ".wav") == "neurochip-take.wav"
    assert take_filename("nul.wav", None, "take", ".wav") == "nul-take.wav"  # Windows device
    assert take_filename("Für Élise.mid", None, "take", ".WAV") == "Fur-Elise.wav"
    assert take_filename("../../etc/passwd", None, "take", ".wav") == "passwd.wav"


# --- export --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", "FLAC"])
def test_export_gives_decodable_files_named_after_the_take(library, suffix):
    take = add_take(library, seed=9, source="minuet.nsf")
    data, file_name = library.export(take.id, suffix)
    ext = "." + suffix.lower().lstrip(".")
    assert file_name == f"minuet_funk-band-with-slap-bass_d0.35_g7_seed9{ext}"
    samples, rate = sf.read(io.BytesIO(data), always_2d=True)
    assert rate == RATE and samples.shape[1] == 1
    # MP3 frames pad the ends; libsndfile trims them with the LAME header, give or take.
    assert abs(len(samples) - 22050) <= (1152 if ext == ".mp3" else 0)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_exported_files_carry_the_settings(library, tmp_path, suffix):
    pair_a, pair_b = add_take(library, seed=1), add_take(library, seed=2)
    take = pair_takes(library, pair_a.id, pair_b.id, 0.5)
    data, file_name = library.export(take.id, suffix)
    path = tmp_path / file_name
    path.write_bytes(data)
    meta = read_take_metadata(path)  # no sidecar here: embedded
    assert meta["kind"] == "stereo pair" and meta["width"] == 0.5
    assert file_name.endswith(f"_seeds1-2{suffix}")  # the pair's name says both takes' seeds
    assert settings_from_take(path, "B") == settings(2)


def test_export_refuses_other_file_types(library):
    take = add_take(library)
    for suffix in (".aiff", "", ".wav/../x", ".exe"):
        with pytest.raises(NeuroChipError, match="can be downloaded as"):
            library.export(take.id, suffix)


# --- thumbnails and renders ----------------------------------------------------------------------


def test_spectrogram_thumbnail_is_small_and_rgb():
    picture = torch.rand(3, 512, 2000)
    thumb = spectrogram_thumbnail(picture)
    assert (thumb.mode, thumb.size) == ("RGB", (400, 96))
    assert spectrogram_thumbnail(picture[:, :, :50], max_width=400, height=32).size == (50, 32)
    silence = np.asarray(spectrogram_thumbnail(torch.ones(3, 512, 100)))
    assert (silence == 255).all()  # white stays white
    stereo = torch.cat([torch.zeros(1, 512, 64), torch.full((2, 512, 64), 0.5)])
    grey = np.asarray(spectrogram_thumbnail(stereo))
    assert (grey == 128).all()  # Riffusion's empty R channel does not tint it cyan
    with pytest.raises(NeuroChipError, match="shaped"):
        spectrogram_thumbnail(torch.ones(4, 512, 10))


def test_add_keeps_a_render_with_its_thumbnail(library):
    picture = torch.linspace(0, 1, 64).expand(3, 512, 64).contiguous()
    info = {"model": "tiny", "device": "cpu", "seconds": np.float32(1.5)}  # as engines say
    meta = take_metadata("take", {"A": settings(11)}, "minuet.nsf", info)
    take = library.add(sine(0.25), meta, thumbnail=spectrogram_thumbnail(picture))
    assert (take.kind, take.source_name, take.settings()) == ("take", "minuet.nsf", settings(11))
    assert take.metadata["device"] == "cpu" and take.metadata["seconds"] == 1.5
    assert take.thumbnail_path is not None
    assert Image.open(take.thumbnail_path).size == (64, 96)
    unnamed_song = take_metadata("take", {"B": settings(12)}, None, info)
    named = library.add(sine(0.25), unnamed_song, name="first try")
    assert named.name == "first try" and named.source_name is None
    assert named.name == library.get(named.id).name
    assert named.settings() == settings(12)  # a take B file: its only take


def test_take_settings_names_what_it_holds(library):
    take = add_take(library)
    with pytest.raises(NeuroChipError, match="holds takes A, not 'B'"):
        take.settings("B")


def test_add_refuses_metadata_not_made_by_take_metadata(library):
    with pytest.raises(ValueError, match="take_metadata"):
        library.add(sine(), {"takes": {}})
    assert library.list() == []


def test_a_folder_without_a_readable_take_is_left_alone(library, caplog):
    take = add_take(library)
    broken = library.root / "takes" / "cccccccccccc"
    broken.mkdir()
    (broken / "take.wav").write_bytes(b"not audio")
    assert TakeLibrary(library.root).recover() == 0
    assert [t.id for t in library.list()] == [take.id]
    caplog.clear()
    library.list()
    assert not caplog.records  # not retried (and reported) on every listing
    assert (broken / "take.wav").exists()  # never deleted: it may be someone's only copy


# --- a damaged index (issue 9) ------------------------------------------------------------------


def quick_check(index: Path) -> str:
    with contextlib.closing(sqlite3.connect(index)) as conn:
        return conn.execute("PRAGMA quick_check(1)").fetchone()[0]


def corrupt_index(index: Path, pages: list[int] | None = None) -> None:
    """Write garbage over pages of a real index (all but page 1, the schema, by default).

    As a failing disk or a torn copy would; the write-ahead log is checkpointed first, so that
    every page is read from the file. Checks that the file is damaged as SQLite sees it.
    """
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
    garbage = bytes(range(256)) * (page_size // 256)  # page type 0: no such b-tree page
    with index.open("r+b") as f:
        for page in pages or range(2, count + 1):
            f.seek((page - 1) * page_size)
            f.write(garbage)
    assert quick_check(index) != "ok"
    if pages is None:
        with (
            contextlib.closing(sqlite3.connect(index)) as conn,
            pytest.raises(sqlite3.DatabaseError, match="malformed"),
        ):
            conn.execute("SELECT * FROM takes ORDER BY created").fetchall()


def set_aside(root: Path) -> list[Path]:
    """The damaged index files set aside in a library (not their -wal and -shm)."""
    found = root.glob("library.sqlite3.damaged-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def listed(library) -> list[tuple[str, str, bool, float]]:
    return [(t.id, t.name, t.starred, t.created) for t in library.list()]


@pytest.fixture(scope="module")
def many_takes(tmp_path_factory) -> Path:
    """A library of 30 takes, some starred, some renamed: its index spans many pages."""
    root = tmp_path_factory.mktemp("many") / "home"
    library = TakeLibrary(root)
    takes = [add_take(library, seed=s, source=f"song {s % 3}.nsf", seconds=0.05) for s in range(30)]
    for take in takes[::4]:
        library.star(take.id)
    for take in takes[1::7]:
        library.rename(take.id, f"renamed {take.id}")
    return root


@pytest.fixture
def many(many_takes, tmp_path) -> TakeLibrary:
    """A copy of many_takes for one test."""
    shutil.copytree(many_takes, tmp_path / "many")
    return TakeLibrary(tmp_path / "many")


def test_a_corrupted_index_is_set_aside_and_rebuilt_when_opened(many):
    before = many.list()
    assert len(before) == 30 and sum(t.starred for t in before) == 8
    corrupt_index(many.index_path)
    again = TakeLibrary(many.root)  # used to raise "database disk image is malformed"
    assert again.list() == before  # every take, with its name, star and place
    [aside] = set_aside(many.root)
    assert quick_check(aside) != "ok"  # kept as it was, for a look
    assert quick_check(many.index_path) == "ok"
    assert again.recover() == 0


def test_opening_checks_every_page_of_the_index(many):
    by_prompt = ids(many.list(sort="prompt"))
    with contextlib.closing(sqlite3.connect(many.index_path)) as conn:
        [root_page] = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'takes_by_prompt'"
        ).fetchone()
    corrupt_index(many.index_path, [root_page])  # a page only sorting by prompt reads
    again = TakeLibrary(many.root)
    assert len(set_aside(many.root)) == 1  # found by the check when opened, not later
    assert ids(again.list(sort="prompt")) == by_prompt


OPERATIONS = [
    "list",
    "songs",
    "count",
    "get",
    "load_audio",
    "export",
    "star",
    "rename",
    "note",
    "delete",
    "add",
]


@pytest.mark.parametrize("operation", [*OPERATIONS, "recover", "pair"])
def test_an_index_damaged_while_in_use_is_rebuilt_once(many, operation):
    before = {t.id: t for t in many.list()}
    take, other = many.list()[3], many.list()[5]
    corrupt_index(many.index_path)  # behind the back of the open library (the app's)
    result = {
        "list": lambda: many.list(),
        "songs": lambda: many.songs(),
        "count": lambda: many.count(text="renamed"),
        "get": lambda: many.get(take.id),
        "load_audio": lambda: many.load_audio(take.id),
        "export": lambda: many.export(take.id),
        "star": lambda: many.star(take.id, not take.starred),
        "rename": lambda: many.rename(take.id, "a new name"),
        "note": lambda: many.set_note(take.id, "a note"),
        "delete": lambda: many.delete(take.id),
        "add": lambda: add_take(many, seed=99, seconds=0.05),
        "recover": lambda: many.recover(),
        "pair": lambda: pair_takes(many, take.id, other.id),
    }[operation]()
    assert len(set_aside(many.root)) == 1
    after = {t.id: t for t in many.list()}
    assert quick_check(many.index_path) == "ok"
    if operation == "get":
        assert result == before[take.id]
    elif operation == "songs":
        assert result == ["song 0.nsf", "song 1.nsf", "song 2.nsf"]
    elif operation == "export":
        assert result[0] == take.audio_path.read_bytes()
    elif operation == "star":
        assert result.starred == after[take.id].starred != take.starred
    elif operation == "rename":
        assert result.name == after[take.id].name == "a new name"
    elif operation == "note":
        assert result.note == after[take.id].note == "a note"
    elif operation == "count":
        assert result == 5  # takes[1::7] were renamed
    elif operation == "delete":
        assert take.id not in after and not take.audio_path.exists()
    elif operation in ("add", "pair"):
        assert result.id in after and after[result.id].name == result.name
    # Nothing else changed: no take lost, every name and star as it was.
    changed = {take.id} if operation in ("star", "rename", "note", "delete") else set()
    added = {result.id} if operation in ("add", "pair") else set()
    assert set(after) == (set(before) | added) - ({take.id} if operation == "delete" else set())
    for take_id in set(before) - changed:
        assert after[take_id] == before[take_id]


def test_a_delete_whose_commit_finds_the_index_damaged_is_done(many, monkeypatch):
    before = {t.id: t for t in many.list()}
    take = many.list()[2]
    real_connect = sqlite3.connect

    class DamagedAtCommit(sqlite3.Connection):
        deleting = False

        def execute(self, sql, *args):
            self.deleting |= sql.startswith("DELETE")
            if sql == "COMMIT" and self.deleting:  # after the folder was renamed .deleted
                super().execute("ROLLBACK")
                raise sqlite3.DatabaseError("database disk image is malformed")
            return super().execute(sql, *args)

    monkeypatch.setattr(
        store.sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=DamagedAtCommit, **k)
    )
    many.delete(take.id)  # not "No take with id": it was deleted, then the index rebuilt
    monkeypatch.undo()
    assert len(set_aside(many.root)) == 1
    after = {t.id: t for t in many.list()}
    assert after == {i: t for i, t in before.items() if i != take.id}
    assert not (many.root / "takes" / take.id).exists()
    assert not list((many.root / "takes").glob("*.deleted"))


def test_an_index_damaged_again_after_the_rebuild_is_a_clear_error(many, monkeypatch):
    count = len(many.list())
    real_connect = sqlite3.connect

    class Listing(sqlite3.Cursor):  # e.g. a failing disk: listing fails, fresh index or not
        def execute(self, sql, *args):
            if sql.startswith("SELECT id, created"):
                raise sqlite3.DatabaseError("database disk image is malformed")
            return super().execute(sql, *args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Listing):
            return super().cursor(factory)

    monkeypatch.setattr(
        store.sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Connection, **k)
    )
    with pytest.raises(NeuroChipError, match="rebuilt from the take folders") as info:
        many.list()
    assert "malformed" in str(info.value) and "\n" not in str(info.value)
    assert len(set_aside(many.root)) == 1  # rebuilt once, not over and over
    monkeypatch.undo()
    assert len(many.list()) == count


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ("database is locked", "database is locked"),
        ("attempt to write a readonly database", "attempt to write a readonly database"),
        # As io.write.describe_os_error says it for every file NeuroChip writes.
        ("database or disk is full", "the disk is full: free some space"),
    ],
)
def test_other_index_errors_stay_clear_errors(many, monkeypatch, message, said):
    take = many.list()[0]
    real_connect = sqlite3.connect

    class Failing(sqlite3.Cursor):
        def execute(self, sql, *args):
            if sql.split()[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                raise sqlite3.OperationalError(message)
            return super().execute(sql, *args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Failing):
            return super().cursor(factory)

        def execute(self, sql, *args):
            return self.cursor().execute(sql, *args)

    monkeypatch.setattr(
        store.sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Connection, **k)
    )
    for call in (
        many.list,
        many.songs,
        lambda: many.get(take.id),
        lambda: many.star(take.id),
        lambda: many.delete(take.id),
        many.recover,
    ):
        with pytest.raises(NeuroChipError, match=said) as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(NeuroChipError, match="saved in"):
        add_take(many, seed=99)
    assert set_aside(many.root) == []
    monkeypatch.undo()
    assert len(many.list()) == 31  # the take whose insert failed is kept all the same


def test_an_index_another_library_already_rebuilt_is_not_set_aside_again(many, monkeypatch):
    """A connection opened before another process replaced the index fails on the old file."""
    before = listed(many)
    index = many.index_path
    real = TakeLibrary._new_take
    calls = []

    def replaced_meanwhile(self, *args):
        if not calls:
            calls.append(1)
            for extra in ("", "-wal", "-shm"):  # as the other process's rebuild does
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{index}{extra}", f"{index}.elsewhere{extra}")
            TakeLibrary(many.root)
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(self, *args)

    monkeypatch.setattr(TakeLibrary, "_new_take", replaced_meanwhile)
    assert listed(many) == before
    assert set_aside(many.root) == []  # the new index was kept


# --- damaged take files (issue 9) -----------------------------------------------------------------


@pytest.mark.parametrize("cut", [100, 10, 0])
def test_a_take_cut_off_by_hand_is_listed_as_damaged_and_not_exported(library, cut):
    whole, take = add_take(library, seed=1), add_take(library, seed=2, name="cut")
    size = take.audio_path.stat().st_size
    assert 60_000 < size < 70_000
    with take.audio_path.open("r+b") as f:
        f.truncate(cut)
    found = {t.id: t for t in library.list()}
    assert not found[whole.id].damaged and found[whole.id].damage is None
    damage = f"cut off at {cut} bytes of {size / 1000:.1f} KB"
    assert found[take.id].damaged and found[take.id].damage == damage
    message = (
        f"The audio of “cut” is damaged ({damage}): it cannot be played or exported; "
        "delete it or restore the file."
    )
    for call in (
        lambda: library.export(take.id),
        lambda: library.export(take.id, ".flac"),
        lambda: library.load_audio(take.id),
        lambda: pair_takes(library, whole.id, take.id),
    ):
        with pytest.raises(NeuroChipError) as info:
            call()
        assert str(info.value) == message
    assert library.export(whole.id)[0] == whole.audio_path.read_bytes()
    # An index rebuilt from the folders still lists it, still damaged: never lost.
    for extra in ("", "-wal", "-shm"):
        Path(f"{library.index_path}{extra}").unlink(missing_ok=True)
    again = {t.id: t for t in TakeLibrary(library.root).list()}
    assert set(again) == {whole.id, take.id}
    assert again[take.id].damaged and again[take.id].name == "cut"
    assert not again[whole.id].damaged
    library.delete(take.id)  # what a composer does about it
    assert ids(library.list()) == [whole.id]


def test_listing_checks_takes_by_size_alone(library, monkeypatch):
    takes = [add_take(library, seed=s) for s in range(3)]
    # A complete file of another size (e.g. put back from a backup, or edited) is not damaged.
    save_take(takes[0].audio_path, sine(0.2), takes[0].metadata, bit_depth="24")

    def no_header_reads(*args, **kwargs):
        raise AssertionError("listing read a header of a take whose size is as recorded")

    with monkeypatch.context() as patched:
        patched.setattr(store.sf, "info", no_header_reads)
        patched.setattr("neurochip.library.damage._declared_size", no_header_reads)
        assert [t.damaged for t in library.list()[:2]] == [False, False]
    assert not library.get(takes[0].id).damaged  # its header is read: it is complete
    assert library.load_audio(takes[0].id).frames == round(0.2 * RATE)


def test_the_takes_page_warns_about_damaged_takes_and_survives_a_damaged_index(tmp_path):
    from streamlit.testing.v1 import AppTest

    library = TakeLibrary()  # the app's, in $NEUROCHIP_HOME
    whole, cut = add_take(library, seed=1), add_take(library, seed=2, name="cut")
    with cut.audio_path.open("r+b") as f:
        f.truncate(100)
    corrupt_index(library.index_path)
    at = AppTest.from_file("../app/views/takes.py", default_timeout=60).run()
    assert not at.exception
    stars = {b.key for b in at.button if b.key and b.key.startswith("star_")}
    assert stars == {f"star_{whole.id}", f"star_{cut.id}"}  # both listed
    assert any("damaged" in w.value and "cut off at 100 bytes" in w.value for w in at.warning)
    assert not at.get("download_button")  # the list builds no take's download
    for take in (whole, cut):  # the big view of each: a download for the whole one only
        [more] = [b for b in at.button if b.key == f"more_{take.id}"]
        more.click().run()
        assert not at.exception
        downloads = {d.key for d in at.get("download_button")}
        assert downloads == ({f"dl_{whole.id}"} if take is whole else set())
    assert any("cut off at 100 bytes" in w.value for w in at.warning)


def test_the_library_keeps_one_copy_of_each_sketch(tmp_path):
    from neurochip.sketch import load_sketch
    from tests.chiptune import make_chiptune

    library = TakeLibrary(tmp_path / "home")
    buffer = io.BytesIO()
    sf.write(buffer, make_chiptune(2.0).T, 44100, format="WAV", subtype="PCM_16")
    audio_sketch = load_sketch(buffer.getvalue(), name="minuet.wav")
    midi_path = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    midi_sketch = load_sketch(midi_path).with_voices({load_sketch(midi_path).tracks[0].key: "saw"})
    for sketch in (audio_sketch, midi_sketch, audio_sketch):
        library.keep_source(sketch)
    assert len(list((tmp_path / "home" / "sources").glob("*.json"))) == 2

    kept = library.source(audio_sketch.key)
    assert kept.name == "minuet.wav" and kept.decode_as.endswith(".flac")
    again = load_sketch(kept.data, name=kept.decode_as)
    np.testing.assert_allclose(again.audio.samples, audio_sketch.audio.samples, atol=1e-4)
    midi = library.source(midi_sketch.key)
    assert midi.data == midi_path.read_bytes() and midi.voices == dict(midi_sketch.voices)
    # Only our own keys name files: nothing from metadata becomes a path.
    for bad in ("../../etc/passwd", "", "ABC", None, "0" * 100):
        assert library.source(bad) is None
