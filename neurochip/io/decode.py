"""Reading audio files: recorded audio, tracker modules and chip-music rips.

:func:`load_audio` returns an :class:`~neurochip.io.audio.Audio`: float32 samples shaped
``(channels, frames)`` at 44.1 kHz unless asked otherwise. Plain audio files (WAV, FLAC, OGG,
MP3, AIFF) are read with soundfile (libsndfile); compressed formats from other apps (M4A, WebM,
Opus, ...), tracker modules (MOD, S3M, XM, IT) and chip-music rips (NSF, SPC, VGM, ...) are
decoded by the system's ``ffmpeg``, which plays the latter two through libopenmpt and libgme.
MIDI files are not audio: :func:`neurochip.load_sketch` plays them with the chip synth.

Every problem with an input file is raised as :class:`~neurochip.errors.AudioLoadError`,
whose message names the file and says what to do about it; nothing from soundfile,
ffmpeg or the OS escapes as a traceback.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from neurochip.errors import AudioLoadError, NeuroChipError, TooLongError
from neurochip.io.audio import SAMPLE_RATE, Audio, format_duration
from neurochip.io.riff import iff_chunks

DEFAULT_MAX_DURATION_S: float = 20 * 60
"""Longest input :func:`load_audio` accepts unless told otherwise (20 minutes)."""

#: Standard MIDI Files: not audio; :func:`neurochip.load_sketch` plays them with the chip synth.
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
        raise AudioLoadError(
            f"{path.name} is a MIDI file, not audio: load it with load_sketch(), which plays it "
            "with the built-in chip synth."
        )
    if suffix in SOUNDFILE_SUFFIXES:
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
    # The decoders report a file they may not open as damaged; say what is really wrong.
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as err:
        raise unreadable_file_error(name) from err
    except OSError as err:
        raise AudioLoadError(f"{name} cannot be opened: {err.strerror or err}.") from err
    return suffix


def unreadable_file_error(name: str) -> AudioLoadError:
    """The error for a file this user may not read (the same for audio and MIDI)."""
    return AudioLoadError(
        f"{name} cannot be read: you do not have permission to open it. Check the file's "
        "permissions (e.g. `chmod a+r FILE`), or copy it to a folder of your own and load "
        "the copy."
    )


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

    if max_duration_s is not None and suffix not in _CHIP_FORMATS:
        # Refuse an over-long file before decoding it: decoding 20 minutes only to refuse
        # them took seconds and a gigabyte. Chip rips are cut instead; an unknown duration
        # is caught while decoding (see below).
        duration = _probe_duration(ffmpeg, path)
        if duration is not None and duration > max_duration_s:
            raise _too_long_error(path, duration, max_duration_s, exact=True)

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
        # The container did not know (or understated) its length: we only decoded a
        # second past the limit, so all we can say is "more than".
        raise _too_long_error(path, audio.duration_s, max_duration_s, exact=False)
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
            for chunk_id, size, offset in iff_chunks(f, 12, file_size, big_endian):
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


def format_over_limit(duration_s: float, limit_s: float) -> tuple[str, str]:
    """A length and the limit it is over, as people say them, never both "20 min 00 s"."""
    length, limit = format_duration(duration_s), format_duration(limit_s)
    if length == limit:  # rounded to the same second: show the tenths
        length, limit = f"{duration_s:.1f} s", f"{limit_s:.1f} s"
    return length, limit


def _too_long_error(
    path: Path, duration_s: float, max_duration_s: float, *, exact: bool
) -> TooLongError:
    length, limit = format_over_limit(duration_s, max_duration_s)
    length = length if exact else f"more than {length}"
    return TooLongError(
        f"{path.name} is {length} long, over the limit of {limit}. Trim it to {limit} or "
        "less, or split it into parts.",
        duration_s=duration_s,
        limit_s=max_duration_s,
    )
