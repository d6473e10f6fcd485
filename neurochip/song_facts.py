"""What NeuroChip knows of a sketch as a music model is told it: tempo, metre and key.

ACE-Step 1.5 is conditioned on a song's BPM, its time signature (beats per bar: 2, 3, 4 or
6) and its key ("C major", "F# minor"). A composer may type them; where they do not, these
are the sketch's own: :func:`facts_of` reads a MIDI sketch's tempo map, time signature and
key signature (or hears the key in its notes), and an audio sketch's bar grid and chroma.

Keys are found the classic way (Krumhansl & Kessler's key profiles, as in Krumhansl's
"Cognitive Foundations of Musical Pitch", 1990): how much each of the 12 pitch classes
sounds is correlated with the profile of each of the 24 major and minor keys, and the best
wins. A key is told only when the best correlation is clear (:data:`MIN_KEY_CORRELATION`):
a wrong key steers the model worse than none.

Keys are spelled with sharps only ("D# major" for E flat major, "A# minor" for B flat
minor): one name per key, so equal keys compare equal, and every one is a key string
ACE-Step accepts (it takes "#" and "b" alike).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from neurochip.bars import BarGrid
from neurochip.io.audio import Audio
from neurochip.sketch import Sketch
from neurochip.synth.general_midi import DRUM_CHANNEL

log = logging.getLogger(__name__)

__all__ = [
    "MIN_KEY_CORRELATION",
    "PITCH_CLASSES",
    "SongFacts",
    "estimate_key",
    "facts_of",
    "facts_of_midi",
    "key_of_pitch_classes",
]

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
"""The 12 pitch classes from C, spelled with sharps as keys are."""

MIN_KEY_CORRELATION: float = 0.5
"""Weakest profile correlation told as a key.

Measured: tonal chip tunes (the Greensleeves demo in all 12 keys, major scales and
chords) correlate 0.70-0.90 with their key; drums alone and white noise 0.24-0.32.
"""

# Krumhansl & Kessler's probe-tone ratings, tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# MIDI's defaults where a file says nothing: 120 BPM, 4/4.
_DEFAULT_TEMPO_US = 500_000
_DEFAULT_BEATS_PER_BAR = 4

# ACE-Step's tempo range (RenderSettings refuses others).
_MIN_BPM, _MAX_BPM = 30, 300

# Chroma of audio: 22.05 kHz holds every pitch; 186 ms frames resolve low notes, 93 ms hop.
_RATE, _FFT, _HOP = 22050, 4096, 2048
_SILENCE = 10 ** (-80 / 20)  # peak below -80 dBFS: no notes to hear


@dataclass(frozen=True)
class SongFacts:
    """A song's tempo, metre and key, as ACE-Step is conditioned on them; None: not known.

    Attributes:
        bpm: Beats (quarter notes) a minute, 30-300.
        beats_per_bar: A time signature's numerator: 4 for 4/4, 3 for 3/4, 6 for 6/8.
        key: E.g. ``"A minor"``, ``"F# major"`` (sharps only: see the module's notes).
    """

    bpm: int | None = None
    beats_per_bar: int | None = None
    key: str | None = None

    def as_text(self) -> str:
        """A short line for people, e.g. ``"120 BPM, 4/4, A minor"``.

        Only the numerator is known, so the metre is shown over 8 where it is 6, 9 or 12
        (compound time, as ACE-Step reads 6) and over 4 otherwise.
        """
        parts = []
        if self.bpm is not None:
            parts.append(f"{self.bpm} BPM")
        if self.beats_per_bar is not None:
            unit = 8 if self.beats_per_bar in (6, 9, 12) else 4
            parts.append(f"{self.beats_per_bar}/{unit}")
        parts.append(self.key or "key unknown")
        return ", ".join(parts)


def facts_of(sketch: Sketch, bar_grid: BarGrid | None = None) -> SongFacts:
    """A sketch's facts: a MIDI file's own (:func:`facts_of_midi`); for audio, the tempo
    and metre of ``bar_grid`` (else the sketch's own grid; neither: unknown) and the key
    heard in it (:func:`estimate_key`).

    A MIDI sketch's tempo map is the truth, so ``bar_grid`` is ignored for one. Cheap enough
    for every render: well under a second for a 3-minute audio sketch. Never raises for a
    sketch that loaded.
    """
    if sketch.midi is not None:
        return facts_of_midi(sketch.midi)
    grid = bar_grid if bar_grid is not None else sketch.bar_grid
    bpm = beats = None
    if grid is not None:
        bpm, beats = _in_range_bpm(grid.bpm), int(grid.beats_per_bar)
    return SongFacts(bpm, beats, estimate_key(sketch.audio))


def facts_of_midi(midi: bytes) -> SongFacts:
    """The facts of a MIDI file (its bytes), read without playing it.

    * BPM: the file's first tempo (in time order), rounded; 120 if it sets none (MIDI's
      default); unknown for files timed in SMPTE frames (no beats) or outside 30-300.
    * Beats per bar: the first time signature's numerator; 4 if there is none (4/4).
    * Key: the first key signature, if the file has one (the composer said it); else heard
      in the notes (:func:`key_of_pitch_classes` of how long each pitch class is held,
      drums on channel 10 left out: their note numbers are drums, not pitches).

    Never raises: an unreadable file has no known facts (logged).
    """
    import mido  # a core dependency, as in neurochip.synth.midi

    try:
        song = mido.MidiFile(file=io.BytesIO(midi))
        messages = list(mido.merge_tracks(song.tracks))  # every track, in tick order
    except Exception as err:  # noqa: BLE001 - mido raises many types on bad input
        log.warning("No song facts from this MIDI file: %s", err)
        return SongFacts()

    tempo = next((m.tempo for m in messages if m.type == "set_tempo"), _DEFAULT_TEMPO_US)
    bpm = _in_range_bpm(60e6 / tempo) if song.ticks_per_beat > 0 and tempo > 0 else None
    beats = next(
        (m.numerator for m in messages if m.type == "time_signature"), _DEFAULT_BEATS_PER_BAR
    )
    signature = next((m.key for m in messages if m.type == "key_signature"), None)
    key = _key_of_signature(signature) if signature else None
    if key is None:
        key = key_of_pitch_classes(_held_pitch_classes(messages))
    return SongFacts(bpm, int(beats) if 1 <= beats <= 16 else None, key)


def estimate_key(audio: Audio) -> str | None:
    """The key heard in audio; None for silence, or where no key is clear (drums, noise).

    The chroma (librosa's ``chroma_stft``, tuning estimated so a detuned rip still finds
    its notes) of each frame is scaled to its loudest pitch class, so quiet passages count
    as much as loud ones, and summed; then :func:`key_of_pitch_classes`. ``chroma_stft``
    over ``chroma_cqt``: measured on chip tunes, it was right as often (every Greensleeves
    transposition, detuned ones too) and 3-4 times faster, and ``chroma_cqt``'s energy
    leans to the bass (summed unscaled, it often named the key a fifth away).
    """
    import librosa  # imported on first use: it takes seconds (numba)

    mono = audio.to_mono().resample(_RATE).samples[0]
    if mono.size < _FFT or not np.max(np.abs(mono), initial=0.0) > _SILENCE:
        return None
    chroma = librosa.feature.chroma_stft(
        y=np.ascontiguousarray(mono, dtype=np.float32),
        sr=_RATE,
        n_fft=_FFT,
        hop_length=_HOP,
        norm=None,
    )
    loudest = chroma.max(axis=0)
    # Frames 60 dB under the loudest are silence: left out.
    sounding = loudest > loudest.max(initial=0.0) * 1e-6
    if not sounding.any():
        return None
    return key_of_pitch_classes((chroma[:, sounding] / loudest[sounding]).sum(axis=1))


def key_of_pitch_classes(weights: np.ndarray) -> str | None:
    """The major or minor key whose Krumhansl-Kessler profile best fits ``weights``.

    ``weights`` is how much each pitch class sounds, C first (12 numbers). None where they
    are all equal (nothing to go on) or no key correlates :data:`MIN_KEY_CORRELATION`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (12,) or not np.all(np.isfinite(weights)) or np.ptp(weights) <= 0:
        return None
    profiles = np.array(
        [np.roll(profile, tonic) for profile in (_MAJOR, _MINOR) for tonic in range(12)]
    )
    scores = [float(np.corrcoef(weights, profile)[0, 1]) for profile in profiles]
    best = int(np.argmax(scores))
    if scores[best] < MIN_KEY_CORRELATION:
        return None
    return f"{PITCH_CLASSES[best % 12]} {'major' if best < 12 else 'minor'}"


def _held_pitch_classes(messages) -> np.ndarray:
    """Ticks each pitch class is held, drums left out, from messages in tick order.

    A key struck again ends the earlier note; notes never released end at the last event.
    Ticks, not seconds: a tempo change does not change which notes a tune leans on.
    """
    held = np.zeros(12)
    started: dict[tuple[int, int], int] = {}  # (channel, pitch) -> tick struck
    now = 0
    for message in messages:
        now += message.time
        if message.type not in ("note_on", "note_off") or message.channel + 1 == DRUM_CHANNEL:
            continue
        start = started.pop((message.channel, message.note), None)
        if start is not None:
            held[message.note % 12] += now - start
        if message.type == "note_on" and message.velocity > 0:
            started[(message.channel, message.note)] = now
    for (_, pitch), start in started.items():
        held[pitch % 12] += now - start
    return held


def _key_of_signature(signature: str) -> str | None:
    """A MIDI key signature as mido names it (``"Eb"``, ``"F#m"``) in sharps: ``"D# major"``."""
    minor = signature.endswith("m")
    tonic = signature[:-1] if minor else signature
    if not tonic or tonic[0] not in "CDEFGAB":
        return None
    pitch = PITCH_CLASSES.index(tonic[0]) + tonic[1:].count("#") - tonic[1:].count("b")
    return f"{PITCH_CLASSES[pitch % 12]} {'minor' if minor else 'major'}"


def _in_range_bpm(bpm: float) -> int | None:
    """``bpm`` rounded, or None outside the tempi ACE-Step is told."""
    rounded = round(bpm)
    return rounded if _MIN_BPM <= rounded <= _MAX_BPM else None
