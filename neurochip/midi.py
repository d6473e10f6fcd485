"""Reading Standard MIDI Files and playing them with a built-in chip synth.

Composers sketch in trackers and DAWs; :func:`read_midi` takes their MIDI file as it is and
:func:`render_midi` plays it with a small NES-flavoured synthesiser, so the Riffusion model
hears clean chip tones with the expression the composer wrote. :func:`render_soundfont`
plays the same file through FluidSynth and a General MIDI SoundFont instead.

Reading
-------
Type 0 and type 1 files are read with mido (type 2 is refused). Every ``set_tempo`` in any
track joins one tempo map that times all tracks, as sequencers do; SMPTE time division is
supported too. Tempos outside 10-1000 BPM are refused rather than clamped: such a file is
broken, and silently changing its timing would make a mockup that does not line up with
the composer's bars. The song length is computed from the events alone (the time of the
last event of any kind, exactly what ``mido.MidiFile.length`` reports), so a MIDI that
lasts ten hours is refused before anything is rendered. Files over :data:`MAX_MIDI_BYTES`
are refused up front, because mido parses at a few microseconds per byte.

Each (track, channel) pair that plays notes becomes one :class:`TrackInfo`, the unit a
composer can give another voice. Its ``key`` is the 1-based number of the track in the file
(the conductor track counts, as in the file), e.g. ``"3"``; a track that plays notes on
several channels gets one part per channel, ``"3ch1"``, ``"3ch10"``; in a single-track file
(type 0) the track number is left out: ``"ch1"``, ``"ch10"`` (or ``"1"`` if it uses one
channel only).

Notes are paired per channel (velocity-0 note-ons are note-offs; a key struck again while
it sounds ends the earlier note). The sustain pedal (CC64 >= 64) is resolved while reading:
a note released with the pedal down sounds until the pedal comes up. CC120/CC123 end all
notes; CC121 resets bend, modulation, expression and the pedal. Notes still sounding when
the file ends stop at its last event.

The synth
---------
Every note is its own oscillator (polyphony), at most :data:`MAX_VOICES_PER_CHANNEL` per
channel: a further note steals the oldest one, which fades out in 5 ms. Pitched voices are
band-limited wavetables: for each note the table holds the voice's exact Fourier series
(pulse with 12.5/25/50 % duty, triangle, saw) up to the last harmonic below
``min(20 kHz, 0.475 * sample_rate)`` at the highest pitch the note reaches (bends and
vibrato included), so nothing folds back past Nyquist. Tables are at least 8 samples per
harmonic and read with linear interpolation, which keeps interpolation images below
-36 dB relative to each (already small) harmonic. The phase is integrated from the
instantaneous frequency sample by sample (a cumulative sum), so it stays continuous
through bends and vibrato. The ``noise`` voice is a 15-bit NES LFSR clocked at 16 times
the note's frequency, sample-and-hold like the hardware (noise has no pitch to alias).

Channel 10 (GM drums) plays a small kit instead, one-shots that ignore note-offs, bends
and vibrato: kick (35, 36: a sine falling from 150 to 50 Hz plus a click), snares (38, 40:
band-passed LFSR noise plus a 185-160 Hz tone), clap, side stick, toms (pitched sine drops,
90 to 200 Hz), hi-hats (42, 44, 46: high-passed noise, closed 25-35 ms, open 180 ms and
choked by the next closed hat), crash/splash/china and ride cymbals (high-passed noise, up
to 0.5 s decay), bells and blocks (short sines); any other key gets a short noise tick.

Each voice has its own envelope (attack, exponential decay to a sustain level, linear
release; see ``_VOICE_SPECS``); the note's level is ``(velocity / 127) ** 2``, the General
MIDI level curve (40 log10 dB).

Control curves, per channel
---------------------------
Controllers are step functions of time, sampled every :data:`CONTROL_BLOCK` (64) samples
and linearly interpolated in between, which smooths steps over ~1.5 ms so they do not
click ("zipper" noise) and places each change within one block of its time.

* Pitch bend: 14-bit, full scale = the bend range (up ends at +range exactly: positive
  values are divided by 8191, negative by 8192). Range 2 semitones unless set with RPN 0
  (CC101 = 0, CC100 = 0, then CC6 = semitones and optionally CC38 = cents).
* Modulation wheel CC1 -> vibrato: a sine at :data:`VIBRATO_RATE_HZ` (5.5 Hz, one free
  running LFO per channel) whose depth grows linearly with CC1 up to
  :data:`VIBRATO_MAX_CENTS` (±50 cents) at CC1 = 127.
* Volume CC7 (default 100) and expression CC11 (default 127): gain
  ``(cc7 / 127) ** 2 * (cc11 / 127) ** 2``, the GM curve, so CC7 = 64 is -11.9 dB.
* Pan CC10 (default 64, centre): constant power, ``left = cos(theta)``,
  ``right = sin(theta)``, ``theta = (p + 1) * pi / 4`` with ``p`` from -1 (CC10 = 0) to +1
  (CC10 = 127); ignored when rendering mono.
* Sustain CC64, program change: see above. A program change picks the default voice of
  the notes that follow it (:func:`default_voice`).

Output
------
:func:`render_midi` returns ``round(duration_s * sample_rate)`` frames, where
``duration_s`` is the MIDI's length (its last event) plus :data:`RELEASE_TAIL_S` (0.5 s)
so releases and cymbals ring out; the last 20 ms fade to silence. The mix is
peak-normalised to :data:`PEAK_LEVEL` (-1 dBFS), so it never clips.

Every problem with an input is raised as :class:`~neurochip.errors.NeuroChipError` naming
the file.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
from scipy import signal

from neurochip.audio import Audio, format_duration
from neurochip.errors import NeuroChipError

__all__ = [
    "CONTROL_BLOCK",
    "DRUMS",
    "MAX_MIDI_BYTES",
    "MAX_MIDI_SECONDS",
    "MAX_VOICES_PER_CHANNEL",
    "MIDI_SUFFIXES",
    "PEAK_LEVEL",
    "RELEASE_TAIL_S",
    "VIBRATO_MAX_CENTS",
    "VIBRATO_RATE_HZ",
    "VOICES",
    "MidiSong",
    "TrackInfo",
    "default_voice",
    "find_fluidsynth",
    "find_soundfont",
    "gm_program_name",
    "read_midi",
    "render_midi",
    "render_soundfont",
]

MIDI_SUFFIXES = (".mid", ".midi", ".smf")
"""File suffixes read as Standard MIDI Files."""

VOICES: tuple[str, ...] = ("pulse12", "pulse25", "pulse50", "triangle", "saw", "noise")
"""The pitched voices of the chip synth, as composers pick them."""

DRUMS = "drums"
"""The drum kit: the default for channel 10, and also accepted as a voice override."""

MAX_MIDI_SECONDS: float = 20 * 60
"""Longest MIDI :func:`read_midi` accepts by default (20 minutes, as for audio files)."""

MAX_MIDI_BYTES: int = 4 * 1024 * 1024
"""Largest MIDI file read (4 MiB; mido needs ~2 s per MiB, real sketches are far smaller)."""

MAX_VOICES_PER_CHANNEL: int = 16
"""Notes sounding at once on one channel before the oldest is stolen."""

RELEASE_TAIL_S: float = 0.5
"""Time added after the MIDI's last event so releases and cymbals ring out."""

CONTROL_BLOCK: int = 64
"""Samples per step of the controller curves (interpolated linearly in between)."""

VIBRATO_RATE_HZ: float = 5.5
"""Rate of the mod-wheel vibrato."""

VIBRATO_MAX_CENTS: float = 50.0
"""Vibrato depth (peak deviation) at CC1 = 127; linear in CC1."""

PEAK_LEVEL: float = 0.89
"""Peak level of a render, about -1 dBFS."""

MIN_BPM, MAX_BPM = 10.0, 1000.0
DEFAULT_TEMPO_US = 500_000  # 120 BPM, the SMF default
DRUM_CHANNEL = 10

# Highest harmonic we keep, as a fraction of the sample rate and in Hz.
_BAND_LIMIT_FRACTION = 0.475
_BAND_LIMIT_HZ = 20_000.0
_STEAL_RELEASE_S = 0.005
_END_FADE_S = 0.02
_CHUNK = 1 << 16  # samples per oscillator chunk, bounds memory for very long notes

_GM_PROGRAMS = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano",
    "Honky-tonk Piano", "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone",
    "Tubular Bells", "Dulcimer", "Drawbar Organ", "Percussive Organ", "Rock Organ",
    "Church Organ", "Reed Organ", "Accordion", "Harmonica", "Tango Accordion",
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)",
    "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar",
    "Distortion Guitar", "Guitar Harmonics", "Acoustic Bass", "Electric Bass (finger)",
    "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1", "Slap Bass 2", "Synth Bass 1",
    "Synth Bass 2", "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings",
    "Pizzicato Strings", "Orchestral Harp", "Timpani", "String Ensemble 1",
    "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs",
    "Synth Voice", "Orchestra Hit", "Trumpet", "Trombone", "Tuba", "Muted Trumpet",
    "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2", "Soprano Sax",
    "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet",
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle",
    "Ocarina", "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)",
    "Lead 4 (chiff)", "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)",
    "Lead 8 (bass + lead)", "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)",
    "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
    "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)", "Sitar",
    "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell",
    "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum",
    "Reverse Cymbal", "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet",
    "Telephone Ring", "Helicopter", "Applause", "Gunshot",
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackInfo:
    """One part of a song: the notes one track plays on one channel.

    Attributes:
        key: Stable id used for voice overrides: the 1-based track number (``"3"``), with
            the channel appended when the track plays on several (``"3ch10"``); in a
            single-track file just the channel (``"ch10"``), or ``"1"`` if it has one.
        name: The track's name (or ``"Track 3"``), then the GM instrument of its program,
            e.g. ``"Bass: Electric Bass (finger)"``.
        channel: MIDI channel, 1-16.
        program: GM program (0-127) of its first note, or ``None`` if none was set.
        notes: Number of notes.
        voice: The voice it gets unless overridden: one of :data:`VOICES`, or ``"drums"``
            on channel 10.
    """

    key: str
    name: str
    channel: int
    program: int | None
    notes: int
    voice: str


class Note(NamedTuple):
    """A note with absolute times in seconds."""

    start_s: float
    end_s: float  # release: note-off, or pedal-up if the sustain pedal held it
    pitch: int
    velocity: int
    channel: int  # 1-16
    part: int  # index into MidiSong.tracks
    program: int | None  # the channel's program when the note started


class Control(NamedTuple):
    """A controller change on one channel.

    ``kind`` is ``"bend"`` (value -1..1 of the range), ``"bend_range"`` (semitones),
    ``"mod"``, ``"volume"``, ``"expression"`` or ``"pan"`` (0-127).
    """

    time_s: float
    channel: int  # 1-16
    kind: str
    value: float


@dataclass(frozen=True)
class MidiSong:
    """A MIDI file read by :func:`read_midi`, ready to render.

    Attributes:
        tracks: The parts, in file order (track, then channel).
        duration_s: Length of a render: ``length_s`` plus :data:`RELEASE_TAIL_S`.
        name: The file's name, for messages.
        length_s: Time of the file's last event (``mido.MidiFile.length``).
        notes: Every note, sorted by start time.
        controls: Every controller change, sorted by time.
        tempos: The tempo map: ``(time_s, bpm)`` from 0 s on.
    """

    tracks: tuple[TrackInfo, ...]
    duration_s: float
    name: str = ""
    length_s: float = 0.0
    notes: tuple[Note, ...] = field(default=(), repr=False)
    controls: tuple[Control, ...] = field(default=(), repr=False)
    tempos: tuple[tuple[float, float], ...] = ((0.0, 120.0),)


@dataclass(frozen=True)
class _VoiceSpec:
    """Envelope and level of a pitched voice (times in seconds)."""

    attack: float
    decay: float  # time constant of the exponential fall to the sustain level
    sustain: float
    release: float  # linear fall to zero
    level: float  # makes the voices about equally loud (1 / RMS of the waveform)


_VOICE_SPECS: dict[str, _VoiceSpec] = {
    "pulse12": _VoiceSpec(0.002, 0.15, 0.6, 0.06, 1 / 0.661),
    "pulse25": _VoiceSpec(0.004, 0.20, 0.7, 0.08, 1 / 0.866),
    "pulse50": _VoiceSpec(0.006, 0.30, 0.7, 0.12, 1.0),
    "triangle": _VoiceSpec(0.002, 0.10, 1.0, 0.04, 1 / 0.577),
    "saw": _VoiceSpec(0.015, 0.40, 0.75, 0.20, 1 / 0.577),
    "noise": _VoiceSpec(0.001, 0.12, 0.3, 0.06, 0.8),
}
_DUTY = {"pulse12": 0.125, "pulse25": 0.25, "pulse50": 0.5}


# --------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------


def gm_program_name(program: int | None, channel: int = 1) -> str | None:
    """The General MIDI instrument name of a program (``"Drum kit"`` on channel 10)."""
    if channel == DRUM_CHANNEL:
        return "Drum kit"
    if program is None or not 0 <= program < 128:
        return None
    return _GM_PROGRAMS[program]


def default_voice(program: int | None, channel: int) -> str:
    """The chip voice that stands in for a GM program.

    ==========================================  ============
    GM programs                                 voice
    ==========================================  ============
    channel 10 (any program)                    ``drums``
    none set, pianos 0-7, organs 16-23          ``pulse50``
    chromatic percussion 8-15, guitars 24-31    ``pulse12``
    basses 32-39, timpani 47, pipes 72-79       ``triangle``
    strings/ensembles 40-55, brass 56-63        ``saw``
    reeds 64-71, synth leads 80-87              ``pulse25``
    synth pads 88-95                            ``pulse50``
    synth FX 96-103, ethnic 104-111             ``pulse12``
    percussive 112-118                          ``triangle``
    reverse cymbal 119, sound effects 120-127   ``noise``
    ==========================================  ============
    """
    if channel == DRUM_CHANNEL:
        return DRUMS
    if program is None:
        return "pulse50"
    if program == 47 or 32 <= program <= 39 or 72 <= program <= 79 or 112 <= program <= 118:
        return "triangle"
    if 40 <= program <= 63:
        return "saw"
    if 64 <= program <= 87:
        return "pulse25"
    if 8 <= program <= 15 or 24 <= program <= 31 or 96 <= program <= 111:
        return "pulse12"
    if program >= 119:
        return "noise"
    return "pulse50"  # pianos, organs, pads


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def read_midi(path: str | os.PathLike[str], max_seconds: float = MAX_MIDI_SECONDS) -> MidiSong:
    """Read a Standard MIDI File (type 0 or 1).

    Args:
        path: The ``.mid`` file.
        max_seconds: Refuse songs longer than this (their last event is later), checked
            from the events before any notes are collected.

    Returns:
        The parts, notes and controller curves, timed in seconds.

    Raises:
        NeuroChipError: If the file is missing, not a MIDI file, damaged, type 2, too big
            or too long, has an absurd tempo (outside 10-1000 BPM) or no notes.
    """
    try:
        import mido  # imported here so that the rest of neurochip works without it
    except ImportError as err:
        raise NeuroChipError(
            "Reading MIDI files needs the mido package: `pip install mido`."
        ) from err

    path = Path(path).expanduser()
    name = path.name
    if not path.is_file():
        what = "is a folder, not a MIDI file" if path.is_dir() else "was not found"
        raise NeuroChipError(f"{name} {what} ({path}).")
    size = path.stat().st_size
    if size == 0:
        raise NeuroChipError(
            f"{name} is empty (0 bytes), not a MIDI file. Export your sketch from the tracker "
            "or DAW again."
        )
    if size > MAX_MIDI_BYTES:
        raise NeuroChipError(
            f"{name} is {size / 2**20:.1f} MiB, too big for a MIDI sketch (the limit is "
            f"{MAX_MIDI_BYTES // 2**20} MiB). Remove dense controller data or split the song."
        )
    try:
        mid = mido.MidiFile(path)
    except Exception as err:  # noqa: BLE001 - mido raises many types on bad input
        raise _bad_midi_error(path, err) from err

    if mid.type == 2:
        raise NeuroChipError(
            f"{name} is a type 2 MIDI file (independent patterns), which NeuroChip does not "
            "play. Export it again as a type 1 (multi-track) or type 0 MIDI file."
        )
    # Absolute ticks of every message, per track; the song ends at the last one.
    track_ticks = [np.cumsum([msg.time for msg in track], dtype=np.int64) for track in mid.tracks]
    seconds_of = _tick_clock(path, mid, track_ticks)
    end_tick = max((int(t[-1]) for t in track_ticks if len(t)), default=0)
    length_s = float(seconds_of(np.array([end_tick]))[0])
    if length_s > max_seconds:
        raise NeuroChipError(
            f"{name} is {format_duration(length_s)} long, over the limit of "
            f"{format_duration(max_seconds)}. Shorten it (check for stray events far "
            "after the last note), or raise the limit (max_seconds=)."
        )

    notes, controls, parts = _collect_events(mid, track_ticks, seconds_of, length_s)
    if not notes:
        raise NeuroChipError(
            f"{name} has no notes: it holds only tempo, controller or other events. "
            "Export the MIDI again with the note tracks included."
        )
    tracks = _describe_parts(mid, parts, notes)
    tempo_map = _tempo_map(mid, track_ticks)
    tempos = tuple(
        (float(t), 60e6 / tempo)
        for t, tempo in zip(seconds_of(tempo_map[0]), tempo_map[1], strict=True)
    )
    return MidiSong(
        tracks=tracks,
        duration_s=length_s + RELEASE_TAIL_S,
        name=name,
        length_s=length_s,
        notes=tuple(sorted(notes, key=lambda n: (n.start_s, n.channel, n.pitch))),
        controls=tuple(sorted(controls, key=lambda c: c.time_s)),
        tempos=tempos if mid.ticks_per_beat > 0 else (),
    )


def _bad_midi_error(path: Path, err: BaseException) -> NeuroChipError:
    try:
        with path.open("rb") as f:
            header = f.read(4)
    except OSError as os_err:
        return NeuroChipError(f"{path.name} cannot be read: {os_err.strerror or os_err}.")
    if header != b"MThd":
        return NeuroChipError(
            f"{path.name} is not a MIDI file (it does not start with a MIDI header). "
            "Export your sketch from the tracker or DAW as a Standard MIDI File (.mid)."
        )
    detail = str(err).strip() or type(err).__name__
    if isinstance(err, EOFError):
        detail = "the file ends in the middle of a track"
    return NeuroChipError(
        f"{path.name} is a damaged or incomplete MIDI file ({detail}). If it was downloaded "
        "or copied, get it again; otherwise export it again from your tracker or DAW."
    )


def _tempo_map(mid, track_ticks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ticks and tempos (microseconds per beat) of every ``set_tempo``, in time order.

    The map always starts at tick 0 (120 BPM unless a tempo is set there); of several
    tempos at one tick the last one (in track order) wins, as in a merged track.
    """
    events = [(0, DEFAULT_TEMPO_US)]
    for track, ticks in zip(mid.tracks, track_ticks, strict=True):
        for msg, tick in zip(track, ticks, strict=True):
            if msg.type == "set_tempo":
                events.append((int(tick), int(msg.tempo)))
    events.sort(key=lambda e: e[0])  # stable: track order within a tick
    last: dict[int, int] = {}
    for tick, tempo in events:
        last[tick] = tempo
    ticks = np.array(list(last), dtype=np.int64)
    return ticks, np.array(list(last.values()), dtype=np.float64)


def _tick_clock(
    path: Path, mid, track_ticks: Sequence[np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from absolute ticks to seconds, following the file's tempo map.

    Raises:
        NeuroChipError: For a zero time division or a tempo outside 10-1000 BPM.
    """
    division = int(mid.ticks_per_beat)
    if division == 0:
        raise NeuroChipError(
            f"{path.name} is a damaged MIDI file (its header says 0 ticks per beat). "
            "Export it again from your tracker or DAW."
        )
    if division < 0:
        # SMPTE division: -frames per second in the high byte, ticks per frame in the low.
        raw = division & 0xFFFF
        fps = 256 - (raw >> 8)
        fps_exact = 29.97 if fps == 29 else float(fps)
        ticks_per_frame = raw & 0xFF
        if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
            raise NeuroChipError(
                f"{path.name} is a damaged MIDI file (unknown SMPTE time division). "
                "Export it again from your tracker or DAW."
            )
        seconds_per_tick = 1.0 / (fps_exact * ticks_per_frame)
        return lambda ticks: np.asarray(ticks, dtype=np.float64) * seconds_per_tick

    tempo_ticks, tempos = _tempo_map(mid, track_ticks)
    bpm = 60e6 / np.maximum(tempos, 1.0)
    bad = np.flatnonzero((bpm < MIN_BPM) | (bpm > MAX_BPM) | (tempos <= 0))
    if len(bad):
        i = int(bad[0])
        when = float(tempo_ticks[i]) / division  # in beats, before seconds are known
        shown = "0" if tempos[i] <= 0 else f"{bpm[i]:.4g}"
        raise NeuroChipError(
            f"{path.name} sets a tempo of {shown} BPM (at beat {when:g}); NeuroChip plays "
            f"tempos from {MIN_BPM:g} to {MAX_BPM:g} BPM. Fix the tempo in your tracker or "
            "DAW and export the MIDI again."
        )
    seconds_per_tick = tempos / 1e6 / division
    segment_start = np.concatenate(([0.0], np.cumsum(np.diff(tempo_ticks) * seconds_per_tick[:-1])))

    def seconds_of(ticks: np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=np.int64)
        i = np.searchsorted(tempo_ticks, ticks, side="right") - 1
        return segment_start[i] + (ticks - tempo_ticks[i]) * seconds_per_tick[i]

    return seconds_of


@dataclass
class _ChannelState:
    """What a channel remembers while the events are read."""

    program: int | None = None
    pedal: bool = False
    rpn: tuple[int, int] = (127, 127)  # the null RPN
    bend_semitones: int = 2
    bend_cents: int = 0
    sounding: dict[int, int] = field(default_factory=dict)  # pitch -> note index, key down
    held: dict[int, int] = field(default_factory=dict)  # pitch -> note index, pedal holds


class _NoteList:
    """Notes being paired: starts, ends (``None`` while open) and the rest of each note."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float | None] = []
        self.rest: list[tuple[int, int, int, int, int | None]] = []

    def key_down(self, state: _ChannelState, time_s: float, pitch: int, *rest) -> None:
        # The same key struck again ends the earlier note (even one the pedal holds).
        for previous in (state.sounding.pop(pitch, None), state.held.pop(pitch, None)):
            if previous is not None:
                self.ends[previous] = time_s
        state.sounding[pitch] = len(self.starts)
        self.starts.append(time_s)
        self.ends.append(None)
        self.rest.append((pitch, *rest))

    def key_up(self, state: _ChannelState, time_s: float, pitch: int) -> None:
        index = state.sounding.pop(pitch, None)
        if index is None:
            return
        if state.pedal:
            state.held[pitch] = index
        else:
            self.ends[index] = time_s

    def set_program(self, state: _ChannelState, time_s: float, program: int) -> None:
        # Some exporters write the program change just after the first notes at the same
        # tick; it is meant for them too.
        for index in state.sounding.values():
            if self.starts[index] == time_s:
                self.rest[index] = (*self.rest[index][:-1], program)

    def pedal_up(self, state: _ChannelState, time_s: float) -> None:
        for index in state.held.values():
            self.ends[index] = time_s
        state.held.clear()
        state.pedal = False

    def all_off(self, state: _ChannelState, time_s: float, *, obey_pedal: bool) -> None:
        for pitch in list(state.sounding):
            self.key_up(state, time_s, pitch)
        if not obey_pedal:
            self.pedal_up(state, time_s)

    def notes(self, end_s: float) -> list[Note]:
        return [
            Note(start, end if end is not None else end_s, *rest)
            for start, end, rest in zip(self.starts, self.ends, self.rest, strict=True)
        ]


_CC_KINDS = {1: "mod", 7: "volume", 10: "pan", 11: "expression"}
_NOTE_EVENTS = ("note_on", "note_off", "control_change", "pitchwheel", "program_change")


def _collect_events(
    mid, track_ticks: Sequence[np.ndarray], seconds_of, length_s: float
) -> tuple[list[Note], list[Control], list[tuple[int, int]]]:
    """Pair notes and gather controller changes, all channels, in time order.

    Returns the notes, the controls, and the (track, channel) of each part; ``Note.part``
    indexes the latter.
    """
    events = []
    for track_index, (track, ticks) in enumerate(zip(mid.tracks, track_ticks, strict=True)):
        for msg, tick in zip(track, ticks, strict=True):
            if msg.type in _NOTE_EVENTS:
                events.append((int(tick), track_index, msg))
    events.sort(key=lambda e: e[0])  # stable: track, then file order within a tick
    times = seconds_of(np.array([e[0] for e in events], dtype=np.int64)).tolist()

    states = [_ChannelState() for _ in range(16)]
    notes = _NoteList()
    parts: dict[tuple[int, int], int] = {}
    controls: list[Control] = []
    for (_, track_index, msg), time_s in zip(events, times, strict=True):
        state = states[msg.channel]
        channel = msg.channel + 1
        if msg.type == "note_on" and msg.velocity > 0:
            part = parts.setdefault((track_index, channel), len(parts))
            notes.key_down(state, time_s, msg.note, msg.velocity, channel, part, state.program)
        elif msg.type in ("note_on", "note_off"):
            notes.key_up(state, time_s, msg.note)
        elif msg.type == "pitchwheel":
            # Divided so that both extremes are exactly the bend range.
            value = msg.pitch / (8191.0 if msg.pitch > 0 else 8192.0)
            controls.append(Control(time_s, channel, "bend", value))
        elif msg.type == "program_change":
            state.program = msg.program
            notes.set_program(state, time_s, msg.program)
        else:
            _control_change(state, notes, channel, msg.control, msg.value, time_s, controls)

    for state in states:  # whatever still sounds stops at the last event
        notes.all_off(state, length_s, obey_pedal=False)
    # Parts were numbered as they first played; list them in file order instead.
    order = sorted(parts)
    renumber = {parts[part]: index for index, part in enumerate(order)}
    paired = [note._replace(part=renumber[note.part]) for note in notes.notes(length_s)]
    return paired, controls, order


def _control_change(
    state: _ChannelState,
    notes: _NoteList,
    channel: int,
    control: int,
    value: int,
    time_s: float,
    controls: list[Control],
) -> None:
    """Apply one control change to the channel's state, notes and curves."""
    if control in _CC_KINDS:
        controls.append(Control(time_s, channel, _CC_KINDS[control], float(value)))
    elif control == 64:
        if value >= 64:
            state.pedal = True
        else:
            notes.pedal_up(state, time_s)
    elif control == 101:
        state.rpn = (value, state.rpn[1])
    elif control == 100:
        state.rpn = (state.rpn[0], value)
    elif control in (98, 99):
        state.rpn = (127, 127)  # an NRPN: data entry no longer goes to the bend range
    elif control in (6, 38) and state.rpn == (0, 0):
        if control == 6:
            state.bend_semitones, state.bend_cents = value, 0
        else:
            state.bend_cents = value
        semitones = state.bend_semitones + state.bend_cents / 100
        controls.append(Control(time_s, channel, "bend_range", semitones))
    elif control == 121:  # reset all controllers (RP-015: not volume or pan)
        controls.append(Control(time_s, channel, "bend", 0.0))
        controls.append(Control(time_s, channel, "mod", 0.0))
        controls.append(Control(time_s, channel, "expression", 127.0))
        notes.pedal_up(state, time_s)
        state.rpn = (127, 127)
    elif control in (120, 123):  # all sound off ends everything; all notes off obeys pedal
        notes.all_off(state, time_s, obey_pedal=control == 123)


def _describe_parts(
    mid, parts: Sequence[tuple[int, int]], notes: Sequence[Note]
) -> tuple[TrackInfo, ...]:
    """A :class:`TrackInfo` per (track, channel) part, with its key and display name."""
    counts = [0] * len(parts)
    first_program: list[int | None] = [None] * len(parts)
    seen = [False] * len(parts)
    for note in sorted(notes, key=lambda n: n.start_s):
        counts[note.part] += 1
        if not seen[note.part]:
            seen[note.part], first_program[note.part] = True, note.program
    channels_per_track: dict[int, int] = {}
    for track_index, _ in parts:
        channels_per_track[track_index] = channels_per_track.get(track_index, 0) + 1
    single_track = len(mid.tracks) == 1

    infos = []
    for index, (track_index, channel) in enumerate(parts):
        number = track_index + 1
        track_name = _track_name(mid.tracks[track_index])
        if channels_per_track[track_index] == 1:
            key = str(number)
            base = track_name or f"Track {number}"
        else:
            key = f"ch{channel}" if single_track else f"{number}ch{channel}"
            base = f"{track_name} ch {channel}" if track_name else f"Channel {channel}"
        program = first_program[index]
        instrument = gm_program_name(program, channel)
        name = base
        if instrument and instrument.lower() not in base.lower():
            name = f"{base}: {instrument}"
        voice = default_voice(program, channel)
        infos.append(TrackInfo(key, name, channel, program, counts[index], voice))
    return tuple(infos)


def _track_name(track) -> str:
    for msg in track:
        if msg.type == "track_name" and msg.name.strip():
            return msg.name.strip()
    return ""


# --------------------------------------------------------------------------------------
# Rendering with the chip synth
# --------------------------------------------------------------------------------------


def render_midi(
    song: MidiSong | str | os.PathLike[str],
    *,
    sample_rate: int = 44100,
    voices: dict[str, str] | None = None,
    stereo: bool = True,
    progress: Callable[[float], None] | None = None,
) -> Audio:
    """Play a MIDI song with the built-in chip synth.

    Args:
        song: A song from :func:`read_midi`, or the path of a MIDI file.
        sample_rate: Rate of the result (8000 Hz or more).
        voices: Voice overrides: :attr:`TrackInfo.key` -> one of :data:`VOICES` or
            ``"drums"``. Parts not named keep their default voice (which follows program
            changes).
        stereo: Two channels, panned by CC10; ``False`` gives mono (pan ignored).
        progress: Called with the fraction done, from 0 to 1.

    Returns:
        ``round(song.duration_s * sample_rate)`` frames, peak at :data:`PEAK_LEVEL`.

    Raises:
        NeuroChipError: For a bad file (see :func:`read_midi`), an unknown track key or
            voice in ``voices``, or a bad sample rate.
    """
    if not isinstance(song, MidiSong):
        song = read_midi(song)
    sample_rate = _check_sample_rate(sample_rate)
    overrides = _check_overrides(song, voices or {})

    frames = max(1, round(song.duration_s * sample_rate))
    clock = _Clock(sample_rate, frames)
    by_channel: dict[int, list[Note]] = {}
    for note in song.notes:
        by_channel.setdefault(note.channel, []).append(note)
    controls: dict[tuple[int, str], list[Control]] = {}
    for control in song.controls:
        controls.setdefault((control.channel, control.kind), []).append(control)
    report = _Progress(progress, sum(len(notes) for notes in by_channel.values()))

    mix = np.zeros((2 if stereo else 1, frames), dtype=np.float32)
    bus = np.zeros(frames, dtype=np.float32)
    for channel, notes in sorted(by_channel.items()):
        bus[:] = 0.0
        pitched: list[tuple[Note, str]] = []
        drums: list[Note] = []
        for note in notes:
            voice = overrides.get(note.part) or default_voice(note.program, channel)
            if voice == DRUMS:
                drums.append(note)
            else:
                pitched.append((note, voice))
        pitch_curve = _pitch_curve(controls, channel, clock)
        for note, voice, end_s, release_s in _steal_voices(pitched):
            _render_note(bus, note, voice, end_s, release_s, pitch_curve, clock)
            report.step()
        _render_drums(bus, drums, clock, report)
        for out, gain in enumerate(_gain_curves(controls, channel, clock, stereo)):
            _mix_in(mix[out], bus, gain, clock)

    fade = min(frames, round(_END_FADE_S * sample_rate))
    mix[:, frames - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = max(float(mix.max()), -float(mix.min()))
    if peak > 0:
        mix *= PEAK_LEVEL / peak
    report.done()
    return Audio(mix, sample_rate)


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate < 8000:
        raise NeuroChipError(
            f"The sample rate must be a whole number of at least 8000 Hz; got {sample_rate}."
        )
    return int(sample_rate)


def _mix_in(out: np.ndarray, bus: np.ndarray, gain: float | np.ndarray, clock: _Clock) -> None:
    """Add ``bus`` times a gain (a number, or a block curve) into ``out``."""
    for start in range(0, clock.frames, _CHUNK):  # in chunks: no song-long temporaries
        stop = min(clock.frames, start + _CHUNK)
        scale = gain if isinstance(gain, float) else clock.expand(gain, start, stop)
        out[start:stop] += bus[start:stop] * scale


def _check_overrides(song: MidiSong, voices: dict[str, str]) -> dict[int, str]:
    """Map part index -> voice, or raise naming the valid keys and voices."""
    index_of = {track.key: index for index, track in enumerate(song.tracks)}
    valid_voices = (*VOICES, DRUMS)
    overrides = {}
    for key, voice in voices.items():
        if str(key) not in index_of:
            listing = ", ".join(f"{t.key} ({t.name})" for t in song.tracks)
            raise NeuroChipError(
                f"{song.name or 'The MIDI file'} has no track {key!r}. Its tracks are: {listing}."
            )
        if voice not in valid_voices:
            raise NeuroChipError(
                f"Unknown voice {voice!r} for track {key} of {song.name or 'the MIDI file'}. "
                f"Voices: {', '.join(valid_voices)}."
            )
        overrides[index_of[str(key)]] = voice
    return overrides


class _Progress:
    """Reports the fraction of notes rendered, at most about every 1 %."""

    def __init__(self, callback: Callable[[float], None] | None, total: int) -> None:
        self.callback, self.total, self.count, self.reported = callback, max(total, 1), 0, 0.0
        if callback:
            callback(0.0)

    def step(self) -> None:
        self.count += 1
        fraction = self.count / self.total
        if self.callback and fraction - self.reported >= 0.01 and fraction < 1.0:
            self.reported = fraction
            self.callback(fraction)

    def done(self) -> None:
        if self.callback:
            self.callback(1.0)


@dataclass(frozen=True)
class _Clock:
    """Sample rate, length, and the grid of control blocks."""

    rate: int
    frames: int

    @functools.cached_property
    def block_times(self) -> np.ndarray:
        """Time of each block start; one block past the end so every sample has two."""
        return np.arange(self.frames // CONTROL_BLOCK + 2) * (CONTROL_BLOCK / self.rate)

    def expand(self, curve: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Per-sample values of a block curve on samples ``[start, stop)`` (linear)."""
        first, last = start // CONTROL_BLOCK, -(-stop // CONTROL_BLOCK)
        values = curve[first : last + 1]
        ramp = np.arange(CONTROL_BLOCK) / CONTROL_BLOCK
        per_sample = (values[:-1, None] + np.diff(values)[:, None] * ramp).ravel()
        offset = start - first * CONTROL_BLOCK
        return per_sample[offset : offset + stop - start]


def _step_curve(
    controls: dict[tuple[int, str], list[Control]],
    channel: int,
    kind: str,
    initial: float,
    clock: _Clock,
) -> np.ndarray:
    """A controller's value at every block start (the last change at or before it)."""
    events = controls.get((channel, kind), [])
    if not events:
        return np.full(len(clock.block_times), initial)
    times = np.array([c.time_s for c in events])
    values = np.array([c.value for c in events])
    index = np.searchsorted(times, clock.block_times, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], initial)


def _pitch_curve(controls, channel: int, clock: _Clock) -> np.ndarray | None:
    """Pitch offset in semitones per block (bend + vibrato); ``None`` if always 0."""
    bend = _step_curve(controls, channel, "bend", 0.0, clock)
    bend_range = _step_curve(controls, channel, "bend_range", 2.0, clock)
    mod = _step_curve(controls, channel, "mod", 0.0, clock)
    if not bend.any() and not mod.any():
        return None
    depth = (VIBRATO_MAX_CENTS / 100.0) * (mod / 127.0)
    lfo = np.sin(2 * np.pi * VIBRATO_RATE_HZ * clock.block_times)
    return bend * bend_range + depth * lfo


def _gain_curves(controls, channel: int, clock: _Clock, stereo: bool) -> list[float | np.ndarray]:
    """Per output channel, the gain from CC7, CC11 and (stereo) CC10, per block."""
    volume = _step_curve(controls, channel, "volume", 100.0, clock)
    expression = _step_curve(controls, channel, "expression", 127.0, clock)
    gain = (volume / 127.0) ** 2 * (expression / 127.0) ** 2
    if stereo:
        pan = _step_curve(controls, channel, "pan", 64.0, clock)
        position = np.where(pan <= 64, (pan - 64) / 64, (pan - 64) / 63)
        theta = (position + 1) * (np.pi / 4)
        curves = [gain * np.cos(theta), gain * np.sin(theta)]
    else:
        curves = [gain]
    # A curve that never changes is applied as a number, saving a per-sample pass.
    return [float(c[0]) if np.all(c == c[0]) else c for c in curves]


def _steal_voices(
    pitched: Sequence[tuple[Note, str]],
) -> Iterable[tuple[Note, str, float, float]]:
    """Each note with its end and release time, after voice stealing.

    With :data:`MAX_VOICES_PER_CHANNEL` notes held, a new note ends the oldest one, which
    then fades out in 5 ms instead of its voice's release.
    """
    ends = [note.end_s for note, _ in pitched]
    stolen = [False] * len(pitched)
    order = sorted(range(len(pitched)), key=lambda i: pitched[i][0].start_s)
    active: list[tuple[float, int]] = []  # (start, index) of the notes still held
    for index in order:
        start = pitched[index][0].start_s
        active = [(s, i) for s, i in active if ends[i] > start]
        if len(active) >= MAX_VOICES_PER_CHANNEL:
            oldest = min(active)
            active.remove(oldest)
            ends[oldest[1]], stolen[oldest[1]] = start, True
        active.append((start, index))
    for index, (note, voice) in enumerate(pitched):
        release = _STEAL_RELEASE_S if stolen[index] else _VOICE_SPECS[voice].release
        yield note, voice, ends[index], release


def _render_note(
    bus: np.ndarray,
    note: Note,
    voice: str,
    end_s: float,
    release_s: float,
    pitch_curve: np.ndarray | None,
    clock: _Clock,
) -> None:
    """Add one pitched note to the channel's bus."""
    spec = _VOICE_SPECS[voice]
    rate = clock.rate
    start = round(note.start_s * rate)
    if start >= clock.frames:
        return
    # Short notes still reach full level: the gate lasts at least the attack.
    gate = max(round((end_s - note.start_s) * rate), round(spec.attack * rate), 1)
    release = max(round(release_s * rate), 1)
    length = min(gate + release, clock.frames - start)

    f0 = 440.0 * 2.0 ** ((note.pitch - 69) / 12)
    offsets = None
    top = f0
    if pitch_curve is not None:
        window = pitch_curve[start // CONTROL_BLOCK : -(-(start + length) // CONTROL_BLOCK) + 1]
        if window.any():
            offsets = pitch_curve
            top = f0 * 2.0 ** (float(window.max()) / 12)
    if voice == "noise":
        wave_of = _noise_reader(f0, rate)
    else:
        harmonics = int(min(_BAND_LIMIT_HZ, _BAND_LIMIT_FRACTION * rate) // top)
        if harmonics < 1:
            return  # even the fundamental would be above the band limit: inaudible
        table = _wavetable(voice, min(harmonics, 4096))
        wave_of = functools.partial(_read_table, table)

    amplitude = spec.level * (note.velocity / 127.0) ** 2
    envelope = _Envelope(spec, gate, release, rate)
    # In cycles, never wrapped: float64 keeps it exact to ~1e-8 cycles for 20 minutes at
    # 12 kHz, and the noise voice needs the running count.
    phase = 0.0
    for chunk_start in range(0, length, _CHUNK):
        chunk_stop = min(length, chunk_start + _CHUNK)
        if offsets is None:
            increment = f0 / rate
            phases = phase + increment * np.arange(chunk_stop - chunk_start)
            phase += increment * (chunk_stop - chunk_start)
        else:
            ratio = np.exp2(clock.expand(offsets, start + chunk_start, start + chunk_stop) / 12)
            increments = (f0 / rate) * ratio
            # Integrating the instantaneous frequency keeps the phase continuous.
            phases = np.cumsum(increments)
            phases -= increments
            phases += phase
            phase = float(phases[-1] + increments[-1])
        wave = wave_of(phases)
        wave *= envelope.segment(chunk_start, chunk_stop)
        wave *= amplitude
        bus[start + chunk_start : start + chunk_stop] += wave


class _Envelope:
    """Attack (linear), exponential decay to the sustain level, linear release."""

    def __init__(self, spec: _VoiceSpec, gate: int, release: int, rate: int) -> None:
        self.attack = max(spec.attack * rate, 1.0)
        self.decay = spec.decay * rate
        self.sustain = spec.sustain
        self.gate, self.release = gate, release
        self.gate_level = float(self._held(np.array([float(gate)]))[0])

    def _held(self, j: np.ndarray) -> np.ndarray:
        ramp = np.minimum(j / self.attack, 1.0)
        fall = np.exp(-np.maximum(j - self.attack, 0.0) / self.decay)
        return ramp * (self.sustain + (1.0 - self.sustain) * fall)

    def segment(self, first: int, stop: int) -> np.ndarray:
        """Levels of samples ``[first, stop)`` counted from the note's start."""
        j = np.arange(first, stop, dtype=np.float64)
        if stop <= self.gate:
            return self._held(j)
        released = self.gate_level * np.clip(1.0 - (j - self.gate) / self.release, 0.0, 1.0)
        if first >= self.gate:
            return released
        return np.where(j < self.gate, self._held(j), released)


@functools.lru_cache(maxsize=1024)
def _wavetable(voice: str, harmonics: int) -> np.ndarray:
    """One cycle of a voice with its first ``harmonics`` harmonics, exactly.

    Built from the waveform's Fourier series (so it is band-limited by construction):
    pulse of duty d: c_k = (1 - e^(-2 pi i k d)) / (pi i k); saw: c_k = i / (pi k);
    triangle: the 50 % pulse integrated (c_k / (2 pi i k), scaled to +-1). Harmonic
    amplitudes are kept, not renormalised, so loudness does not jump between tables.
    The table has at least 8 samples per harmonic (linear interpolation then stays
    clean) and two guard samples so reads need no wrap-around.
    """
    size = max(2048, 1 << math.ceil(math.log2(8 * harmonics)))
    k = np.arange(1, harmonics + 1)
    if voice == "saw":
        coefficients = 1j / (np.pi * k)
    else:
        duty = _DUTY.get(voice, 0.5)
        coefficients = (1 - np.exp(-2j * np.pi * k * duty)) / (1j * np.pi * k)
        if voice == "triangle":
            coefficients = 4 * coefficients / (2j * np.pi * k)
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    spectrum[1 : harmonics + 1] = coefficients * size
    cycle = np.fft.irfft(spectrum, size)
    return np.concatenate([cycle, cycle[:2]])


def _read_table(table: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """The wavetable at the given phases (cycles), linearly interpolated."""
    size = len(table) - 2
    position = phases % 1.0
    position *= size
    index = position.astype(np.intp)
    position -= index  # now the fraction between table[index] and table[index + 1]
    low = table[index]
    return low + position * (table[index + 1] - low)


@functools.lru_cache(maxsize=1)
def _lfsr_sequence() -> np.ndarray:
    """One period (32767 steps) of the NES noise channel's 15-bit LFSR, as +-1."""
    register, out = 1, np.empty(32767, dtype=np.float64)
    for i in range(32767):
        out[i] = 1.0 if register & 1 else -1.0
        feedback = (register ^ (register >> 1)) & 1
        register = (register >> 1) | (feedback << 14)
    return out


def _noise_reader(f0: float, rate: int) -> Callable[[np.ndarray], np.ndarray]:
    """The ``noise`` voice: the LFSR clocked at 16 x the note's frequency (max 1/sample).

    The phases passed in count note cycles; 16 LFSR steps per cycle, so higher notes
    give brighter noise, as on the NES. Sample-and-hold, like the hardware.
    """
    sequence = _lfsr_sequence()
    steps_per_cycle = min(16.0, rate / f0)

    def read(phases: np.ndarray) -> np.ndarray:
        return sequence[(phases * steps_per_cycle).astype(np.int64) % len(sequence)]

    return read


# --------------------------------------------------------------------------------------
# Drums
# --------------------------------------------------------------------------------------


class _Tone(NamedTuple):
    """A sine whose pitch falls from ``hz * drop`` to ``hz`` (time constant ``drop_s``)."""

    hz: float
    decay_s: float
    level: float
    drop: float = 1.0
    drop_s: float = 0.03


class _DrumSound(NamedTuple):
    """A one-shot: sine tones plus filtered LFSR noise with an exponential decay."""

    length_s: float
    tones: tuple[_Tone, ...] = ()
    noise: str | None = None  # "white", "snare", "hat" or "cymbal"
    noise_decay_s: float = 0.05
    noise_level: float = 0.0


def _tom(hz: float) -> _DrumSound:
    return _DrumSound(0.5, (_Tone(hz, 0.2, 1.0, 1.6, 0.04),), "white", 0.02, 0.15)


def _conga(hz: float) -> _DrumSound:
    return _DrumSound(0.35, (_Tone(hz, 0.12, 0.8, 1.2, 0.02),), "white", 0.01, 0.1)


def _block(hz: float) -> _DrumSound:
    return _DrumSound(0.12, (_Tone(hz, 0.02, 0.7),))


def _bell(hz: float, decay_s: float) -> _DrumSound:
    # Two inharmonic partials: metal, not a pitched note.
    return _DrumSound(4 * decay_s, (_Tone(hz, decay_s, 0.4), _Tone(hz * 1.48, decay_s, 0.3)))


def _shaker(decay_s: float) -> _DrumSound:
    return _DrumSound(4 * decay_s, noise="hat", noise_decay_s=decay_s, noise_level=0.4)


_KICK = _DrumSound(0.35, (_Tone(50, 0.15, 1.0, 3.0, 0.03),), "white", 0.002, 0.5)
_SNARE = _DrumSound(0.3, (_Tone(160, 0.06, 0.5, 1.15, 0.02),), "snare", 0.09, 0.7)
_CRASH = _DrumSound(1.8, noise="cymbal", noise_decay_s=0.5, noise_level=0.45)
_RIDE = _DrumSound(1.2, (_Tone(3200, 0.3, 0.05),), "cymbal", 0.35, 0.3)
_TICK = _DrumSound(0.1, noise="hat", noise_decay_s=0.03, noise_level=0.35)
_HAT_OPEN = 46
_HAT_CHOKERS = (42, 44)

_DRUM_KIT: dict[int, _DrumSound] = {
    35: _KICK,
    36: _KICK,
    37: _DrumSound(0.06, (_Tone(800, 0.01, 0.5),), "white", 0.005, 0.4),  # side stick
    38: _SNARE,
    39: _DrumSound(0.25, noise="snare", noise_decay_s=0.05, noise_level=0.8),  # clap
    40: _SNARE,
    41: _tom(90),
    42: _DrumSound(0.15, noise="hat", noise_decay_s=0.025, noise_level=0.35),
    43: _tom(110),
    44: _DrumSound(0.18, noise="hat", noise_decay_s=0.035, noise_level=0.3),
    45: _tom(130),
    46: _DrumSound(0.7, noise="hat", noise_decay_s=0.18, noise_level=0.35),
    47: _tom(150),
    48: _tom(175),
    49: _CRASH,
    50: _tom(200),
    51: _RIDE,
    52: _DrumSound(1.5, noise="cymbal", noise_decay_s=0.4, noise_level=0.45),  # china
    53: _bell(800, 0.3),  # ride bell
    54: _shaker(0.1),  # tambourine
    55: _DrumSound(1.0, noise="cymbal", noise_decay_s=0.25, noise_level=0.4),  # splash
    56: _DrumSound(0.3, (_Tone(587, 0.08, 0.4), _Tone(845, 0.08, 0.4))),  # cowbell
    57: _CRASH,
    58: _shaker(0.15),  # vibraslap
    59: _RIDE,
    60: _conga(400),
    61: _conga(300),
    62: _conga(260),
    63: _conga(250),
    64: _conga(180),
    65: _conga(330),
    66: _conga(250),
    67: _bell(900, 0.1),  # agogo
    68: _bell(650, 0.1),
    69: _shaker(0.04),
    70: _shaker(0.03),
    73: _shaker(0.05),
    74: _shaker(0.12),
    75: _block(2500),  # claves
    76: _block(1200),  # wood blocks
    77: _block(900),
    78: _conga(500),  # cuica
    79: _conga(350),
    80: _bell(4000, 0.06),  # triangle (the instrument)
    81: _bell(4000, 0.4),
    82: _shaker(0.05),
}


@functools.lru_cache(maxsize=4)
def _noise_buffers(rate: int) -> dict[str, np.ndarray]:
    """Three seconds of LFSR noise, plain and filtered, each scaled to unit RMS."""
    white = np.resize(_lfsr_sequence(), 3 * rate)
    nyquist = rate / 2

    def filtered(kind: str, hz) -> np.ndarray:
        sos = signal.butter(4, hz, kind, fs=rate, output="sos")
        out = signal.sosfilt(sos, white)
        return out / np.sqrt(np.mean(out**2))

    return {
        "white": white,
        "snare": filtered("bandpass", [1000, min(8000, 0.9 * nyquist)]),
        "hat": filtered("highpass", min(7000, 0.8 * nyquist)),
        "cymbal": filtered("highpass", min(4000, 0.7 * nyquist)),
    }


@functools.lru_cache(maxsize=128)
def _drum_parts(sound: _DrumSound, rate: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The tonal part of a drum sound and the envelope of its noise part."""
    t = np.arange(round(sound.length_s * rate)) / rate
    tone = np.zeros_like(t)
    for part in sound.tones:
        hz = part.hz * (1 + (part.drop - 1) * np.exp(-t / part.drop_s))
        tone += part.level * np.exp(-t / part.decay_s) * np.sin(2 * np.pi * np.cumsum(hz) / rate)
    noise_envelope = None
    if sound.noise:
        noise_envelope = sound.noise_level * np.exp(-t / sound.noise_decay_s)
    # Fade the last 10 ms so a cut-off decay does not click.
    fade = min(len(t), round(0.01 * rate))
    ramp = np.linspace(1.0, 0.0, fade)
    tone[len(t) - fade :] *= ramp
    if noise_envelope is not None:
        noise_envelope[len(t) - fade :] *= ramp
    return tone, noise_envelope


def _render_drums(bus: np.ndarray, notes: Sequence[Note], clock: _Clock, report: _Progress) -> None:
    """Add drum hits (one-shots: note-offs are ignored; closed hats choke the open hat)."""
    rate, frames = clock.rate, clock.frames
    buffers = _noise_buffers(rate)
    chokes = sorted(n.start_s for n in notes if n.pitch in _HAT_CHOKERS)
    for note in notes:
        report.step()
        sound = _DRUM_KIT.get(note.pitch, _TICK)
        start = round(note.start_s * rate)
        if start >= frames:
            continue
        tone, noise_envelope = _drum_parts(sound, rate)
        length = min(len(tone), frames - start)
        if note.pitch == _HAT_OPEN:
            after = np.searchsorted(chokes, note.start_s, side="right")
            if after < len(chokes):
                length = min(length, round(chokes[after] * rate) - start)
        if length <= 0:
            continue
        hit = tone[:length].copy()
        if noise_envelope is not None and sound.noise is not None:
            noise = buffers[sound.noise]
            # A different stretch of noise per hit (deterministic), so hits are not clones.
            offset = (start * 2654435761) % (len(noise) - length)
            hit += noise_envelope[:length] * noise[offset : offset + length]
        if length < len(tone):  # choked: 5 ms fade
            fade = min(length, round(_STEAL_RELEASE_S * rate))
            hit[length - fade :] *= np.linspace(1.0, 0.0, fade)
        bus[start : start + length] += hit * (note.velocity / 127.0) ** 2


# --------------------------------------------------------------------------------------
# Rendering with FluidSynth
# --------------------------------------------------------------------------------------

_SOUNDFONT_DIRS = (
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/soundfonts"),
    Path("/usr/local/share/soundfonts"),
    Path("/opt/homebrew/share/soundfonts"),
    Path("~/.local/share/soundfonts").expanduser(),
)
_SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2", "default.sf2")

_INSTALL_FLUIDSYNTH_HINT = (
    "Install it (`sudo apt-get install fluidsynth fluid-soundfont-gm` or "
    "`brew install fluid-synth`), or play the MIDI with the built-in chip synth instead."
)
_INSTALL_SOUNDFONT_HINT = (
    "Install one (`sudo apt-get install fluid-soundfont-gm` or timgm6mb-soundfont), or pass "
    "one with --soundfont FILE.sf2 (soundfont= in Python, or set $NEUROCHIP_SOUNDFONT)."
)


def find_fluidsynth() -> str | None:
    """Path of the ``fluidsynth`` program: ``$NEUROCHIP_FLUIDSYNTH`` if set, else PATH."""
    configured = os.environ.get("NEUROCHIP_FLUIDSYNTH")
    if configured:
        return shutil.which(configured)
    return shutil.which("fluidsynth")


def find_soundfont() -> Path | None:
    """A General MIDI SoundFont on this machine, or ``None``.

    ``$NEUROCHIP_SOUNDFONT`` wins when set (``None`` if it names no file); otherwise the
    usual Linux and Homebrew folders are searched for FluidR3_GM.sf2 (Debian's
    fluid-soundfont-gm), default-GM.sf2, TimGM6mb.sf2 (timgm6mb-soundfont) or default.sf2.
    """
    configured = os.environ.get("NEUROCHIP_SOUNDFONT")
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    for folder in _SOUNDFONT_DIRS:
        for name in _SOUNDFONT_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def render_soundfont(
    path: str | os.PathLike[str],
    soundfont: str | os.PathLike[str] | None = None,
    *,
    sample_rate: int = 44100,
    max_seconds: float = MAX_MIDI_SECONDS,
) -> Audio:
    """Play a MIDI file through FluidSynth with a General MIDI SoundFont.

    The file is first read with :func:`read_midi` (so bad files give the same errors), then
    rendered with ``fluidsynth -ni -F`` (reverb and chorus on, FluidSynth's defaults).
    The result is stereo, cut or padded to the same length as :func:`render_midi` gives
    (the MIDI's length plus :data:`RELEASE_TAIL_S`) and peak-normalised to
    :data:`PEAK_LEVEL`.

    Args:
        path: The MIDI file.
        soundfont: The ``.sf2`` file; ``None`` uses :func:`find_soundfont`.
        sample_rate: Rate of the result.
        max_seconds: Refuse longer songs.

    Raises:
        NeuroChipError: If fluidsynth or the SoundFont is missing (saying how to install
            them), the MIDI is bad, or FluidSynth fails.
    """
    fluidsynth = find_fluidsynth()
    if fluidsynth is None:
        raise NeuroChipError(
            f"Rendering with a SoundFont needs FluidSynth, which was not found. "
            f"{_INSTALL_FLUIDSYNTH_HINT}"
        )
    if soundfont is None:
        soundfont = find_soundfont()
        if soundfont is None:
            raise NeuroChipError(f"No General MIDI SoundFont was found. {_INSTALL_SOUNDFONT_HINT}")
    soundfont = Path(soundfont).expanduser()
    if not soundfont.is_file():
        raise NeuroChipError(f"The SoundFont {soundfont} was not found. {_INSTALL_SOUNDFONT_HINT}")
    if not _looks_like_soundfont(soundfont):
        raise NeuroChipError(
            f"{soundfont.name} is not a SoundFont (.sf2 files start with RIFF....sfbk). "
            f"{_INSTALL_SOUNDFONT_HINT}"
        )
    sample_rate = _check_sample_rate(sample_rate)
    song = read_midi(path, max_seconds=max_seconds)
    path = Path(path).expanduser()

    with tempfile.TemporaryDirectory(prefix="neurochip-fluidsynth-") as folder:
        out = Path(folder) / "render.wav"
        command = [
            fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(int(sample_rate)),
            "-T", "wav", "-O", "float", "-F", str(out), str(soundfont), str(path.resolve()),
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                # Far slower than real time means something is wrong; never hang.
                timeout=60 + 2 * song.duration_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise NeuroChipError(f"FluidSynth took too long to render {path.name}.") from err
        except OSError as err:
            raise NeuroChipError(f"FluidSynth could not be started ({err}).") from err
        errors = _fluidsynth_errors(result.stdout + result.stderr)
        # A SoundFont it cannot load is only an error message: it still exits with 0.
        font_failed = any("soundfont" in error.lower() for error in errors)
        if result.returncode != 0 or not out.is_file() or font_failed:
            detail = errors[-1] if errors else f"exit status {result.returncode}"
            raise NeuroChipError(
                f"FluidSynth could not render {path.name} with {soundfont.name} ({detail}). "
                "Check that the SoundFont is a valid .sf2 file."
            )
        try:
            samples, rate = sf.read(out, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise NeuroChipError(f"FluidSynth's output for {path.name} is unreadable.") from err

    frames = max(1, round(song.duration_s * sample_rate))
    audio = np.zeros((2, frames), dtype=np.float32)
    rendered = Audio(samples.T, rate).to_stereo().resample(sample_rate).samples[:, :frames]
    audio[:, : rendered.shape[1]] = rendered
    peak = float(np.max(np.abs(audio)))
    if peak == 0:
        raise NeuroChipError(
            f"FluidSynth rendered {path.name} as silence with {soundfont.name}. The SoundFont "
            "may lack the instruments the file uses; try a General MIDI SoundFont."
        )
    audio *= PEAK_LEVEL / peak
    return Audio(audio, int(sample_rate))


def _looks_like_soundfont(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            header = f.read(12)
    except OSError:
        return False
    return header[:4] == b"RIFF" and header[8:12] == b"sfbk"


def _fluidsynth_errors(output: bytes) -> list[str]:
    lines = output.decode("utf-8", "replace").splitlines()
    return [line.strip() for line in lines if "error" in line.lower()]
