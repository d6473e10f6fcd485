"""Reading Standard MIDI Files: the parts, notes and controller changes of a sketch.

Composers sketch in trackers and DAWs; :func:`read_midi` takes their MIDI file as it is and
returns a :class:`MidiSong`, everything timed in seconds, for the chip synth
(:func:`neurochip.synth.chip.render_midi`) to play. :func:`default_voice` picks the chip voice
that stands in for each General MIDI program.

Reading
-------
Type 0 and type 1 files are read with mido (type 2 is refused). Every ``set_tempo`` in any
track joins one tempo map that times all tracks, as sequencers do; SMPTE time division is
supported too. Tempos outside 10-1000 BPM are refused rather than clamped: such a file is
broken, and silently changing its timing would make a mockup that does not line up with
the composer's bars. The song length is computed from the events alone (the time of the
last event of any kind, exactly what ``mido.MidiFile.length`` reports). A MIDI is as long
as the audio it becomes (that length plus :data:`RELEASE_TAIL_S`), and that is what the
limit (:data:`MAX_MIDI_SECONDS`, the audio loader's own) is compared with, so a MIDI that
lasts ten hours is refused before its notes are even paired. Files over
:data:`MAX_MIDI_BYTES` are refused up front, because mido parses at a few microseconds per
byte.

Length alone does not bound the work: 64 notes held for 20 minutes are a 700-byte file
that once took minutes and gigabytes to play. So the notes are weighed as soon as they are
paired (:func:`synth_work`, in voice-seconds), and a song over :data:`MAX_SYNTH_WORK` is
refused before any note is played, by the chip synth or by FluidSynth.

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

Every problem with an input is raised as :class:`~neurochip.errors.NeuroChipError` naming
the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from neurochip.errors import NeuroChipError, TooLongError
from neurochip.io.audio import format_duration
from neurochip.io.decode import (
    DEFAULT_MAX_DURATION_S,
    format_over_limit,
    unreadable_file_error,
)
from neurochip.synth.common import MAX_VOICES_PER_CHANNEL, _steal
from neurochip.synth.general_midi import DRUM_CHANNEL, gm_program_name  # noqa: F401

__all__ = [
    "DRUMS",
    "MAX_MIDI_BYTES",
    "MAX_MIDI_SECONDS",
    "MAX_SYNTH_WORK",
    "NOTE_COST_S",
    "RELEASE_TAIL_S",
    "VOICES",
    "Control",
    "MidiSong",
    "Note",
    "TrackInfo",
    "default_voice",
    "gm_program_name",
    "read_midi",
    "synth_work",
]

VOICES: tuple[str, ...] = ("pulse12", "pulse25", "pulse50", "triangle", "saw", "noise")
"""The pitched voices of the chip synth, as composers pick them."""

DRUMS = "drums"
"""The drum kit: the default for channel 10, and also accepted as a voice override."""

MAX_MIDI_SECONDS: float = DEFAULT_MAX_DURATION_S
"""Longest MIDI :func:`read_midi` accepts by default: the audio loader's limit (20 minutes).

Compared with the length of the audio the MIDI becomes, release tail included, as the
loader compares the length of a file's audio.
"""

NOTE_COST_S: float = 0.2
"""What each note adds to :func:`synth_work` on top of how long it is held, in seconds.

Its attack, release (up to 0.2 s) and setup: ~0.1-0.2 ms of synth time each, measured,
which is what 0.2 s of a held note costs. A drum hit counts this alone (a crash, the
longest, measured 0.18 ms).
"""

MAX_SYNTH_WORK: float = 10_000.0
"""Most voice-seconds (:func:`synth_work`) a MIDI may ask for: about 8 notes held for 20 minutes.

Set from measurement on a shared 2-core machine (load 2-5): the chip synth played the
``bench/synth.py`` song at 1,100-1,700 voice-seconds a second, and its slowest case (the
noise voice with bend and vibrato on 16 held notes) at 720-1,080. Songs at the limit took
9-10 s; at the slowest rate seen one would take ~14 s. A dense 20-minute song (bass and
lead in eighths, three-note chords, drums: the benchmark's song) is ~9,000-9,500.
"""

MAX_MIDI_BYTES: int = 4 * 1024 * 1024
"""Largest MIDI file read (4 MiB; mido needs ~2 s per MiB, real sketches are far smaller)."""

RELEASE_TAIL_S: float = 0.5
"""Time added after the MIDI's last event so releases and cymbals ring out."""

MIN_BPM, MAX_BPM = 10.0, 1000.0
DEFAULT_TEMPO_US = 500_000  # 120 BPM, the SMF default


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


# --------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------


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
        max_seconds: Refuse songs whose render would be longer than this (the last event
            plus :data:`RELEASE_TAIL_S`), checked from the events before any notes are
            collected; ``math.inf`` for no limit.

    Returns:
        The parts, notes and controller curves, timed in seconds.

    Raises:
        NeuroChipError: If the file is missing, not a MIDI file, damaged, type 2, too big,
            too long or too much work to play (:data:`MAX_SYNTH_WORK`), has an absurd tempo
            (outside 10-1000 BPM) or no notes.
    """
    import mido  # a core dependency; imported here because only MIDI sketches need it

    if isinstance(max_seconds, bool) or not max_seconds > 0:  # NaN fails too
        raise NeuroChipError(f"The maximum duration must be more than 0 s; got {max_seconds}.")
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
    if length_s + RELEASE_TAIL_S > max_seconds:
        length, limit = format_over_limit(length_s + RELEASE_TAIL_S, max_seconds)
        raise TooLongError(
            f"{name} is {length} long (its last event, plus {RELEASE_TAIL_S:g} s for the "
            f"last notes to ring out), over the limit of {limit}. Shorten it (check for stray "
            "events far after the last note), or split it into parts.",
            duration_s=length_s + RELEASE_TAIL_S,
            limit_s=max_seconds,
        )

    notes, controls, parts = _collect_events(mid, track_ticks, seconds_of, length_s)
    if not notes:
        raise NeuroChipError(
            f"{name} has no notes: it holds only tempo, controller or other events. "
            "Export the MIDI again with the note tracks included."
        )
    _check_work(name, notes)
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


def synth_work(song: MidiSong, voices: Mapping[str, str] | None = None) -> float:
    """How much playing a song asks of the synth, in voice-seconds.

    Each pitched note counts the seconds it is held, after the sustain pedal and voice
    stealing (at most :data:`MAX_VOICES_PER_CHANNEL` per channel) are resolved, plus
    :data:`NOTE_COST_S`; each drum hit counts :data:`NOTE_COST_S`. The chip synth's time
    grows with it (see :data:`MAX_SYNTH_WORK`).

    Args:
        song: A song from :func:`read_midi`.
        voices: Voice overrides as :func:`~neurochip.synth.chip.render_midi` takes them
            (track key -> voice): they decide which parts are drums.
    """
    parts = {track.key: index for index, track in enumerate(song.tracks)}
    overrides = {parts[key]: voice for key, voice in (voices or {}).items() if key in parts}
    return _work(song.notes, overrides)


def _work(notes: Sequence[Note], overrides: Mapping[int, str]) -> float:
    """:func:`synth_work` of notes, with voice overrides by part index."""
    held: dict[int, tuple[list[float], list[float]]] = {}  # channel -> pitched starts, ends
    for note in notes:
        voice = overrides.get(note.part, DRUMS if note.channel == DRUM_CHANNEL else "pitched")
        if voice != DRUMS:
            starts, ends = held.setdefault(note.channel, ([], []))
            starts.append(note.start_s)
            ends.append(note.end_s)
    total = len(notes) * NOTE_COST_S
    for starts, ends in held.values():
        if len(starts) > MAX_VOICES_PER_CHANNEL:  # stealing can only shorten notes
            ends = _steal(starts, ends)[0]
        total += math.fsum(max(0.0, end - start) for start, end in zip(starts, ends, strict=True))
    return total


def _check_work(
    name: str, notes: Sequence[Note], overrides: Mapping[int, str] | None = None
) -> None:
    """Refuse notes whose :func:`synth_work` is over :data:`MAX_SYNTH_WORK`."""
    work = _work(notes, overrides or {})
    if work > MAX_SYNTH_WORK:
        raise NeuroChipError(
            f"{name or 'This MIDI file'} is too much for the synth to play: its "
            f"{len(notes):,} notes add up to {work:,.0f} voice-seconds (each note counted for "
            f"as long as it is held, plus {NOTE_COST_S:g} s), over the limit of "
            f"{MAX_SYNTH_WORK:,.0f} (about {MAX_SYNTH_WORK / DEFAULT_MAX_DURATION_S:.0f} notes "
            f"held for {format_duration(DEFAULT_MAX_DURATION_S)}). Look for stuck or "
            "stacked duplicate notes, thin out dense chords, or split the song."
        )


def _bad_midi_error(path: Path, err: BaseException) -> NeuroChipError:
    if isinstance(err, PermissionError):
        return unreadable_file_error(path.name)
    try:
        with path.open("rb") as f:
            header = f.read(4)
    except PermissionError:
        return unreadable_file_error(path.name)
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
