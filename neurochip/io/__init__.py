"""Audio in and out: the :class:`Audio` type, decoding files, writing files.

``audio`` holds the type, ``decode`` reads recorded audio, tracker modules and chip rips,
``write`` writes WAV/FLAC/OGG/MP3 atomically with the settings inside, ``riff`` walks WAV
chunks for both. MIDI sketches are played by :mod:`neurochip.synth`; :func:`neurochip.load_sketch`
picks the right one.
"""

from neurochip.io.audio import SAMPLE_RATE, Audio, format_duration, limit_peak
from neurochip.io.decode import (
    CHIP_PLAY_LENGTH_S,
    DEFAULT_MAX_DURATION_S,
    FFMPEG_FORMATS,
    MIDI_SUFFIXES,
    SOUNDFILE_SUFFIXES,
    ffmpeg_demuxers,
    find_ffmpeg,
    load_audio,
    supported_formats,
)
from neurochip.io.write import read_metadata, save_audio, write_text_atomically

__all__ = [
    "CHIP_PLAY_LENGTH_S",
    "DEFAULT_MAX_DURATION_S",
    "FFMPEG_FORMATS",
    "MIDI_SUFFIXES",
    "SAMPLE_RATE",
    "SOUNDFILE_SUFFIXES",
    "Audio",
    "ffmpeg_demuxers",
    "find_ffmpeg",
    "format_duration",
    "limit_peak",
    "load_audio",
    "read_metadata",
    "save_audio",
    "supported_formats",
    "write_text_atomically",
]
