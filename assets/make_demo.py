"""Write the demo sketch: "Greensleeves" (traditional, public domain) as a chip-tune MIDI file.

    .venv/bin/python assets/make_demo.py      # writes assets/greensleeves.mid and .flac

An NES-style arrangement in A minor, 3/4 at 100 BPM: a 25 % pulse lead, a 12.5 % pulse
arpeggio, a triangle bass and noise drums. The lead uses what the model responds to: mod-wheel
vibrato that blooms on long notes, an expression swell, and a pitch-bend scoop into a note.
The .flac is the built-in chip synth's render of the .mid (what the app's demo button loads).
"""

from __future__ import annotations

from pathlib import Path

import mido

HERE = Path(__file__).resolve().parent
TICKS = 480  # per quarter note
BPM = 100

# The melody: (note, beats). One pickup beat, then 16 bars of 3/4.
MELODY = [
    ("A4", 1),
    ("C5", 2),
    ("D5", 1),
    ("E5", 1.5),
    ("F5", 0.5),
    ("E5", 1),
    ("D5", 2),
    ("B4", 1),
    ("G4", 1.5),
    ("A4", 0.5),
    ("B4", 1),
    ("C5", 2),
    ("A4", 1),
    ("A4", 1.5),
    ("G#4", 0.5),
    ("A4", 1),
    ("B4", 2),
    ("G#4", 1),
    ("E4", 2),
    ("A4", 1),
    ("C5", 2),
    ("D5", 1),
    ("E5", 1.5),
    ("F5", 0.5),
    ("E5", 1),
    ("D5", 2),
    ("B4", 1),
    ("G4", 1.5),
    ("A4", 0.5),
    ("B4", 1),
    ("C5", 1.5),
    ("B4", 0.5),
    ("A4", 1),
    ("G#4", 1.5),
    ("F#4", 0.5),
    ("G#4", 1),
    ("A4", 3),
    ("A4", 2),
]
# One chord per bar: (root for the bass, chord tones for the arpeggio).
CHORDS = [
    ("A2", ("A3", "C4", "E4")),
    ("C3", ("G3", "C4", "E4")),
    ("G2", ("G3", "B3", "D4")),
    ("E2", ("G3", "B3", "E4")),
    ("A2", ("A3", "C4", "E4")),
    ("F2", ("A3", "C4", "F4")),
    ("E2", ("G#3", "B3", "E4")),
    ("E2", ("G#3", "B3", "E4")),
    ("A2", ("A3", "C4", "E4")),
    ("C3", ("G3", "C4", "E4")),
    ("G2", ("G3", "B3", "D4")),
    ("E2", ("G3", "B3", "E4")),
    ("A2", ("A3", "C4", "E4")),
    ("E2", ("G#3", "B3", "E4")),
    ("A2", ("A3", "C4", "E4")),
    ("A2", ("A3", "C4", "E4")),
]
NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def midi_note(name: str) -> int:
    pitch, octave = name[:-1], int(name[-1])
    return 12 * (octave + 1) + NAMES[pitch[0]] + (1 if pitch.endswith("#") else 0)


def ticks(beats: float) -> int:
    return round(beats * TICKS)


def track_with(events: list[tuple[int, mido.Message]], name: str) -> mido.MidiTrack:
    """A track from (absolute tick, message) pairs."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for at, message in sorted(events, key=lambda e: e[0]):
        track.append(message.copy(time=at - now))
        now = at
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def lead() -> mido.MidiTrack:
    ch = 0
    events = [(0, mido.Message("program_change", channel=ch, program=80))]  # square lead
    events += [(0, mido.Message("control_change", channel=ch, control=7, value=110))]
    # Expression swell over the pickup and first bar.
    events += [
        (ticks(i * 0.25), mido.Message("control_change", channel=ch, control=11, value=v))
        for i, v in enumerate(range(60, 128, 5))
    ]
    at = 0.0
    for i, (name, beats) in enumerate(MELODY):
        start, length = ticks(at), ticks(beats * 0.95)
        if i == 3:  # scoop up a semitone into the first E5
            events += [
                (start, mido.Message("pitchwheel", channel=ch, pitch=-4096)),
                (start + ticks(0.25), mido.Message("pitchwheel", channel=ch, pitch=0)),
            ]
        events.append(
            (start, mido.Message("note_on", channel=ch, note=midi_note(name), velocity=100))
        )
        events.append((start + length, mido.Message("note_off", channel=ch, note=midi_note(name))))
        # Long notes: vibrato blooms after the attack, as a player leans into them.
        events.append((start, mido.Message("control_change", channel=ch, control=1, value=0)))
        if beats >= 1.5:
            for k, value in enumerate((30, 60, 90)):
                at_tick = start + ticks(0.5 + 0.3 * k)
                if at_tick < start + length:
                    events.append(
                        (
                            at_tick,
                            mido.Message("control_change", channel=ch, control=1, value=value),
                        )
                    )
        at += beats
    return track_with(events, "Lead (pulse 25%)")


def arpeggio() -> mido.MidiTrack:
    ch = 1
    events = [
        (0, mido.Message("program_change", channel=ch, program=24)),
        (0, mido.Message("control_change", channel=ch, control=7, value=70)),
        (0, mido.Message("control_change", channel=ch, control=10, value=40)),
    ]
    for bar, (_, tones) in enumerate(CHORDS):
        for step in range(6):  # eighth notes
            start = ticks(1 + bar * 3 + step * 0.5)
            note = midi_note(tones[step % 3])
            events.append((start, mido.Message("note_on", channel=ch, note=note, velocity=70)))
            events.append((start + ticks(0.4), mido.Message("note_off", channel=ch, note=note)))
    return track_with(events, "Arpeggio (pulse 12.5%)")


def bass() -> mido.MidiTrack:
    ch = 2
    events = [
        (0, mido.Message("program_change", channel=ch, program=33)),
        (0, mido.Message("control_change", channel=ch, control=7, value=120)),
    ]
    for bar, (root, _) in enumerate(CHORDS):
        start = ticks(1 + bar * 3)
        root_note, fifth = midi_note(root), midi_note(root) + 7
        for offset, note, beats in ((0, root_note, 2), (2, fifth, 1)):
            events.append(
                (
                    start + ticks(offset),
                    mido.Message("note_on", channel=ch, note=note, velocity=110),
                )
            )
            events.append(
                (
                    start + ticks(offset + beats * 0.9),
                    mido.Message("note_off", channel=ch, note=note),
                )
            )
    return track_with(events, "Bass (triangle)")


def drums() -> mido.MidiTrack:
    ch = 9
    events = []
    for bar in range(len(CHORDS)):
        for beat, note, velocity in ((0, 36, 110), (1, 42, 60), (2, 42, 70)):
            start = ticks(1 + bar * 3 + beat)
            events.append(
                (start, mido.Message("note_on", channel=ch, note=note, velocity=velocity))
            )
            events.append((start + ticks(0.2), mido.Message("note_off", channel=ch, note=note)))
        if bar % 4 == 3:
            start = ticks(1 + bar * 3 + 2.5)
            events.append((start, mido.Message("note_on", channel=ch, note=38, velocity=90)))
            events.append((start + ticks(0.2), mido.Message("note_off", channel=ch, note=38)))
    return track_with(events, "Drums (noise)")


def make_midi() -> mido.MidiFile:
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name="Greensleeves (traditional)", time=0),
            mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BPM), time=0),
            mido.MetaMessage("end_of_track", time=0),
        ]
    )
    song.tracks.extend([conductor, lead(), arpeggio(), bass(), drums()])
    return song


def main() -> None:
    midi_path = HERE / "greensleeves.mid"
    make_midi().save(midi_path)
    print(f"Wrote {midi_path}")
    from neurochip.io.write import save_audio
    from neurochip.synth import render_midi

    audio = render_midi(midi_path)
    flac = save_audio(HERE / "greensleeves.flac", audio)
    print(f"Wrote {flac} ({audio.duration_s:.1f} s)")


if __name__ == "__main__":
    main()
