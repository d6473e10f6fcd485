"""Reading and writing audio files.

Everything that enters neurochip goes through :func:`load_audio`, which returns an
:class:`Audio`: float32 samples shaped ``(channels, frames)`` at 44.1 kHz unless asked
otherwise. Plain audio files (WAV, FLAC, OGG, MP3, AIFF) are read with soundfile
(libsndfile); compressed formats from other apps (M4A, WebM, Opus, ...), tracker modules
(MOD, S3M, XM, IT) and chip-music rips (NSF, SPC, VGM, ...) are decoded by the system's
``ffmpeg``, which plays the latter two through libopenmpt and libgme.

Every problem with an input file is raised as :class:`~neurochip.errors.AudioLoadError`,
whose message names the file and says what to do about it; nothing from soundfile,
ffmpeg or the OS escapes as a traceback.

:func:`save_audio` writes WAV, FLAC, OGG or MP3 atomically and can store a text string
(the render settings) in the file's comment field; :func:`read_metadata` reads it back.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

import numpy as np
import soundfile as sf
import soxr

from neurochip.errors import AudioLoadError, NeuroChipError

__all__ = [
    "CHIP_PLAY_LENGTH_S",
    "DEFAULT_MAX_DURATION_S",
    "FFMPEG_FORMATS",
    "SAMPLE_RATE",
    "SOUNDFILE_SUFFIXES",
    "Audio",
    "ffmpeg_demuxers",
    "find_ffmpeg",
    "load_audio",
    "read_metadata",
    "save_audio",
    "supported_formats",
]

SAMPLE_RATE: int = 44100
"""The sample rate neurochip works at, and what :func:`load_audio` returns by default."""

DEFAULT_MAX_DURATION_S: float = 20 * 60
"""Longest input :func:`load_audio` accepts unless told otherwise (20 minutes)."""

#: Standard MIDI Files: synthesised by the built-in chip synth before anything else sees them.
MIDI_SUFFIXES: frozenset[str] = frozenset({".mid", ".midi", ".smf"})

SOUNDFILE_SUFFIXES: set[str] = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
"""Suffixes read with soundfile (libsndfile); ffmpeg is only a fallback for these."""

_TRACKER_FORMATS: dict[str, str] = {
    ".mod": "ProTracker module",
    ".s3m": "Scream Tracker 3 module",
    ".xm": "FastTracker 2 module",
    ".it": "Impulse Tracker module",
}
_CHIP_FORMATS: dict[str, str] = {
    ".nsf": "NSF NES music rip",
    ".nsfe": "NSFe NES music rip",
    ".spc": "SPC SNES music rip",
    ".vgm": "VGM chip-music log",
    ".vgz": "VGZ compressed chip-music log",
    ".gbs": "GBS Game Boy music rip",
    ".gym": "GYM Sega Genesis music log",
    ".hes": "HES PC Engine music rip",
    ".kss": "KSS MSX music rip",
    ".sap": "SAP Atari 8-bit music rip",
    ".ay": "AY ZX Spectrum music rip",
}

FFMPEG_FORMATS: dict[str, str] = {
    ".m4a": "M4A audio",
    ".aac": "AAC audio",
    ".webm": "WebM audio",
    ".opus": "Opus audio",
    ".wma": "Windows Media Audio",
    **_TRACKER_FORMATS,
    **_CHIP_FORMATS,
}
"""Suffixes decoded by the system ffmpeg, each with a short description."""

# The ffmpeg demuxer(s) a suffix needs; one of them is enough. Names as printed by
# `ffmpeg -demuxers`, where "mov,mp4,m4a,..." counts as each of its names.
_FFMPEG_DEMUXERS: dict[str, tuple[str, ...]] = {
    ".m4a": ("m4a", "mov"),
    ".aac": ("aac",),
    ".webm": ("webm", "matroska"),
    ".opus": ("ogg",),
    ".wma": ("asf",),
    **{suffix: ("libopenmpt", "libmodplug") for suffix in _TRACKER_FORMATS},
    **{suffix: ("libgme",) for suffix in _CHIP_FORMATS},
}

_SOUNDFILE_FORMATS: dict[str, str] = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".mp3": "MP3",
    ".aiff": "AIFF",
    ".aif": "AIFF",
}

CHIP_PLAY_LENGTH_S: float = 150.0
"""How much of a chip-music rip (NSF, SPC, VGM, ...) :func:`load_audio` renders.

Chip rips loop forever, and ffmpeg's libgme demuxer neither stops at a loop point nor
reports a track length (its duration field is never set), so we render this long, Game
Music Emu's own default, or ``max_duration_s`` if that is shorter. A tune that ends
earlier stops at its silence.
"""

# Chip and tracker players synthesise their output, so there is no "source" rate to keep:
# we ask for the rate neurochip works at and skip a resampling step.
_SYNTH_SAMPLE_RATE = SAMPLE_RATE

_INSTALL_FFMPEG_HINT = (
    "Install ffmpeg (e.g. `sudo apt-get install ffmpeg` or `brew install ffmpeg`), "
    "or convert the file to WAV, FLAC, OGG or MP3."
)


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Audio:
    """Audio samples and their sample rate.

    Args:
        samples: Samples shaped ``(channels, frames)``, nominally in ``[-1, 1]``. Stored as
            a C-contiguous float32 array (converted if needed); a 1-D array is taken as
            mono.
        sample_rate: Frames per second.

    Raises:
        ValueError: If ``samples`` is not 1-D or 2-D, looks like ``(frames, channels)``,
            or ``sample_rate`` is not a positive integer.

    Methods that change nothing (``to_mono`` on mono audio, ``resample`` to the same
    rate, ...) return ``self``; treat an :class:`Audio` as immutable.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[np.newaxis, :]
        if samples.ndim != 2 or samples.shape[0] == 0:
            raise ValueError(
                f"Audio samples must be shaped (channels, frames); got shape {samples.shape}"
            )
        if samples.shape[0] > 64:
            # Nobody feeds 65+ channels to neurochip; this is soundfile's (frames, channels).
            raise ValueError(
                f"Audio samples must be shaped (channels, frames); got shape {samples.shape}"
                " (transpose it?)"
            )
        self.samples = np.ascontiguousarray(samples)
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate:
            raise ValueError(f"sample_rate must be an integer; got {self.sample_rate!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive; got {self.sample_rate!r}")
        self.sample_rate = int(self.sample_rate)

    def __repr__(self) -> str:
        return (
            f"Audio(channels={self.channels}, frames={self.frames}, "
            f"sample_rate={self.sample_rate}, duration_s={self.duration_s:.3f})"
        )

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        """Number of frames (samples per channel)."""
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    def to_mono(self) -> Audio:
        """The mean of all channels, shaped ``(1, frames)``."""
        if self.channels == 1:
            return self
        return Audio(self.samples.mean(axis=0, keepdims=True), self.sample_rate)

    def to_stereo(self) -> Audio:
        """Two channels: mono is duplicated, stereo returned as is.

        With more than two channels the first two are kept and the rest dropped: front
        left and right in WAV and FLAC order. A proper downmix needs the file's channel
        layout, which an array does not carry; :func:`load_audio` therefore has ffmpeg
        downmix such files and only falls back to this when ffmpeg is missing.
        """
        if self.channels == 2:
            return self
        if self.channels == 1:
            return Audio(np.repeat(self.samples, 2, axis=0), self.sample_rate)
        return Audio(self.samples[:2], self.sample_rate)

    def span(self, start_s: float = 0.0, duration_s: float | None = None) -> Audio:
        """An exact excerpt.

        Args:
            start_s: Start time; the excerpt starts at frame ``round(start_s * sample_rate)``.
            duration_s: Length; ``round(duration_s * sample_rate)`` frames, cut short at the
                end of the audio. ``None`` means up to the end.

        Raises:
            NeuroChipError: If the start is negative or not before the end, or the duration
                is not positive.
        """
        if not math.isfinite(start_s) or start_s < 0:
            raise NeuroChipError(f"The start time must be 0 s or later; got {start_s} s.")
        start = round(start_s * self.sample_rate)
        if start >= self.frames:
            raise NeuroChipError(
                f"The start time {start_s:g} s is past the end of the audio, which is "
                f"{format_duration(self.duration_s)} long."
            )
        if duration_s is None:
            stop = self.frames
        else:
            if not duration_s > 0:  # also catches NaN
                raise NeuroChipError(f"The duration must be more than 0 s; got {duration_s} s.")
            stop = self.frames
            if math.isfinite(duration_s):
                stop = min(start + round(duration_s * self.sample_rate), self.frames)
            if stop <= start:
                raise NeuroChipError(
                    f"A duration of {duration_s} s is shorter than one sample at "
                    f"{self.sample_rate} Hz."
                )
        return Audio(self.samples[:, start:stop].copy(), self.sample_rate)

    def resample(self, sample_rate: int) -> Audio:
        """The same audio at another sample rate (soxr, very high quality).

        The result has ``round(frames * sample_rate / self.sample_rate)`` frames, give or
        take one.
        """
        if sample_rate == self.sample_rate:
            return self
        if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer; got {sample_rate!r}")
        resampled = soxr.resample(self.samples.T, self.sample_rate, int(sample_rate), quality="VHQ")
        return Audio(np.ascontiguousarray(resampled.T, dtype=np.float32), int(sample_rate))


# --------------------------------------------------------------------------------------
# ffmpeg discovery
# --------------------------------------------------------------------------------------


def find_ffmpeg() -> str | None:
    """Path to the ffmpeg executable, or ``None``.

    ``$NEUROCHIP_FFMPEG`` (a path or a command name) wins when set, even if it points
    nowhere, so that a wrong setting is reported rather than silently replaced by another
    ffmpeg; otherwise ``ffmpeg`` is looked up on ``PATH``.
    """
    configured = os.environ.get("NEUROCHIP_FFMPEG")
    if configured:
        return shutil.which(configured)
    return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=8)
def _demuxers_of(ffmpeg: str) -> frozenset[str]:
    try:
        result = subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-demuxers"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names: set[str] = set()
    in_table = False
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.strip() == "--":
            in_table = True
            continue
        fields = line.split(None, 2)
        if in_table and len(fields) >= 2 and "D" in fields[0]:
            names.update(fields[1].split(","))
    return frozenset(names)


def ffmpeg_demuxers() -> set[str]:
    """Names of the demuxers (input formats) the ffmpeg from :func:`find_ffmpeg` has.

    Comma-separated aliases (``mov,mp4,m4a,...``) count as separate names. Empty if there
    is no ffmpeg or it cannot be run. Cached per ffmpeg path.
    """
    ffmpeg = find_ffmpeg()
    return set(_demuxers_of(ffmpeg)) if ffmpeg else set()


def supported_formats() -> dict[str, bool]:
    """Every suffix neurochip knows, mapped to whether it can be decoded on this machine.

    Soundfile suffixes count as supported when libsndfile or ffmpeg can read them; the
    others need ffmpeg with the right demuxer (libopenmpt for tracker modules, libgme for
    chip-music rips).
    """
    available = {name.upper() for name in sf.available_formats()}
    demuxers = ffmpeg_demuxers()
    formats: dict[str, bool] = {}
    for suffix in sorted(SOUNDFILE_SUFFIXES):
        formats[suffix] = _SOUNDFILE_FORMATS[suffix] in available or bool(demuxers)
    for suffix in FFMPEG_FORMATS:
        formats[suffix] = any(name in demuxers for name in _FFMPEG_DEMUXERS[suffix])
    for suffix in MIDI_SUFFIXES:
        formats[suffix] = True  # the built-in chip synth needs nothing from the system
    return formats


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = SAMPLE_RATE,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
) -> Audio:
    """Read an audio file, tracker module or chip-music rip.

    Mono stays mono and stereo stays stereo; inputs with more channels are downmixed to
    stereo by ffmpeg, which knows their channel layout. NaN and infinite samples become 0.
    Chip-music rips loop forever, so they are cut at :data:`CHIP_PLAY_LENGTH_S` (or
    ``max_duration_s`` if shorter) rather than refused as too long.

    Args:
        path: The file. Its suffix picks the decoder: see :data:`SOUNDFILE_SUFFIXES` and
            :data:`FFMPEG_FORMATS`, and :func:`supported_formats` for what works here.
        sample_rate: Rate of the result (resampled with soxr, very high quality), or
            ``None`` to keep the file's own rate (44.1 kHz for chip and tracker formats).
        max_duration_s: Refuse inputs longer than this many seconds (``None``: no limit).
            Guards against a 3-hour podcast or a chip tune that loops forever.

    Returns:
        The decoded audio.

    Raises:
        AudioLoadError: If the file cannot be read; the message says why and what to do.
    """
    path = Path(path).expanduser()
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0
    ):
        raise NeuroChipError(f"The sample rate must be a positive whole number; got {sample_rate}.")
    if max_duration_s is not None and not max_duration_s > 0:
        raise NeuroChipError(f"The maximum duration must be more than 0 s; got {max_duration_s}.")

    suffix = _check_input_file(path)
    if suffix in MIDI_SUFFIXES:
        audio = _synthesise_midi(path, max_duration_s)
    elif suffix in SOUNDFILE_SUFFIXES:
        audio = _load_with_soundfile(path, max_duration_s)
    else:
        audio = _load_with_ffmpeg(path, max_duration_s)

    if audio.frames == 0:
        raise AudioLoadError(
            f"{path.name} contains no audio (0 samples). It may be empty or cut off; "
            "export it again."
        )
    if max_duration_s is not None and audio.frames > max_duration_s * audio.sample_rate:
        raise _too_long_error(path, audio.duration_s, max_duration_s, exact=True)

    if not np.isfinite(audio.samples).all():
        np.nan_to_num(audio.samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate is not None:
        audio = audio.resample(int(sample_rate))
    return audio


def _synthesise_midi(path: Path, max_duration_s: float | None) -> Audio:
    """A MIDI sketch, rendered by the built-in chip synth (see :mod:`neurochip.midi`)."""
    from neurochip.midi import MAX_MIDI_SECONDS, read_midi, render_midi

    try:
        return render_midi(read_midi(path, max_seconds=max_duration_s or MAX_MIDI_SECONDS))
    except AudioLoadError:
        raise
    except NeuroChipError as err:  # one error type from the loader, whatever the format
        raise AudioLoadError(str(err)) from err


def _check_input_file(path: Path) -> str:
    """Check what can be checked without decoding; return the lower-case suffix."""
    name = path.name or str(path)
    try:
        if path.is_dir():
            raise AudioLoadError(
                f"{name} is a folder, not an audio file. Pass one of the files inside it."
            )
        if not path.exists():
            where = path.parent if str(path.parent) != "." else Path.cwd()
            raise AudioLoadError(
                f"{name} was not found (looked in {where}). Check the file name and folder."
            )
        size = path.stat().st_size
    except OSError as err:
        raise AudioLoadError(f"{name} cannot be opened: {err.strerror or err}.") from err
    if not path.is_file():
        raise AudioLoadError(f"{name} is not a regular file; pass an audio file.")

    suffix = path.suffix.lower()
    known = suffix in SOUNDFILE_SUFFIXES or suffix in FFMPEG_FORMATS or suffix in MIDI_SUFFIXES
    if not known:
        formats = supported_formats()
        supported = ", ".join(s for s, ok in formats.items() if ok)
        missing = [s for s, ok in formats.items() if not ok]
        what = f"'{suffix}' files are" if suffix else "files without an extension are"
        also = (
            f" (With ffmpeg{' built with libopenmpt and libgme' if find_ffmpeg() else ''}, "
            f"also: {', '.join(missing)}.)"
            if missing
            else ""
        )
        raise AudioLoadError(
            f"{name} cannot be loaded: {what} not supported. Supported here: {supported}."
            f"{also} Convert it to WAV or FLAC, or rename it if the extension is wrong."
        )
    if size == 0:
        raise AudioLoadError(
            f"{name} is empty (0 bytes); the export or download probably failed. Export it again."
        )
    return suffix


def _load_with_soundfile(path: Path, max_duration_s: float | None) -> Audio:
    try:
        sound_file = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        # libsndfile does not recognise it. ffmpeg knows more variants (MP3 with odd
        # headers, MPEG-2.5, an M4A someone renamed to .mp3, ...), so let it try.
        if find_ffmpeg() is not None:
            return _load_with_ffmpeg(path, max_duration_s)
        raise _unreadable_error(path, _soundfile_reason(err)) from err

    with sound_file:
        if sound_file.channels > 2 and find_ffmpeg() is not None:
            # ffmpeg reads the channel layout (WAV channel mask, FLAC/Vorbis order) and
            # downmixes with the standard matrix; we would have to guess.
            return _load_with_ffmpeg(path, max_duration_s)
        rate = sound_file.samplerate
        # For MP3 this count is an estimate (exact when the encoder wrote a LAME/Xing tag).
        expected = sound_file.frames
        if max_duration_s is not None and expected > max_duration_s * rate:
            raise _too_long_error(path, expected / rate, max_duration_s, exact=True)
        _check_not_truncated(path)
        try:
            data = sound_file.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise _damaged_error(path, _soundfile_reason(err)) from err

    if expected > 0 and expected - len(data) > max(0.01 * expected, 0.5 * rate):
        raise _damaged_error(
            path,
            f"the file says it is {format_duration(expected / rate)} long but only "
            f"{format_duration(len(data) / rate)} could be decoded",
        )
    audio = Audio(data.T, rate)
    return audio.to_stereo() if audio.channels > 2 else audio


def _load_with_ffmpeg(path: Path, max_duration_s: float | None) -> Audio:
    suffix = path.suffix.lower()
    name = path.name
    kind = FFMPEG_FORMATS.get(suffix, f"{suffix} file")
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        configured = os.environ.get("NEUROCHIP_FFMPEG")
        setting = (
            f" ($NEUROCHIP_FFMPEG is set to {configured!r}, which is not an executable.)"
            if configured
            else ""
        )
        raise AudioLoadError(
            f"{name} ({kind}) needs ffmpeg to decode, and ffmpeg was not found.{setting} "
            f"{_INSTALL_FFMPEG_HINT}"
        )

    demuxers = ffmpeg_demuxers()
    if not demuxers:
        raise AudioLoadError(
            f"{name} needs ffmpeg to decode, but the ffmpeg at {ffmpeg} does not work "
            f"(`{ffmpeg} -demuxers` failed). {_INSTALL_FFMPEG_HINT}"
        )
    needed = _FFMPEG_DEMUXERS.get(suffix)
    if needed and not demuxers.intersection(needed):
        library = needed[0]
        if suffix in _CHIP_FORMATS or suffix in _TRACKER_FORMATS:
            why = f"it was built without {library}"
            fix = (
                f"Install an ffmpeg built with {library} (Debian and Ubuntu's ffmpeg package "
                "is), or render the tune to WAV in your player or tracker."
            )
        else:
            why = f"it has no {library} input format"
            fix = f"Install a full ffmpeg build, or convert {name} to WAV or FLAC."
        raise AudioLoadError(
            f"{name} ({kind}) cannot be decoded by the ffmpeg at {ffmpeg} ({why}). {fix}"
        )

    command = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        # "file:" stops ffmpeg reading a name like "a:b.m4a" as protocol "a", and "-x.m4a"
        # as an option.
        "-i", f"file:{path.resolve()}",
        "-map", "0:a:0",  # the first audio track; cover art and video are ignored
        "-map_metadata", "-1",
        # We need the channel count before we can reshape raw samples. Instead of probing
        # (ffprobe may be missing, and its answer may differ from the decoder's), let
        # ffmpeg pick: the filter keeps mono and stereo and downmixes anything wider with
        # its layout-aware matrix, and the WAV header on the pipe tells us the outcome.
        "-af", "aformat=channel_layouts=mono|stereo",
    ]  # fmt: skip
    if suffix in _CHIP_FORMATS or suffix in _TRACKER_FORMATS:
        command += ["-ar", str(_SYNTH_SAMPLE_RATE)]
    # Decoding is far faster than real time, so the timeouts only fire on a hang.
    timeout = None
    play_s = None
    if suffix in _CHIP_FORMATS:
        # A loop has no "too long"; cut it instead of refusing it (see CHIP_PLAY_LENGTH_S).
        play_s = CHIP_PLAY_LENGTH_S
        if max_duration_s is not None:
            play_s = min(play_s, max_duration_s)
        command += ["-t", f"{play_s:.6f}"]
        timeout = 60 + play_s
    elif max_duration_s is not None:
        # Decode one second past the limit: enough to tell "too long" without decoding
        # (and holding in memory) the rest of a 3-hour file.
        command += ["-t", f"{max_duration_s + 1:.3f}"]
        timeout = 60 + max_duration_s
    command += ["-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]

    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise AudioLoadError(
            f"ffmpeg took more than {timeout:.0f} s to decode {name} and was stopped. "
            "The file may be damaged; convert it to WAV and try again."
        ) from err
    except OSError as err:
        raise AudioLoadError(
            f"ffmpeg ({ffmpeg}) could not be run to decode {name}: {err.strerror or err}. "
            f"{_INSTALL_FFMPEG_HINT}"
        ) from err

    # ffmpeg names the input as we passed it; the composer only needs the file name.
    message = _last_error_line(result.stderr).replace(f"file:{path.resolve()}", name)
    if result.returncode != 0:
        if "matches no streams" in message:
            raise AudioLoadError(f"{name} contains no audio track.")
        raise _unreadable_error(path, f"ffmpeg: {message or f'exit status {result.returncode}'}")
    try:
        rate, samples = _parse_wav_stream(result.stdout)
    except ValueError as err:
        raise _unreadable_error(path, f"ffmpeg produced no usable audio ({err})") from err

    if play_s is not None:
        samples = samples[:, : math.floor(play_s * rate)]
    audio = Audio(samples, rate)
    if max_duration_s is not None and audio.frames > max_duration_s * rate:
        duration = _probe_duration(ffmpeg, path)
        if duration is None or duration <= max_duration_s:
            raise _too_long_error(path, audio.duration_s, max_duration_s, exact=False)
        raise _too_long_error(path, duration, max_duration_s, exact=True)
    return audio


def _parse_wav_stream(data: bytes) -> tuple[int, np.ndarray]:
    """(sample rate, samples shaped (channels, frames)) from ffmpeg's piped float WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("no WAV header")
    position = 12
    channels = rate = 0
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk_id == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
        elif chunk_id == b"data":
            if channels <= 0 or rate <= 0:
                raise ValueError("no format chunk before the data")
            available = len(data) - body
            # On a pipe ffmpeg cannot go back to fill in the size, so it stays a placeholder.
            size = available if size in (0, 0xFFFFFFFF) else min(size, available)
            frames = size // (4 * channels)
            samples = np.frombuffer(data, dtype="<f4", count=frames * channels, offset=body)
            return rate, samples.reshape(frames, channels).T.astype(np.float32, order="C")
        position = body + size + (size & 1)
    raise ValueError("no data chunk")


def _probe_duration(ffmpeg: str, path: Path) -> float | None:
    """The container's idea of the duration, via ffprobe next to ffmpeg; None if unknown."""
    ffprobe = shutil.which(str(Path(ffmpeg).with_name("ffprobe"))) or shutil.which("ffprobe")
    if ffprobe is None:
        return None
    command = [
        ffprobe, "-v", "error", "-show_entries", "format=duration",
        "-of", "default=noprint_wrappers=1:nokey=1", f"file:{path.resolve()}",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, timeout=30, check=False)
        duration = float(result.stdout.decode().strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return duration if math.isfinite(duration) and duration > 0 else None


def _check_not_truncated(path: Path) -> None:
    """Raise if a WAV or AIFF file's header promises more audio than the file holds.

    libsndfile quietly plays what is there, which would hand the model half a song.
    Streamed files that never got their sizes filled in (0 or 0xFFFFFFFF) are accepted.
    """
    try:
        with path.open("rb") as f:
            header = f.read(12)
            file_size = os.fstat(f.fileno()).st_size
            if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
                sound_chunk, big_endian = b"data", False
            elif header[:4] == b"FORM" and header[8:12] in (b"AIFF", b"AIFC"):
                sound_chunk, big_endian = b"SSND", True
            else:
                return
            block_align = 1
            for chunk_id, size, offset in _iff_chunks(f, 12, file_size, big_endian):
                if chunk_id == b"fmt ":
                    f.seek(offset + 12)
                    block_align = max(1, int.from_bytes(f.read(2), "little"))
                elif chunk_id == b"COMM":
                    f.seek(offset)
                    comm = f.read(8)
                    bits = int.from_bytes(comm[6:8], "big")
                    block_align = max(1, int.from_bytes(comm[0:2], "big") * ((bits + 7) // 8))
                elif chunk_id == sound_chunk:
                    have = file_size - offset
                    if size not in (0, 0xFFFFFFFF) and size - have >= block_align:
                        raise _damaged_error(
                            path,
                            f"it is cut off: only {_percent(have, size)} of its audio data "
                            "is in the file",
                        )
                    return
    except OSError as err:
        raise AudioLoadError(f"{path.name} cannot be read: {err.strerror or err}.") from err


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "none"


def _iff_chunks(
    f: BinaryIO, start: int, end: int, big_endian: bool
) -> Iterator[tuple[bytes, int, int]]:
    """Yield (id, declared size, offset of the body) for RIFF/IFF chunks in [start, end)."""
    order: Literal["big", "little"] = "big" if big_endian else "little"
    position = start
    while position + 8 <= end:
        f.seek(position)
        header = f.read(8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:], order)
        yield header[:4], size, position + 8
        position += 8 + size + (size & 1)


def _soundfile_reason(err: BaseException) -> str:
    detail = getattr(err, "error_string", None) or str(err)
    return f"libsndfile: {detail.strip().rstrip('.')}"


def _last_error_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def _unreadable_error(path: Path, reason: str) -> AudioLoadError:
    return AudioLoadError(
        f"{path.name} could not be decoded. It may be damaged or incomplete, or be another "
        f"kind of file renamed to {path.suffix}. Open it in an audio editor or player and "
        f"export it again as WAV or FLAC. ({reason})"
    )


def _damaged_error(path: Path, reason: str) -> AudioLoadError:
    return AudioLoadError(
        f"{path.name} is damaged or incomplete ({reason}). If it was downloaded or copied, "
        "get it again; otherwise export it again from the program that made it."
    )


def _too_long_error(
    path: Path, duration_s: float, max_duration_s: float, *, exact: bool
) -> AudioLoadError:
    length = format_duration(duration_s) if exact else f"more than {format_duration(duration_s)}"
    return AudioLoadError(
        f"{path.name} is {length} long, over the limit of "
        f"{format_duration(max_duration_s)}. Trim it, or raise the limit with "
        f"--max-duration SEC (max_duration_s= in Python)."
    )


T = TypeVar("T")  # a numpy array or a torch tensor


def limit_peak(samples: T, ceiling: float = 0.99) -> T:
    """Scale down (never up) so the peak is at most ``ceiling``: a file that cannot clip.

    Works on numpy arrays and torch tensors alike (renders are tensors, mixes are arrays).
    """
    peak = 0.0 if 0 in samples.shape else float(abs(samples).max())
    return samples * (ceiling / peak) if peak > ceiling else samples


def format_duration(seconds: float) -> str:
    """A length as people say it: "42.0 s", "3 min 05 s", "1 h 02 min 00 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min {rest:02d} s"
    return f"{minutes} min {rest:02d} s"


# --------------------------------------------------------------------------------------
# Saving and metadata
# --------------------------------------------------------------------------------------

_SAVE_FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG"}

# ID3v1's comment field holds 30 bytes; LAME only writes an ID3v2 tag for longer text.
_ID3V1_COMMENT_BYTES = 30


def save_audio(
    path: str | os.PathLike[str],
    audio: Audio,
    *,
    bit_depth: Literal["16", "24", "float"] = "16",
    metadata: str | None = None,
) -> Path:
    """Write audio to a WAV, FLAC, MP3 or OGG (Vorbis) file, picked by the suffix.

    The file is written under a temporary name in the same folder and renamed into place,
    so a crash never leaves a half-written file under ``path``. Missing folders are made.

    Args:
        path: Where to write. Replaced if it exists.
        audio: What to write. Samples outside ``[-1, 1]`` are clipped, except in float WAV;
            NaN becomes 0.
        bit_depth: ``"16"``, ``"24"`` or ``"float"`` for WAV; FLAC stores 16 or 24 bits
            (``"float"`` gives 24); ignored for MP3 and OGG.
        metadata: Text stored in the file's comment field (WAV ``LIST/INFO/ICMT``, FLAC and
            OGG Vorbis comment, MP3 ID3 comment); read it with :func:`read_metadata`.
            ``None`` or ``""`` stores nothing.

    Returns:
        The path written.

    Raises:
        NeuroChipError: For an unknown suffix or bit depth, or if the file cannot be
            written (no permission, disk full, a sample rate MP3 does not support, ...).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    file_format = _SAVE_FORMATS.get(suffix)
    if file_format is None:
        raise NeuroChipError(
            f"Cannot save {path.name}: unknown file type {suffix or '(no extension)'}. "
            f"Use one of {', '.join(_SAVE_FORMATS)}."
        )
    bit_depth = str(bit_depth)  # type: ignore[assignment]  # tolerate 16 and 24 as ints
    if bit_depth not in ("16", "24", "float"):
        raise NeuroChipError(f'The bit depth must be "16", "24" or "float"; got {bit_depth!r}.')
    subtype = {
        "WAV": {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}[bit_depth],
        "FLAC": "PCM_16" if bit_depth == "16" else "PCM_24",
        "MP3": "MPEG_LAYER_III",
        "OGG": "VORBIS",
    }[file_format]

    samples = np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0)
    if subtype != "FLOAT":
        # libsndfile wraps out-of-range floats around in integer formats instead of clipping.
        np.clip(samples, -1.0, 1.0, out=samples)
    if file_format == "WAV":
        bytes_per_sample = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype]
        if samples.size * bytes_per_sample > 0xFFFFFFFF - (1 << 20):
            raise NeuroChipError(
                f"{path.name} would be over 4 GB, the most a WAV file can hold. "
                "Save it as FLAC instead."
            )

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NeuroChipError(
            f"Cannot create the folder {path.parent}: {err.strerror or err}."
        ) from err

    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        # Created by us (not mkstemp) so the file gets the usual umask permissions.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        with sf.SoundFile(
            temporary,
            "w",
            samplerate=audio.sample_rate,
            channels=audio.channels,
            subtype=subtype,
            format=file_format,
        ) as sound_file:
            if metadata and file_format != "WAV":
                # Vorbis comments and ID3 tags are written with the first block of audio.
                sound_file.comment = metadata
            sound_file.write(samples.T)
        if metadata and file_format == "WAV":
            # libsndfile drops a WAV comment longer than ~2 KB without a word.
            _append_wav_comment(temporary, metadata)
        with temporary.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        detail = getattr(err, "error_string", None) or getattr(err, "strerror", None) or err
        raise NeuroChipError(f"Could not write {path.name}: {detail}") from err
    finally:
        # Gone after a successful rename; after a failure, never leave it behind.
        temporary.unlink(missing_ok=True)
    return path


def _append_wav_comment(path: Path, text: str) -> None:
    """Append a LIST/INFO chunk holding ``text`` as ICMT, and fix the RIFF size."""
    comment = text.encode("utf-8") + b"\0"
    if len(comment) & 1:
        comment += b"\0"
    info = b"INFO" + b"ICMT" + len(comment).to_bytes(4, "little") + comment
    chunk = b"LIST" + len(info).to_bytes(4, "little") + info
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end & 1:  # chunks start on even offsets
            f.write(b"\0")
            end += 1
        riff_size = end + len(chunk) - 8
        if riff_size > 0xFFFFFFFF:
            raise NeuroChipError(f"{path.name} is too large for a WAV file; save it as FLAC.")
        f.write(chunk)
        f.seek(4)
        f.write(riff_size.to_bytes(4, "little"))


def read_metadata(path: str | os.PathLike[str]) -> str | None:
    """The text :func:`save_audio` stored in a file's comment field.

    Works on any WAV, FLAC, OGG or MP3 file with a comment. Returns ``None`` when there is
    none, or the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            header = f.read(12)
            if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
                return _read_wav_comment(f, os.fstat(f.fileno()).st_size)
        with sf.SoundFile(path) as sound_file:
            comment = sound_file.comment
            is_mp3 = sound_file.format == "MP3"
    except (sf.SoundFileError, RuntimeError, OSError, ValueError):
        return None
    if is_mp3 and comment:
        comment = _repair_id3_comment(comment)
    return comment or None


def _read_wav_comment(f: BinaryIO, file_size: int) -> str | None:
    # Our own reader because libsndfile ignores ICMT chunks over ~2 KB.
    for chunk_id, size, offset in _iff_chunks(f, 12, file_size, big_endian=False):
        if chunk_id != b"LIST":
            continue
        f.seek(offset)
        if f.read(4) != b"INFO":
            continue
        end = min(offset + size, file_size)
        for sub_id, sub_size, sub_offset in _iff_chunks(f, offset + 4, end, big_endian=False):
            if sub_id == b"ICMT":
                f.seek(sub_offset)
                text = f.read(sub_size).split(b"\0", 1)[0].decode("utf-8", "replace")
                return text or None
    return None


def _repair_id3_comment(comment: str) -> str:
    """Undo the double UTF-8 encoding of non-ASCII MP3 comments.

    libsndfile hands our UTF-8 bytes to LAME, which stores them in an ID3v2 frame marked
    Latin-1, so they come back decoded as Latin-1 ("é" reads as "Ã©"). Comments of up to
    30 bytes go to ID3v1 instead and come back intact, so only longer ones are repaired.
    """
    try:
        repaired = comment.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return comment
    return repaired if len(repaired.encode("utf-8")) > _ID3V1_COMMENT_BYTES else comment
