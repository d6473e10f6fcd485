"""The front door for a composer's sketch: audio, a tracker module, a chip rip or a MIDI file.

:func:`load_sketch` reads any of them, from a path or from an open file (an upload, a
``BytesIO``), and returns a :class:`Sketch`: the audio the engine renders plus what the app
shows about it (the name, and for MIDI the parts and the voices that play them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from neurochip.bars import BarGrid
from neurochip.errors import AudioLoadError, NeuroChipError, RenderCancelled
from neurochip.io.audio import SAMPLE_RATE, Audio
from neurochip.io.decode import (
    DEFAULT_MAX_DURATION_S,
    FFMPEG_FORMATS,
    MIDI_SUFFIXES,
    SOUNDFILE_SUFFIXES,
    load_audio,
)
from neurochip.synth import (
    MAX_MIDI_SECONDS,
    TrackInfo,
    read_midi,
    render_midi,
    render_midi_parts,
)

#: Every file suffix :func:`load_sketch` reads (without the dot), for upload boxes.
SKETCH_SUFFIXES: tuple[str, ...] = tuple(
    sorted({s.lstrip(".") for s in SOUNDFILE_SUFFIXES | set(FFMPEG_FORMATS) | MIDI_SUFFIXES})
)

SketchSource = str | os.PathLike[str] | BinaryIO | bytes

#: progress(fraction done 0..1, stage), as the engine reports it (so a Job can run a load).
LoadProgress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class Sketch:
    """A loaded sketch.

    Attributes:
        audio: What the engine renders (44.1 kHz unless asked otherwise).
        name: The file's name as the composer knows it: for display, never a path.
        key: A hash of the content (and the MIDI voices): identifies the sketch in caches.
        tracks: For MIDI, its parts and their default voices; empty otherwise.
        voices: For MIDI, the voice overrides it was played with (track key -> voice).
        midi: For MIDI, the file itself, to play it again with other voices.
        file_rate: For audio files, the file's own sample rate (``audio`` is resampled from
            it when they differ).
        bar_grid: For audio, where its bars fall, once estimated or said
            (:func:`~neurochip.bars.estimate_bar_grid`); MIDI knows its own bars.
    """

    audio: Audio
    name: str
    key: str
    tracks: tuple[TrackInfo, ...] = ()
    voices: Mapping[str, str] = field(default_factory=dict)
    midi: bytes | None = None
    file_rate: int | None = None
    bar_grid: BarGrid | None = None

    @property
    def is_midi(self) -> bool:
        return self.midi is not None

    def with_bar_grid(self, grid: BarGrid | None) -> Sketch:
        """The same sketch with its bars where ``grid`` says (audio only: MIDI has its own)."""
        if self.midi is not None and grid is not None:
            raise NeuroChipError(f"{self.name} is MIDI: its bars come from its tempo map.")
        return dataclasses.replace(self, bar_grid=grid)

    def with_voices(
        self,
        voices: Mapping[str, str],
        progress: LoadProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> Sketch:
        """The same MIDI sketch played with other voices (track key -> voice).

        ``progress`` and ``cancel`` work as in :func:`load_sketch`.
        """
        if self.midi is None:
            raise NeuroChipError(f"{self.name} is audio, not MIDI: its voices cannot change.")
        return load_sketch(
            self.midi,
            name=self.name,
            voices=voices,
            sample_rate=self.audio.sample_rate,
            progress=progress,
            cancel=cancel,
        )

    def parts_audio(
        self,
        groups: Sequence[Collection[str]],
        progress: LoadProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Audio]:
        """Each group of this MIDI sketch's parts (track keys) played alone, with its voices.

        Every one is :attr:`audio`'s length and lines up with it sample for sample; they are
        at one level, and all the parts together add up to :attr:`audio`
        (:func:`~neurochip.synth.render_midi_parts`). ``progress`` and ``cancel`` work as in
        :func:`load_sketch`.
        """
        if self.midi is None:
            raise NeuroChipError(
                f"{self.name} is audio, not MIDI: its parts cannot be played alone."
            )
        with tempfile.TemporaryDirectory(prefix="neurochip-sketch-") as folder:
            path = Path(folder) / "sketch.mid"
            path.write_bytes(self.midi)
            song = read_midi(path, max_seconds=max(MAX_MIDI_SECONDS, self.audio.duration_s))
        return render_midi_parts(
            song,
            groups,
            sample_rate=self.audio.sample_rate,
            voices=dict(self.voices),
            progress=_synth_progress(self.name, progress, cancel),
        )


def load_sketch(
    source: SketchSource,
    *,
    name: str | None = None,
    voices: Mapping[str, str] | None = None,
    sample_rate: int = SAMPLE_RATE,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    progress: LoadProgress | None = None,
    cancel: threading.Event | None = None,
) -> Sketch:
    """Read a sketch from a path or an open binary file (or its bytes).

    Args:
        source: A path, a file object opened for binary reading, or the file's bytes.
        name: The file's name, whose extension picks the decoder. Needed for file objects
            without a ``name`` and for bytes; only its extension is ever used to pick a
            decoder, never to build a path.
        voices: For MIDI, voice overrides: track key -> one of the chip synth's voices.
        sample_rate: Rate of the sketch's audio.
        max_duration_s: Refuse sketches longer than this (``None``: no limit for audio; a
            MIDI file keeps the default limit, since synthesising it is work we must bound).
        progress: Called with (fraction done, stage): "decoding", or "synthesising" with the
            fraction of a MIDI file's notes played (synthesis is the part that takes long).
        cancel: Set it to stop synthesising a MIDI file at its next progress report.

    Raises:
        AudioLoadError: If it cannot be read; the message names the file and says what to do.
            :class:`~neurochip.errors.TooLongError` (one) when it is over the length limit.
        RenderCancelled: ``cancel`` was set while a MIDI file was being synthesised.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return _load_path(
            path, name or path.name, voices, sample_rate, max_duration_s, progress, cancel
        )
    data = source if isinstance(source, bytes) else _read_all(source)
    name = name or Path(str(getattr(source, "name", "") or "")).name
    if not name:
        raise NeuroChipError("Say which kind of file this is: pass name='song.wav' (or .mid, ...).")
    if not data:
        raise AudioLoadError(f"{name} is empty: choose another file.")
    suffix = Path(name).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) or suffix[1:] not in SKETCH_SUFFIXES:
        raise AudioLoadError(
            f"{name} is not a format NeuroChip reads. Use one of: {', '.join(SKETCH_SUFFIXES)}."
        )
    # The decoders (libsndfile, ffmpeg, mido) want a file: a private one, named by us.
    with tempfile.TemporaryDirectory(prefix="neurochip-sketch-") as folder:
        path = Path(folder) / f"sketch{suffix}"
        path.write_bytes(data)
        try:
            return _load_path(path, name, voices, sample_rate, max_duration_s, progress, cancel)
        except NeuroChipError as err:
            # The decoder names our temporary file; the composer knows their own file name.
            # (The same error, so its type and fields -- a TooLongError's lengths -- stay.)
            err.args = (str(err).replace(str(path), name).replace(path.name, name),)
            raise


@dataclass(frozen=True)
class SketchOutline:
    """What can be known of a sketch before it is played: enough to check a render of it.

    A server checks a request against this and keeps only the file while the render waits:
    a MIDI file's audio (minutes of it from a few bytes) is made when its render starts.
    """

    name: str
    duration_s: float
    tracks: tuple[TrackInfo, ...] = ()
    is_midi: bool = False
    voices: Mapping[str, str] = field(default_factory=dict)


def outline_sketch(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
) -> SketchOutline:
    """A sketch file's :class:`SketchOutline`: a MIDI file read but not synthesised; audio
    decoded (so a damaged file is refused now, as :func:`load_sketch` would) and let go.

    Raises:
        AudioLoadError: As :func:`load_sketch` does, naming the file as ``name``.
    """
    path = Path(path)
    name = name or path.name
    suffix = Path(name).suffix.lower()
    try:
        if suffix in MIDI_SUFFIXES:
            song = read_midi(path, max_seconds=max_duration_s or MAX_MIDI_SECONDS)
            return SketchOutline(name, song.duration_s, song.tracks, is_midi=True)
        audio = load_audio(path, sample_rate=None, max_duration_s=max_duration_s)
        return SketchOutline(name, audio.duration_s)
    except NeuroChipError as err:
        err.args = (str(err).replace(str(path), name).replace(path.name, name),)
        if isinstance(err, AudioLoadError):
            raise
        raise AudioLoadError(str(err)) from err


def _read_all(source: BinaryIO) -> bytes:
    data = source.read()
    if isinstance(data, str):
        raise NeuroChipError("Open the sketch in binary mode ('rb').")
    return data if isinstance(data, bytes) else bytes(data)


def _load_path(
    path: Path,
    name: str,
    voices: Mapping[str, str] | None,
    sample_rate: int,
    max_duration_s: float | None,
    progress: LoadProgress | None = None,
    cancel: threading.Event | None = None,
) -> Sketch:
    voices = dict(voices or {})
    report = progress or (lambda fraction, stage: None)
    if path.suffix.lower() not in MIDI_SUFFIXES:
        if voices:
            raise NeuroChipError(f"{name} is audio, not MIDI: it has no voices to change.")
        report(0.0, "decoding")
        audio = load_audio(path, sample_rate=None, max_duration_s=max_duration_s)
        file_rate = audio.sample_rate
        audio = audio.resample(sample_rate)
        report(1.0, "decoded")
        return Sketch(audio, name, _content_key(audio.samples.tobytes()), file_rate=file_rate)

    try:
        report(0.0, "reading the MIDI file")
        song = read_midi(path, max_seconds=max_duration_s or MAX_MIDI_SECONDS)
        audio = render_midi(
            song,
            sample_rate=sample_rate,
            voices=voices,
            progress=_synth_progress(name, progress, cancel),
        )
    except (AudioLoadError, RenderCancelled):
        raise
    except NeuroChipError as err:  # one error type from the loader, whatever the format
        raise AudioLoadError(str(err)) from err
    data = path.read_bytes()
    return Sketch(
        audio,
        name,
        _content_key(data, repr(sorted(voices.items())).encode()),
        tracks=song.tracks,
        voices=voices,
        midi=data,
    )


def _synth_progress(
    name: str, progress: LoadProgress | None, cancel: threading.Event | None
) -> Callable[[float], None]:
    def synth_progress(fraction: float) -> None:
        # The synth reports every 1% of the notes: the place to stop a cancelled load.
        if cancel is not None and cancel.is_set():
            raise RenderCancelled(f"Loading {name} was cancelled.")
        if progress is not None:
            progress(fraction, "synthesising")

    return synth_progress


def _content_key(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


__all__ = ["SKETCH_SUFFIXES", "Sketch", "load_sketch"]
