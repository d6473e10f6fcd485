"""Notes, as the note meter compares them: a MIDI sketch's own, or transcribed from audio.

A take is audio, so its notes are transcribed: Spotify's **basic-pitch** (ICASSP 2022), a
small polyphonic transcriber whose weights ship inside its package as ONNX and run through
onnxruntime (no TensorFlow; the Makefile installs ``basic-pitch 0.4.0+onnx``, see
``tools/basic_pitch_wheel.py``). A MIDI sketch's reference notes are its own, exactly
(drum and noise parts left out: they have no pitch to keep); an audio sketch's are its
transcription, made once per sketch.

:class:`Notes` holds onsets, offsets and MIDI pitches; :meth:`Notes.span` cuts out what a
take of ``start_s`` to ``start_s + duration_s`` heard, timed from the span's start.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio

log = logging.getLogger(__name__)

__all__ = [
    "TRANSCRIBER",
    "Notes",
    "TranscriberMissing",
    "midi_notes",
    "note_name",
    "reference_notes",
    "sketch_notes",
    "transcribe",
]

TRANSCRIBER = "basic-pitch 0.4.0 (ICASSP 2022 model, ONNX)"
"""What transcribes takes and audio sketches; take metadata records it beside the result."""

ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_S = 0.1277
"""basic-pitch's own defaults (its ``predict``): a note needs an onset, and ~128 ms."""

UNPITCHED_VOICES = frozenset({"drums", "noise"})
"""Chip-synth voices whose notes have no pitch to keep: left out of a MIDI sketch's notes."""

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class TranscriberMissing(NeuroChipError):
    """basic-pitch is not installed: the note measure is unavailable (chroma still works)."""


def note_name(pitch: int) -> str:
    """A MIDI pitch as a composer writes it: 60 -> "C4", 76 -> "E5"."""
    return f"{_NAMES[int(pitch) % 12]}{int(pitch) // 12 - 1}"


@dataclass(frozen=True, eq=False)
class Notes:
    """Notes in time: ``starts_s[i]`` to ``ends_s[i]`` at MIDI pitch ``pitches[i]``, by start."""

    starts_s: np.ndarray
    ends_s: np.ndarray
    pitches: np.ndarray

    def __post_init__(self) -> None:
        starts = np.asarray(self.starts_s, dtype=np.float64).reshape(-1)
        ends = np.asarray(self.ends_s, dtype=np.float64).reshape(-1)
        pitches = np.asarray(self.pitches, dtype=np.int64).reshape(-1)
        if not starts.size == ends.size == pitches.size:
            raise ValueError("Notes need one start, end and pitch each")
        order = np.lexsort((pitches, starts))
        # A zero-length note cannot be matched by onset and offset tools; give it 1 ms.
        ends = np.maximum(ends, starts + 1e-3)
        object.__setattr__(self, "starts_s", starts[order])
        object.__setattr__(self, "ends_s", ends[order])
        object.__setattr__(self, "pitches", pitches[order])

    @classmethod
    def of(cls, events: Iterable[tuple[float, float, int]]) -> Notes:
        """From ``(start_s, end_s, pitch)`` triples."""
        rows = [(float(s), float(e), int(p)) for s, e, p in events]
        if not rows:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
        starts, ends, pitches = zip(*rows, strict=True)
        return cls(np.array(starts), np.array(ends), np.array(pitches))

    def __len__(self) -> int:
        return int(self.pitches.size)

    def span(self, start_s: float, duration_s: float) -> Notes:
        """The notes that start within ``[start_s, start_s + duration_s)``, timed from
        ``start_s`` and cut at the span's end (a note held into the span from before it was
        not played in it: there is no onset to keep)."""
        keep = (self.starts_s >= start_s - 1e-6) & (self.starts_s < start_s + duration_s)
        return Notes(
            self.starts_s[keep] - start_s,
            np.minimum(self.ends_s[keep], start_s + duration_s) - start_s,
            self.pitches[keep],
        )

    def to_dict(self) -> dict[str, list]:
        """Plain lists for JSON (times to the millisecond)."""
        return {
            "starts_s": [round(float(t), 3) for t in self.starts_s],
            "ends_s": [round(float(t), 3) for t in self.ends_s],
            "pitches": [int(p) for p in self.pitches],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notes:
        """What :meth:`to_dict` wrote; ``ValueError`` if it does not hold notes."""
        try:
            return cls(
                np.asarray(data["starts_s"], dtype=np.float64),
                np.asarray(data["ends_s"], dtype=np.float64),
                np.asarray(data["pitches"], dtype=np.int64),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a notes record: {err}") from err


# --------------------------------------------------------------------------------------
# Transcription
# --------------------------------------------------------------------------------------


def transcribe(audio: Audio, remember: bool = True) -> Notes:
    """The notes basic-pitch hears in ``audio`` (mixed to mono, at its 22,050 Hz).

    The last few results are remembered by the audio's content (``remember=False``: made
    again): a grid's cells share one sketch span, which is then transcribed once.

    Raises:
        TranscriberMissing: If basic-pitch or onnxruntime is not installed.
    """
    if not remember:
        return _transcribe(audio)
    key = hashlib.sha1(audio.samples.tobytes()).hexdigest() + f"@{audio.sample_rate}"
    with _SKETCH_LOCK:
        found = _HEARD.get(key)
    if found is None:
        found = _transcribe(audio)
        with _SKETCH_LOCK:
            _HEARD[key] = found
            while len(_HEARD) > _HEARD_KEPT:
                _HEARD.popitem(last=False)
    return found


_HEARD: OrderedDict[str, Notes] = OrderedDict()
_HEARD_KEPT = 16


def _transcribe(audio: Audio) -> Notes:
    session, windows, outputs = _transcriber()
    from basic_pitch import note_creation
    from basic_pitch.constants import AUDIO_N_SAMPLES, AUDIO_SAMPLE_RATE, FFT_HOP
    from basic_pitch.inference import unwrap_output, window_audio_file

    samples = audio.to_mono().resample(AUDIO_SAMPLE_RATE).samples[0]
    if samples.size == 0:
        return Notes.of([])
    # As basic-pitch's run_inference: 2-second windows overlapping by 30 frames, the first
    # padded by half the overlap; all windows go through the model in one call.
    overlap_frames = 30
    overlap = overlap_frames * FFT_HOP
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), samples.astype(np.float32)])
    batch = np.stack([w for w, _ in window_audio_file(padded, AUDIO_N_SAMPLES - overlap)])
    with _RUN_LOCK:  # one session, shared: onnxruntime runs one call at a time best here
        results = session.run(outputs, {windows: batch})
    output = {
        name: unwrap_output(result, samples.size, overlap_frames)
        for name, result in zip(("note", "onset", "contour"), results, strict=True)
    }
    _, events = note_creation.model_output_to_notes(
        output,
        onset_thresh=ONSET_THRESHOLD,
        frame_thresh=FRAME_THRESHOLD,
        min_note_len=int(round(MIN_NOTE_S * AUDIO_SAMPLE_RATE / FFT_HOP)),
        include_pitch_bends=False,
    )
    return Notes.of((start, end, pitch) for start, end, pitch, *_ in events)


_RUN_LOCK = threading.Lock()


@cache
def _transcriber() -> tuple[Any, str, list[str]]:
    """basic-pitch's ONNX model in an onnxruntime session, loaded once (~230 KB)."""
    try:
        import onnxruntime

        with _quiet_basic_pitch():
            from basic_pitch import FilenameSuffix, build_icassp_2022_model_path
    except ImportError as err:
        raise TranscriberMissing(
            "Counting notes needs basic-pitch and onnxruntime, which are not installed: "
            "run `make install` (it installs basic-pitch without TensorFlow). The chroma "
            f"measure still works. ({err})"
        ) from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # beside a render: one core, measured in bench/
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(build_icassp_2022_model_path(FilenameSuffix.onnx)),
        options,
        providers=["CPUExecutionProvider"],
    )
    # The model's own tensor names (basic-pitch's Model.predict reads them the same way).
    return (
        session,
        "serving_default_input_2:0",
        ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"],
    )


@contextmanager
def _quiet_basic_pitch() -> Iterator[None]:
    """basic-pitch warns on import about every runtime it lacks (TensorFlow, TFLite,
    CoreML) on the root logger; with its ONNX model that is expected, and noise to a
    composer."""

    def not_basic_pitch(record: logging.LogRecord) -> bool:
        return "basic_pitch" not in record.pathname

    root = logging.getLogger()
    root.addFilter(not_basic_pitch)
    try:
        yield
    finally:
        root.removeFilter(not_basic_pitch)


# --------------------------------------------------------------------------------------
# A sketch's notes
# --------------------------------------------------------------------------------------


def midi_notes(song, voices: Mapping[str, str] | None = None) -> Notes:
    """A MIDI song's pitched notes (a :class:`~neurochip.synth.MidiSong`), with the voices
    it is played with: parts played as drums or noise are left out."""
    voices = voices or {}
    unpitched = {
        i
        for i, track in enumerate(song.tracks)
        if voices.get(track.key, track.voice) in UNPITCHED_VOICES
    }
    return Notes.of(
        (note.start_s, note.end_s, note.pitch) for note in song.notes if note.part not in unpitched
    )


_SKETCH_NOTES: OrderedDict[str, Notes] = OrderedDict()
_SKETCH_NOTES_KEPT = 8
_SKETCH_LOCK = threading.Lock()


def sketch_notes(sketch) -> Notes:
    """The notes of a whole :class:`~neurochip.sketch.Sketch`: a MIDI sketch's own (with
    its voices), an audio sketch's transcription; made once per sketch (by its key)."""
    with _SKETCH_LOCK:
        found = _SKETCH_NOTES.get(sketch.key)
        if found is not None:
            _SKETCH_NOTES.move_to_end(sketch.key)
            return found
    if sketch.midi is not None:
        from neurochip.synth import read_midi  # only MIDI sketches need it

        with tempfile.TemporaryDirectory(prefix="neurochip-notes-") as folder:
            path = Path(folder) / "sketch.mid"
            path.write_bytes(sketch.midi)
            song = read_midi(path, max_seconds=max(sketch.audio.duration_s, 1.0) + 60)
        found = midi_notes(song, sketch.voices)
    else:
        found = transcribe(sketch.audio)
    with _SKETCH_LOCK:
        _SKETCH_NOTES[sketch.key] = found
        while len(_SKETCH_NOTES) > _SKETCH_NOTES_KEPT:
            _SKETCH_NOTES.popitem(last=False)
    return found


def reference_notes(song, start_s: float, duration_s: float) -> Notes | None:
    """What a take of ``song`` from ``start_s`` for ``duration_s`` should keep, timed from
    ``start_s``: the sketch's notes there. ``None`` for plain audio (not a
    :class:`~neurochip.sketch.Sketch`): the meter then transcribes the span itself."""
    if not hasattr(song, "key") or not hasattr(song, "midi"):
        return None
    return sketch_notes(song).span(start_s, duration_s)
