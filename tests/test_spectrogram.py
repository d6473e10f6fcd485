from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from neurochip.errors import NeuroChipError
from neurochip.spectrogram import (
    INT16_SCALE,
    ExifTag,
    SpectrogramParams,
    amplitudes_from_image,
    amplitudes_to_float_image,
    float_image_to_amplitudes,
    image_from_amplitudes,
    load_image,
    mel_amplitudes,
    mel_band_centers,
    mel_filterbank,
    save_image,
    spectrogram_image,
)
from tests.chiptune import make_chiptune
from tests.riffusion_reference import riffusion_image, riffusion_mel_amplitudes, to_int16

SR = 44100
PARAMS = SpectrogramParams()


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * torch.pi * freq * t)).float()[None]


def test_parameters_are_riffusions():
    assert (PARAMS.hop_length, PARAMS.win_length, PARAMS.n_fft) == (441, 4410, 17640)
    assert PARAMS.num_stft_bins == 8821
    assert PARAMS.num_frequencies == 512


@pytest.mark.parametrize("samples", [8821, 44100, 225351, 225792, 321930])
def test_width_is_one_plus_samples_over_hop(samples):
    waveform = torch.zeros(1, samples)
    assert mel_amplitudes(waveform).shape == (1, 512, 1 + samples // 441)
    assert PARAMS.num_frames(samples) == 1 + samples // 441


def test_filterbank_follows_the_format_note():
    """Triangles between HTK mel points, peak 1, no normalisation (computed literally)."""
    fb = mel_filterbank(PARAMS).numpy()
    assert fb.shape == (512, 8821)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    points = 700 * (10 ** (np.linspace(mel(0), mel(10000), 514) / 2595) - 1)
    freqs = np.linspace(0, 22050, 8821)
    for m in (0, 1, 100, 311, 511):
        lo, peak, hi = points[m], points[m + 1], points[m + 2]
        expected = np.where(
            freqs <= peak, (freqs - lo) / (peak - lo), (hi - freqs) / (hi - peak)
        ).clip(0)
        np.testing.assert_allclose(fb[m], expected, atol=1e-6)
    assert fb.max() <= 1.0
    assert not fb[:, freqs > 10000].any()


@pytest.mark.parametrize("freq", [110.0, 440.0, 1000.0, 3520.0, 9000.0])
def test_sine_lands_in_its_mel_row(freq):
    image = np.asarray(spectrogram_image(tone(freq)))
    darkest_row = image[:, 10:-10, 0].mean(axis=1).argmin()  # loud is dark
    band = 511 - darkest_row  # the image is flipped: row 0 is the top band
    nearest = np.abs(mel_band_centers(PARAMS) - freq).argmin()
    assert abs(int(band) - int(nearest)) <= 1


def test_silence_is_white():
    image = np.asarray(spectrogram_image(torch.zeros(1, SR)))
    assert (image == 255).all()


def test_loud_is_dark_and_low_is_at_the_bottom():
    image = np.asarray(spectrogram_image(tone(100.0)))
    bottom, top = image[-60:, :, 0], image[:60, :, 0]
    assert bottom.min() < 50 and top.min() > 200


def test_mono_fills_rgb_equally():
    image = np.asarray(spectrogram_image(tone(440.0)))
    assert (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all()


def test_stereo_layout_is_r0_g_left_b_right():
    left = tone(440.0)
    stereo = torch.cat([left, torch.zeros_like(left)])
    image = np.asarray(spectrogram_image(stereo, replace(PARAMS, stereo=True)))
    assert (image[:, :, 0] == 0).all()
    assert image[:, :, 1].min() < 50  # left carries the tone
    assert (image[:, :, 2] == 255).all()  # right is silent


def test_exif_round_trip(tmp_path):
    waveform = torch.from_numpy(make_chiptune(2.0, stereo=True))
    image = spectrogram_image(waveform, replace(PARAMS, stereo=True))
    path = save_image(image, tmp_path / "clip.png")
    loaded = load_image(path)
    exif = loaded.getexif()
    assert SpectrogramParams.from_exif(exif) == replace(PARAMS, stereo=True)
    assert exif[ExifTag.SAMPLE_RATE] == 44100 and exif[ExifTag.MAX_FREQUENCY] == 10000
    assert exif[ExifTag.POWER_FOR_IMAGE] == pytest.approx(0.25)
    assert exif[ExifTag.NUM_SAMPLES] == waveform.shape[1]
    max_value = float(mel_amplitudes(waveform).max())
    assert float(exif[ExifTag.MAX_VALUE]) == pytest.approx(max_value, rel=1e-6)
    assert np.array_equal(np.asarray(loaded), np.asarray(image))
    decoded = amplitudes_from_image(loaded)
    assert decoded.params.stereo and decoded.num_samples == waveform.shape[1]
    assert decoded.max_value == pytest.approx(max_value, rel=1e-6)


def test_max_value_is_on_riffusions_int16_scale():
    waveform = tone(1000.0)
    expected = riffusion_mel_amplitudes(to_int16(waveform.numpy())).max()
    assert float(mel_amplitudes(waveform).max()) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("stereo", [True, False])
def test_8bit_image_matches_riffusions(stereo):
    """On a chip tune, >= 99.9% of pixels equal Riffusion's, none off by more than 1 level."""
    clip = make_chiptune(5.11, stereo=stereo, seed=3)
    int16 = to_int16(clip)
    reference = np.asarray(riffusion_image(riffusion_mel_amplitudes(int16))).astype(int)
    ours = spectrogram_image(
        torch.from_numpy(int16.astype(np.float32) / INT16_SCALE), replace(PARAMS, stereo=stereo)
    )
    ours = np.asarray(ours).astype(int)
    assert ours.shape == reference.shape == (512, 512, 3)
    assert (ours == reference).mean() >= 0.999
    assert np.abs(ours - reference).max() <= 1


def test_long_songs_are_computed_in_exact_chunks():
    waveform = torch.from_numpy(make_chiptune(3.0))
    whole = mel_amplitudes(waveform, chunk_frames=100_000)
    pieces = mel_amplitudes(waveform, chunk_frames=37)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-3)


def test_float_path_keeps_what_8bit_rounds_away():
    waveform = torch.from_numpy(make_chiptune(2.0, stereo=True))
    amplitudes = mel_amplitudes(waveform)
    pixels, max_value = amplitudes_to_float_image(amplitudes)
    assert pixels.shape == (3, 512, amplitudes.shape[-1])
    assert pixels.min() >= 0 and pixels.max() <= 1
    back = float_image_to_amplitudes(pixels, max_value, stereo=True)
    torch.testing.assert_close(back, amplitudes, rtol=1e-3, atol=max_value * 1e-6)
    # The 8-bit image is the float image truncated to 256 levels.
    eight_bit = np.asarray(image_from_amplitudes(amplitudes)).transpose(2, 0, 1).astype(int)
    from_float = (pixels * 255).floor().numpy().astype(int)
    assert np.abs(eight_bit - from_float).max() <= 1
    # ... and loses detail the float path keeps.
    decoded = amplitudes_from_image(image_from_amplitudes(amplitudes)).amplitudes
    assert (back - amplitudes).abs().mean() < (decoded - amplitudes).abs().mean() / 10


def test_float_image_mono_and_stereo_channel_layout():
    amplitudes = torch.rand(2, 512, 8)
    stereo, _ = amplitudes_to_float_image(amplitudes)
    assert (stereo[0] == 0).all()
    mono, _ = amplitudes_to_float_image(amplitudes[:1])
    assert torch.equal(mono[0], mono[1]) and torch.equal(mono[1], mono[2])
    with pytest.raises(NeuroChipError):
        amplitudes_to_float_image(torch.rand(3, 512, 8))


def test_image_without_exif_is_read_with_defaults():
    waveform = torch.from_numpy(make_chiptune(1.0, stereo=True))
    plain = Image.fromarray(np.asarray(spectrogram_image(waveform, replace(PARAMS, stereo=True))))
    decoded = amplitudes_from_image(plain)
    assert decoded.params.stereo  # R empty, G != B
    assert decoded.max_value is None and decoded.num_samples is None
    mono = Image.fromarray(np.asarray(spectrogram_image(waveform[:1])))
    assert not amplitudes_from_image(mono).params.stereo


def test_wrong_image_height_is_a_clear_error():
    with pytest.raises(NeuroChipError, match="512"):
        amplitudes_from_image(Image.new("RGB", (100, 300), "white"))


def test_too_short_clip_is_a_clear_error():
    with pytest.raises(NeuroChipError, match="too short"):
        mel_amplitudes(torch.zeros(1, 1000))


def test_not_an_image_is_a_clear_error(tmp_path):
    bogus = tmp_path / "song.png"
    bogus.write_text("not a png")
    with pytest.raises(NeuroChipError, match="song.png"):
        load_image(bogus)
    with pytest.raises(NeuroChipError, match="No such image"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(NeuroChipError, match=".png"):
        save_image(Image.new("RGB", (4, 512)), tmp_path / "out.jpg")


def test_params_validate_and_round_trip_exif():
    params = SpectrogramParams(stereo=True, max_frequency=8000)
    assert SpectrogramParams.from_exif(params.to_exif()) == params
    with pytest.raises(NeuroChipError):
        SpectrogramParams(max_frequency=30000)
