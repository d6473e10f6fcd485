"""The built-in chip synth: :func:`render_midi` plays a MIDI song as NES-flavoured chip music.

A small synthesiser, so the Riffusion model hears clean chip tones with the expression the
composer wrote. The song comes from :func:`~neurochip.synth.midi.read_midi`; pitched parts
play the voices described here, drum parts (channel 10, or any part given the ``drums``
voice) the kit in :mod:`neurochip.synth.drums`.

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
* The sustain pedal CC64, and CC120/CC121/CC123, are resolved while reading (see
  :mod:`neurochip.synth.midi`). A program change picks the default voice of the notes that
  follow it (:func:`~neurochip.synth.midi.default_voice`).

Output
------
:func:`render_midi` returns ``round(duration_s * sample_rate)`` frames, where
``duration_s`` is the MIDI's length (its last event) plus
:data:`~neurochip.synth.midi.RELEASE_TAIL_S` (0.5 s) so releases and cymbals ring out; the
last 20 ms fade to silence. The mix is peak-normalised to :data:`PEAK_LEVEL` (-1 dBFS), so
it never clips.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.synth.common import (
    _CHUNK,
    _STEAL_RELEASE_S,
    CONTROL_BLOCK,
    MAX_VOICES_PER_CHANNEL,
    PEAK_LEVEL,
    _check_sample_rate,
    _Clock,
    _lfsr_sequence,
    _mark,
    _Progress,
    _steal,
)
from neurochip.synth.drums import _render_drums
from neurochip.synth.midi import (
    DRUMS,
    VOICES,
    Control,
    MidiSong,
    Note,
    _check_work,
    default_voice,
    read_midi,
)

__all__ = [
    "CONTROL_BLOCK",
    "MAX_VOICES_PER_CHANNEL",
    "PEAK_LEVEL",
    "VIBRATO_MAX_CENTS",
    "VIBRATO_RATE_HZ",
    "render_midi",
]

VIBRATO_RATE_HZ: float = 5.5
"""Rate of the mod-wheel vibrato."""

VIBRATO_MAX_CENTS: float = 50.0
"""Vibrato depth (peak deviation) at CC1 = 127; linear in CC1."""

# Highest harmonic we keep, as a fraction of the sample rate and in Hz.
_BAND_LIMIT_FRACTION = 0.475
_BAND_LIMIT_HZ = 20_000.0
_END_FADE_S = 0.02


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
# Rendering
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
            voice in ``voices``, a bad sample rate, or a song that is too much work to play
            with these voices (:data:`~neurochip.synth.midi.MAX_SYNTH_WORK`), refused before
            any note is played.
    """
    if not isinstance(song, MidiSong):
        song = read_midi(song)
    sample_rate = _check_sample_rate(sample_rate)
    overrides = _check_overrides(song, voices or {})
    # Again, with the overrides: they decide which notes are drums (and a MidiSong can be
    # made without read_midi).
    _check_work(song.name, song.notes, overrides)
    report = _Progress(progress, len(song.notes))
    [mix] = _normalised([_play(song, overrides, sample_rate, stereo, report)])
    report.done()
    return Audio(mix, sample_rate)


def render_midi_parts(
    song: MidiSong | str | os.PathLike[str],
    groups: Sequence[Collection[str]],
    *,
    sample_rate: int = 44100,
    voices: dict[str, str] | None = None,
    stereo: bool = True,
    progress: Callable[[float], None] | None = None,
) -> list[Audio]:
    """Play groups of a song's parts each alone: the stems of the sketch.

    Every stem is the whole song's length, sample-aligned with :func:`render_midi`'s mix,
    and all are at one level, the one that peaks their sum at :data:`PEAK_LEVEL`: stems of
    all the parts add up to the mix (but where parts sharing a channel stole each other's
    voices there).

    Args:
        song: A song from :func:`read_midi`, or the path of a MIDI file.
        groups: Each stem's parts, by :attr:`TrackInfo.key` (a part in no group is not
            played).
        sample_rate, voices, stereo, progress: As for :func:`render_midi`.

    Raises:
        NeuroChipError: As :func:`render_midi`, and for a key the song has no part of.
    """
    if not isinstance(song, MidiSong):
        song = read_midi(song)
    sample_rate = _check_sample_rate(sample_rate)
    overrides = _check_overrides(song, voices or {})
    index_of = {track.key: index for index, track in enumerate(song.tracks)}
    parts = []
    for group in groups:
        unknown = [key for key in group if str(key) not in index_of]
        if unknown:
            listing = ", ".join(f"{t.key} ({t.name})" for t in song.tracks)
            raise NeuroChipError(
                f"{song.name or 'The MIDI file'} has no track {unknown[0]!r}. "
                f"Its tracks are: {listing}."
            )
        parts.append({index_of[str(key)] for key in group})
    played = [note for note in song.notes if any(note.part in group for group in parts)]
    _check_work(song.name, played, overrides)
    report = _Progress(progress, sum(sum(n.part in g for n in song.notes) for g in parts))
    stems = _normalised(
        [_play(song, overrides, sample_rate, stereo, report, group) for group in parts]
    )
    report.done()
    return [Audio(stem, sample_rate) for stem in stems]


def _play(
    song: MidiSong,
    overrides: dict[int, str],
    sample_rate: int,
    stereo: bool,
    report: _Progress,
    parts: Collection[int] | None = None,
) -> np.ndarray:
    """The song's notes (those of ``parts`` only, if given) mixed, before its level is set."""
    frames = max(1, round(song.duration_s * sample_rate))
    clock = _Clock(sample_rate, frames)
    by_channel: dict[int, list[Note]] = {}
    for note in song.notes:
        if parts is None or note.part in parts:
            by_channel.setdefault(note.channel, []).append(note)
    controls: dict[tuple[int, str], list[Control]] = {}
    for control in song.controls:
        controls.setdefault((control.channel, control.kind), []).append(control)

    mix = np.zeros((2 if stereo else 1, frames), dtype=np.float32)
    bus = np.zeros(frames, dtype=np.float32)
    # The chunks of the bus this channel's notes reach: only those are mixed and cleared,
    # so a channel costs the time its notes sound, not the length of the song.
    touched = np.zeros(-(-frames // _CHUNK), dtype=bool)
    for channel, notes in sorted(by_channel.items()):
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
            _mark(touched, *_render_note(bus, note, voice, end_s, release_s, pitch_curve, clock))
            report.step()
        _render_drums(bus, drums, clock, report, touched)
        chunks = np.flatnonzero(touched)
        for out, gain in enumerate(_gain_curves(controls, channel, clock, stereo)):
            _mix_in(mix[out], bus, gain, clock, chunks)
        for chunk in chunks:
            bus[chunk * _CHUNK : (chunk + 1) * _CHUNK] = 0.0
        touched[:] = False

    fade = min(frames, round(_END_FADE_S * sample_rate))
    mix[:, frames - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return mix


def _normalised(mixes: list[np.ndarray]) -> list[np.ndarray]:
    """The mixes at one level: their sum peaks at :data:`PEAK_LEVEL` (silence stays)."""
    total = sum(mixes[1:], mixes[0].copy())
    peak = max(float(total.max()), -float(total.min()))
    if peak > 0:
        for mix in mixes:
            mix *= PEAK_LEVEL / peak
    return mixes


def _mix_in(
    out: np.ndarray, bus: np.ndarray, gain: float | np.ndarray, clock: _Clock, chunks: np.ndarray
) -> None:
    """Add ``bus`` times a gain (a number, or a block curve) into ``out``, chunk by chunk.

    Only the :data:`_CHUNK` s listed in ``chunks`` (the rest of the bus is silent), one at a
    time: no song-long temporaries.
    """
    for chunk in chunks.tolist():
        start = chunk * _CHUNK
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


# --------------------------------------------------------------------------------------
# Control curves
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------------------


def _steal_voices(
    pitched: Sequence[tuple[Note, str]],
) -> Iterable[tuple[Note, str, float, float]]:
    """Each note with its end and release time, after voice stealing.

    With :data:`MAX_VOICES_PER_CHANNEL` notes held, a new note ends the oldest one, which
    then fades out in 5 ms instead of its voice's release.
    """
    notes = [note for note, _ in pitched]
    ends, stolen = _steal([note.start_s for note in notes], [note.end_s for note in notes])
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
) -> tuple[int, int]:
    """Add one pitched note to the channel's bus; return the samples it reached."""
    spec = _VOICE_SPECS[voice]
    rate = clock.rate
    start = round(note.start_s * rate)
    if start >= clock.frames:
        return 0, 0
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
            return 0, 0  # even the fundamental would be above the band limit: inaudible
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
    return start, start + length


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


# --------------------------------------------------------------------------------------
# Waveforms
# --------------------------------------------------------------------------------------


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
    # phases - floor(phases) is phases % 1.0 exactly (phases are never negative), and numpy
    # computes it ~20x faster than its floating-point modulo, which was most of a note's time.
    position = np.floor(phases)
    np.subtract(phases, position, out=position)
    position *= size
    index = position.astype(np.intp)
    position -= index  # now the fraction between table[index] and table[index + 1]
    low = table[index]
    return low + position * (table[index + 1] - low)


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
