"""The note measure: basic-pitch's real ONNX weights (they ship in its package) transcribe
takes made here, and mir_eval's matching counts the sketch's notes kept.

Calibration (issue 27): a take identical to the sketch keeps every note; the chip synth's
rendering of a MIDI keeps that MIDI's notes; the same notes on other chip voices most of them;
the tune a fifth up and another tune none, while nothing else pretends otherwise; a chord pad
of the right key few notes while chroma stays high. And where the notes went: lost notes with
bar and name, the headline, JSON that reads back.
"""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest

from neurochip.faithfulness import bar_times, note_faithfulness
from neurochip.io.audio import Audio
from neurochip.notes_kept import NotesKept, notes_kept
from neurochip.synth import read_midi, render_midi
from neurochip.transcription import Notes, midi_notes, note_name, transcribe
from tests.chiptune import BASS, BPM, MELODY
from tests.test_faithfulness import OTHER_BASS, OTHER_MELODY, TPB, tune_midi


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notes_kept")


@pytest.fixture(scope="module")
def tune(folder):
    song = read_midi(tune_midi(folder / "tune.mid"))
    return song, render_midi(song), midi_notes(song), bar_times(song)


def measure(tune, take: Audio, reference: Notes | None = "midi"):
    song, audio, notes, bars = tune
    found = note_faithfulness(
        audio, take, bars, reference=notes if reference == "midi" else reference
    )
    assert found.notes is not None
    return found


def chord_pad(folder: Path) -> Audio:
    """Each bar, the pitch classes the tune plays in it, held as one chord from the bar's
    start (in the octave above middle C): the right key and harmony, none of the tune's
    note onsets after the first of each bar."""
    onsets, beat = [], 0.0
    for notes in (MELODY, BASS):
        beat = 0.0
        for pitch, beats in notes:
            if pitch is not None:
                onsets.append((beat, 60 + pitch % 12))
            beat += beats
    track, events = mido.MidiTrack([mido.Message("program_change", program=89)]), []
    for bar in range(0, int(beat), 4):
        for pitch in sorted({p for t, p in onsets if bar <= t < bar + 4}):
            on = mido.Message("note_on", note=pitch, velocity=90)
            events += [(bar * TPB, 1, on), ((bar + 4) * TPB - 10, 0, on.copy(velocity=0))]
    now = 0
    for tick, _, message in sorted(events, key=lambda e: e[:2]):
        track.append(message.copy(time=tick - now))
        now = tick
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BPM))])
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.extend([tempo, track])
    mid.save(folder / "pad.mid")
    return render_midi(folder / "pad.mid")


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


def test_a_take_identical_to_the_sketch_keeps_every_note(tune):
    found = measure(tune, tune[1], reference=None)  # the sketch transcribed, twice
    assert found.notes.score == 1.0
    assert found.notes.notes.precision == 1.0
    assert found.notes.lost() == [] and found.notes.extra() == []


def test_the_chip_synths_rendering_keeps_the_midis_notes(tune):
    found = measure(tune, tune[1])
    assert found.notes.notes.sketch == len(tune[2]) > 20
    assert found.notes.score >= 0.95
    assert found.notes.notes.precision >= 0.6  # pulse waves bring some octave ghosts


@pytest.mark.parametrize("lead, bass", [("pulse12", "saw"), ("saw", "pulse50")])
def test_the_same_notes_on_other_chip_voices_score_high(tune, lead, bass):
    song = tune[0]
    found = measure(tune, render_midi(song, voices={"2": lead, "3": bass}))
    assert found.notes.score >= 0.85


def test_the_tune_a_fifth_up_keeps_no_notes_and_nothing_pretends_it_does(tune, folder):
    fifth = render_midi(tune_midi(folder / "fifth.mid", transpose=7))
    found = measure(tune, fifth)
    assert found.notes.score <= 0.1
    assert found.notes.pitch_classes.recall <= 0.25
    assert found.score < 0.5  # the chroma score does not pretend either


def test_another_tune_keeps_about_nothing(tune, folder):
    other = render_midi(tune_midi(folder / "other.mid", melody=OTHER_MELODY, bass=OTHER_BASS))
    found = measure(tune, other)
    assert found.notes.score <= 0.1
    assert found.notes.pitch_classes.recall <= 0.15


def test_a_chord_pad_of_the_right_key_keeps_few_notes_while_chroma_stays_high(tune, folder):
    pad = chord_pad(folder)
    sketch = tune[1]
    frames = min(pad.frames, sketch.frames)
    found = measure(tune, Audio(pad.samples[:, :frames], pad.sample_rate))
    assert found.score >= 0.6  # chroma: the right pitch classes sound
    assert found.notes.score <= 0.35  # notes: most of the tune's onsets are not played
    assert found.score - found.notes.score >= 0.35


def test_an_octave_up_is_lost_as_notes_and_kept_as_pitch_classes(tune, folder):
    octave = render_midi(tune_midi(folder / "octave.mid", transpose=12))
    found = measure(tune, octave)
    assert found.notes.score <= 0.15
    assert found.notes.pitch_classes.recall >= 0.85


# --------------------------------------------------------------------------------------
# Where the notes went
# --------------------------------------------------------------------------------------


def test_notes_missing_in_one_bar_are_listed_with_bar_and_name(tune):
    song, audio, notes, bars = tune
    # The take plays the sketch except bar 3, which is silent.
    samples = audio.samples.copy()
    a, b = (round(t * audio.sample_rate) for t in (bars[2], bars[3]))
    samples[:, a:b] = 0
    found = measure(tune, Audio(samples, audio.sample_rate)).notes
    in_bar_3 = [(round(t, 3), p) for t, p in zip(notes.starts_s, notes.pitches, strict=True)]
    in_bar_3 = [(t, p) for t, p in in_bar_3 if bars[2] - 1e-3 <= t < bars[3] - 1e-3]
    lost = found.lost()
    assert {p.bar for p in lost} == {3}
    assert sorted(p.pitch for p in lost) == sorted(p for _, p in in_bar_3)
    assert found.strip[2] == 0.0 and np.nanmin(np.delete(found.strip, 2)) >= 0.75
    names = [note_name(p) for _, p in sorted(in_bar_3)]
    assert f"{len(lost)} notes lost in bar 3 ({names[0]}" in found.headline()
    assert found.headline().startswith(f"Notes kept: {found.score:.0%}")


def test_the_measure_reads_back_from_json(tune):
    found = measure(tune, render_midi(tune[0], voices={"2": "saw"})).notes
    data = json.loads(json.dumps(found.to_dict()))
    again = NotesKept.from_dict(data)
    assert again.score == pytest.approx(found.score, abs=1e-4)
    assert [(p.bar, p.pitch) for p in again.lost()] == [(p.bar, p.pitch) for p in found.lost()]
    assert again.headline() == found.headline()
    assert data["lost"] == [
        {"bar": p.bar, "start_s": round(p.start_s, 3), "pitch": p.pitch, "name": p.name}
        for p in found.lost()
    ]
    with pytest.raises(ValueError):
        NotesKept.from_dict({"notes": {}})


def test_a_take_with_no_sketch_notes_says_so():
    found = notes_kept(Notes.of([]), Notes.of([(0.1, 0.5, 60)]), 2.0)
    assert found.notes.sketch == 0 and found.score == 0.0
    assert found.headline() == "Notes kept: no sketch notes here"
    assert [p.pitch for p in found.extra()] == [60]


def test_the_matching_is_by_onset_and_semitone():
    sketch = Notes.of([(0.0, 0.5, 60), (1.0, 1.5, 64), (2.0, 2.5, 67)])
    take = Notes.of([(0.04, 0.9, 60), (1.07, 1.5, 64), (2.0, 2.5, 68)])
    found = notes_kept(sketch, take, 3.0)
    assert found.kept.tolist() == [True, False, False]  # 70 ms late; a semitone off
    assert found.pitch_classes.matched == 2  # 100 ms is within the pitch-class tolerance


def test_drum_and_noise_parts_have_no_notes_to_keep(folder):
    song = read_midi(tune_midi(folder / "drums.mid"))
    pitched = midi_notes(song)
    assert len(pitched) == len([n for n in song.notes if n.channel != 10])
    assert len(midi_notes(song, {"3": "noise"})) == len([p for p, _ in MELODY if p is not None])


def test_transcription_finds_a_plain_tone(folder):
    rate = 22050
    t = np.arange(rate) / rate
    tone = 0.5 * np.sign(np.sin(2 * np.pi * 440 * t)) * (t < 0.8)
    found = transcribe(Audio(np.concatenate([np.zeros(rate // 4), tone]), rate))
    assert 69 in found.pitches.tolist()
    first = found.starts_s[found.pitches == 69][0]
    assert abs(first - 0.25) < 0.05
    assert len(transcribe(Audio(np.zeros(rate), rate))) == 0


def test_notes_the_transcriber_misses_in_the_sketch_itself_are_not_called_lost():
    sketch = Notes.of([(0.0, 0.5, 60), (1.0, 1.5, 64), (2.0, 2.5, 67)])
    heard = Notes.of([(0.01, 0.5, 60), (1.02, 1.5, 64)])  # the sketch's own audio: no G4
    take = Notes.of([(0.0, 0.5, 60)])
    found = notes_kept(sketch, take, 3.0, sketch_heard=heard)
    assert found.ceiling == pytest.approx(2 / 3)
    assert [p.name for p in found.lost()] == ["E4", "G4"]
    assert [p.name for p in found.lost(heard_only=True)] == ["E4"]
    assert found.headline() == "Notes kept: 33% (the sketch itself: 67%) · 1 note lost (E4)"
    again = NotesKept.from_dict(json.loads(json.dumps(found.to_dict())))
    assert again.ceiling == pytest.approx(2 / 3) and again.headline() == found.headline()
    assert notes_kept(sketch, sketch, 3.0, sketch_heard=sketch).ceiling == 1.0


def test_the_demo_sketch_against_its_own_midi_keeps_what_the_transcriber_hears():
    from neurochip.sketch import load_sketch

    assets = Path(__file__).resolve().parents[1] / "assets"
    midi = load_sketch(assets / "greensleeves.mid")
    found = note_faithfulness(
        midi.audio, midi.audio, reference=midi_notes(read_midi(assets / "greensleeves.mid"))
    ).notes
    assert found.score == pytest.approx(found.ceiling)  # the sketch scores its own ceiling
    assert "every note heard in the sketch kept" in found.headline() or found.ceiling == 1.0
    assert found.lost(heard_only=True) == []
