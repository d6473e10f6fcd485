"""Benchmark: how fast the built-in chip synth renders a MIDI song on one CPU core.

Builds (with mido) a four-track song at 120 BPM -- triangle bass in eighths, a pulse lead
with pitch bends and mod-wheel vibrato, three-note string chords with CC11 swells and CC7
automation, and a drum track (kick, snare, hats, crashes) -- then times
:func:`neurochip.synth.render_midi` on it, stereo at 44.1 kHz.

It runs single-threaded: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``
are set to 1 before numpy loads and ``torch.set_num_threads(1)`` is called (the synth uses
neither BLAS nor torch, so this only keeps the measurement honest). Each run reads the file
and renders it; the best of ``--repeat`` runs is reported, as seconds and x real time
(seconds of audio per second of wall time). On a busy machine timings are noisy.

Run it from the repository root::

    .venv/bin/python bench/synth.py                 # 3 minutes of music
    .venv/bin/python bench/synth.py --minutes 1 --save song.wav
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402 - the thread settings must come before numpy loads
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mido  # noqa: E402
import torch  # noqa: E402

from neurochip.io.write import save_audio  # noqa: E402
from neurochip.synth import read_midi, render_midi  # noqa: E402

TPB = 480
BEAT = TPB
BAR = 4 * BEAT
CHORDS = [(57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62)]  # Am F C G
BASS_ROOTS = [33, 29, 36, 31]
LEAD = [0, 3, 7, 12, 10, 7, 3, 5]  # steps over the chord root, eighth notes


def _track(events: list[tuple[int, mido.Message | mido.MetaMessage]], name: str) -> mido.MidiTrack:
    """A track from (absolute tick, message) pairs."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name)])
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def _note(events, start: int, length: int, pitch: int, velocity: int, channel: int) -> None:
    events.append((start, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)))
    events.append((start + length, mido.Message("note_off", note=pitch, channel=channel)))


def _cc(events, tick: int, control: int, value: int, channel: int) -> None:
    message = mido.Message("control_change", control=control, value=value, channel=channel)
    events.append((tick, message))


def build_song(path: Path, minutes: float) -> Path:
    """Write the benchmark song: ``minutes`` of 4/4 at 120 BPM (30 bars a minute)."""
    bars = round(minutes * 30)
    bass, lead, chords, drums = [], [], [], []
    lead.append((0, mido.Message("program_change", program=80, channel=1)))
    bass.append((0, mido.Message("program_change", program=33, channel=0)))
    chords.append((0, mido.Message("program_change", program=48, channel=2)))
    for bar in range(bars):
        t0 = bar * BAR
        chord = CHORDS[bar % 4]
        for eighth in range(8):
            root = BASS_ROOTS[bar % 4] + (12 if eighth % 2 else 0)
            _note(bass, t0 + eighth * BEAT // 2, BEAT // 2 - 20, root, 100, 0)
            pitch = chord[0] + 12 + LEAD[(eighth + bar) % 8]
            _note(lead, t0 + eighth * BEAT // 2, BEAT // 2 - 10, pitch, 90 + eighth, 1)
        # A bend up into the last note of every bar and back, 16 steps each way.
        for step in range(16):
            _bend = round(8191 * step / 15)
            lead.append(
                (t0 + 3 * BEAT + step * 15, mido.Message("pitchwheel", pitch=_bend, channel=1))
            )
        lead.append((t0 + BAR - 1, mido.Message("pitchwheel", pitch=0, channel=1)))
        # Mod wheel rises over each bar.
        for step in range(8):
            _cc(lead, t0 + step * BEAT // 2, 1, step * 16, 1)
        for pitch in chord:
            _note(chords, t0, BAR - 30, pitch, 80, 2)
        for step in range(16):  # an expression swell per bar
            _cc(chords, t0 + step * BAR // 16, 11, 40 + step * 5, 2)
        _cc(chords, t0, 7, 90 + 10 * (bar % 4), 2)
        for beat in range(4):
            _note(drums, t0 + beat * BEAT, 60, 36 if beat % 2 == 0 else 38, 110, 9)
            for half in range(2):
                _note(drums, t0 + beat * BEAT + half * BEAT // 2, 30, 42, 70 + 20 * half, 9)
        if bar % 8 == 0:
            _note(drums, t0, 60, 49, 100, 9)
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(_track([(0, mido.MetaMessage("set_tempo", tempo=500_000))], "Tempo"))
    mid.tracks.append(_track(bass, "Bass"))
    mid.tracks.append(_track(lead, "Lead"))
    mid.tracks.append(_track(chords, "Strings"))
    mid.tracks.append(_track(drums, "Drums"))
    mid.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="song length (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best counts (3)")
    parser.add_argument("--save", type=Path, help="also write the render to this audio file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        path = build_song(Path(folder) / "bench.mid", args.minutes)
        song = read_midi(path)
        notes = sum(track.notes for track in song.tracks)
        print(
            f"song: {song.duration_s:.1f} s, {len(song.tracks)} tracks, {notes} notes, "
            f"{len(song.controls)} controller events (torch threads: {torch.get_num_threads()}, "
            f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
        )
        times = []
        for run in range(args.repeat):
            started = time.perf_counter()
            audio = render_midi(read_midi(path), sample_rate=44100, stereo=True)
            times.append(time.perf_counter() - started)
            print(
                f"run {run + 1}: {times[-1]:.2f} s ({audio.duration_s / times[-1]:.1f}x real time)"
            )
    best = min(times)
    print(
        f"best: {best:.2f} s for {audio.duration_s:.1f} s of stereo 44.1 kHz audio = "
        f"{audio.duration_s / best:.1f}x real time on one core"
    )
    if args.save:
        save_audio(args.save, audio)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
