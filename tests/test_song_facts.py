"""Song facts: the tempo, metre and key a music model is told, from MIDI and from audio."""

from __future__ import annotations

import io
from pathlib import Path

import mido
import numpy as np
import pytest

from neurochip.bars import BarGrid
from neurochip.io.audio import Audio
from neurochip.io.decode import load_audio
from neurochip.sketch import Sketch, load_sketch
from neurochip.song_facts import (
    SongFacts,
    estimate_key,
    facts_of,
    facts_of_midi,
    key_of_pitch_classes,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TPB = 480

# A minor: the harmonic minor scale up and down over i-iv-V-i (G# from the E chord).
A_MINOR_MELODY = [69, 71, 72, 74, 76, 77, 80, 81, 80, 77, 76, 74, 72, 71, 69, 69]
A_MINOR_CHORDS = [(57, 60, 64), (50, 53, 57), (52, 56, 59), (57, 60, 64)]
# C major: the scale up and down over I-IV-V-I.
C_MAJOR_MELODY = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 60]
C_MAJOR_CHORDS = [(48, 52, 55), (53, 57, 60), (55, 59, 62), (48, 52, 55)]


def song(
    melody,
    chords,
    *,
    bpm: float | None = 120,
    metre: tuple[int, int] | None = None,
    key: str | None = None,
    drums: list[int] | None = None,
    drum_channel: int = 9,
    transpose: int = 0,
) -> bytes:
    """A MIDI file's bytes: a melody in quarter notes over chords of four beats each,
    and optionally notes held all through on ``drum_channel`` (0-based)."""
    conductor = mido.MidiTrack()
    if metre is not None:
        conductor.append(
            mido.MetaMessage("time_signature", numerator=metre[0], denominator=metre[1])
        )
    if key is not None:
        conductor.append(mido.MetaMessage("key_signature", key=key))
    if bpm is not None:
        conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    events = []
    for beat, pitch in enumerate(melody):
        events += note(0, pitch + transpose, beat, 0.9)
    for bar, chord in enumerate(chords):
        for pitch in chord:
            events += note(1, pitch + transpose, bar * 4, 3.8)
    for pitch in drums or []:
        events += note(drum_channel, pitch, 0, len(melody))
    track, now = mido.MidiTrack(), 0
    for tick, message in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(message.copy(time=tick - now))
        now = tick
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.extend([conductor, track])
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


def note(channel: int, pitch: int, beat: float, beats: float) -> list[tuple[int, mido.Message]]:
    on = mido.Message("note_on", channel=channel, note=pitch, velocity=100)
    return [(round(beat * TPB), on), (round((beat + beats) * TPB), on.copy(velocity=0))]


# --------------------------------------------------------------------------------------
# MIDI
# --------------------------------------------------------------------------------------


def test_a_minor_waltz_at_96_bpm():
    midi = song(A_MINOR_MELODY, A_MINOR_CHORDS, bpm=96, metre=(3, 4))
    assert facts_of_midi(midi) == SongFacts(bpm=96, beats_per_bar=3, key="A minor")


def test_c_major_is_told_from_its_relative_minor():
    # The same seven notes as A minor: the key is in which of them the tune leans on.
    midi = song(C_MAJOR_MELODY, C_MAJOR_CHORDS, metre=(4, 4))
    assert facts_of_midi(midi).key == "C major"


def test_drums_on_channel_10_are_left_out_of_the_key():
    # Drum notes held all through on C#, F# and G#: as pitches they would change the key.
    drums = [49, 54, 56]
    with_drums = song(A_MINOR_MELODY, A_MINOR_CHORDS, drums=drums)
    assert facts_of_midi(with_drums).key == "A minor"
    # The same notes on a pitched channel do change it: the test can tell.
    pitched = song(A_MINOR_MELODY, A_MINOR_CHORDS, drums=drums, drum_channel=2)
    assert facts_of_midi(pitched).key != "A minor"


@pytest.mark.parametrize(
    ("signature", "key"),
    [
        ("Eb", "D# major"),  # flats are spelled as sharps: one name per key
        ("Bbm", "A# minor"),
        ("F#m", "F# minor"),
        ("Cb", "B major"),
        ("C", "C major"),
    ],
)
def test_a_key_signature_is_taken_over_the_notes(signature, key):
    midi = song(A_MINOR_MELODY, A_MINOR_CHORDS, key=signature)
    assert facts_of_midi(midi).key == key


def test_without_tempo_or_time_signature_midi_defaults_hold():
    assert facts_of_midi(song(C_MAJOR_MELODY, C_MAJOR_CHORDS, bpm=None)) == SongFacts(
        120, 4, "C major"
    )


def test_the_first_tempo_and_time_signature_count_and_the_tempo_is_rounded():
    midi = mido.MidiFile(file=io.BytesIO(song(A_MINOR_MELODY, A_MINOR_CHORDS, bpm=95.6)))
    midi.tracks[0].append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=TPB))
    midi.tracks[0].append(mido.MetaMessage("time_signature", numerator=6, denominator=8))
    out = io.BytesIO()
    midi.save(file=out)
    facts = facts_of_midi(out.getvalue())
    assert (facts.bpm, facts.beats_per_bar) == (96, 6)


def test_a_tempo_acestep_cannot_take_is_unknown():
    assert facts_of_midi(song(C_MAJOR_MELODY, C_MAJOR_CHORDS, bpm=20)).bpm is None


def test_a_file_that_is_not_midi_has_no_facts():
    assert facts_of_midi(b"RIFF....WAVEfmt ") == SongFacts()


def test_key_of_pitch_classes_needs_something_to_go_on():
    assert key_of_pitch_classes(np.zeros(12)) is None
    assert key_of_pitch_classes(np.ones(12)) is None
    # C, E and G: C major.
    assert key_of_pitch_classes(np.eye(12)[[0, 4, 7]].sum(axis=0)) == "C major"


def test_the_greensleeves_demo():
    facts = facts_of_midi((ASSETS / "greensleeves.mid").read_bytes())
    assert facts == SongFacts(bpm=100, beats_per_bar=3, key="A minor")


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_major_sketch() -> Sketch:
    """C major played by the chip synth, twice through (16 s)."""
    return load_sketch(song(C_MAJOR_MELODY * 2, C_MAJOR_CHORDS * 2, bpm=120), name="c.mid")


def test_the_key_of_chip_audio_is_heard(c_major_sketch):
    assert estimate_key(c_major_sketch.audio) == "C major"


@pytest.mark.parametrize(("transpose", "key"), [(3, "D# major"), (-3, "A major")])
def test_the_key_of_transposed_audio_moves_with_it(transpose, key):
    sketch = load_sketch(
        song(C_MAJOR_MELODY, C_MAJOR_CHORDS, transpose=transpose), name="moved.mid"
    )
    assert estimate_key(sketch.audio) == key


def test_the_greensleeves_demo_audio_is_a_minor():
    assert estimate_key(load_audio(ASSETS / "greensleeves.flac")) == "A minor"


def test_a_detuned_rip_still_finds_its_key(c_major_sketch):
    # Played 40 cents sharp: the tuning is estimated, not assumed.
    audio = c_major_sketch.audio
    sharp = Audio(audio.samples, round(audio.sample_rate * 2 ** (40 / 1200)))
    assert estimate_key(sharp) == "C major"


def test_silence_noise_and_a_click_have_no_key():
    assert estimate_key(Audio(np.zeros(44100 * 3, np.float32), 44100)) is None
    noise = np.random.default_rng(0).normal(0, 0.1, 44100 * 3).astype(np.float32)
    assert estimate_key(Audio(noise, 44100)) is None
    assert estimate_key(Audio(np.ones(100, np.float32), 44100)) is None


# --------------------------------------------------------------------------------------
# Sketches
# --------------------------------------------------------------------------------------


def test_a_midi_sketch_tells_its_own_facts(c_major_sketch):
    facts = facts_of(c_major_sketch, BarGrid(90.0, beats_per_bar=3))  # the grid is ignored
    assert facts == SongFacts(120, 4, "C major")


def test_an_audio_sketch_tells_its_grid_and_the_key_it_sounds_in(c_major_sketch):
    audio = Sketch(c_major_sketch.audio, "c.wav", "key", bar_grid=BarGrid(119.6, 0.1, 4))
    assert facts_of(audio) == SongFacts(120, 4, "C major")
    assert facts_of(audio, BarGrid(90.0, beats_per_bar=3)) == SongFacts(90, 3, "C major")
    ungridded = Sketch(c_major_sketch.audio, "c.wav", "key")
    assert facts_of(ungridded) == SongFacts(None, None, "C major")


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (SongFacts(120, 4, "A minor"), "120 BPM, 4/4, A minor"),
        (SongFacts(96, 3, None), "96 BPM, 3/4, key unknown"),
        (SongFacts(100, 6, "F# major"), "100 BPM, 6/8, F# major"),
        (SongFacts(None, None, "C major"), "C major"),
        (SongFacts(), "key unknown"),
    ],
)
def test_as_text(facts, text):
    assert facts.as_text() == text
