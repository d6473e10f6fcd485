"""Tests for neurochip.faithfulness: the note-faithfulness meter, and ``neurochip faithfulness``.

The calibration facts, on music made here: the tune of tests/chiptune.py ("Scarborough Fair",
D dorian), as additive synthesis and as a MIDI file played by the chip synth, and another
tune in B-flat major. Identity scores ~1, a denoise-0 round trip >= 0.95, the same notes on
other voices >= 0.9, a transposed copy and an unrelated song well under 0.6.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from neurochip.cli import main
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import (
    Faithfulness,
    bar_times,
    midi_time_signatures,
    note_faithfulness,
)
from neurochip.io.audio import Audio
from neurochip.phase import roundtrip
from neurochip.synth import read_midi, render_midi
from tests.chiptune import BASS, BPM, MELODY, make_chiptune

SR = 44100
TPB = 480
BAR_S = 4 * 60 / BPM  # 4/4 at the tune's 132 BPM: 1.82 s

# A tune in B-flat major, 28 beats, sharing no phrase with MELODY.
OTHER_MELODY = [
    (70, 1), (74, 1), (77, 1), (74, 1), (75, 2), (72, 2), (74, 1), (70, 1), (72, 1), (69, 1),
    (70, 3), (None, 1), (77, 1), (79, 1), (77, 1), (75, 1), (74, 2), (72, 2), (70, 4),
]  # fmt: skip
OTHER_BASS = [(46, 4), (51, 4), (53, 4), (46, 4), (51, 4), (53, 4), (46, 4)]


# --------------------------------------------------------------------------------------
# Material
# --------------------------------------------------------------------------------------


def part(notes, channel: int, program: int, transpose: int = 0) -> mido.MidiTrack:
    """A track playing (pitch or None, beats) pairs once, each note 90% of its length."""
    events, beat = [], 0.0
    for pitch, beats in notes:
        if pitch is not None:
            on = mido.Message("note_on", note=pitch + transpose, velocity=100, channel=channel)
            events.append((round(beat * TPB), 1, on))
            events.append((round((beat + 0.9 * beats) * TPB), 0, on.copy(velocity=0)))
        beat += beats
    track = mido.MidiTrack([mido.Message("program_change", program=program, channel=channel)])
    now = 0
    for tick, _, message in sorted(events, key=lambda e: e[:2]):
        track.append(message.copy(time=tick - now))
        now = tick
    return track


def drums(beats: int) -> mido.MidiTrack:
    """Kick and snare on alternate beats, on channel 10."""
    track, now = mido.MidiTrack(), 0
    for beat in range(beats):
        key = 36 if beat % 2 == 0 else 38
        track.append(
            mido.Message("note_on", note=key, velocity=100, channel=9, time=beat * TPB - now)
        )
        track.append(mido.Message("note_off", note=key, velocity=0, channel=9, time=TPB // 4))
        now = beat * TPB + TPB // 4
    return track


def tune_midi(path: Path, melody=MELODY, bass=BASS, transpose: int = 0) -> Path:
    """Lead (track "2"), bass ("3") and drums at 132 BPM in 4/4, once through."""
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BPM))])
    beats = int(sum(b for _, b in melody))
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.extend(
        [
            conductor,
            part(melody, 0, 80, transpose),  # GM synth lead: pulse25
            part(bass, 1, 33, transpose),  # GM bass: triangle
            drums(beats),
        ]
    )
    mid.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faithfulness")


@pytest.fixture(scope="module")
def tune(folder) -> Path:
    return tune_midi(folder / "tune.mid")


@pytest.fixture(scope="module")
def tune_audio(tune) -> Audio:
    return render_midi(tune)


def splice(audio: Audio, other: Audio, start_s: float, end_s: float) -> Audio:
    """``audio`` with ``other`` in place of it from ``start_s`` to ``end_s``."""
    samples = audio.samples.copy()
    a, b = round(start_s * audio.sample_rate), round(end_s * audio.sample_rate)
    samples[:, a:b] = other.samples[:, a:b]
    return Audio(samples, audio.sample_rate)


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


def test_a_take_identical_to_the_sketch_scores_one():
    sketch = Audio(make_chiptune(6.0, stereo=True), SR)
    result = note_faithfulness(sketch, sketch)
    assert result.score >= 0.99
    assert result.segment == "second"
    assert result.times_s.tolist() == [0, 1, 2, 3, 4, 5]
    assert (result.strip >= 0.99).all()
    assert result.duration_s == pytest.approx(6.0, abs=1e-3)
    # Mono, another sample rate and another level are the same notes.
    other = Audio(sketch.to_mono().samples * 0.05, SR).resample(32000)
    assert note_faithfulness(sketch, other).score >= 0.99
    # Deterministic.
    again = note_faithfulness(sketch, sketch)
    assert again.score == result.score and np.array_equal(again.strip, result.strip)


def test_a_denoise_zero_roundtrip_keeps_the_notes():
    sketch = Audio(make_chiptune(4.0, seed=2), SR)
    heard = roundtrip(sketch)  # what a render at denoise 0 gives back
    assert note_faithfulness(sketch, heard).score >= 0.95


def test_the_same_notes_on_other_voices_score_high(tune, tune_audio):
    # The meter is about notes, not sound: another instrument playing them keeps them.
    other_voices = render_midi(tune, voices={"2": "saw", "3": "pulse50"})
    assert note_faithfulness(tune_audio, other_voices).score >= 0.9
    # The additive synth of tests/chiptune.py playing the same tune, other drums.
    additive = Audio(make_chiptune(tune_audio.duration_s), SR)
    assert note_faithfulness(tune_audio, additive).score >= 0.9


def test_an_unrelated_song_scores_well_under_0_6(folder, tune_audio):
    other = render_midi(tune_midi(folder / "other.mid", OTHER_MELODY, OTHER_BASS))
    result = note_faithfulness(tune_audio, other)
    assert result.score < 0.5
    assert note_faithfulness(other, tune_audio).score < 0.5


@pytest.mark.parametrize("semitones", [1, 3, -5])
def test_a_transposed_copy_scores_clearly_lower(folder, tune, tune_audio, semitones):
    transposed = render_midi(tune_midi(folder / f"up{semitones}.mid", transpose=semitones))
    other_voices = render_midi(tune, voices={"2": "saw", "3": "pulse50"})
    score = note_faithfulness(tune_audio, transposed).score
    assert score < 0.6  # +1 measured 0.52 (neighbouring chroma bins overlap), others ~0.25
    assert score < note_faithfulness(tune_audio, other_voices).score - 0.4


# --------------------------------------------------------------------------------------
# What counts
# --------------------------------------------------------------------------------------


def test_silence_in_the_sketch_counts_neither_for_nor_against():
    tune = make_chiptune(4.0, seed=0)
    quiet = np.zeros((1, 3 * SR), dtype=np.float32)
    sketch = Audio(np.concatenate([tune, quiet, tune], axis=1), SR)
    # Where the sketch is silent, one take plays other music, another is silent too.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, quiet.shape).astype(np.float32)
    busy = Audio(np.concatenate([tune, noise, tune], axis=1), SR)
    still = Audio(np.concatenate([tune, quiet, tune], axis=1), SR)
    a, b = note_faithfulness(sketch, busy), note_faithfulness(sketch, still)
    assert a.score >= 0.98 and b.score >= 0.99
    assert a.counted_s == b.counted_s == pytest.approx(8.0, abs=0.3)
    assert np.isnan(a.strip[5]) and np.isnan(b.strip[5])  # 5-6 s: silent in the sketch
    assert not np.isnan(a.strip[:4]).any() and not np.isnan(a.strip[7:]).any()
    assert all(spot.score == spot.score for spot in a.low_spots())  # never a nan spot


def test_a_silent_take_scores_zero_where_the_sketch_plays():
    sketch = Audio(make_chiptune(6.0), SR)
    # The take stops after 3 s, leaving a hiss 80 dB down: no notes, not a flat chroma.
    hiss = np.random.default_rng(1).uniform(-1e-4, 1e-4, (1, 3 * SR))
    take = Audio(np.concatenate([sketch.samples[:, : 3 * SR], hiss], axis=1), SR)
    result = note_faithfulness(sketch, take)
    assert 0.4 < result.score < 0.6
    assert result.strip[4:].tolist() == [0.0, 0.0]
    assert [(s.first, s.last) for s in result.low_spots()] == [(3, 5)]


def test_a_silent_sketch_is_refused():
    silence = Audio(np.zeros((1, SR)), SR)
    with pytest.raises(NeuroChipError, match="silent"):
        note_faithfulness(silence, Audio(make_chiptune(1.0), SR))


def test_the_shorter_of_sketch_and_take_is_compared():
    sketch = Audio(make_chiptune(5.0), SR)
    result = note_faithfulness(sketch, sketch.span(0, 3.5))
    assert result.duration_s == pytest.approx(3.5, abs=1e-3)
    assert len(result.strip) == 4 and result.score >= 0.99


# --------------------------------------------------------------------------------------
# Bars
# --------------------------------------------------------------------------------------


def test_bar_times_follow_the_tempo_map_and_time_signatures(tmp_path):
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500_000),  # 120 BPM: a beat is 0.5 s
            mido.MetaMessage("time_signature", numerator=3, denominator=4),
            mido.MetaMessage("set_tempo", tempo=1_000_000, time=6 * TPB),  # 60 BPM from 3 s
            mido.MetaMessage("time_signature", numerator=4, denominator=4),
        ]
    )
    notes = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=100),
            mido.Message("note_off", note=60, velocity=0, time=14 * TPB),  # ends at 3 + 8 s
        ]
    )
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.extend([conductor, notes])
    mid.save(tmp_path / "meter.mid")
    song = read_midi(tmp_path / "meter.mid")
    meters = midi_time_signatures((tmp_path / "meter.mid").read_bytes())
    assert meters == [(0.0, 3, 4), (pytest.approx(3.0), 4, 4)]
    # Two bars of 3/4 at 1.5 s, then 4/4 at 4 s a bar; the bar at 11 s is past the end.
    assert bar_times(song, meters) == pytest.approx([0.0, 1.5, 3.0, 7.0])
    # Without time signatures: 4/4 across the tempo change (beats 0, 4, 8, 12).
    assert bar_times(song) == pytest.approx([0.0, 2.0, 5.0, 9.0])
    assert midi_time_signatures(b"not a MIDI file") == []


def test_the_bar_strip_has_one_value_per_bar_and_finds_the_changed_bars(folder, tune, tune_audio):
    song = read_midi(tune)
    bars = bar_times(song, midi_time_signatures(tune.read_bytes()))
    assert bars == pytest.approx([i * BAR_S for i in range(math.ceil(song.length_s / BAR_S))])
    assert note_faithfulness(tune_audio, tune_audio, bars).strip.shape == (len(bars),)

    transposed = render_midi(tune_midi(folder / "up3.mid", transpose=3))
    take = splice(tune_audio, transposed, bars[2], bars[4])  # bars 3 and 4 changed
    result = note_faithfulness(tune_audio, take, bars)
    assert result.segment == "bar"
    assert result.times_s == pytest.approx(bars)
    assert len(result.strip) == len(bars)
    assert [(s.first, s.last) for s in result.low_spots()] == [(2, 3)]
    assert (np.delete(result.strip, [2, 3]) >= 0.9).all()
    assert result.low_spots()[0].start_s == pytest.approx(bars[2])


def test_bars_past_the_end_of_the_audio_are_dropped(tune_audio):
    result = note_faithfulness(tune_audio, tune_audio, [0.0, 2.0, 4.0, 1000.0])
    assert result.times_s.tolist() == [0.0, 2.0, 4.0]
    assert result.ends_s[-1] == pytest.approx(tune_audio.duration_s, abs=1e-3)
    with pytest.raises(ValueError):
        note_faithfulness(tune_audio, tune_audio, [0.0, 2.0, 2.0])
    # No grid (a MIDI file timed in SMPTE frames has no bars): per second.
    assert note_faithfulness(tune_audio, tune_audio, []).segment == "second"


def test_to_dict_is_json_with_silence_as_null():
    result = Faithfulness(
        score=0.8,
        times_s=np.array([0.0, 1.0, 2.0]),
        strip=np.array([0.9, np.nan, 0.4]),
        segment="second",
        duration_s=2.5,
        counted_s=2.0,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["strip"] == [0.9, None, 0.4]
    assert data["low_spots"] == [
        {"first": 2, "last": 2, "start_s": 2.0, "end_s": 2.5, "score": 0.4}
    ]


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def test_the_command_prints_the_score_and_writes_json(folder, tune, tune_audio, tmp_path, capsys):
    transposed = render_midi(tune_midi(folder / "up3.mid", transpose=3))
    take = tmp_path / "take.wav"
    sf.write(take, splice(tune_audio, transposed, 2 * BAR_S, 4 * BAR_S).samples.T, SR)
    report = tmp_path / "report.json"

    assert main(["faithfulness", str(tune), str(take), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert "Note faithfulness of take.wav to tune.mid:" in out
    assert f"Chroma: {data['score']:.2f}" in out
    assert 0.6 < data["score"] < 0.95
    # Notes kept, counted against the MIDI's own notes: bars 3-4 are transposed, so the notes
    # lost are there, listed as "bar 3  E5  (3.64 s)".
    notes = data["notes"]
    assert f"Notes kept: {notes['score']:.0%}" in out
    assert 0.3 < notes["score"] < 0.9 and 0 <= notes["notes"]["precision"] <= 1
    assert "precision" in out and "recall" in out and "pitch classes:" in out
    lost = [line.strip() for line in out.splitlines() if re.match(r"\s+bar \d+  \S+  \(", line)]
    assert lost and all(line.startswith(("bar 3 ", "bar 4 ")) for line in lost), lost
    first = notes["lost"][0]
    assert f"bar {first['bar']}  {first['name']}  ({first['start_s']:.2f} s)" in lost[0]
    assert data["segment"] == "bar" and data["sketch"] == "tune.mid"
    assert len(data["strip"]) == len(data["times_s"]) == len(bar_times(read_midi(tune)))
    assert [(s["first"], s["last"]) for s in data["low_spots"]] == [(2, 3)]
    assert "bars 3-4" in out  # the low spot, numbered as composers count bars

    # An audio sketch has no bar grid: per second.
    sketch = tmp_path / "tune.wav"
    sf.write(sketch, tune_audio.samples.T, SR)
    assert main(["faithfulness", str(sketch), str(sketch)]) == 0
    out = capsys.readouterr().out
    assert "Note faithfulness of tune.wav to tune.wav:" in out and "Chroma: 1.00" in out
    assert "Notes kept: 100%" in out  # the sketch's transcription, kept by itself
    assert "Per second" in out and "No low spots" in out

    # --json alone prints the whole measure as JSON, the notes included.
    assert main(["faithfulness", str(tune), str(take), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["notes"]["notes"]["precision"] == data["notes"]["notes"]["precision"]
    assert printed["score"] == data["score"] and printed["take"] == "take.wav"


def test_the_command_lists_twenty_lost_notes_then_counts_the_rest(monkeypatch):
    from neurochip.cli import faithfulness as command
    from neurochip.notes_kept import notes_kept
    from neurochip.transcription import Notes

    sketch = Notes.of((0.5 * i, 0.5 * i + 0.4, 60 + i % 12) for i in range(25))
    found = notes_kept(sketch, Notes.of([]), 13.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], 5)
    lines = command.notes_report(found)
    assert lines[0].startswith("Notes kept: 0% · 25 notes lost")
    listed = [line for line in lines if line.startswith("  bar ")]
    assert len(listed) == 20 and listed[0] == "  bar 5  C4  (0.00 s)"
    assert lines[-1] == "  ... and 5 more"
    assert command.notes_report(None)[0].startswith("Notes kept: not counted")


def test_the_command_refuses_a_missing_file_in_one_line(tmp_path, capsys):
    take = tmp_path / "take.wav"
    sf.write(take, make_chiptune(1.0).T, SR)
    assert main(["faithfulness", str(tmp_path / "missing.wav"), str(take)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurochip: ") and "missing.wav" in err
    assert err.count("\n") == 1


def test_the_command_never_writes_over_an_input(tmp_path, capsys):
    sketch = tmp_path / "sketch.wav"
    sf.write(sketch, make_chiptune(1.0).T, SR)
    assert main(["faithfulness", str(sketch), str(sketch), "--json", str(sketch)]) == 2
    assert "would replace your input" in capsys.readouterr().err
    assert sf.info(sketch).frames == SR
