from __future__ import annotations

import dataclasses

import pytest
import torch

from neurochip.errors import NeuroChipError
from neurochip.phase import (
    DEFAULT_ITERATIONS,
    DEVICE_CHUNK_COLUMNS,
    MAX_ITERATIONS,
    PhaseSettings,
    _band_pair,
    griffin_lim,
    mel_to_linear,
    roundtrip,
    waveform_from_amplitudes,
)
from neurochip.spectrogram import (
    INT16_SCALE,
    SpectrogramParams,
    mel_amplitudes,
    mel_filterbank,
    padded_signal,
    stft_frames,
)
from tests.chiptune import make_chiptune

SR = 44100
PARAMS = SpectrogramParams()


def chip(seconds: float, stereo: bool = False, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(make_chiptune(seconds, stereo=stereo, seed=seed))


def spectral_convergence_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Band-limited (10 kHz) STFT spectral convergence, estimate level-matched."""

    def mag(x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, 1024, 256, window=torch.hann_window(1024), return_complex=True)
        return spec.abs()[:, : int(10000 / SR * 1024)]

    ref, est = mag(reference), mag(estimate)
    est = est * (ref * est).sum() / (est * est).sum()
    return float(20 * torch.log10((ref - est).norm() / ref.norm()))


def test_band_pair_equals_the_dense_filter_bank():
    bank = _band_pair(PARAMS, "cpu")
    fb = mel_filterbank(PARAMS)[:, : bank.bins]
    linear = torch.rand(bank.bins, 7)
    mel = torch.rand(512, 7)
    torch.testing.assert_close(bank.forward(linear), fb @ linear, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bank.transpose(mel), fb.T @ mel, rtol=1e-4, atol=1e-5)


def test_inverse_mel_is_non_negative_and_fits():
    mel = mel_amplitudes(chip(1.0))
    linear = mel_to_linear(mel, PARAMS, iterations=32)
    assert linear.shape == (1, 8821, mel.shape[-1])
    assert linear.min() >= 0
    freqs = torch.linspace(0, SR / 2, 8821)
    assert not linear[:, freqs > 10000.5].any()
    fitted = mel_filterbank(PARAMS) @ linear
    start = (mel_filterbank(PARAMS) @ mel_to_linear(mel, PARAMS, iterations=0) - mel).norm()
    assert (fitted - mel).norm() / mel.norm() < 0.01
    assert (fitted - mel).norm() < start / 5  # the refinement does real work


def test_griffin_lim_from_the_true_spectrum_is_exact():
    waveform = chip(1.0) * INT16_SCALE
    spec = stft_frames(padded_signal(waveform, PARAMS), PARAMS, 0, PARAMS.num_frames(SR))
    out = griffin_lim(spec.abs(), PARAMS, SR, init=spec, iterations=0)
    torch.testing.assert_close(out, waveform, rtol=0, atol=float(waveform.abs().max()) * 1e-4)


def test_griffin_lim_iterations_improve_consistency():
    waveform = chip(1.0)
    magnitude = mel_to_linear(mel_amplitudes(waveform), PARAMS)
    generator = torch.Generator().manual_seed(0)
    errors = []
    for iterations in (0, 16):
        out = griffin_lim(
            magnitude, PARAMS, SR, iterations=iterations, generator=generator.manual_seed(0)
        )
        rebuilt = mel_amplitudes(out / INT16_SCALE)
        errors.append(float((rebuilt - mel_amplitudes(waveform)).norm()))
    assert errors[1] < errors[0] * 0.7


@pytest.mark.parametrize("samples", [int(7.3 * SR), 12345, 441 * 50])
def test_output_has_exactly_the_requested_length(samples):
    waveform = chip(samples / SR + 0.01)[:, :samples]
    out = roundtrip(waveform, PARAMS, PhaseSettings(iterations=1))
    assert out.shape == waveform.shape


def test_stereo_round_trip_keeps_channels_apart():
    waveform = chip(2.0, stereo=True)
    waveform[1] *= 0.25  # right much quieter
    out = roundtrip(waveform, SpectrogramParams(stereo=True), PhaseSettings(iterations=2))
    assert out.shape == waveform.shape
    ratio = out[1].pow(2).mean() / out[0].pow(2).mean()
    expected = waveform[1].pow(2).mean() / waveform[0].pow(2).mean()
    assert float(ratio) == pytest.approx(float(expected), rel=0.15)


def test_onsets_stay_within_one_frame():
    """A burst after silence starts where it started, within one 10 ms frame."""
    onset = int(1.2345 * SR)
    waveform = torch.zeros(1, 2 * SR)
    t = torch.arange(SR // 2) / SR
    waveform[0, onset : onset + SR // 2] = 0.5 * torch.sign(torch.sin(2 * torch.pi * 330 * t))
    for mode in ("source", "random"):
        out = roundtrip(waveform, PARAMS, PhaseSettings(mode=mode))
        envelope = out[0].abs()
        first = int(torch.nonzero(envelope > 0.1 * envelope.max())[0])
        assert abs(first - onset) <= PARAMS.hop_length, mode


def test_level_is_kept():
    waveform = chip(2.0) * 0.3
    out = roundtrip(waveform, PARAMS)
    rms_in, rms_out = waveform.pow(2).mean().sqrt(), out.pow(2).mean().sqrt()
    assert float(rms_out / rms_in) == pytest.approx(1.0, abs=0.12)


def test_source_phase_beats_riffusions_random_phase():
    waveform = chip(4.0, seed=5)
    source = roundtrip(waveform, PARAMS, PhaseSettings(mode="source"))
    random = roundtrip(waveform, PARAMS, PhaseSettings(mode="random"))
    sc_source = spectral_convergence_db(waveform, source)
    sc_random = spectral_convergence_db(waveform, random)
    assert sc_source < sc_random - 4.0, (sc_source, sc_random)


def test_roundtrip_defaults_to_the_closer_source_phase_setting():
    # At denoise 0 the magnitudes are the source's own: its phase alone fits them best, and
    # Griffin-Lim iterations only drift towards what the 8-bit picture lost.
    waveform = chip(4.0, seed=2)
    default = roundtrip(waveform, PARAMS)
    eight = roundtrip(waveform, PARAMS, PhaseSettings(mode="source", iterations=8))
    assert spectral_convergence_db(waveform, default) < spectral_convergence_db(waveform, eight)
    zero = roundtrip(waveform, PARAMS, PhaseSettings(mode="source", iterations=0))
    assert torch.equal(default, zero)


def test_codec_and_phase_take_audio_as_well_as_tensors():
    from neurochip.io.audio import Audio
    from neurochip.spectrogram import mel_amplitudes, spectrogram_image

    tensor = chip(2.0, stereo=True)
    audio = Audio(tensor.numpy(), SR)
    heard = roundtrip(audio)
    assert isinstance(heard, Audio) and heard.channels == 2 and heard.frames == audio.frames
    stereo = SpectrogramParams(stereo=True)
    assert torch.equal(torch.from_numpy(heard.samples), roundtrip(tensor, stereo))
    mono = tensor.mean(0, keepdim=True)
    assert torch.allclose(mel_amplitudes(audio), mel_amplitudes(mono), rtol=1e-4, atol=1e-2)
    assert spectrogram_image(audio).size == spectrogram_image(mono).size
    # Audio at another rate is resampled to the picture's rate first.
    at_48 = audio.resample(48000)
    assert mel_amplitudes(at_48).shape == mel_amplitudes(audio).shape


def test_chunked_reconstruction_matches_whole():
    waveform = chip(3.0)
    mel = mel_amplitudes(waveform)
    whole = waveform_from_amplitudes(
        mel, PARAMS, waveform.shape[1], PhaseSettings(iterations=2), source=waveform
    )
    chunked = waveform_from_amplitudes(
        mel,
        PARAMS,
        waveform.shape[1],
        PhaseSettings(iterations=2, chunk_frames=64),
        source=waveform,
    )
    # Independent chunks agree with the one-piece result, seams included.
    assert spectral_convergence_db(whole, chunked) < -25
    assert (chunked - whole).abs().max() < 0.1 * whole.abs().max()


@pytest.mark.parametrize("mode", ["source", "random"])
def test_channels_reconstructed_together_equal_one_at_a_time(mode):
    # Three takes' pictures stacked as channels (as the engine hands a pair or a grid over),
    # each with its own source: one pass over all of them, in the GPU's larger chunks,
    # gives each channel what it gets alone, its seed included (seed + channel).
    sources = torch.cat([chip(3.0, seed=s) for s in range(3)])
    mel = mel_amplitudes(sources)
    settings = PhaseSettings(mode=mode, iterations=3, seed=5)
    apart = waveform_from_amplitudes(
        mel, PARAMS, sources.shape[1], settings, source=sources, together=False
    )
    together = waveform_from_amplitudes(
        mel, PARAMS, sources.shape[1], settings, source=sources, together=True
    )
    assert together.shape == apart.shape == sources.shape
    for c in range(3):
        assert spectral_convergence_db(apart[c : c + 1], together[c : c + 1]) < -25
    alone = waveform_from_amplitudes(
        mel[2:], PARAMS, sources.shape[1], dataclasses.replace(settings, seed=7), source=sources[2:]
    )
    torch.testing.assert_close(apart[2:], alone)
    if mode == "source":
        # Same chunks: the same arithmetic, batched.
        same = dataclasses.replace(settings, chunk_frames=settings.frames_per_chunk)
        batched = waveform_from_amplitudes(
            mel, PARAMS, sources.shape[1], same, source=sources, together=True
        )
        torch.testing.assert_close(batched, apart, atol=2e-5, rtol=0)


def test_channels_together_go_through_griffin_lim_in_one_pass(monkeypatch):
    from neurochip import phase as phase_module

    shapes = []
    real = phase_module.griffin_lim

    def recorded(magnitude, *args, **kwargs):
        shapes.append(tuple(magnitude.shape[::2]))  # (channels, columns)
        return real(magnitude, *args, **kwargs)

    monkeypatch.setattr(phase_module, "griffin_lim", recorded)
    sources = torch.cat([chip(6.0, seed=s) for s in range(2)])
    mel = mel_amplitudes(sources)
    settings = PhaseSettings(iterations=1)
    waveform_from_amplitudes(mel, PARAMS, sources.shape[1], settings, source=sources, together=True)
    assert shapes == [(2, mel.shape[-1])]  # 601 columns: one chunk of both channels
    shapes.clear()
    waveform_from_amplitudes(mel, PARAMS, sources.shape[1], settings, source=sources)
    assert {c for c, _ in shapes} == {1} and len(shapes) == 2 * 3  # the CPU: 256-column chunks


def test_chunks_grow_when_channels_are_reconstructed_together():
    source = PhaseSettings()
    assert source.frames_per_chunk == 256  # the CPU's, one channel at a time
    assert source.frames_per_chunk_together(2) == DEVICE_CHUNK_COLUMNS // 2
    assert source.frames_per_chunk_together(64) == 256  # never smaller than the CPU's
    assert PhaseSettings(chunk_frames=100).frames_per_chunk_together(2) == 100  # as asked


def test_random_mode_is_reproducible_by_seed():
    waveform = chip(1.0)
    mel = mel_amplitudes(waveform)
    run = lambda seed: waveform_from_amplitudes(  # noqa: E731
        mel, PARAMS, SR, PhaseSettings(mode="random", iterations=2, seed=seed)
    )
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_progress_reaches_one():
    seen: list[float] = []
    roundtrip(chip(1.0), PARAMS, PhaseSettings(iterations=3), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_settings_validate():
    assert PhaseSettings().griffin_lim_iterations == DEFAULT_ITERATIONS["source"]
    assert PhaseSettings(mode="random").griffin_lim_iterations == 32
    with pytest.raises(NeuroChipError, match="phase mode"):
        PhaseSettings(mode="magic")  # type: ignore[arg-type]
    with pytest.raises(NeuroChipError):
        PhaseSettings(iterations=-1)
    assert PhaseSettings(iterations=MAX_ITERATIONS).griffin_lim_iterations == 1000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iterations": 10**8}, "Griffin-Lim iterations must be a whole number from 0 to 1000"),
        ({"iterations": 2.5}, "Griffin-Lim iterations must be a whole number"),
        ({"nnls_iterations": 10**8}, "Inverse mel iterations must be a whole number from 0 to"),
        ({"momentum": float("nan")}, "momentum must be a number from 0 to below 1, not nan"),
        ({"seed": -1}, "phase seed must be a whole number"),
        ({"chunk_frames": 0}, "Chunk frames must be a whole number from 1 to"),
        ({"chunk_frames": 10**9}, "Chunk frames must be a whole number from 1 to"),
    ],
)
def test_every_phase_setting_is_bounded(change, message):
    with pytest.raises(NeuroChipError, match=message):
        PhaseSettings(**change)


def test_settings_refuse_what_the_reconstruction_cannot_use():
    with pytest.raises(NeuroChipError, match="source audio"):
        waveform_from_amplitudes(torch.rand(1, 512, 10), PARAMS, settings=PhaseSettings())
    with pytest.raises(NeuroChipError, match="columns"):
        waveform_from_amplitudes(
            torch.rand(1, 512, 10), PARAMS, 100_000, PhaseSettings(mode="random")
        )
