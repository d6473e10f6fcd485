"""The note-faithfulness meter: how well a take keeps the notes of its sketch.

A render re-imagines the sound of a sketch; the notes are what should survive. The meter
compares the two the way audiocraft checks melody conditioning (its ``chroma_cosinesim``
metric): the *chroma* of each (how strongly each of the 12 pitch classes C, C#, ..., B sounds
in a short frame, octave and instrument set aside) is computed for both, and each frame of
the take is scored by the cosine similarity of its chroma with the sketch's at the same time:

* 1.0: the same pitch classes in the same proportions (a new instrument playing the same
  notes scores close to 1);
* around 0.5 or less: other notes (another melody, another key, a take that wandered off).

Frames where the sketch is silent (no notes to keep) are left out: they count neither for
nor against the take. A frame where the take is silent while the sketch plays scores 0.

:func:`note_faithfulness` gives one score for the whole take and a strip of scores per bar
(from a MIDI sketch's bar grid, :func:`bar_times`) or per second, so a composer can see where
a take drifts from the notes. ``neurochip faithfulness SKETCH TAKE`` prints it.

Calibration, measured on chip tunes made by the tests (``tests/test_faithfulness.py`` holds
these as tests): a take identical to the sketch scores 1.00, and so does a denoise-0 round
trip through the spectrogram codec (0.99999); the same notes on other chip voices 0.97;
another tune in another key 0.22; the tune transposed 0.2-0.3 (0.52 a semitone away, whose
chroma overlaps). Chroma does not hear octaves: the tune an octave up scores 0.97.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.notes_kept import NotesKept, notes_kept
from neurochip.sketch import Sketch
from neurochip.synth.midi import MidiSong
from neurochip.transcription import Notes, TranscriberMissing, reference_notes, transcribe

log = logging.getLogger(__name__)

__all__ = [
    "ANALYSIS_RATE",
    "FRAME_HOP",
    "FRAME_LENGTH",
    "SILENCE_DB",
    "Faithfulness",
    "LowSpot",
    "bar_times",
    "bars_of_span",
    "chroma",
    "midi_time_signatures",
    "note_faithfulness",
    "sketch_bar_times",
]

ANALYSIS_RATE: int = 22050
"""Sample rate the chroma is computed at (pitch information lies well below 11 kHz)."""

FRAME_LENGTH: int = 4096
"""FFT size of the chroma frames: 186 ms at :data:`ANALYSIS_RATE`, 5.4 Hz per bin."""

FRAME_HOP: int = 1024
"""Hop between chroma frames: 46 ms (a quarter of the frame, as audiocraft's extractor)."""

SILENCE_DB: float = 60.0
"""A sketch frame this far (in dB) below the sketch's loudest frame is silent: not counted.

Takes are held to the same rule against their own loudest frame: a take frame that quiet
has no notes, and scores 0 where the sketch plays.
"""

Segment = Literal["bar", "second"]


class LowSpot(NamedTuple):
    """A run of segments (bars or seconds) that keeps the notes much less than the take does."""

    first: int  # index into Faithfulness.strip of its first segment
    last: int  # ... and of its last (inclusive)
    start_s: float
    end_s: float
    score: float  # mean of the run's segment scores


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """How well a take keeps the notes of its sketch (see :func:`note_faithfulness`).

    Attributes:
        score: The take's note faithfulness, 0 to 1: the mean similarity over every frame in
            which the sketch sounds. ``1.0`` keeps every note; unrelated music scores about
            0.5 or less.
        times_s: Where each segment of the strip starts, in seconds from the start.
        strip: The score of each segment (the mean over its frames); ``nan`` where the
            sketch is silent for the whole segment.
        segment: ``"bar"`` (from a bar grid) or ``"second"``.
        duration_s: Length compared: the shorter of sketch and take. The last segment ends
            here.
        counted_s: How much of that the sketch sounds in: the time the score is about.
        notes: The note measure (:mod:`neurochip.notes_kept`): the sketch's notes counted
            in the take's transcription; ``None`` where it was not asked for or could not
            be made (basic-pitch missing).
    """

    score: float
    times_s: np.ndarray
    strip: np.ndarray
    segment: Segment
    duration_s: float
    counted_s: float
    notes: NotesKept | None = None

    @property
    def kept(self) -> float:
        """The headline number: notes kept where they were counted, else the chroma score."""
        return self.notes.score if self.notes is not None else self.score

    @property
    def ends_s(self) -> np.ndarray:
        """Where each segment ends: the next one's start, the last at ``duration_s``."""
        return np.append(self.times_s[1:], self.duration_s)

    def low_spots(self, margin: float = 0.15) -> list[LowSpot]:
        """Runs of adjacent segments scoring more than ``margin`` below the take's score.

        The places to listen to first: where the take lost or changed the sketch's notes.
        Silent segments (``nan``) end a run; they are never low.
        """
        low = self.strip < self.score - margin  # nan compares False
        spots: list[LowSpot] = []
        ends = self.ends_s
        i = 0
        while i < len(low):
            if not low[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(low) and low[j + 1]:
                j += 1
            spots.append(
                LowSpot(
                    i,
                    j,
                    float(self.times_s[i]),
                    float(ends[j]),
                    float(np.mean(self.strip[i : j + 1])),
                )
            )
            i = j + 1
        return spots

    def to_dict(self, margin: float = 0.15) -> dict[str, Any]:
        """Plain numbers for JSON: silent segments are ``None``; low spots included; the
        note measure under ``"notes"`` where it was made."""
        found = {
            "score": round(self.score, 4),
            "segment": self.segment,
            "duration_s": round(self.duration_s, 3),
            "counted_s": round(self.counted_s, 3),
            "times_s": [round(float(t), 3) for t in self.times_s],
            "strip": [None if math.isnan(v) else round(float(v), 4) for v in self.strip],
            "low_spot_margin": margin,
            "low_spots": [
                {
                    "first": spot.first,
                    "last": spot.last,
                    "start_s": round(spot.start_s, 3),
                    "end_s": round(spot.end_s, 3),
                    "score": round(spot.score, 4),
                }
                for spot in self.low_spots(margin)
            ],
        }
        if self.notes is not None:
            found["notes"] = self.notes.to_dict()
        return found


def note_faithfulness(
    sketch: Audio,
    take: Audio,
    bar_times_s: Sequence[float] | None = None,
    *,
    reference: Notes | None = None,
    count_notes: bool = True,
    first_bar: int = 1,
) -> Faithfulness:
    """How well ``take`` keeps the notes of ``sketch``: chroma cosine similarity, frame by frame.

    Both are mixed to mono, resampled to :data:`ANALYSIS_RATE` and compared from their first
    sample on, as long as the shorter one lasts (takes are rendered sample-aligned with their
    sketch). Every 46 ms, a frame of the take (186 ms of audio) gets the cosine similarity of
    its chroma (energy per pitch class, see :func:`chroma`) with the sketch's. Frames where
    the sketch is silent (:data:`SILENCE_DB` below its loudest) have no notes to keep and are
    excluded: they count neither for nor against the take. A take frame that is silent while
    the sketch plays scores 0. Loudness does not matter, only which notes sound in what
    proportion.

    Args:
        sketch: The sketch (the reference).
        take: The take, rendered from the sketch.
        bar_times_s: Where each bar starts, in seconds (e.g. :func:`bar_times` of the MIDI
            sketch): the strip then has one score per bar (bars from the end of the shorter
            audio on are dropped; a frame before the first bar is in no bar). ``None`` or
            empty: one score per second.
        reference: The sketch's notes over this span, timed from its start (a MIDI
            sketch's own, :func:`~neurochip.transcription.reference_notes`); ``None``:
            ``sketch`` is transcribed.
        count_notes: Also count notes (:func:`~neurochip.notes_kept.notes_kept`, in
            ``.notes``): the take is transcribed. Without basic-pitch this is skipped
            (logged) and ``.notes`` is ``None``.
        first_bar: The song's number of the first bar in ``bar_times_s``, for the lost
            notes' bar numbers.

    Returns:
        The score, and the strip of scores per bar or second.

    Raises:
        NeuroChipError: If the sketch is silent over the compared length (nothing to
            keep), or either is shorter than one hop (46 ms).
        ValueError: If ``bar_times_s`` is not finite and strictly increasing.
    """
    a = sketch.to_mono().resample(ANALYSIS_RATE).samples[0]
    b = take.to_mono().resample(ANALYSIS_RATE).samples[0]
    frames = min(len(a), len(b))
    if frames < FRAME_HOP:
        raise NeuroChipError(
            "The sketch and the take must both be at least "
            f"{FRAME_HOP / ANALYSIS_RATE * 1000:.0f} ms long to compare their notes."
        )
    expected, compared = chroma(a[:frames]), chroma(b[:frames])

    sounding = _sounding(expected)
    if not sounding.any():
        raise NeuroChipError(
            "The sketch is silent (over the length of the take): it has no notes to compare "
            "the take with."
        )
    similarity = np.sum(_unit(expected) * _unit(compared, _sounding(compared)), axis=0)

    duration_s = frames / ANALYSIS_RATE
    if bar_times_s is None or len(bar_times_s) == 0:
        starts = np.arange(math.ceil(duration_s), dtype=np.float64)
        segment: Segment = "second"
    else:
        starts = np.asarray(list(bar_times_s), dtype=np.float64)
        if starts.ndim != 1 or not np.all(np.isfinite(starts)) or np.any(np.diff(starts) <= 0):
            raise ValueError("bar_times_s must be finite and strictly increasing")
        starts = starts[starts < duration_s]
        segment = "bar"
    centres = np.arange(similarity.size) * (FRAME_HOP / ANALYSIS_RATE)
    which = np.searchsorted(starts, centres, side="right") - 1
    counted = sounding & (which >= 0)
    totals = np.bincount(which[counted], weights=similarity[counted], minlength=starts.size)
    counts = np.bincount(which[counted], minlength=starts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        strip = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    return Faithfulness(
        score=float(np.mean(similarity[sounding])),
        times_s=starts,
        strip=strip,
        segment=segment,
        duration_s=duration_s,
        counted_s=float(sounding.sum() * FRAME_HOP / ANALYSIS_RATE),
        notes=_count_notes(sketch, take, duration_s, starts, segment, reference, first_bar)
        if count_notes
        else None,
    )


def span_faithfulness(
    song: Sketch | Audio | None,
    source: Audio,
    take: Audio,
    start_s: float,
    song_bars: Sequence[float] | None = None,
) -> Faithfulness:
    """A take of ``song``'s span from ``start_s`` (``source``: the span as the engine heard
    it), measured against the song's own notes there, by the song's bars.

    The song's notes: a MIDI sketch's, an audio sketch's transcription (made once); plain
    audio, or a sketch that cannot be transcribed (basic-pitch missing), falls back to
    :func:`note_faithfulness`'s own handling. The strip's first bar is the one the span
    starts in (:func:`bars_of_span`), and lost notes carry the song's bar numbers.
    """
    bars, first_bar = bars_of_span(song_bars, start_s)
    try:
        reference = reference_notes(song, start_s, source.duration_s)
    except TranscriberMissing:
        reference = None  # note_faithfulness then says notes were not counted
    return note_faithfulness(source, take, bars, reference=reference, first_bar=first_bar or 1)


def _count_notes(
    sketch: Audio,
    take: Audio,
    duration_s: float,
    starts: np.ndarray,
    segment: Segment,
    reference: Notes | None,
    first_bar: int,
) -> NotesKept | None:
    try:
        heard = transcribe(sketch)
        take_notes = transcribe(take)
    except TranscriberMissing as err:
        log.warning("%s", err)
        return None
    return notes_kept(
        heard if reference is None else reference,
        take_notes,
        duration_s,
        list(starts) if segment == "bar" else None,
        first_bar,
        # A MIDI sketch's notes: which of them the transcriber hears in the sketch itself.
        sketch_heard=None if reference is None else heard,
    )


def chroma(samples: np.ndarray) -> np.ndarray:
    """The chroma of mono audio at :data:`ANALYSIS_RATE`: shaped ``(12, frames)``, C first.

    Power per pitch class (librosa's ``chroma_stft``: an STFT of :data:`FRAME_LENGTH` with
    hop :data:`FRAME_HOP`, folded onto 12 pitch classes tuned to A = 440 Hz), not normalised,
    so silence stays near zero. Frame ``i`` is centred at ``i * FRAME_HOP / ANALYSIS_RATE``.
    """
    import librosa  # imported on first use: it takes seconds (numba), and only this needs it

    return librosa.feature.chroma_stft(
        y=np.ascontiguousarray(samples, dtype=np.float32),
        sr=ANALYSIS_RATE,
        n_fft=FRAME_LENGTH,
        hop_length=FRAME_HOP,
        tuning=0.0,  # fixed, not estimated: deterministic, fast, and the same for both
        norm=None,
    ).astype(np.float64)


def _sounding(chroma_frames: np.ndarray) -> np.ndarray:
    """Frames within :data:`SILENCE_DB` of the loudest frame (none if all are zero)."""
    energy = chroma_frames.sum(axis=0)
    loudest = float(energy.max(initial=0.0))
    if not loudest > 0:
        return np.zeros(energy.shape, dtype=bool)
    return energy > loudest * 10 ** (-SILENCE_DB / 10)


def _unit(chroma_frames: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Each frame scaled to length 1 (L2); frames not in ``keep`` (or of length 0) become 0."""
    norms = np.linalg.norm(chroma_frames, axis=0)
    ok = norms > 0 if keep is None else keep & (norms > 0)
    return np.where(ok, chroma_frames / np.where(ok, norms, 1.0), 0.0)


# --------------------------------------------------------------------------------------
# Bars from MIDI
# --------------------------------------------------------------------------------------


def sketch_bar_times(sketch: Sketch) -> list[float] | None:
    """Where each bar of a sketch starts, in seconds: a MIDI file's from its tempo map, an
    audio sketch's from its bar grid; ``None`` where neither is known (or no bars).

    Never raises: bars are a nicety, and without them the meter works per second (logged).
    """
    if sketch.midi is None:
        grid = sketch.bar_grid
        return (grid.bar_times(sketch.audio.duration_s) or None) if grid is not None else None
    return midi_bar_times(sketch.midi, sketch.name)


def midi_bar_times(data: bytes, name: str = "the sketch") -> list[float] | None:
    """Where each bar of a MIDI file (its bytes) starts, in seconds; ``None`` without bars.

    Reads the tempo map and time signatures only: nothing is synthesised. Never raises.
    """
    from neurochip.synth import read_midi  # only MIDI sketches need it

    try:
        # read_midi reads files: the sketch holds the file's bytes (a few KB).
        with tempfile.TemporaryDirectory(prefix="neurochip-bars-") as folder:
            path = Path(folder) / "sketch.mid"
            path.write_bytes(data)
            song = read_midi(path, max_seconds=math.inf)
        return bar_times(song, midi_time_signatures(data)) or None
    except Exception as err:  # noqa: BLE001 - bars are a nicety: per second will do
        log.warning("No bars for %s (faithfulness is shown per second): %s", name, err)
        return None


def bars_of_span(
    bar_times_s: Sequence[float] | None, start_s: float
) -> tuple[list[float] | None, int | None]:
    """A song's bar starts as a span starting at ``start_s`` sees them, for the strip.

    Returns the bar the span starts in (cut short) at 0, then the later bars, in seconds from
    ``start_s``; and which bar of the song that first one is (1 = the song's first). A span
    that starts before the first bar keeps the bars as they fall. ``(None, None)`` without
    bars.
    """
    if bar_times_s is None or len(bar_times_s) == 0:
        return None, None
    bars = [float(t) - start_s for t in bar_times_s]
    started = sum(1 for t in bars if t <= 1e-9)  # bars starting at or before the span
    starts = ([0.0] if started else []) + bars[started:]
    return starts or None, max(started, 1)


def bar_times(
    song: MidiSong, time_signatures: Sequence[tuple[float, int, int]] = ()
) -> list[float]:
    """Where each bar of a MIDI song starts, in seconds, following its tempo map.

    Args:
        song: A song from :func:`~neurochip.synth.read_midi`.
        time_signatures: ``(time_s, numerator, denominator)`` changes, e.g. from
            :func:`midi_time_signatures`; none means 4/4 throughout, and 4/4 holds until
            the first. A change in the middle of a bar starts a new bar there.

    Returns:
        The start of every bar that begins before the song's last event (bar 1 at 0 s);
        empty for a file timed in SMPTE frames, which has no beats.
    """
    if not song.tempos:
        return []
    tempo_s = np.array([t for t, _ in song.tempos], dtype=np.float64)
    bpm = np.array([b for _, b in song.tempos], dtype=np.float64)
    # Quarter notes elapsed at each tempo change.
    tempo_beats = np.concatenate([[0.0], np.cumsum(np.diff(tempo_s) * bpm[:-1] / 60)])

    def beats_at(time_s: float) -> float:
        k = max(int(np.searchsorted(tempo_s, time_s, side="right")) - 1, 0)
        return float(tempo_beats[k] + (time_s - tempo_s[k]) * bpm[k] / 60)

    def seconds_at(beat: float) -> float:
        k = max(int(np.searchsorted(tempo_beats, beat, side="right")) - 1, 0)
        return float(tempo_s[k] + (beat - tempo_beats[k]) * 60 / bpm[k])

    # Meters in quarter notes per bar, from the beat each starts at.
    meters = [(0.0, 4.0)]
    for time_s, numerator, denominator in sorted(time_signatures):
        if numerator <= 0 or denominator <= 0:
            continue
        at = beats_at(max(float(time_s), 0.0))
        if at <= meters[-1][0] + 1e-9:
            meters[-1] = (meters[-1][0], numerator * 4 / denominator)
        else:
            meters.append((at, numerator * 4 / denominator))
    end_beat = beats_at(song.length_s)
    bars: list[float] = []
    for i, (start, length) in enumerate(meters):
        stop = meters[i + 1][0] if i + 1 < len(meters) else end_beat
        beat = start
        while beat < stop - 1e-6 or (not bars and beat == 0.0):
            bars.append(seconds_at(beat))
            beat += length
    return bars


def midi_time_signatures(midi: bytes) -> list[tuple[float, int, int]]:
    """The time signatures of a MIDI file: ``(time_s, numerator, denominator)``, in order.

    For :func:`bar_times` (``Sketch.midi`` holds a MIDI sketch's bytes). Timed with every
    tempo change in the file, as :func:`~neurochip.synth.read_midi` times notes; empty if the
    file has none or cannot be read.
    """
    import mido  # a core dependency, as in neurochip.synth.midi

    try:
        song = mido.MidiFile(file=io.BytesIO(midi))
        found, now = [], 0.0
        for message in song:  # all tracks merged, message.time in seconds
            now += message.time
            if message.type == "time_signature":
                found.append((now, int(message.numerator), int(message.denominator)))
    except Exception:  # noqa: BLE001 - mido raises many types; bars are then 4/4
        return []
    return found
