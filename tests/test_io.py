"""Tests for neurochip.io (and load_sketch): loading, saving, metadata, the Audio helpers."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurochip.errors import AudioLoadError, NeuroChipError, RenderCancelled, TooLongError
from neurochip.io import (
    CHIP_PLAY_LENGTH_S,
    DEFAULT_MAX_DURATION_S,
    FFMPEG_FORMATS,
    MIDI_SUFFIXES,
    SAMPLE_RATE,
    SOUNDFILE_SUFFIXES,
    Audio,
    ffmpeg_demuxers,
    find_ffmpeg,
    load_audio,
    read_metadata,
    save_audio,
    supported_formats,
)
from neurochip.io import decode as audio_module
from neurochip.sketch import load_sketch
from tests.chiptune import protracker_module

needs_ffmpeg = pytest.mark.skipif(
    find_ffmpeg() is None, reason="ffmpeg is not installed (the Makefile installs it)"
)

LONG_JSON = (
    '{"prompt": "chiptune arpeggios → string quartet, «live» 🎻", "seed": 42, '
    '"notes": "' + "é中🎵x" * 700 + '"}'
)


def sine(
    frequency: float = 1000.0,
    duration_s: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A sine shaped (channels, frames); each channel a little quieter than the last."""
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    tone = amplitude * np.sin(2 * np.pi * frequency * t)
    return np.stack([tone * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def peak_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sample_rate / len(samples))


def rms_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))


def write(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE, **kwargs) -> Path:
    sf.write(path, samples.T, sample_rate, **kwargs)
    return path


def ffmpeg_convert(source: Path, target: Path, *args: str) -> Path:
    ffmpeg = find_ffmpeg()
    assert ffmpeg is not None
    subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source)]
        + list(args)
        + [str(target)],
        check=True,
        timeout=60,
    )
    return target


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    ("subtype", "tolerance"), [("PCM_16", 1 / 32767), ("PCM_24", 1e-6), ("FLOAT", 0.0)]
)
def test_load_wav_keeps_channels_and_values(tmp_path, channels, subtype, tolerance):
    samples = sine(440, 0.5, channels=channels)
    path = write(tmp_path / f"{subtype}.wav", samples, subtype=subtype)

    loaded = load_audio(path)

    assert loaded.sample_rate == SAMPLE_RATE
    assert loaded.samples.shape == samples.shape
    assert loaded.samples.dtype == np.float32
    assert loaded.samples.flags.c_contiguous
    np.testing.assert_allclose(loaded.samples, samples, atol=tolerance + 1e-9)


@pytest.mark.parametrize("channels", [1, 2])
def test_load_flac_is_lossless(tmp_path, channels):
    samples = sine(440, 0.5, channels=channels)
    path = save_audio(tmp_path / "a.flac", Audio(samples, SAMPLE_RATE), bit_depth="24")

    loaded = load_audio(path)

    assert loaded.channels == channels
    np.testing.assert_allclose(loaded.samples, samples, atol=2 / 2**23)


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
@pytest.mark.parametrize("channels", [1, 2])
def test_load_lossy_formats(tmp_path, suffix, channels):
    samples = sine(1000, 1.5, channels=channels)
    path = save_audio(tmp_path / f"a{suffix}", Audio(samples, SAMPLE_RATE))

    loaded = load_audio(path)

    assert loaded.channels == channels
    assert loaded.sample_rate == SAMPLE_RATE
    assert abs(loaded.duration_s - 1.5) < 0.1
    for written, decoded in zip(samples, loaded.samples, strict=True):
        assert abs(rms_db(decoded) - rms_db(written)) < 1.0
        assert abs(peak_frequency(decoded, SAMPLE_RATE) - 1000) < 5


def test_load_aiff(tmp_path):
    samples = sine(440, 0.25, channels=2)
    loaded = load_audio(write(tmp_path / "a.aiff", samples, subtype="PCM_16"))
    np.testing.assert_allclose(loaded.samples, samples, atol=1 / 32767 + 1e-9)


@pytest.mark.parametrize("source_rate", [48000, 22050])
def test_resampling_keeps_pitch_and_length(tmp_path, source_rate):
    samples = sine(1000, 2.0, sample_rate=source_rate, channels=2)
    path = write(tmp_path / "a.wav", samples, source_rate, subtype="FLOAT")

    loaded = load_audio(path)

    assert loaded.sample_rate == SAMPLE_RATE
    assert loaded.channels == 2
    assert abs(loaded.frames - round(samples.shape[1] * SAMPLE_RATE / source_rate)) <= 2
    assert abs(peak_frequency(loaded.samples[0], SAMPLE_RATE) - 1000) <= 1
    assert abs(rms_db(loaded.samples[0]) - rms_db(samples[0])) < 0.1


def test_sample_rate_none_keeps_the_file_rate(tmp_path):
    path = write(tmp_path / "a.wav", sine(1000, 0.5, sample_rate=22050), 22050)
    loaded = load_audio(path, sample_rate=None)
    assert loaded.sample_rate == 22050
    assert loaded.frames == 11025


def test_other_sample_rate(tmp_path):
    path = write(tmp_path / "a.wav", sine(1000, 0.5), SAMPLE_RATE)
    loaded = load_audio(path, sample_rate=16000)
    assert loaded.sample_rate == 16000
    assert abs(loaded.frames - 8000) <= 1


def test_nan_and_inf_become_zero(tmp_path):
    samples = sine(440, 0.1)
    samples[0, 10:13] = [np.nan, np.inf, -np.inf]
    path = write(tmp_path / "nan.wav", samples, subtype="FLOAT")

    loaded = load_audio(path)

    assert np.isfinite(loaded.samples).all()
    assert (loaded.samples[0, 10:13] == 0).all()


@needs_ffmpeg
def test_more_than_two_channels_are_downmixed_to_stereo(tmp_path):
    samples = sine(440, 0.5, channels=6)
    path = write(tmp_path / "surround.wav", samples, subtype="PCM_16")

    loaded = load_audio(path)

    assert loaded.channels == 2
    assert loaded.frames == samples.shape[1]
    assert rms_db(loaded.samples) > -30


# --------------------------------------------------------------------------------------
# ffmpeg formats
# --------------------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize(
    ("suffix", "channels", "codec"),
    [(".m4a", 1, ["-c:a", "aac"]), (".m4a", 2, ["-c:a", "aac"]), (".webm", 2, ["-c:a", "libopus"])],
)
def test_load_ffmpeg_formats(tmp_path, suffix, channels, codec):
    samples = sine(1000, 1.0, channels=channels)
    wav = write(tmp_path / "source.wav", samples)
    path = ffmpeg_convert(wav, tmp_path / f"clip{suffix}", *codec)

    loaded = load_audio(path)

    assert loaded.channels == channels
    assert loaded.sample_rate == SAMPLE_RATE
    assert abs(loaded.duration_s - 1.0) < 0.05
    assert abs(peak_frequency(loaded.samples[0], SAMPLE_RATE) - 1000) < 5
    assert abs(rms_db(loaded.samples[0]) - rms_db(samples[0])) < 1.0


@needs_ffmpeg
def test_ffmpeg_keeps_the_source_rate_when_asked(tmp_path):
    wav = write(tmp_path / "source.wav", sine(1000, 1.0, channels=2))
    path = ffmpeg_convert(wav, tmp_path / "clip.webm", "-c:a", "libopus")  # Opus is 48 kHz
    assert load_audio(path, sample_rate=None).sample_rate == 48000


@needs_ffmpeg
def test_mp3_that_libsndfile_rejects_falls_back_to_ffmpeg(tmp_path):
    # An M4A renamed to .mp3: libsndfile gives up, ffmpeg sniffs the real format.
    wav = write(tmp_path / "source.wav", sine(1000, 1.0, channels=2))
    path = ffmpeg_convert(wav, tmp_path / "really-m4a.mp3", "-c:a", "aac", "-f", "mp4")

    loaded = load_audio(path)

    assert loaded.channels == 2
    assert abs(loaded.duration_s - 1.0) < 0.05


@needs_ffmpeg
def test_tracker_module_decodes_through_libopenmpt(tmp_path):
    if not {"libopenmpt", "libmodplug"} & ffmpeg_demuxers():
        pytest.skip("this ffmpeg has no tracker support")
    path = tmp_path / "tune.mod"
    path.write_bytes(protracker_module())

    loaded = load_audio(path, sample_rate=None)

    assert supported_formats()[".mod"] is True
    assert loaded.sample_rate == 44100
    assert loaded.channels == 2
    assert loaded.duration_s > 1.0
    assert rms_db(loaded.samples[0]) > -40
    assert rms_db(loaded.samples[1]) > -40


@needs_ffmpeg
def test_ffmpeg_input_longer_than_the_limit(tmp_path):
    wav = write(tmp_path / "source.wav", sine(1000, 3.0))
    path = ffmpeg_convert(wav, tmp_path / "long.m4a", "-c:a", "aac")

    with pytest.raises(AudioLoadError) as excinfo:
        load_audio(path, max_duration_s=1.0)

    message = str(excinfo.value)
    assert "long.m4a" in message
    assert "1.0 s" in message
    assert isinstance(excinfo.value, TooLongError) and excinfo.value.limit_s == 1.0


def silence(path: Path, minutes: float, *codec: str) -> Path:
    """A long but cheap file: silence at 8 kHz mono, made by ffmpeg."""
    ffmpeg = find_ffmpeg()
    assert ffmpeg is not None
    subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", "anullsrc=r=8000:cl=mono", "-t", str(60 * minutes), *codec, str(path)],
        check=True,
        timeout=120,
    )
    return path


def forbid_decoding(monkeypatch) -> None:
    """Make decoding any audio fail the test: a refusal must come before it."""

    def decoded(*args, **kwargs):
        raise AssertionError("the file was decoded before it was refused")

    run = subprocess.run

    def ffmpeg_without_decoding(command, *args, **kwargs):
        if "pipe:1" in command:  # ffmpeg decoding to us; probes and -demuxers may run
            decoded()
        return run(command, *args, **kwargs)

    monkeypatch.setattr(audio_module.subprocess, "run", ffmpeg_without_decoding)
    monkeypatch.setattr(sf.SoundFile, "read", decoded)


@needs_ffmpeg
@pytest.mark.parametrize("suffix", [".m4a", ".webm", ".wav", ".flac", ".mp3"])
def test_an_over_long_file_is_refused_before_it_is_decoded(tmp_path, monkeypatch, suffix):
    path = silence(tmp_path / f"podcast{suffix}", 21)
    forbid_decoding(monkeypatch)
    with pytest.raises(AudioLoadError, match=r"podcast\..* is 21 min 00 s long, over the limit"):
        load_audio(path)


@needs_ffmpeg
def test_an_over_long_file_whose_length_is_unknown_is_still_refused(tmp_path, monkeypatch):
    # Without ffprobe's answer the decoder stops a second past the limit.
    monkeypatch.setattr(audio_module, "_probe_duration", lambda ffmpeg, path: None)
    path = silence(tmp_path / "long.m4a", 0.1, "-c:a", "aac")
    with pytest.raises(AudioLoadError, match=r"long\.m4a is more than 3\.\d s long"):
        load_audio(path, max_duration_s=2.0)


def test_a_length_just_over_the_limit_is_not_shown_as_the_limit(tmp_path):
    path = tmp_path / "edge.wav"
    sf.write(path, np.zeros(round(1200.4 * 8000), dtype=np.int16), 8000, subtype="PCM_16")
    message = load_error(path)
    assert "edge.wav is 1200.4 s long, over the limit of 1200.0 s." in message


@pytest.mark.parametrize("name", ["locked.wav", "locked.m4a", "locked.mod"])
def test_a_file_we_may_not_read_says_so(tmp_path, monkeypatch, name):
    # Tests run as root, where chmod denies nothing: the OS's refusal is simulated.
    path = tmp_path / name
    write(path, sine(440, 0.5), format="WAV")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audio_module, "open", denied, raising=False)
    monkeypatch.setattr(sf, "SoundFile", denied)
    for load in (load_audio, load_sketch):
        with pytest.raises(AudioLoadError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"{name} cannot be read: you do not have permission")
        assert "Check the file's permissions" in message and "damaged" not in message


DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


def _midi_file(path: Path) -> Path:
    import mido

    song = mido.MidiFile()
    track = mido.MidiTrack()
    track += [
        mido.Message("note_on", note=69, velocity=100, time=0),
        mido.Message("note_off", note=69, time=480),
    ]
    song.tracks.append(track)
    song.save(path)
    return path


def test_midi_sketch_is_synthesised_and_damaged_midi_is_a_clear_error(tmp_path):
    good = _midi_file(tmp_path / "sketch.mid")
    sketch = load_sketch(good)
    audio = sketch.audio
    assert audio.sample_rate == SAMPLE_RATE and audio.channels == 2 and audio.duration_s > 0.5
    assert sketch.is_midi and sketch.name == "sketch.mid" and len(sketch.tracks) == 1
    bad = tmp_path / "broken.mid"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioLoadError, match="broken.mid"):
        load_sketch(bad)


def test_load_audio_points_midi_to_load_sketch(tmp_path):
    assert "load_sketch" in load_error(_midi_file(tmp_path / "sketch.mid"))


def test_load_sketch_reads_file_objects_and_bytes_like_paths(tmp_path):
    import io

    wav = tmp_path / "song.wav"
    sf.write(wav, np.sin(np.arange(22050) / 10).astype(np.float32) * 0.5, 22050)
    from_path = load_sketch(wav)
    with wav.open("rb") as handle:
        from_file = load_sketch(handle)
    from_bytes = load_sketch(io.BytesIO(wav.read_bytes()), name="song.wav")
    for sketch in (from_file, from_bytes):
        assert sketch.name == "song.wav" and sketch.key == from_path.key
        np.testing.assert_array_equal(sketch.audio.samples, from_path.audio.samples)
    midi = _midi_file(tmp_path / "tune.mid")
    from_midi_bytes = load_sketch(midi.read_bytes(), name="tune.mid")
    np.testing.assert_array_equal(from_midi_bytes.audio.samples, load_sketch(midi).audio.samples)


def test_load_sketch_errors_name_the_composers_file_not_a_temporary_one(tmp_path):
    import io

    with pytest.raises(AudioLoadError) as info:
        load_sketch(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4), name="My Song.wav")
    assert "My Song.wav" in str(info.value) and "sketch.wav" not in str(info.value)
    with pytest.raises(AudioLoadError, match="not a format"):
        load_sketch(io.BytesIO(b"data"), name="../../etc/passwd")
    with pytest.raises(AudioLoadError, match="empty"):
        load_sketch(b"", name="song.wav")
    with pytest.raises(NeuroChipError, match="name="):
        load_sketch(b"data")


def test_midi_voices_change_the_sound_and_the_key(tmp_path):
    sketch = load_sketch(_midi_file(tmp_path / "sketch.mid"))
    key = sketch.tracks[0].key
    other = "triangle" if sketch.tracks[0].voice != "triangle" else "saw"
    revoiced = sketch.with_voices({key: other})
    assert revoiced.voices == {key: other} and revoiced.key != sketch.key
    assert not np.array_equal(revoiced.audio.samples, sketch.audio.samples)


def test_a_too_long_upload_keeps_its_lengths_and_names_the_upload(tmp_path):
    data = write(tmp_path / "x.flac", sine(440, 2.0)).read_bytes()
    with pytest.raises(TooLongError) as excinfo:
        load_sketch(data, name="Jam (final).flac", max_duration_s=1.0)
    err = excinfo.value
    assert "Jam (final).flac is 2.0 s long" in str(err) and "sketch.flac" not in str(err)
    assert (err.duration_s, err.limit_s) == (pytest.approx(2.0), 1.0)


def test_loading_a_midi_sketch_reports_its_synthesis(tmp_path):
    reports = []
    sketch = load_sketch(DEMO_MIDI, progress=lambda f, s: reports.append((f, s)))
    synth = [f for f, stage in reports if stage == "synthesising"]
    assert sketch.audio.frames > 0
    assert len(synth) >= 3 and synth == sorted(synth) and synth[-1] == 1.0
    decoded = []
    load_sketch(write(tmp_path / "a.wav", sine(440, 1.0)), progress=lambda f, s: decoded.append(f))
    assert decoded == [0.0, 1.0]


def test_a_cancelled_midi_load_stops_at_the_next_report(tmp_path):
    path = shutil.copy(DEMO_MIDI, tmp_path / "sketch.mid")
    cancel = threading.Event()
    seen = []

    def progress(fraction: float, stage: str) -> None:
        seen.append(fraction)
        if stage == "synthesising" and fraction > 0:
            cancel.set()  # as the app's Cancel button does, mid-synthesis

    with pytest.raises(RenderCancelled, match="Loading sketch.mid was cancelled"):
        load_sketch(path, progress=progress, cancel=cancel)
    assert max(seen) < 1.0
    sketch = load_sketch(path)
    with pytest.raises(RenderCancelled):
        sketch.with_voices({sketch.tracks[0].key: "saw"}, cancel=cancel)


def test_supported_formats_covers_every_suffix():
    formats = supported_formats()
    assert set(formats) == SOUNDFILE_SUFFIXES | set(FFMPEG_FORMATS) | MIDI_SUFFIXES
    assert all(formats[suffix] for suffix in MIDI_SUFFIXES)
    assert all(formats[suffix] for suffix in (".wav", ".flac", ".ogg"))


def test_find_ffmpeg_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROCHIP_FFMPEG", str(tmp_path / "no-such-ffmpeg"))
    assert find_ffmpeg() is None
    assert ffmpeg_demuxers() == set()
    assert not supported_formats()[".m4a"]

    real = shutil.which("ffmpeg")
    if real is not None:
        monkeypatch.setenv("NEUROCHIP_FFMPEG", real)
        assert find_ffmpeg() == real


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(AudioLoadError) as excinfo:
        load_audio(path, **kwargs)
    return str(excinfo.value)


def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nowhere.wav")
    assert "nowhere.wav" in message
    assert "not found" in message


def test_directory(tmp_path):
    folder = tmp_path / "stems.wav"
    folder.mkdir()
    message = load_error(folder)
    assert "stems.wav" in message
    assert "folder" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    message = load_error(path)
    assert "empty.wav" in message
    assert "empty" in message.replace("empty.wav", "")


@pytest.mark.parametrize("suffix", [".wav", ".aiff", ".flac", ".mp3"])
def test_truncated_file(tmp_path, suffix):
    full = write(tmp_path / f"full{suffix}", sine(440, 2.0, channels=2))
    path = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    message = load_error(path)

    assert f"cut{suffix}" in message
    assert "incomplete" in message


def test_truncated_header(tmp_path):
    full = save_audio(tmp_path / "full.wav", Audio(sine(440, 1.0), SAMPLE_RATE))
    path = tmp_path / "cut.wav"
    path.write_bytes(full.read_bytes()[:30])
    assert "cut.wav" in load_error(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mod"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(1).bytes(20000))
    message = load_error(path)
    assert f"noise{suffix}" in message


def test_text_file_named_mp3(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("verse: C G Am F\nchorus: F G C C\n" * 50)
    message = load_error(path)
    assert "notes.mp3" in message
    assert "could not be decoded" in message


@pytest.mark.parametrize("name", ["song.txt", "song.xyz", "song"])
def test_unsupported_format_lists_what_is_supported(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"MThd" + bytes(100))
    message = load_error(path)
    assert name in message
    assert "not supported" in message
    assert ".wav" in message
    assert ".flac" in message


def test_missing_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCHIP_FFMPEG", str(tmp_path / "no-such-ffmpeg"))
    path = tmp_path / "phone memo.m4a"
    path.write_bytes(b"\0\0\0\x20ftypM4A " + bytes(200))

    message = load_error(path)

    assert "phone memo.m4a" in message
    assert "ffmpeg" in message
    assert "apt-get install ffmpeg" in message
    assert "brew install ffmpeg" in message
    assert "NEUROCHIP_FFMPEG" in message


def test_ffmpeg_that_does_not_run(tmp_path, monkeypatch):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` command")
    monkeypatch.setenv("NEUROCHIP_FFMPEG", false)
    path = tmp_path / "memo.m4a"
    path.write_bytes(bytes(100))
    message = load_error(path)
    assert "memo.m4a" in message
    assert "does not work" in message
    assert "apt-get install ffmpeg" in message


@needs_ffmpeg
def test_ffmpeg_timeout(tmp_path, monkeypatch):
    def hang(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs.get("timeout"))

    path = tmp_path / "slow.webm"
    path.write_bytes(bytes(100))
    ffmpeg_demuxers()  # fill the cache before subprocess.run starts hanging
    monkeypatch.setattr(audio_module.subprocess, "run", hang)
    message = load_error(path)
    assert "slow.webm" in message
    assert "stopped" in message


def test_unsupported_format_without_ffmpeg_says_what_ffmpeg_adds(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCHIP_FFMPEG", str(tmp_path / "no-such-ffmpeg"))
    path = tmp_path / "song.xyz"
    path.write_bytes(b"MThd" + bytes(100))
    message = load_error(path)
    assert "Supported here: " in message
    assert "With ffmpeg" in message
    assert ".m4a" in message.split("With ffmpeg")[1]
    assert ".m4a" not in message.split("With ffmpeg")[0]


def test_missing_ffmpeg_for_a_damaged_wav_reports_libsndfile(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "find_ffmpeg", lambda: None)
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(2).bytes(2000))
    message = load_error(path)
    assert "noise.wav" in message
    assert "libsndfile" in message


@pytest.mark.parametrize(("suffix", "library"), [(".nsf", "libgme"), (".xm", "libopenmpt")])
def test_ffmpeg_without_chip_or_tracker_support(tmp_path, monkeypatch, suffix, library):
    monkeypatch.setattr(audio_module, "find_ffmpeg", lambda: "/opt/bare/ffmpeg")
    monkeypatch.setattr(audio_module, "ffmpeg_demuxers", lambda: {"wav", "mp3", "ogg"})
    path = tmp_path / f"stage1{suffix}"
    path.write_bytes(b"NESM\x1a" + bytes(200))

    message = load_error(path)

    assert f"stage1{suffix}" in message
    assert library in message
    assert "WAV" in message
    assert supported_formats()[suffix] is False


def test_zero_frames(tmp_path):
    path = write(tmp_path / "silence.wav", np.zeros((2, 0), np.float32))
    message = load_error(path)
    assert "silence.wav" in message
    assert "no audio" in message


def test_input_longer_than_the_limit(tmp_path):
    path = write(tmp_path / "jam.flac", sine(440, 2.0))
    message = load_error(path, max_duration_s=1.0)
    assert "jam.flac" in message
    assert "2.0 s" in message
    assert "1.0 s" in message
    # The library's words fit every front end: the app cannot raise the limit, so the CLI
    # adds its --max-duration itself (tests/test_cli.py).
    assert "Trim it" in message and "--max-duration" not in message
    assert load_audio(path, max_duration_s=None).frames == 2 * SAMPLE_RATE
    assert DEFAULT_MAX_DURATION_S == 1200


# --------------------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------------------


def test_audio_coerces_and_validates():
    audio = Audio(np.arange(10, dtype=np.float64), 8000)
    assert audio.samples.shape == (1, 10)
    assert audio.samples.dtype == np.float32
    assert audio.duration_s == 10 / 8000
    assert "frames=10" in repr(audio)
    with pytest.raises(ValueError, match="transpose"):
        Audio(np.zeros((1000, 2)), 8000)
    with pytest.raises(ValueError):
        Audio(np.zeros((1, 2, 3)), 8000)
    with pytest.raises(ValueError):
        Audio(np.zeros((1, 10)), 0)


def test_to_mono_and_to_stereo():
    stereo = Audio(np.stack([np.ones(5), np.zeros(5)]), 100)
    mono = stereo.to_mono()
    assert mono.samples.shape == (1, 5)
    np.testing.assert_allclose(mono.samples, 0.5)
    assert mono.to_mono() is mono

    back = mono.to_stereo()
    assert back.samples.shape == (2, 5)
    np.testing.assert_allclose(back.samples, 0.5)
    assert stereo.to_stereo() is stereo

    quad = Audio(np.arange(4)[:, None] * np.ones((4, 3)), 100)
    np.testing.assert_allclose(quad.to_stereo().samples, [[0, 0, 0], [1, 1, 1]])


def test_span_is_sample_exact(tmp_path):
    ramp = np.arange(round(7.3 * SAMPLE_RATE), dtype=np.float32) / 1e6
    audio = load_audio(write(tmp_path / "ramp.wav", np.stack([ramp, -ramp]), subtype="FLOAT"))

    part = audio.span(1.25, 2.5)

    assert part.frames == round(2.5 * SAMPLE_RATE)
    assert part.channels == 2
    start = round(1.25 * SAMPLE_RATE)
    np.testing.assert_array_equal(part.samples[0], ramp[start : start + part.frames])
    np.testing.assert_array_equal(part.samples[1], -ramp[start : start + part.frames])
    assert audio.span(5.0).frames == audio.frames - 5 * SAMPLE_RATE
    assert audio.span(6.0, 10.0).frames == audio.frames - 6 * SAMPLE_RATE  # clipped
    assert audio.span().frames == audio.frames


@pytest.mark.parametrize(
    ("start_s", "duration_s", "words"),
    [(7.5, None, "past the end"), (7.3, 1.0, "past the end"), (-1.0, 1.0, "0 s or later"),
     (1.0, 0.0, "more than 0 s"), (1.0, -2.0, "more than 0 s"), (1.0, 1e-9, "one sample")],
)  # fmt: skip
def test_span_errors(start_s, duration_s, words):
    audio = Audio(np.zeros((1, round(7.3 * 100))), 100)
    with pytest.raises(NeuroChipError, match=words):
        audio.span(start_s, duration_s)


def test_resample_identity():
    audio = Audio(np.zeros((2, 10)), SAMPLE_RATE)
    assert audio.resample(SAMPLE_RATE) is audio


# --------------------------------------------------------------------------------------
# Saving and metadata
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bit_depth", "subtype"),
    [
        ("a.wav", "16", "PCM_16"),
        ("a.wav", "24", "PCM_24"),
        ("a.wav", "float", "FLOAT"),
        ("a.flac", "16", "PCM_16"),
        ("a.flac", "24", "PCM_24"),
        ("a.flac", "float", "PCM_24"),
        ("a.mp3", "16", "MPEG_LAYER_III"),
        ("a.ogg", "16", "VORBIS"),
    ],
)
def test_save_formats(tmp_path, name, bit_depth, subtype):
    path = save_audio(
        tmp_path / name, Audio(sine(440, 0.2, channels=2), SAMPLE_RATE), bit_depth=bit_depth
    )
    assert path == tmp_path / name
    assert sf.info(path).subtype == subtype
    assert no_temp_files(tmp_path)


def test_save_clips_integer_formats_only(tmp_path):
    loud = Audio(np.array([[0.5, 1.5, -3.0, np.nan]]), SAMPLE_RATE)
    pcm = sf.read(save_audio(tmp_path / "a.wav", loud), dtype="float32")[0]
    np.testing.assert_allclose(pcm, [0.5, 1.0, -1.0, 0.0], atol=1e-4)
    floats = sf.read(save_audio(tmp_path / "b.wav", loud, bit_depth="float"), dtype="float32")[0]
    np.testing.assert_allclose(floats, [0.5, 1.5, -3.0, 0.0])


def test_save_creates_folders_and_replaces_files(tmp_path):
    path = tmp_path / "renders" / "take 1" / "mix.wav"
    save_audio(path, Audio(np.zeros((1, 100)), SAMPLE_RATE))
    save_audio(path, Audio(np.zeros((2, 50)), SAMPLE_RATE))
    assert sf.info(path).frames == 50
    assert no_temp_files(path.parent)


def test_failed_save_leaves_the_old_file_alone(tmp_path):
    path = save_audio(tmp_path / "mix.mp3", Audio(sine(440, 0.2), SAMPLE_RATE))
    before = path.read_bytes()

    with pytest.raises(NeuroChipError, match="mix.mp3"):
        save_audio(path, Audio(np.zeros((1, 1000)), 96000))  # MP3 has no 96 kHz

    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_save_unknown_suffix(tmp_path):
    with pytest.raises(NeuroChipError) as excinfo:
        save_audio(tmp_path / "mix.m4a", Audio(np.zeros((1, 10)), SAMPLE_RATE))
    message = str(excinfo.value)
    assert "mix.m4a" in message
    assert all(suffix in message for suffix in (".wav", ".flac", ".mp3", ".ogg"))
    assert not (tmp_path / "mix.m4a").exists()


def test_save_bad_bit_depth(tmp_path):
    with pytest.raises(NeuroChipError, match="bit depth"):
        save_audio(tmp_path / "a.wav", Audio(np.zeros((1, 10)), SAMPLE_RATE), bit_depth="8")


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize(
    "text",
    ['{"seed": 1}', "é", "é" * 15, "é" * 15 + "!", "ünïcödé ✓ 🎹", "a" * 5000, LONG_JSON],
    # 30 and 31 UTF-8 bytes: the ID3v1/ID3v2 boundary for MP3 comments
    ids=["short", "one-accent", "30-bytes", "31-bytes", "unicode", "5k-ascii", "long-json"],
)
def test_metadata_round_trip(tmp_path, suffix, text):
    path = save_audio(tmp_path / f"a{suffix}", Audio(sine(440, 0.2), SAMPLE_RATE), metadata=text)
    assert read_metadata(path) == text
    assert no_temp_files(tmp_path)


def test_long_wav_metadata_does_not_disturb_the_audio(tmp_path):
    # libsndfile's own WAV comment tops out around 2 KB; ours is a standard ICMT chunk
    # that libsndfile skips when reading, so the audio must be untouched.
    assert len(LONG_JSON.encode()) > 4000
    samples = sine(440, 0.2, channels=2)
    path = save_audio(
        tmp_path / "a.wav", Audio(samples, SAMPLE_RATE), bit_depth="float", metadata=LONG_JSON
    )
    np.testing.assert_array_equal(load_audio(path).samples, samples)
    assert sf.info(path).frames == samples.shape[1]


def test_short_wav_metadata_is_a_standard_comment(tmp_path):
    path = save_audio(tmp_path / "a.wav", Audio(np.zeros((1, 10)), SAMPLE_RATE), metadata="hi ✓")
    with sf.SoundFile(path) as f:
        assert f.comment == "hi ✓"


def test_metadata_absent_or_unreadable(tmp_path):
    audio = Audio(np.zeros((1, 100)), SAMPLE_RATE)
    assert read_metadata(save_audio(tmp_path / "a.wav", audio)) is None
    assert read_metadata(save_audio(tmp_path / "a.flac", audio, metadata="")) is None
    assert read_metadata(tmp_path / "missing.wav") is None
    (tmp_path / "junk.flac").write_bytes(b"junk")
    assert read_metadata(tmp_path / "junk.flac") is None


def test_saved_files_keep_normal_permissions(tmp_path):
    path = save_audio(tmp_path / "a.wav", Audio(np.zeros((1, 10)), SAMPLE_RATE))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def nes_music_rip() -> bytes:
    """A minimal NSF whose init routine starts a 440 Hz square wave that never stops."""
    init = bytes.fromhex(
        "A9018D1540"  # LDA #$01, STA $4015: enable pulse channel 1
        "A9BF8D0040"  # LDA #$BF, STA $4000: 50% duty, constant volume 15, no length counter
        "A9FD8D0240"  # LDA #$FD, STA $4002: timer low (1.789773 MHz / 16 / 254 = 440 Hz)
        "A9008D0340"  # LDA #$00, STA $4003: timer high
        "60"  # RTS
    )
    play = 0x8000 + len(init)
    header = b"NESM\x1a" + bytes([1, 1, 1]) + struct.pack("<HHH", 0x8000, 0x8000, play)
    header += b"neurochip test".ljust(32, b"\0") + bytes(64)  # title, artist, copyright
    header += struct.pack("<H", 16666) + bytes(8) + struct.pack("<H", 20000) + bytes(6)
    assert len(header) == 128
    return header + init + b"\x60"  # play routine: RTS


@needs_ffmpeg
def test_chip_rip_that_loops_forever_is_cut(tmp_path):
    if "libgme" not in ffmpeg_demuxers():
        pytest.skip("this ffmpeg has no chip-music support")
    path = tmp_path / "stage1.nsf"
    path.write_bytes(nes_music_rip())

    short = load_audio(path, sample_rate=None, max_duration_s=3.0)
    default = load_audio(path)

    assert short.sample_rate == 44100
    assert short.channels == 2
    assert short.frames == 3 * 44100
    assert rms_db(short.samples) > -30
    assert abs(peak_frequency(short.samples[0], 44100) - 440) < 3
    assert default.frames == round(CHIP_PLAY_LENGTH_S * SAMPLE_RATE)


# --------------------------------------------------------------------------------------
# Atomic writes that fail: the first error is the one said
# --------------------------------------------------------------------------------------


def test_a_failing_cleanup_never_hides_the_error_that_stopped_the_write(tmp_path, monkeypatch):
    import errno

    from neurochip.io.write import atomic_write

    def read_only(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    full = pytest.raises(NeuroChipError, match="the disk is full")
    with full, atomic_write(tmp_path / "take.wav") as temporary:
        raise OSError(errno.ENOSPC, "No space left on device", str(temporary))


def test_writing_under_a_file_says_so_and_leaves_the_file(tmp_path):
    from neurochip.io.write import atomic_write

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    said = pytest.raises(NeuroChipError, match="part of the path is a file, not a folder")
    with said, atomic_write(blocker / "take.wav") as temporary:
        temporary.write_bytes(b"never")
    assert blocker.read_text() == "mine\n"


@pytest.mark.parametrize("what", ["text", "audio"])
def test_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch, what):
    import errno

    from neurochip.io.write import write_text_atomically

    path = tmp_path / ("notes.json" if what == "text" else "take.wav")
    path.write_bytes(b"the old file")
    if what == "text":

        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Path, "write_text", full)
        call = lambda: write_text_atomically(path, "{}")  # noqa: E731
    else:
        # What libsndfile does on a full disk (seen on a full tmpfs): a bare "System error",
        # with ENOSPC left in the errno cffi keeps.
        def full(self, data):
            sf._ffi.errno = errno.ENOSPC
            raise sf.LibsndfileError(2)

        monkeypatch.setattr(sf.SoundFile, "write", full)
        call = lambda: save_audio(path, Audio(sine(440, 0.2), SAMPLE_RATE))  # noqa: E731
    with pytest.raises(NeuroChipError, match="the disk is full") as raised:
        call()
    assert "System error" not in str(raised.value)
    assert path.read_bytes() == b"the old file"
    assert no_temp_files(tmp_path)


def test_check_writable_refuses_at_once_what_the_write_would_refuse_later(tmp_path, monkeypatch):
    from neurochip.io.write import check_writable

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    with pytest.raises(NeuroChipError, match="notes.txt is a file, not a folder"):
        check_writable(blocker / "deeper" / "take.wav")
    with pytest.raises(NeuroChipError, match="that is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "folders" / "take.wav")  # atomic_write makes them

    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self.f_flag = result.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    with pytest.raises(NeuroChipError, match="read-only"):
        check_writable(tmp_path / "take.wav")


# --------------------------------------------------------------------------------------
# Whose file is it (neurochip.library.metadata.written_by_neurochip)
# --------------------------------------------------------------------------------------


def test_a_file_is_ours_only_by_what_it_says_itself(tmp_path):
    import json
    import zipfile

    from neurochip.library.metadata import save_take, take_metadata, written_by_neurochip
    from neurochip.settings import RenderSettings
    from neurochip.spectrogram import save_image, spectrogram_image
    from neurochip.stems import STEMS_FORMAT

    metadata = take_metadata("take", {"A": RenderSettings(prompt="x")})
    take = save_take(tmp_path / "take.wav", Audio(sine(440, 0.2), SAMPLE_RATE), metadata)
    assert written_by_neurochip(take) and written_by_neurochip(take.with_suffix(".json"))

    # A user's WAV with a NeuroChip sidecar beside it is still the user's.
    mine = tmp_path / "mine.wav"
    sf.write(mine, sine(440, 0.2).T, SAMPLE_RATE)
    (tmp_path / "mine.json").write_text(json.dumps(metadata))
    assert not written_by_neurochip(mine)

    # JSON: only our formats; anything else (or no JSON at all) is the user's.
    for name, text in [
        ("data.json", '{"format": "something else"}'),
        ("list.json", '[{"item": "x"}]'),
        ("broken.json", "{not json"),
        ("binary.json", "\udcff"),
        ("deep.json", "[" * 100_000),
    ]:
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
        assert not written_by_neurochip(tmp_path / name), name

    # PNG: our text chunk, not the Riffusion EXIF anyone's tool writes.
    clip = Audio(sine(440, 0.5), SAMPLE_RATE)
    ours = save_image(spectrogram_image(clip), tmp_path / "ours.png")
    assert written_by_neurochip(ours)
    image = spectrogram_image(clip)
    image.save(tmp_path / "theirs.png", exif=image.getexif())
    (tmp_path / "theirs.json").write_text(json.dumps(metadata))
    assert not written_by_neurochip(tmp_path / "theirs.png")

    # A stems ZIP: its own stems.json.
    with zipfile.ZipFile(tmp_path / "stems.zip", "w") as archive:
        archive.writestr("stems.json", json.dumps({"format": STEMS_FORMAT}))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("stems.json", "{}")
    assert written_by_neurochip(tmp_path / "stems.zip")
    assert not written_by_neurochip(tmp_path / "other.zip")
    assert not written_by_neurochip(tmp_path / "missing.wav")
    assert not written_by_neurochip(tmp_path)
