"""Tests for neurochip.synth: reading MIDI files, the chip synth and drums, FluidSynth.

Every MIDI file is built here with mido. Pitches are measured from the spectrum, vibrato
from the analytic signal's instantaneous frequency, levels as RMS in dB.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from neurochip.errors import AudioLoadError, NeuroChipError
from neurochip.io.decode import DEFAULT_MAX_DURATION_S, load_audio
from neurochip.sketch import load_sketch
from neurochip.synth import (
    MAX_SYNTH_WORK,
    MAX_VOICES_PER_CHANNEL,
    NOTE_COST_S,
    PEAK_LEVEL,
    RELEASE_TAIL_S,
    VIBRATO_MAX_CENTS,
    VIBRATO_RATE_HZ,
    VOICES,
    default_voice,
    find_fluidsynth,
    find_soundfont,
    read_midi,
    render_midi,
    render_soundfont,
    synth_work,
)
from neurochip.synth import chip as chip_module
from neurochip.synth import midi as midi_reader
from neurochip.synth import soundfont as soundfont_module

SR = 44100
TPB = 480  # ticks per beat; at the default 120 BPM one beat is 0.5 s
A4 = 69

needs_fluidsynth = pytest.mark.skipif(
    find_fluidsynth() is None or find_soundfont() is None,
    reason="fluidsynth or a GM SoundFont is not installed (apt-get install fluidsynth "
    "timgm6mb-soundfont)",
)


# --------------------------------------------------------------------------------------
# Building MIDI files
# --------------------------------------------------------------------------------------


def seconds(s: float) -> int:
    """Ticks for a time in seconds at the default 120 BPM."""
    return round(s * 2 * TPB)


def track(*events: tuple[float, mido.Message | mido.MetaMessage], name: str = "") -> mido.MidiTrack:
    """A track from (time in seconds at 120 BPM, message) pairs, in any order."""
    result = mido.MidiTrack()
    if name:
        result.append(mido.MetaMessage("track_name", name=name))
    now = 0
    for at, msg in sorted(events, key=lambda e: e[0]):
        tick = seconds(at)
        result.append(msg.copy(time=tick - now))
        now = tick
    return result


def note(start: float, end: float, pitch: int = A4, velocity: int = 127, channel: int = 0):
    """A note-on/note-off pair for :func:`track`."""
    return [
        (start, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)),
        (end, mido.Message("note_off", note=pitch, velocity=0, channel=channel)),
    ]


def cc(at: float, control: int, value: int, channel: int = 0):
    return (at, mido.Message("control_change", control=control, value=value, channel=channel))


def bend(at: float, pitch: int, channel: int = 0):
    return (at, mido.Message("pitchwheel", pitch=pitch, channel=channel))


def program(at: float, number: int, channel: int = 0):
    return (at, mido.Message("program_change", program=number, channel=channel))


def save(path: Path, *tracks: mido.MidiTrack, file_type: int = 1) -> Path:
    mid = mido.MidiFile(type=file_type, ticks_per_beat=TPB)
    mid.tracks.extend(tracks)
    mid.save(path)
    return path


def one_track(path: Path, *events, program_number: int | None = None) -> Path:
    """A type 1 file: an empty conductor track (key "1") and one part (key "2")."""
    flat = [e for group in events for e in (group if isinstance(group, list) else [group])]
    if program_number is not None:
        flat.append(program(0, program_number))
    return save(path, track(), track(*flat))


def render_mono(path: Path, voice: str | None = None, **kwargs) -> np.ndarray:
    voices = {"2": voice} if voice else None
    return render_midi(path, voices=voices, stereo=False, **kwargs).samples[0]


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def span(x: np.ndarray, start: float, stop: float) -> np.ndarray:
    return x[round(start * SR) : round(stop * SR)]


def peak_hz(x: np.ndarray, low: float = 20.0, high: float = 20000.0) -> float:
    """Strongest frequency in [low, high], to a fraction of a bin (Gaussian interpolation)."""
    padded = 8 * len(x)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), padded)) + 1e-30
    freqs = np.fft.rfftfreq(padded, 1 / SR)
    band = np.flatnonzero((freqs >= low) & (freqs <= high))
    k = band[np.argmax(spectrum[band])]
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return float(freqs[k] + 0.5 * (a - c) / (a - 2 * b + c) * (SR / padded))


def cents(measured: float, expected: float) -> float:
    return 1200 * np.log2(measured / expected)


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12))


def instantaneous_hz(x: np.ndarray, around: float) -> np.ndarray:
    """Instantaneous frequency of the partial near ``around`` Hz (band-passed first)."""
    sos = signal.butter(4, [0.7 * around, 1.3 * around], "bandpass", fs=SR, output="sos")
    analytic = signal.hilbert(signal.sosfiltfilt(sos, x))
    freq = np.diff(np.unwrap(np.angle(analytic))) * SR / (2 * np.pi)
    return freq[SR // 10 : -SR // 10]  # drop the filter's edges


def spectral_flatness(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2 + 1e-20
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    band = power[(freqs >= low) & (freqs <= high)]
    return float(np.exp(np.mean(np.log(band))) / np.mean(band))


# --------------------------------------------------------------------------------------
# Pitch
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("voice", ["triangle", "pulse12", "pulse25", "pulse50", "saw"])
def test_a4_sounds_at_440_hz(tmp_path, voice):
    path = one_track(tmp_path / "a4.mid", note(0, 2))
    x = render_mono(path, voice)
    assert abs(peak_hz(span(x, 0.3, 1.9), 300, 600) - 440.0) < 0.5


@pytest.mark.parametrize(
    ("wheel", "expected_semitones"), [(8191, 2.0), (-8192, -2.0), (4096, 4096 / 8191 * 2)]
)
def test_pitch_bend_with_the_default_range(tmp_path, wheel, expected_semitones):
    path = one_track(tmp_path / "bend.mid", bend(0, wheel), note(0, 2))
    measured = peak_hz(span(render_mono(path, "triangle"), 0.3, 1.9), 300, 600)
    assert abs(cents(measured, 440.0) - 100 * expected_semitones) < 2


def test_pitch_bend_range_set_by_rpn(tmp_path):
    rpn = [cc(0, 101, 0), cc(0, 100, 0), cc(0, 6, 12), cc(0, 38, 0)]
    path = one_track(tmp_path / "rpn.mid", *rpn, bend(0, 4096), note(0, 2))
    measured = peak_hz(span(render_mono(path, "triangle"), 0.3, 1.9), 300, 900)
    assert abs(cents(measured, 440.0) - 600) < 2  # half bend of 12 semitones


def test_bend_during_a_note_glides_with_continuous_phase(tmp_path):
    ramp = [bend(1.0 + i / 100, round(8191 * i / 50)) for i in range(51)]  # 0 -> +2 in 0.5 s
    path = one_track(tmp_path / "glide.mid", *ramp, note(0, 2.5))
    x = render_mono(path, "triangle")
    assert abs(peak_hz(span(x, 0.2, 0.9), 300, 600) - 440.0) < 0.5
    assert abs(cents(peak_hz(span(x, 1.7, 2.4), 300, 600), 440.0) - 200) < 2
    # No clicks: a phase jump would show as a spike in the second difference.
    glide = span(x, 0.9, 1.6)
    assert np.max(np.abs(np.diff(glide, 2))) < 3 * np.max(np.abs(np.diff(span(x, 0.2, 0.9), 2)))


def test_mod_wheel_adds_vibrato_at_the_documented_rate_and_depth(tmp_path):
    deviations = {}
    for value in (0, 64, 127):
        path = one_track(tmp_path / f"vib{value}.mid", cc(0, 1, value), note(0, 3))
        freq = instantaneous_hz(span(render_mono(path, "triangle"), 0.2, 2.9), 440.0)
        deviations[value] = (np.max(freq) - np.min(freq)) / 2
        if value == 127:
            wobble = freq - freq.mean()
            spectrum = np.abs(np.fft.rfft(wobble * np.hanning(len(wobble)), 16 * len(wobble)))
            rates = np.fft.rfftfreq(16 * len(wobble), 1 / SR)
            assert abs(rates[np.argmax(spectrum)] - VIBRATO_RATE_HZ) < 0.5
    expected = 440.0 * (2 ** (VIBRATO_MAX_CENTS / 1200) - 1)  # about 12.8 Hz
    assert deviations[0] < 0.5
    assert deviations[127] == pytest.approx(expected, rel=0.15)
    assert deviations[64] == pytest.approx(expected * 64 / 127, rel=0.2)


# --------------------------------------------------------------------------------------
# Level, pan, pedal
# --------------------------------------------------------------------------------------


def test_volume_and_expression_follow_the_gm_curve(tmp_path):
    path = one_track(
        tmp_path / "level.mid", cc(0, 7, 127), cc(1.0, 7, 64), cc(2.0, 11, 64), note(0, 3)
    )
    x = render_mono(path, "triangle")
    full, half_volume, half_both = (rms_db(span(x, a + 0.2, a + 0.8)) for a in (0, 1, 2))
    step_db = 40 * np.log10(64 / 127)  # -11.9 dB
    assert half_volume - full == pytest.approx(step_db, abs=0.5)
    assert half_both - half_volume == pytest.approx(step_db, abs=0.5)


def test_expression_ramp_swells(tmp_path):
    ramp = [cc(i / 50, 11, round(127 * i / 100)) for i in range(101)]  # 0 -> 127 over 2 s
    path = one_track(tmp_path / "swell.mid", *ramp, note(0, 2.2))
    x = render_mono(path, "triangle")
    levels = [rms_db(span(x, t, t + 0.2)) for t in np.arange(0.2, 2.0, 0.2)]
    assert np.all(np.diff(levels) > 0.5)
    assert levels[-1] - levels[0] > 20


def test_velocity_sets_level(tmp_path):
    path = one_track(tmp_path / "vel.mid", note(0, 1, velocity=127), note(1, 2, velocity=64))
    x = render_mono(path, "triangle")
    difference = rms_db(span(x, 1.2, 1.8)) - rms_db(span(x, 0.2, 0.8))
    assert difference == pytest.approx(40 * np.log10(64 / 127), abs=0.5)


@pytest.mark.parametrize(("pan", "left", "right"), [(0, 1.0, 0.0), (64, 0.5**0.5, 0.5**0.5)])
def test_pan_is_constant_power(tmp_path, pan, left, right):
    path = one_track(tmp_path / "pan.mid", cc(0, 10, pan), note(0, 1))
    samples = render_midi(path).samples
    assert samples.shape[0] == 2
    rms = np.sqrt(np.mean(samples[:, SR // 5 : SR * 4 // 5] ** 2, axis=1))
    assert rms[1] / rms[0] == pytest.approx(right / left, abs=1e-3)


def test_sustain_pedal_holds_notes_past_note_off(tmp_path):
    plain = render_mono(one_track(tmp_path / "plain.mid", note(0, 0.5), note(2.9, 3.0, 40)))
    pedal = render_mono(
        one_track(
            tmp_path / "pedal.mid", cc(0, 64, 127), note(0, 0.5), cc(2.0, 64, 0), note(2.9, 3, 40)
        )
    )
    assert rms_db(span(plain, 1.0, 1.8)) < -80  # released
    assert rms_db(span(pedal, 1.0, 1.8)) > -20  # held by the pedal
    assert rms_db(span(pedal, 2.3, 2.8)) < -80  # released with the pedal


def test_samples_never_clip_and_peak_at_minus_1_dbfs(tmp_path):
    chord = [note(0, 1, p) for p in (48, 52, 55, 60, 64, 67, 72)]
    samples = render_midi(one_track(tmp_path / "loud.mid", *chord)).samples
    assert np.max(np.abs(samples)) == pytest.approx(PEAK_LEVEL, abs=1e-6)


# --------------------------------------------------------------------------------------
# Drums, polyphony, timing
# --------------------------------------------------------------------------------------


def test_drums_on_channel_10_are_noise_not_pitched_notes(tmp_path):
    hats = [note(i * 0.25, i * 0.25 + 0.1, 42, channel=9) for i in range(8)]
    snares = [note(2 + i * 0.5, 2.1 + i * 0.5, 38, channel=9) for i in range(2)]
    path = save(tmp_path / "drums.mid", track(*[e for n in hats + snares for e in n]))
    song = read_midi(path)
    assert [t.voice for t in song.tracks] == ["drums"]
    x = render_mono(path)
    assert rms_db(x) > -40
    # High-passed noise: flat above the filter; a pitched F#2 (92.5 Hz) would be a spike.
    assert spectral_flatness(span(x, 0, 2), 8000, 16000) > 0.3
    spectrum = np.abs(np.fft.rfft(span(x, 0, 2)))
    freqs = np.fft.rfftfreq(2 * SR, 1 / SR)
    pitch = spectrum[np.abs(freqs - 92.5) < 2].max()
    assert pitch < 0.01 * spectrum.max()
    # The snare has body in the mids too.
    assert spectral_flatness(span(x, 2, 3), 1000, 8000) > 0.2


def test_every_gm_drum_key_makes_sound(tmp_path):
    hits = [note(i * 0.05, i * 0.05 + 0.04, p, channel=9) for i, p in enumerate(range(27, 88))]
    x = render_mono(save(tmp_path / "kit.mid", track(*[e for n in hits for e in n])))
    assert all(rms_db(span(x, i * 0.05, i * 0.05 + 0.02)) > -50 for i in range(61))


def test_chord_shows_three_peaks(tmp_path):
    frequencies = [261.63, 329.63, 392.00]  # C4, E4, G4
    path = one_track(tmp_path / "chord.mid", *(note(0, 2, p) for p in (60, 64, 67)))
    x = span(render_mono(path, "triangle"), 0.3, 1.9)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    peaks, _ = signal.find_peaks(spectrum, height=0.1 * spectrum.max())
    peaks = peaks[freqs[peaks] < 500]  # the fundamentals; harmonics start at 785 Hz
    assert len(peaks) == 3
    assert np.allclose(freqs[peaks], frequencies, atol=1.5)


def test_voices_are_stolen_past_the_cap(tmp_path):
    # 17 notes held together on one channel: the first (lowest) is stolen by the last.
    notes = [note(0.05 * i, 3, 40 + 2 * i) for i in range(MAX_VOICES_PER_CHANNEL + 1)]
    x = render_mono(one_track(tmp_path / "poly.mid", *notes), "triangle")
    lowest = 440 * 2 ** ((40 - 69) / 12)
    spectrum = np.abs(np.fft.rfft(span(x, 1.5, 2.5) * np.hanning(SR)))
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    second = 440 * 2 ** ((42 - 69) / 12)
    assert spectrum[np.abs(freqs - lowest) < 2].max() < 0.01 * spectrum.max()
    assert spectrum[np.abs(freqs - second) < 2].max() > 0.1 * spectrum.max()


def test_render_length_is_the_midi_length_plus_the_tail(tmp_path):
    conductor = track(
        (0, mido.MetaMessage("set_tempo", tempo=600_000)),
        (1.0, mido.MetaMessage("set_tempo", tempo=300_000)),
    )
    part = track(*note(0, 1.3), *note(2.0, 2.5), (3.0, mido.MetaMessage("end_of_track")))
    path = save(tmp_path / "length.mid", conductor, part)
    expected = mido.MidiFile(path).length + RELEASE_TAIL_S
    song = read_midi(path)
    assert song.duration_s == pytest.approx(expected, abs=1e-9)
    for rate in (SR, 22050):
        audio = render_midi(song, sample_rate=rate)
        assert audio.sample_rate == rate
        assert audio.frames == round(expected * rate)


def test_tempo_change_changes_note_spacing(tmp_path):
    # One note per beat; 120 BPM for 4 beats, then 60 BPM for 4 beats (conductor track).
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500_000, time=0),
            mido.MetaMessage("set_tempo", tempo=1_000_000, time=4 * TPB),
        ]
    )
    part = mido.MidiTrack()
    for _ in range(8):
        part.append(mido.Message("note_on", note=A4, velocity=100, time=0))
        part.append(mido.Message("note_off", note=A4, velocity=0, time=TPB // 4))
        part.append(mido.Message("note_off", note=A4, velocity=0, time=TPB * 3 // 4))
    path = save(tmp_path / "tempo.mid", conductor, part)
    x = np.abs(render_mono(path, "pulse50"))
    loud = np.convolve(x, np.ones(100) / 100, "same") > 0.05
    onsets = np.flatnonzero(np.diff(loud.astype(int)) == 1) / SR
    gaps = np.diff(onsets)
    assert len(onsets) == 8
    assert np.allclose(gaps[:3], 0.5, atol=0.005)
    assert np.allclose(gaps[4:], 1.0, atol=0.005)


# --------------------------------------------------------------------------------------
# Band-limiting
# --------------------------------------------------------------------------------------


def aliased_energy_db(x: np.ndarray, f0: float) -> float:
    """Energy away from the harmonics of f0, relative to the total, in dB."""
    window = signal.windows.blackmanharris(len(x))
    power = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    harmonic = np.abs(freqs / f0 - np.round(freqs / f0)) * f0 < 8  # within 8 Hz
    harmonic &= freqs > f0 / 2  # DC is not a harmonic
    return float(10 * np.log10(power[~harmonic].sum() / power.sum()))


@pytest.mark.parametrize("voice", ["pulse12", "pulse25", "pulse50", "saw", "triangle"])
def test_high_notes_do_not_alias(tmp_path, voice):
    c7 = 96
    f0 = 440 * 2 ** ((c7 - 69) / 12)
    x = render_mono(one_track(tmp_path / "c7.mid", note(0, 2.5, c7)), voice)
    assert aliased_energy_db(span(x, 1.5, 2.4), f0) < -60


def test_the_alias_measure_catches_a_naive_pulse():
    # Proves the test above can fail: a naive 25 % pulse at C7 aliases badly.
    f0 = 440 * 2 ** ((96 - 69) / 12)
    phase = np.arange(SR) * f0 / SR % 1.0
    assert aliased_energy_db(np.where(phase < 0.25, 1.0, -1.0), f0) > -30


def test_bend_up_on_a_high_note_does_not_alias(tmp_path):
    # The table is built for the highest pitch the note reaches, bend included.
    path = one_track(tmp_path / "c7b.mid", bend(0, 8191), note(0, 2.5, 96))
    x = render_mono(path, "pulse25")
    assert aliased_energy_db(span(x, 1.5, 2.4), 440 * 2 ** ((98 - 69) / 12)) < -60


# --------------------------------------------------------------------------------------
# Tracks and voices
# --------------------------------------------------------------------------------------


def test_read_midi_describes_each_track(tmp_path):
    # The bass starts last: parts are still listed in file order.
    bass = track(program(0, 33), *note(0.5, 1, 40), *note(1, 2, 43), name="Bass")
    lead = track(program(0, 81, 1), *note(0, 1, 72, channel=1))
    drums = track(*note(0, 0.1, 36, channel=9), *note(0.5, 0.6, 38, channel=9), name="Drums")
    song = read_midi(save(tmp_path / "band.mid", track(name="Tempo"), bass, lead, drums))
    assert [(t.key, t.name, t.channel, t.program, t.notes, t.voice) for t in song.tracks] == [
        ("2", "Bass: Electric Bass (finger)", 1, 33, 2, "triangle"),
        ("3", "Track 3: Lead 2 (sawtooth)", 2, 81, 1, "pulse25"),
        ("4", "Drums: Drum kit", 10, None, 2, "drums"),
    ]
    assert song.tempos == ((0.0, 120.0),)


def test_type_0_file_gets_one_part_per_channel(tmp_path):
    events = [program(0, 0), *note(0, 1, 60), *note(0, 1, 36, channel=9), *note(1, 2, 64)]
    song = read_midi(save(tmp_path / "type0.mid", track(*events), file_type=0))
    assert [(t.key, t.channel, t.notes, t.voice) for t in song.tracks] == [
        ("ch1", 1, 2, "pulse50"),
        ("ch10", 10, 1, "drums"),
    ]


def test_default_voice_mapping():
    assert default_voice(33, 1) == "triangle"  # bass
    assert default_voice(81, 1) == "pulse25"  # synth lead
    assert default_voice(0, 10) == "drums"
    assert default_voice(None, 10) == "drums"
    assert default_voice(None, 1) == "pulse50"
    assert default_voice(48, 1) == "saw"  # strings
    assert default_voice(25, 1) == "pulse12"  # guitar
    assert default_voice(127, 1) == "noise"
    assert {default_voice(p, 1) for p in range(128)} <= set(VOICES)


def second_harmonic_db(x: np.ndarray, f0: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)

    def level(f: float) -> float:
        return spectrum[np.abs(freqs - f) < 3].max()

    return float(20 * np.log10(level(2 * f0) / level(f0)))


def test_voice_override_changes_the_timbre(tmp_path):
    path = one_track(tmp_path / "bass.mid", note(0, 2, 45), program_number=33)
    assert read_midi(path).tracks[0].voice == "triangle"
    default = span(render_mono(path), 0.3, 1.9)
    saw = span(render_mono(path, "saw"), 0.3, 1.9)
    assert second_harmonic_db(default, 110.0) < -40  # triangle: odd harmonics only
    assert second_harmonic_db(saw, 110.0) == pytest.approx(-6.0, abs=1)  # saw: 1/k


def test_program_change_switches_voice_mid_song(tmp_path):
    path = one_track(
        tmp_path / "switch.mid", program(0, 33), note(0, 1, 45), program(1, 81), note(1, 2, 45)
    )
    x = render_mono(path)
    assert second_harmonic_db(span(x, 0.2, 0.9), 110.0) < -40  # triangle
    assert second_harmonic_db(span(x, 1.2, 1.9), 110.0) > -15  # 25 % pulse has even harmonics


def test_drums_override_turns_a_melodic_track_into_drums(tmp_path):
    path = one_track(tmp_path / "kick.mid", *(note(i / 2, i / 2 + 0.1, 42) for i in range(4)))
    x = render_mono(path, "drums")
    assert spectral_flatness(span(x, 0, 2), 8000, 16000) > 0.3


def test_bad_overrides_are_clear_errors(tmp_path):
    path = one_track(tmp_path / "song.mid", note(0, 1))
    with pytest.raises(NeuroChipError, match=r"song\.mid has no track '9'.*2 \(Track 2"):
        render_midi(path, voices={"9": "saw"})
    with pytest.raises(NeuroChipError, match="Unknown voice 'kazoo'.*pulse12.*noise, drums"):
        render_midi(path, voices={"2": "kazoo"})


def test_a_channel_is_mixed_only_where_its_notes_sound(tmp_path, monkeypatch):
    # A 1 s note with pan automation, in a song made 100 s long by another channel: the
    # panned channel's 99 silent seconds are not mixed (they cost time, not sound).
    path = one_track(
        tmp_path / "sparse.mid",
        cc(0, 10, 0),
        cc(0.5, 10, 127),
        note(0, 1),
        note(99, 100, 60, channel=1),
    )
    mixed = []
    expand = chip_module._Clock.expand
    monkeypatch.setattr(
        chip_module._Clock, "expand", lambda self, *a: mixed.append(a) or expand(self, *a)
    )
    audio = render_midi(path)
    assert len(mixed) == 2  # one chunk, left and right
    assert rms_db(audio.samples[0, : SR // 2]) > rms_db(audio.samples[1, : SR // 2]) + 20


def test_the_fast_wavetable_read_is_the_modulo_one(tmp_path):
    table = chip_module._wavetable("saw", 40)
    phases = np.cumsum(np.full(10_000, 0.0123)) + np.arange(10_000) * 1e-7 + 12345.0
    size = len(table) - 2
    position = (phases % 1.0) * size
    index = position.astype(np.intp)
    fraction = position - index
    expected = table[index] + fraction * (table[index + 1] - table[index])
    np.testing.assert_array_equal(chip_module._read_table(table, phases), expected)


def test_progress_is_reported_up_to_one(tmp_path):
    path = one_track(tmp_path / "p.mid", *(note(i / 10, i / 10 + 0.1, 60 + i) for i in range(20)))
    seen: list[float] = []
    render_midi(path, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen) and len(seen) > 3


def test_mono_render(tmp_path):
    audio = render_midi(one_track(tmp_path / "m.mid", note(0, 1)), stereo=False)
    assert audio.channels == 1


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def valid_bytes(tmp_path: Path) -> bytes:
    return one_track(
        tmp_path / "ok.mid", *(note(i / 4, i / 4 + 0.2) for i in range(8))
    ).read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "damaged or incomplete"),
        ("garbage track", "damaged or incomplete"),
        ("text", "is not a MIDI file"),
        ("empty", r"is empty \(0 bytes\)"),
        ("no notes", "has no notes: "),
        ("no tracks", "has no notes: "),
        ("slow tempo", r"tempo of 3\.576 BPM"),
        ("fast tempo", "tempo of 6e\\+07 BPM"),
        ("zero tempo", "tempo of 0 BPM"),
        ("type 2", "type 2"),
        ("missing", "was not found"),
    ],
)
def test_bad_input_is_one_clear_error_naming_the_file(tmp_path, case, message):
    path = tmp_path / f"bad {case}.mid"
    good = valid_bytes(tmp_path)
    if case == "truncated":
        path.write_bytes(good[: len(good) - 20])
    elif case == "garbage track":
        path.write_bytes(good[:40] + bytes([0xF4, 0x80, 0x90] * 10) + good[70:])
    elif case == "text":
        path.write_text("these are my song notes, not a MIDI file\n" * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "no notes":
        one_track(path, cc(0, 7, 100), bend(0.5, 100), program(0, 3))
    elif case == "no tracks":
        save(path)
    elif case.endswith("tempo"):
        tempo = {"slow": 16_777_215, "fast": 1, "zero": 0}[case.split()[0]]
        save(path, track((1.0, mido.MetaMessage("set_tempo", tempo=tempo))), track(*note(0, 2)))
    elif case == "type 2":
        save(path, track(*note(0, 1)), track(*note(0, 1)), file_type=2)
    with pytest.raises(NeuroChipError, match=message) as caught:
        render_midi(path)
    assert path.name in str(caught.value)


def forbid_playing(monkeypatch) -> None:
    """Make playing any note (chip synth or FluidSynth) fail the test: refusals come first."""

    def played(*args, **kwargs):
        raise AssertionError("a note was played before the song was refused")

    monkeypatch.setattr(chip_module, "_render_note", played)
    monkeypatch.setattr(chip_module, "_render_drums", played)
    monkeypatch.setattr(soundfont_module.subprocess, "run", played)
    monkeypatch.setattr(soundfont_module, "find_fluidsynth", lambda: "/usr/bin/fluidsynth")


def fake_soundfont(tmp_path: Path) -> Path:
    path = tmp_path / "font.sf2"
    path.write_bytes(b"RIFF\0\0\0\0sfbk")
    return path


def test_too_long_midi_is_refused_before_its_notes_are_paired(tmp_path, monkeypatch):
    ten_hours = 10 * 3600
    path = one_track(tmp_path / "forever.mid", note(0, 1), note(ten_hours - 1, ten_hours))

    def paired(*args, **kwargs):
        raise AssertionError("the notes were paired before the length was checked")

    monkeypatch.setattr(midi_reader, "_collect_events", paired)
    with pytest.raises(NeuroChipError, match=r"forever\.mid is 10 h 00 min 00 s long"):
        render_midi(path)
    with pytest.raises(NeuroChipError, match="over the limit of 5.0 s"):
        read_midi(one_track(tmp_path / "ten.mid", note(0, 10)), max_seconds=5)


def test_midi_and_audio_share_one_duration_limit(tmp_path, monkeypatch):
    # One constant: the loader's.
    assert midi_reader.MAX_MIDI_SECONDS is DEFAULT_MAX_DURATION_S
    # Its last event exactly at the limit: with the release tail its audio is 0.5 s over,
    # and the loader refuses that much audio, so every MIDI path refuses it too.
    forbid_playing(monkeypatch)
    limit = DEFAULT_MAX_DURATION_S
    path = one_track(tmp_path / "edge.mid", note(0, 1), note(limit - 1, limit))
    over = (
        r"edge\.mid is 1200\.5 s long \(its last event, plus 0\.5 s .*over the limit of 1200\.0 s"
    )
    with pytest.raises(NeuroChipError, match=over):
        read_midi(path)
    with pytest.raises(AudioLoadError, match=over):
        load_sketch(path)
    with pytest.raises(NeuroChipError, match=over):
        render_soundfont(path, fake_soundfont(tmp_path))


def test_a_midi_is_compared_with_the_limit_as_the_audio_it_becomes(tmp_path, monkeypatch):
    forbid_playing(monkeypatch)
    path = one_track(tmp_path / "edge.mid", note(9, 10))  # 10.5 s of audio
    wav = tmp_path / "edge.wav"
    sf.write(wav, np.zeros(round(10.5 * SR), dtype=np.float32), SR)
    for load in (load_audio, load_sketch):
        with pytest.raises(AudioLoadError, match=r"edge\.(wav|mid) is 10\.5 s long"):
            load(wav if load is load_audio else path, max_duration_s=10)
    with pytest.raises(NeuroChipError, match="over the limit of 10.0 s"):
        read_midi(path, max_seconds=10)
    assert read_midi(path, max_seconds=10.5).duration_s == 10.5


@pytest.mark.parametrize("limit", [0, -1, float("nan")])
def test_a_nonsense_duration_limit_is_refused(tmp_path, limit):
    with pytest.raises(NeuroChipError, match="maximum duration must be more than 0 s"):
        read_midi(one_track(tmp_path / "a.mid", note(0, 1)), max_seconds=limit)


def test_a_compute_bomb_is_refused_before_any_note_is_played(tmp_path, monkeypatch):
    # 64 notes held for 19 minutes, 16 per channel (none stolen): a few hundred bytes that
    # took minutes and gigabytes to play.
    forbid_playing(monkeypatch)
    held = [note(0, 19 * 60, 40 + i % 16, channel=i // 16) for i in range(64)]
    path = one_track(tmp_path / "bomb.mid", *held)
    assert path.stat().st_size < 1000
    refusal = (
        r"bomb\.mid is too much for the synth to play: its 64 notes add up to 72,973 "
        r"voice-seconds .* over the limit of 10,000 .* Look for stuck"
    )
    with pytest.raises(NeuroChipError, match=refusal):
        read_midi(path)
    with pytest.raises(NeuroChipError, match=refusal):
        render_midi(path)
    with pytest.raises(AudioLoadError, match=refusal):
        load_sketch(path)
    with pytest.raises(NeuroChipError, match=refusal):
        render_soundfont(path, fake_soundfont(tmp_path))


def test_work_counts_held_time_after_the_pedal_and_voice_stealing(tmp_path):
    # 20 notes struck together and held 100 s on one channel: 4 are stolen at once.
    stacked = [note(0, 100, 40 + i) for i in range(20)]
    song = read_midi(one_track(tmp_path / "stack.mid", *stacked))
    assert synth_work(song) == pytest.approx(16 * 100 + 20 * NOTE_COST_S)
    # Released after 1 s, but the pedal holds them until 30 s.
    pedal = [cc(0, 64, 127), note(0, 1, 60), note(0, 1, 64), cc(30, 64, 0), note(30, 31, 67)]
    song = read_midi(one_track(tmp_path / "pedal.mid", *pedal))
    assert synth_work(song) == pytest.approx(2 * 30 + 1 + 3 * NOTE_COST_S)


def test_drum_hits_cost_their_hit_unless_a_voice_makes_them_notes(tmp_path, monkeypatch):
    # 100 hits on channel 10, each "held" 10 s (drums ignore note-offs).
    hits = [note(i * 10, i * 10 + 10, 38, channel=9) for i in range(100)]
    path = one_track(tmp_path / "kit.mid", *hits)
    song = read_midi(path)
    assert synth_work(song) == pytest.approx(100 * NOTE_COST_S)
    assert synth_work(song, {"2": "pulse50"}) == pytest.approx(100 * (10 + NOTE_COST_S))
    # render_midi weighs the song again with its voices, before playing a note.
    forbid_playing(monkeypatch)
    monkeypatch.setattr(midi_reader, "MAX_SYNTH_WORK", 500)
    with pytest.raises(NeuroChipError, match=r"kit\.mid is too much .* 1,020 voice-seconds"):
        render_midi(song, voices={"2": "pulse50"})


def test_a_dense_twenty_minute_song_is_not_refused(tmp_path):
    # Bass and lead in eighths, three-note chords a bar long, kick, snare and hats in eighths:
    # denser than most sketches, and 20 minutes of it still fits under the limit.
    events = []
    for bar in range(598):  # 2 s bars at 120 BPM, just under 20 minutes with the tail
        t = 2.0 * bar
        events += [note(t, t + 1.97, p, channel=2) for p in (57, 60, 64)]
        for eighth in range(8):
            e = t + eighth / 4
            events += note(e, e + 0.23, 33, channel=0) + note(e, e + 0.24, 69, channel=1)
            events += note(e, e + 0.05, (36, 42, 38, 42)[eighth % 4], channel=9)
    song = read_midi(one_track(tmp_path / "dense.mid", *events))
    assert 8_000 < synth_work(song) < MAX_SYNTH_WORK


def test_a_midi_we_may_not_read_says_so(tmp_path, monkeypatch):
    # Tests run as root, where chmod denies nothing: the OS's refusal is simulated.
    path = one_track(tmp_path / "locked.mid", note(0, 1))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mido, "MidiFile", denied)
    for load in (read_midi, load_sketch):
        with pytest.raises(NeuroChipError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith("locked.mid cannot be read: you do not have permission")
        assert "Check the file's permissions" in message and "damaged" not in message


def test_huge_file_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(midi_reader, "MAX_MIDI_BYTES", 100)
    with pytest.raises(NeuroChipError, match=r"big\.mid is .* too big"):
        read_midi(one_track(tmp_path / "big.mid", *(note(i, i + 1) for i in range(20))))


def test_load_audio_refuses_midi_and_load_sketch_plays_it(tmp_path):
    path = one_track(tmp_path / "sketch.mid", note(0, 1))
    with pytest.raises(
        AudioLoadError, match=r"sketch\.mid is a MIDI file, not audio: .*load_sketch"
    ):
        load_audio(path)
    sketch = load_sketch(path)
    assert sketch.is_midi and [t.key for t in sketch.tracks] == ["2"]
    np.testing.assert_array_equal(sketch.audio.samples, render_midi(path).samples)


def test_bad_sample_rate(tmp_path):
    with pytest.raises(NeuroChipError, match="sample rate"):
        render_midi(one_track(tmp_path / "sr.mid", note(0, 1)), sample_rate=100)


# --------------------------------------------------------------------------------------
# SoundFont rendering
# --------------------------------------------------------------------------------------


@needs_fluidsynth
def test_render_with_a_soundfont(tmp_path):
    path = one_track(tmp_path / "gm.mid", *(note(i / 2, i / 2 + 0.4, 60 + i) for i in range(4)))
    audio = render_soundfont(path)
    assert audio.channels == 2 and audio.sample_rate == 44100
    assert audio.frames == round(read_midi(path).duration_s * 44100)
    assert rms_db(audio.samples[:, : 2 * SR]) > -30
    assert np.max(np.abs(audio.samples)) == pytest.approx(PEAK_LEVEL, abs=1e-6)


def test_a_file_that_is_not_a_soundfont(tmp_path, monkeypatch):
    monkeypatch.setattr(soundfont_module, "find_fluidsynth", lambda: "/usr/bin/fluidsynth")
    broken = tmp_path / "broken.sf2"
    broken.write_text("not a soundfont")
    with pytest.raises(NeuroChipError, match=r"broken\.sf2 is not a SoundFont"):
        render_soundfont(one_track(tmp_path / "gm.mid", note(0, 1)), broken)


@needs_fluidsynth
def test_fluidsynth_failing_to_load_the_soundfont(tmp_path):
    path = one_track(tmp_path / "gm.mid", note(0, 1))
    broken = tmp_path / "broken.sf2"
    # Passes the header check, but FluidSynth cannot load it.
    broken.write_bytes(b"RIFF\x10\x00\x00\x00sfbkLIST" + bytes(8))
    with pytest.raises(NeuroChipError, match=r"FluidSynth could not render gm\.mid with broken"):
        render_soundfont(path, broken)


def test_missing_fluidsynth_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(soundfont_module, "find_fluidsynth", lambda: None)
    with pytest.raises(NeuroChipError, match="FluidSynth.*apt-get install fluidsynth.*brew"):
        render_soundfont(one_track(tmp_path / "x.mid", note(0, 1)))


def test_missing_soundfont_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(soundfont_module, "find_fluidsynth", lambda: "/usr/bin/fluidsynth")
    monkeypatch.setattr(soundfont_module, "find_soundfont", lambda: None)
    path = one_track(tmp_path / "x.mid", note(0, 1))
    with pytest.raises(NeuroChipError, match="No General MIDI SoundFont.*apt-get.*--soundfont"):
        render_soundfont(path)
    with pytest.raises(NeuroChipError, match=r"nowhere\.sf2 was not found.*--soundfont"):
        render_soundfont(path, tmp_path / "nowhere.sf2")


def test_find_soundfont_honours_the_environment(tmp_path, monkeypatch):
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"RIFF")
    monkeypatch.setenv("NEUROCHIP_SOUNDFONT", str(font))
    assert find_soundfont() == font
    monkeypatch.setenv("NEUROCHIP_SOUNDFONT", str(tmp_path / "gone.sf2"))
    assert find_soundfont() is None
