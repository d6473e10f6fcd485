from __future__ import annotations

import dataclasses
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neurochip.engine import (
    QUICK_PREVIEW,
    Engine,
    count_unet_work,
    device_lock,
    plan_windows,
    region_picture,
    shifted_windows,
    tiled_along_time,
    window_columns,
    window_weight,
)
from neurochip.engine import core as engine_core
from neurochip.engine import device as engine_device
from neurochip.engine.riffusion import backend as riffusion_backend
from neurochip.engine.riffusion.lanes import Lane
from neurochip.engine.riffusion.latents import lazy_latents
from neurochip.engine.riffusion.pipeline import predict_windows
from neurochip.engine.riffusion.windows import FeatureReuse, WindowPlan
from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.io.audio import Audio
from neurochip.phase import waveform_from_amplitudes
from neurochip.settings import RenderSettings, Section
from neurochip.spectrogram import SpectrogramParams, mel_amplitudes
from tests.chiptune import make_chiptune

SR = 44100
# Few steps and no Griffin-Lim iterations: the tiny model makes noise anyway, and the tests
# are about lengths, alignment, determinism and plumbing, which these settings exercise fully.
FAST = RenderSettings(prompt="a string quartet", steps=6, denoise=0.5, phase_iterations=0)


def song(seconds: float, seed: int = 0) -> Audio:
    return Audio(make_chiptune(seconds, seed=seed), SR)


# --- windows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [8, 64, 65, 100, 280, 1001])
def test_windows_cover_every_column(width):
    starts = plan_windows(width, 64, 0.25)
    window = min(64, width)
    covered = np.zeros(width, dtype=int)
    for s in starts:
        covered[s : s + window] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] + window == width
    if len(starts) > 1:
        assert all(b - a <= 48 for a, b in zip(starts, starts[1:], strict=False))


def test_window_weight_tapers_but_never_vanishes():
    weight = window_weight(64, 0.25, torch.device("cpu"))
    assert weight.min() > 0 and weight.max() == 1
    assert weight[0] < 0.01 and weight[32] == 1
    torch.testing.assert_close(weight, weight.flip(0))


def _lanes_over(width: int, guidance: float, voices: int = 1):
    """Lanes as the shared loop holds them, with a stand-in for a take's prompts: enough for
    :func:`predict_windows`, which only reads their prompts, guidance and voice weights."""
    embedding = torch.zeros(1, 77, 8)
    weights = None
    if voices > 1:  # a prompt timeline: the first half one voice, a ramp, then the other
        ramp = torch.linspace(-4, 4, width).sigmoid()
        weights = torch.stack([1 - ramp, ramp])
    return Lane(
        scheduler=None,
        timesteps=torch.tensor([500, 400]),
        latents=torch.zeros(1, 4, 8, width),
        positives=[embedding] * voices,
        negatives=[embedding if guidance > 1 else None] * voices,
        guidances=[guidance] * voices,
        strengths=[1.0] * voices,
        guided_steps=2,
        step_options={},
        noise=torch.zeros(1),
        init=torch.zeros(1),
        steps=2,
        weights=weights,
    )


class _PointwiseUNet:
    """A UNet stand-in whose prediction is a known function of each input value, so any
    blend of windows that is a weighted mean gives back the function of the whole."""

    calls = 0

    def __call__(self, sample, t, encoder_hidden_states):
        self.calls += 1
        return SimpleNamespace(sample=torch.sin(3 * sample) * 2 + sample**2)


@pytest.mark.parametrize(
    "windows, overlap, guidance, voices, batch",
    [
        ("overlap", 0.25, 1.0, 1, 1),
        ("overlap", 0.5, 7.0, 1, 3),
        ("overlap", 0.5, 7.0, 2, 16),
        ("shifted", 0.25, 7.0, 1, 4),
    ],
)
def test_the_engines_window_blend_is_a_weighted_mean(windows, overlap, guidance, voices, batch):
    """The blend the denoising loop runs (:func:`predict_windows`): at every column the
    windows' weights, normalised, sum to one, so a pointwise prediction (and a constant one)
    comes out as predicting the whole song at once, across every window border, guidance
    pair, voice of a prompt timeline and packing of calls."""
    width = 203
    settings = RenderSettings(prompt="x", windows=windows, overlap=overlap)
    plan = WindowPlan(settings, width, 64, origin=5, whole=True)
    for k in range(2):
        starts, weight, norm = plan.at(k)
        total = torch.zeros(width)
        for start in starts:
            total[window_columns(start, weight.shape[0], width)] += (
                weight / norm[window_columns(start, weight.shape[0], width)]
            )
        torch.testing.assert_close(total, torch.ones(width))
        x = torch.randn(1, 4, 8, width)
        unet = _PointwiseUNet()
        lane = _lanes_over(width, guidance, voices)
        (out,) = predict_windows(
            SimpleNamespace(dtype=torch.float32),
            [lane],
            [x],
            k,
            plan,
            batch,
            FeatureReuse(unet, 1),
            lambda: None,
        )
        torch.testing.assert_close(out, torch.sin(3 * x) * 2 + x**2, rtol=1e-5, atol=1e-5)
        assert unet.calls >= 1
        constant = torch.full((1, 4, 8, width), 0.25)
        (flat,) = predict_windows(
            SimpleNamespace(dtype=torch.float32),
            [lane],
            [constant],
            k,
            plan,
            batch,
            FeatureReuse(_PointwiseUNet(), 1),
            lambda: None,
        )
        assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-6)


def test_the_engines_blend_moves_smoothly_where_windows_disagree():
    """Where windows disagree (each call predicts its own constant), the blend moves smoothly
    from one to the next instead of jumping at a seam."""
    width = 160
    plan = WindowPlan(RenderSettings(prompt="x", overlap=0.5), width, 64)
    calls = iter(range(100))

    def unet(sample, t, encoder_hidden_states):
        return SimpleNamespace(sample=torch.full_like(sample, float(next(calls))))

    (out,) = predict_windows(
        SimpleNamespace(dtype=torch.float32),
        [_lanes_over(width, 1.0)],
        [torch.zeros(1, 1, 1, width)],
        0,
        plan,
        1,
        FeatureReuse(unet, 1),
        lambda: None,
    )
    line = out[0, 0, 0]
    assert line[0] == 0 and line[-1] == len(plan.at(0)[0]) - 1
    assert line.diff().abs().max() < 0.2  # no step anywhere


@pytest.mark.parametrize("width", [512, 1024, 1600, 4096])
def test_vae_tiling_keeps_full_height_and_equals_the_untiled_result(width):
    """Local maps (like a VAE's, away from tile edges) come out the same tiled or whole, and
    every tile is the picture's full height."""
    x = torch.rand(1, 3, 64, width)
    heights = []

    def encode_like(tile: torch.Tensor) -> torch.Tensor:
        heights.append(tile.shape[-2])
        return torch.nn.functional.avg_pool2d(tile, 8)

    def decode_like(tile: torch.Tensor) -> torch.Tensor:
        return tile.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)

    down = tiled_along_time(encode_like, x, 512, 64, 1 / 8)
    torch.testing.assert_close(down, encode_like(x), rtol=1e-5, atol=1e-6)
    assert set(heights) == {64}
    up = tiled_along_time(decode_like, down, 64, 8, 8)
    torch.testing.assert_close(up, decode_like(down), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("at_once", [2, 3, 64])
def test_vae_tiles_in_batches_are_the_tiles_one_at_a_time(at_once):
    from neurochip.engine.riffusion.latents import tile_starts

    x = torch.rand(2, 4, 64, 700)  # two takes, seven tiles of 128 columns
    tiles = len(tile_starts(700, 128, 16))
    batches = []

    def decode_like(tiles: torch.Tensor) -> torch.Tensor:
        batches.append(tiles.shape[0])
        return torch.sin(tiles).repeat_interleave(8, dim=-1)

    one = tiled_along_time(decode_like, x, 128, 16, 8)
    assert batches == [2] * tiles == [2] * 7
    batches.clear()
    together = tiled_along_time(decode_like, x, 128, 16, 8, tiles_at_once=at_once)
    torch.testing.assert_close(together, one)
    assert sum(batches) == 2 * tiles and batches[0] == 2 * min(at_once, tiles)


def test_nan_from_the_model_is_a_clear_error(engine, monkeypatch):
    vae = engine.model.vae
    original = vae.decode

    class Broken:
        def __init__(self, sample):
            self.sample = sample

    monkeypatch.setattr(vae, "decode", lambda z: Broken(original(z).sample * float("nan")))
    with pytest.raises(NeuroChipError, match="fp32"):
        engine.render(song(1.0), FAST)


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [7.3, 61.0])
def test_output_length_equals_input_exactly(engine, seconds):
    audio = song(seconds)
    render = engine.render(audio, dataclasses.replace(FAST, steps=2))
    assert render.audio.frames == audio.frames
    assert render.audio.channels == 1
    assert np.isfinite(render.audio.samples).all()
    assert render.output_image.shape == (3, 512, 1 + audio.frames // 441)


@pytest.mark.parametrize(("start", "duration"), [(1.0, 2.5), (0.37, None), (3.0, 1.2345)])
def test_span_length_and_alignment(engine, start, duration):
    audio = song(6.0)
    settings = dataclasses.replace(FAST, start_s=start, duration_s=duration)
    render = engine.render(audio, settings)
    span = audio.span(start, duration)
    assert render.audio.frames == span.frames
    assert np.array_equal(render.source.samples, span.to_mono().samples)
    assert render.start_s == pytest.approx(start, abs=1 / SR)


def test_same_seed_same_take_other_seed_other_take(engine, tiny_model):
    audio = song(3.0)
    first = engine.render(audio, FAST).audio.samples
    again = Engine(tiny_model).render(audio, FAST).audio.samples
    other = engine.render(audio, dataclasses.replace(FAST, seed=7)).audio.samples
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_batch_size_does_not_change_the_take(engine):
    audio = song(9.0)
    one = engine.render(audio, dataclasses.replace(FAST, batch_size=1)).audio.samples
    many = engine.render(audio, dataclasses.replace(FAST, batch_size=16)).audio.samples
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_out_of_memory_halves_the_batch_and_keeps_the_take(engine, tiny_model, monkeypatch):
    audio = song(9.0)
    expected = engine.render(audio, dataclasses.replace(FAST, batch_size=2)).audio.samples
    unet = tiny_model.unet
    forward = type(unet).forward
    sizes = []

    def small_gpu(self, sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        if sample.shape[0] > 2:  # pretend more than one guided window does not fit
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(unet), "forward", small_gpu)
    render = engine.render(audio, dataclasses.replace(FAST, batch_size=16))
    assert sizes[0] > 2 and sizes[-1] == 2  # tried the big batch, finished one window a call
    np.testing.assert_allclose(render.audio.samples, expected, atol=1e-4)


# --- several takes in one loop ---------------------------------------------------------------


def count_unet_calls(model) -> list[int]:
    """A list that gets each UNet call's batch size (remove nothing: tests end with it)."""
    sizes: list[int] = []
    model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(int(args[0].shape[0])), with_kwargs=True
    )
    return sizes


VARIED = [
    FAST,
    dataclasses.replace(FAST, seed=7),
    dataclasses.replace(FAST, denoise=0.8, guidance=3.0),
    dataclasses.replace(FAST, guidance=1.0, prompt="a funk band"),  # no guidance pair
    dataclasses.replace(FAST, steps=9, scheduler="ddim", negative_prompt="noise"),
]


def test_render_many_equals_rendering_each_take_alone(engine):
    audio = song(9.0)
    together = engine.render_many(audio, [dataclasses.replace(t, batch_size=7) for t in VARIED])
    assert len(together) == len(VARIED)
    for take, settings in zip(together, VARIED, strict=True):
        alone = engine.render(audio, settings)
        assert take.settings.seed == settings.seed and take.audio.frames == audio.frames
        np.testing.assert_allclose(take.audio.samples, alone.audio.samples, atol=1e-4)
        np.testing.assert_allclose(take.output_image, alone.output_image, atol=1e-4)
    # ... and they are different takes, not one take five times.
    assert not np.allclose(together[0].audio.samples, together[1].audio.samples)


def test_takes_are_decoded_in_one_batch_and_phased_in_one_pass(tiny_model, monkeypatch):
    audio = song(6.0)  # 75 latent columns: two VAE tiles
    takes = [dataclasses.replace(FAST, seed=s, phase_iterations=2) for s in (1, 4, 8)]
    decoded: list[int] = []
    hook = tiny_model.vae.decoder.register_forward_pre_hook(
        lambda module, args: decoded.append(args[0].shape[0])
    )
    phased: list[int] = []
    rebuild = riffusion_backend.waveform_from_amplitudes

    def counted(amplitudes, *args, **kwargs):
        phased.append(amplitudes.shape[0])
        return rebuild(amplitudes, *args, **kwargs)

    monkeypatch.setattr(riffusion_backend, "waveform_from_amplitudes", counted)
    try:
        together = Engine(tiny_model, decode_batch=3).render_many(audio, takes)
        assert decoded == [3, 3] and phased == [3]  # each tile once for all takes; one phase
        decoded.clear()
        phased.clear()
        alone = [Engine(tiny_model).render(audio, settings) for settings in takes]
        assert decoded == [1, 1] * 3 and phased == [1] * 3
    finally:
        hook.remove()
    for take, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(take.output_image, single.output_image, atol=1e-4)
        # The pictures' float rounding (batched convolutions sum in another order) grows
        # through the picture's power curve; still 1e-3 of the take's level.
        np.testing.assert_allclose(take.audio.samples, single.audio.samples, atol=5e-4)
    # The CPU decodes one take at a time unless told (a batch gains nothing there).
    backend = Engine(tiny_model).backend
    assert backend.decode_batch_size(3, torch.Size([1, 4, 64, 75]), tiny_model.vae) == 1


def test_takes_share_unet_calls_when_the_batch_has_room(engine, tiny_model):
    audio = song(9.0)  # three windows: six UNet items per guided take
    sizes = count_unet_calls(tiny_model)
    engine.render(audio, dataclasses.replace(FAST, batch_size=16))
    one_take = list(sizes)
    sizes.clear()
    engine.render_many(audio, [dataclasses.replace(FAST, batch_size=16, seed=s) for s in (1, 2)])
    assert len(sizes) == len(one_take) == FAST.denoise_steps
    assert sum(sizes) == 2 * sum(one_take)  # the same work, in as many calls


def test_preview_many_equals_each_preview(engine):
    audio = song(12.0)
    grid = [dataclasses.replace(FAST, seed=s, denoise=d) for s in (1, 2) for d in (0.3, 0.6)]
    previews = engine.preview_many(audio, grid, 4.0, 2.0)
    for preview, settings in zip(previews, grid, strict=True):
        alone = engine.preview(audio, settings, 4.0, 2.0)
        assert preview.start_s == alone.start_s == 4.0
        np.testing.assert_allclose(preview.audio.samples, alone.audio.samples, atol=1e-4)


def test_takes_rendered_together_must_share_their_span(engine):
    audio = song(6.0)
    with pytest.raises(NeuroChipError, match="same span"):
        engine.render_many(audio, [FAST, dataclasses.replace(FAST, start_s=1.0)])
    with pytest.raises(NeuroChipError, match="same windows"):
        engine.preview_many(audio, [FAST, dataclasses.replace(FAST, overlap=0.5)], 0.0)
    with pytest.raises(ValueError):
        engine.render_many(audio, [])


def test_a_slider_change_does_not_hash_the_song_or_encode_the_prompt_again(
    engine, tiny_model, monkeypatch
):
    audio = Audio(make_chiptune(12.0, stereo=True), SR)  # stereo: mixed down once, not per call
    hashed, prompts = [], []
    real_key, real_encode = engine_core.content_key, tiny_model.encode_prompt
    monkeypatch.setattr(engine_core, "content_key", lambda m: hashed.append(1) or real_key(m))
    monkeypatch.setattr(tiny_model, "encode_prompt", lambda p: prompts.append(p) or real_encode(p))
    first = engine.preview(audio, FAST, 2.0, 2.0)
    again = engine.preview(audio, dataclasses.replace(FAST, seed=9), 2.0, 2.0)
    assert len(hashed) == 1 and sorted(prompts) == sorted([FAST.prompt, FAST.negative_prompt])
    assert not np.allclose(first.audio.samples, again.audio.samples)  # the seed still counts
    # Another song (a new array) is prepared afresh.
    engine.preview(Audio(audio.samples.copy() * 0.5, SR), FAST, 2.0, 2.0)
    assert len(hashed) == 2


def test_progress_follows_the_time_each_stage_took_last_time(tiny_model, monkeypatch):
    # A fake clock: each UNet item "takes" 0.01 s and phase 3 s per second of audio, as on a
    # CPU where phase dominates; the engine must learn that, not keep a fixed 10 % for phase.
    now = [0.0]
    engine = Engine(tiny_model, clock=lambda: now[0])
    tiny_model.unet.register_forward_pre_hook(
        lambda module, args: now.__setitem__(0, now[0] + 0.01 * args[0].shape[0])
    )
    real_phase = riffusion_backend.waveform_from_amplitudes

    def slow_phase(amplitudes, params, length, *args, progress=None, **kwargs):
        # 3 s per second of each take's audio (takes rendered together come as channels).
        began, cost = now[0], 3.0 * length / params.sample_rate * amplitudes.shape[0]

        def timed(fraction: float) -> None:  # the clock moves as the phase work does
            now[0] = began + cost * fraction
            if progress is not None:
                progress(fraction)

        waveform = real_phase(amplitudes, params, length, *args, progress=timed, **kwargs)
        now[0] = began + cost
        return waveform

    monkeypatch.setattr(riffusion_backend, "waveform_from_amplitudes", slow_phase)
    audio = song(12.0)
    engine.preview(audio, FAST, 3.0, 3.0)  # learns this device's rates
    seen = []
    began = now[0]
    second = engine.preview(
        audio,
        dataclasses.replace(FAST, seed=3),
        3.0,
        3.0,
        progress=lambda f, s: seen.append((f, now[0] - began)),
    )
    total = now[0] - began
    assert total > 8  # phase (9 s) dominates, as set up
    assert second.seconds == pytest.approx(total, abs=1e-3)  # what the app shows
    for fraction, elapsed in seen:
        assert fraction == pytest.approx(elapsed / total, abs=0.05)
    # So a time-left estimate from the fraction never climbs: at every report it is within
    # a few per cent of the truth.
    for fraction, elapsed in seen:
        if 0.05 < fraction < 1:
            assert elapsed * (1 - fraction) / fraction == pytest.approx(total - elapsed, abs=0.6)
    # The same measured rates tell a composer how long a whole render will take here.
    assert Engine(tiny_model).estimate_s(audio, [FAST]) is None  # nothing measured yet
    expected = engine.estimate_s(audio, [FAST, dataclasses.replace(FAST, seed=9)])
    began = now[0]
    engine.render_many(audio, [FAST, dataclasses.replace(FAST, seed=9)])
    assert expected == pytest.approx(now[0] - began, rel=0.1)


def test_denoise_zero_is_the_source_path_reconstruction(engine):
    audio = song(2.5)
    render = engine.render(audio, dataclasses.replace(FAST, denoise=0.0, phase_iterations=2))
    waveform = torch.from_numpy(audio.samples)
    expected = waveform_from_amplitudes(
        mel_amplitudes(waveform),
        SpectrogramParams(),
        audio.frames,
        dataclasses.replace(FAST, phase_iterations=2).phase_settings,
        source=waveform,
    )
    np.testing.assert_allclose(render.audio.samples, expected.numpy(), atol=2e-4)


def test_the_model_changes_the_picture(engine):
    render = engine.render(song(2.0), dataclasses.replace(FAST, denoise=0.8))
    assert (render.output_image - render.input_image).abs().mean() > 0.01


def test_progress_reports_every_stage_in_order(engine):
    seen: list[tuple[float, str]] = []
    engine.render(song(2.0), FAST, progress=lambda f, stage: seen.append((f, stage)))
    fractions = [f for f, _ in seen]
    stages = [s for _, s in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert stages[0] == "encode" and "decode" in stages and "phase" in stages
    assert f"denoise step 3 of {FAST.denoise_steps}" in stages


def test_cancel_stops_within_one_unet_call(engine, tiny_model):
    cancel = threading.Event()
    calls = []
    hook = tiny_model.unet.register_forward_hook(lambda *a: calls.append(cancel.is_set()))

    def progress(fraction: float, stage: str) -> None:
        if stage.startswith("denoise step 1 "):
            cancel.set()

    try:
        with pytest.raises(RenderCancelled):
            engine.render(song(12.0), dataclasses.replace(FAST, batch_size=2), progress, cancel)
    finally:
        hook.remove()
    assert calls and calls.count(True) == 0  # no UNet call started after the cancel


@pytest.mark.parametrize("stage", ["decode", "phase"])
def test_cancel_stops_in_the_stages_after_denoising_too(engine, stage):
    cancel = threading.Event()
    seen = []

    def progress(fraction: float, label: str) -> None:
        seen.append(label)
        if label == stage:
            cancel.set()  # the composer clicks Cancel while this stage runs

    with pytest.raises(RenderCancelled):
        engine.render_many(song(6.0), [FAST, dataclasses.replace(FAST, seed=2)], progress, cancel)
    assert "done" not in seen and seen[-1] == stage


def test_a_songs_latents_encoded_by_region_equal_the_whole_songs(engine, tiny_model):
    picture = torch.rand(3, 512, 1500)  # three tiles and a padded end
    lazy = lazy_latents(engine.model, picture)
    model = tiny_model
    padded = torch.nn.functional.pad(picture[None], (0, 36, 0, 0), mode="replicate")  # to 1536

    def encode(pixels):
        return model.vae.encode((pixels * 2 - 1).to(model.device, model.dtype)).latent_dist.mode()

    with torch.no_grad():
        whole = tiled_along_time(encode, padded, 512, 64, 1 / 8) * model.latent_scaling
    assert lazy.shape == whole.shape
    region = lazy.columns(100, 130)  # asks for the middle first
    assert sum(lazy.done) < len(lazy.done)  # ... and encodes only the tiles under it
    torch.testing.assert_close(region, whole[..., 100:130], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lazy.full(), whole, atol=1e-5, rtol=1e-5)


def test_the_first_preview_of_a_long_song_encodes_only_its_region(engine, tiny_model):
    tiles = []
    tiny_model.vae.encoder.register_forward_pre_hook(lambda module, args: tiles.append(1))
    engine.preview(song(60.0), FAST, start_s=30.0, duration_s=2.0)
    assert 1 <= len(tiles) <= 4  # a 60 s song is 14 tiles
    engine.render(song(60.0), dataclasses.replace(FAST, start_s=0.0, duration_s=12.0))


def test_preview_reuses_the_song_encoding_and_is_exact(engine, monkeypatch):
    audio = song(12.0)
    encodes = []
    original = riffusion_backend.lazy_latents
    monkeypatch.setattr(
        riffusion_backend,
        "lazy_latents",
        lambda model, image: encodes.append(1) or original(model, image),
    )
    first = engine.preview(audio, FAST, start_s=2.004)
    second = engine.preview(audio, dataclasses.replace(FAST, seed=3), start_s=6.0)
    assert len(encodes) == 1
    assert first.audio.frames == round(5.12 * SR)
    assert first.start_s == pytest.approx(2.0)  # snapped to the 10 ms grid
    start = round(6.0 * SR)
    assert np.array_equal(second.source.samples, audio.samples[:, start : start + round(5.12 * SR)])


def test_preview_sounds_like_that_part_of_the_full_render(engine):
    """Same noise, same neighbourhood: the preview's picture follows the full render's."""
    audio = song(10.0)
    full = engine.render(audio, FAST)
    preview = engine.preview(audio, FAST, start_s=3.0)
    region = full.output_image[..., 300 : 300 + preview.output_image.shape[-1]]
    other = engine.render(audio, dataclasses.replace(FAST, seed=99)).output_image[
        ..., 300 : 300 + preview.output_image.shape[-1]
    ]
    same_seed = (preview.output_image - region).abs().mean()
    other_seed = (preview.output_image - other).abs().mean()
    assert same_seed < other_seed / 2


def test_a_quick_preview_renders_less_context_and_fewer_phase_iterations(
    engine, tiny_model, monkeypatch
):
    audio = song(20.0)
    settings = dataclasses.replace(FAST, phase_iterations=None)  # the take's own: 8
    sizes = count_unet_calls(tiny_model)
    iterations = []
    rebuild = riffusion_backend.waveform_from_amplitudes

    def counted(*args, **kwargs):
        iterations.append(args[3].griffin_lim_iterations)
        return rebuild(*args, **kwargs)

    monkeypatch.setattr(riffusion_backend, "waveform_from_amplitudes", counted)
    faithful = engine.preview(audio, settings, 8.0)
    faithful_items = sum(sizes)
    sizes.clear()
    quick = engine.preview(audio, settings, 8.0, quality=QUICK_PREVIEW)
    assert sum(sizes) == faithful_items // 2  # 2 windows of context and region, not 4
    assert iterations == [8, QUICK_PREVIEW.phase_iterations]
    assert quick.settings == settings  # what the take would be rendered with, unchanged
    assert (quick.start_s, quick.audio.frames) == (faithful.start_s, faithful.audio.frames)
    np.testing.assert_array_equal(quick.source.samples, faithful.source.samples)


def test_a_quick_preview_still_sounds_like_that_part_of_the_full_render(engine):
    audio = song(10.0)
    full = engine.render(audio, FAST)
    preview = engine.preview(audio, FAST, start_s=3.0, quality=QUICK_PREVIEW)
    width = preview.output_image.shape[-1]
    region = full.output_image[..., 300 : 300 + width]
    other = engine.render(audio, dataclasses.replace(FAST, seed=99)).output_image[
        ..., 300 : 300 + width
    ]
    same_seed = (preview.output_image - region).abs().mean()
    assert same_seed < (preview.output_image - other).abs().mean() / 2


def test_two_threads_queue_instead_of_colliding(engine):
    audio = song(2.0)
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.render(audio, FAST).audio.samples))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and np.array_equal(results[0], results[1])


class _WatchedLock:
    """A lock that tells when a thread starts waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = threading.Event()
        self.acquired_by: list[str] = []

    def __enter__(self):
        if self._lock.locked():
            self.waiting.set()
        self._lock.acquire()
        self.acquired_by.append(threading.current_thread().name)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


def test_two_engines_on_one_device_never_render_at_once(tiny_model, monkeypatch):
    # The app can hold an old engine still rendering while a new one loads on the same GPU.
    assert device_lock("cpu") is device_lock(torch.device("cpu"))
    assert device_lock("cpu") is not device_lock("meta")
    watched = _WatchedLock()
    monkeypatch.setitem(engine_device._DEVICE_LOCKS, "cpu", watched)
    first, second = Engine(tiny_model), Engine(tiny_model)
    in_first, release_first = threading.Event(), threading.Event()
    log: list[str] = []

    def hold(fraction: float, stage: str) -> None:
        log.append("first")
        in_first.set()
        release_first.wait(timeout=60)

    def note(fraction: float, stage: str) -> None:
        log.append("second")

    audio = song(1.0)
    one = threading.Thread(target=first.render, args=(audio, FAST, hold), name="one")
    two = threading.Thread(target=second.render, args=(audio, FAST, note), name="two")
    one.start()
    assert in_first.wait(timeout=60)
    two.start()
    # The second engine reaches the lock the first one holds, and waits there.
    assert watched.waiting.wait(timeout=60)
    assert "second" not in log
    release_first.set()
    one.join(timeout=120)
    two.join(timeout=120)
    assert watched.acquired_by == ["one", "two"]
    assert log.index("second") > max(i for i, who in enumerate(log) if who == "first")


def test_a_48_khz_song_renders_to_the_asked_length(engine):
    at_48 = Audio(make_chiptune(3.0, seed=4), SR).resample(48000)
    render = engine.render(at_48, dataclasses.replace(FAST, start_s=0.5, duration_s=2.0))
    assert render.audio.sample_rate == SR and render.audio.frames == 2 * SR
    assert render.source.frames == 2 * SR and render.start_s == pytest.approx(0.5)


def test_a_48_khz_song_previews_from_the_asked_second(engine):
    at_44 = Audio(make_chiptune(14.0, seed=3), SR)
    at_48 = at_44.resample(48000)
    preview = engine.preview(at_48, FAST, start_s=10.0, duration_s=2.0)
    assert preview.start_s == pytest.approx(10.0)
    # The picture it starts from is the song's own at 10 s (column 1000).
    whole = engine.preview(at_48, FAST, start_s=0.0, duration_s=14.0)
    np.testing.assert_allclose(
        preview.input_image, whole.input_image[..., 1000 : 1000 + preview.input_image.shape[-1]]
    )
    picture, start = region_picture(at_48, 10.0, 2.0)
    assert start == pytest.approx(10.0) and picture.shape == preview.input_image.shape


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "pndm", "euler", "euler-a", "lms"])
def test_every_scheduler_renders(engine, scheduler):
    render = engine.render(song(1.5), dataclasses.replace(FAST, scheduler=scheduler, steps=4))
    assert render.audio.frames == round(1.5 * SR)
    assert np.isfinite(render.audio.samples).all()


def test_span_past_the_end_is_a_clear_error(engine):
    with pytest.raises(NeuroChipError):
        engine.render(song(2.0), dataclasses.replace(FAST, start_s=5.0))


def test_the_song_cache_is_bounded_by_bytes_and_keeps_the_newest(tiny_model):
    engine = Engine(tiny_model, cache_bytes=1)  # smaller than any song
    for seed in (1, 2):
        engine.preview(song(6.0, seed=seed), FAST, start_s=0.0, duration_s=1.0)
        assert len(engine._cache) == 1  # only the song just used
    big = Engine(tiny_model, cache_bytes=1 << 30)
    for seed in (1, 2, 3):
        big.preview(song(6.0, seed=seed), FAST, start_s=0.0, duration_s=1.0)
    assert len(big._cache) == 3
    limit = big.cache_size_bytes() * 2 // 3 + 1  # room for two of the three songs
    bounded = Engine(tiny_model, cache_bytes=limit)
    for seed in (1, 2, 3):
        bounded.preview(song(6.0, seed=seed), FAST, start_s=0.0, duration_s=1.0)
    assert len(bounded._cache) == 2 and bounded.cache_size_bytes() <= limit


# --- less model work: shifted windows, feature reuse, guidance for the first steps (issue 11) --


SHIFTED = dataclasses.replace(FAST, windows="shifted")


@pytest.mark.parametrize("width", [64, 130, 200, 256, 2256])
def test_shifted_windows_tile_the_song_and_move_every_step(width):
    window = 64
    previous_edges: set[int] = set()
    for k in range(12):
        starts = shifted_windows(width, window, k)
        assert len(starts) == -(-width // window)  # as few as can cover it
        covered = torch.zeros(width)
        for s in starts:
            covered[window_columns(s, min(window, width), width)] += 1
        assert covered.min() >= 1  # every column, the wrapped ones included
        if width > window:
            edges = {s % width for s in starts}
            assert not edges & previous_edges  # no column is a window edge twice in a row
            previous_edges = edges


def test_a_regions_shifted_windows_stay_inside_and_line_up_with_the_songs():
    width, window, origin = 200, 64, 37
    for k in range(8):
        whole = shifted_windows(2000, window, k)
        edges = {s for s in whole}
        starts = shifted_windows(width, window, k, origin=origin, wrap=False)
        assert all(0 <= s <= width - window for s in starts)
        covered = torch.zeros(width)
        for s in starts:
            covered[s : s + window] += 1
        assert covered.min() >= 1
        inner = [s for s in starts if 0 < s < width - window]
        assert all(s + origin in edges for s in inner)  # the full render's windows, cut out


def test_shifted_windows_render_deterministic_takes_of_the_songs_length(engine):
    audio = song(9.0)
    first = engine.render(audio, SHIFTED)
    again = engine.render(audio, SHIFTED)
    assert first.audio.frames == audio.frames
    np.testing.assert_array_equal(first.audio.samples, again.audio.samples)
    overlap = engine.render(audio, FAST)
    assert not np.allclose(first.output_image, overlap.output_image)
    preview = engine.preview(audio, SHIFTED, 2.0, 2.0)
    assert preview.audio.frames == round(2.0 * SR)


def ramp_unet(monkeypatch, model) -> None:
    """A UNet whose prediction is a ramp across its window: every window edge is a step."""

    class Out:
        def __init__(self, sample):
            self.sample = sample

    def forward(self, sample, t, encoder_hidden_states=None, **kwargs):
        ramp = torch.linspace(-4.0, 4.0, sample.shape[-1], dtype=sample.dtype)
        return Out(ramp.expand_as(sample).clone())

    monkeypatch.setattr(type(model.unet), "forward", forward)


def test_shifted_windows_spread_the_seams_fixed_windows_put_in_one_place(
    engine, tiny_model, monkeypatch
):
    """A seam check: with a predictor that steps at every window edge, fixed windows leave
    steps in the latents at their borders; shifted ones spread them over many columns."""
    ramp_unet(monkeypatch, tiny_model)
    kept = []
    decode = riffusion_backend.decode
    monkeypatch.setattr(
        riffusion_backend,
        "decode",
        lambda model, x, *rest: kept.append(x) or decode(model, x, *rest),
    )
    audio = song(20.0)
    hard = dataclasses.replace(FAST, steps=20, denoise=0.9, overlap=0.0, guidance=0.0)
    ratios = {}
    for name, settings in (
        ("fixed", hard),
        ("shifted", dataclasses.replace(hard, windows="shifted")),
    ):
        kept.clear()
        engine.render(audio, settings)
        latents = kept[0][0]
        jumps = (latents[..., 1:] - latents[..., :-1]).abs().mean(dim=(0, 1))
        borders = [s - 1 for s in plan_windows(latents.shape[-1], 64, 0.0)[1:]]
        ratios[name] = float(jumps[borders].mean() / jumps.median())
    assert ratios["fixed"] > 4  # the check sees seams where there are some (7.0 measured)
    assert ratios["shifted"] < 1.5  # ... and hardly any after shifting (1.16 measured)


def test_render_many_with_shifted_windows_equals_each_take_alone(engine):
    audio = song(9.0)
    takes = [SHIFTED, dataclasses.replace(SHIFTED, seed=5, denoise=0.8)]
    for together, settings in zip(engine.render_many(audio, takes), takes, strict=True):
        alone = engine.render(audio, settings)
        np.testing.assert_allclose(together.output_image, alone.output_image, atol=1e-4)


def test_shallow_unet_with_the_same_steps_features_is_the_whole_unet(tiny_model):
    from neurochip.feature_reuse import full_unet, shallow_unet

    unet = tiny_model.unet
    sample = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 500, 10])
    context = torch.randn(3, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        whole, deep = full_unet(unet, sample, t, context)
        shallow = shallow_unet(unet, sample, t, context, deep)
        plain = unet(sample, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(whole, plain)
    torch.testing.assert_close(shallow, whole, atol=1e-5, rtol=1e-5)


def test_the_written_out_unet_is_the_whole_unet_and_keeps_the_same_features(tiny_model):
    from neurochip.feature_reuse import full_unet, written_out_unet

    unet = tiny_model.unet
    sample = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700, 30])
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        whole, deep = full_unet(unet, sample, t, context)
        written, written_deep = written_out_unet(unet, sample, t, context)
    torch.testing.assert_close(written, whole)
    torch.testing.assert_close(written_deep, deep)


def test_feature_reuse_runs_far_fewer_whole_unet_evaluations(engine, tiny_model):
    audio = song(9.0)
    calls = count_unet_calls(tiny_model)
    settings = dataclasses.replace(FAST, steps=40, denoise=0.5)  # 20 denoising steps
    plain = engine.render(audio, settings)
    whole_plain = len(calls)
    calls.clear()
    reused = engine.render(audio, dataclasses.replace(settings, feature_reuse=3))
    assert len(calls) <= 0.6 * whole_plain  # at least 40% fewer whole evaluations
    again = engine.render(audio, dataclasses.replace(settings, feature_reuse=3))
    np.testing.assert_array_equal(reused.audio.samples, again.audio.samples)
    assert reused.audio.frames == plain.audio.frames
    # Reusing features is an approximation, not another take: closer to the plain render
    # than another seed is.
    other = engine.render(audio, dataclasses.replace(settings, seed=99))
    near = (reused.output_image - plain.output_image).abs().mean()
    assert near < (other.output_image - plain.output_image).abs().mean()


def test_guidance_for_the_first_steps_only_drops_the_unconditioned_half_after(engine, tiny_model):
    audio = song(6.0)
    sizes = count_unet_calls(tiny_model)
    settings = dataclasses.replace(FAST, steps=20, denoise=0.5, batch_size=64)  # 10 steps
    engine.render(audio, settings)
    full = list(sizes)
    sizes.clear()
    engine.render(audio, dataclasses.replace(settings, guidance_until=0.3))
    assert len(sizes) == len(full) == 10
    assert sizes[:3] == full[:3] and all(
        2 * a == b for a, b in zip(sizes[3:], full[3:], strict=True)
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"windows": "shifted"},
        {"feature_reuse": 3},
        {"guidance_until": 0.5},
        {"windows": "shifted", "feature_reuse": 2, "guidance": 1.0},
        # A prompt timeline: windows across a boundary are heard with both voices (one of
        # them unguided), and the span starts into the song, where the sections are placed.
        {
            "sections": (
                Section(start_s=5.0, prompt="a brass band", guidance=1.0),
                Section(start_s=9.0, prompt="a choir"),
            ),
            "start_s": 1.0,
        },
    ],
)
def test_counting_unet_work_without_a_model_matches_the_engine(engine, tiny_model, changes):
    audio = song(13.0)
    takes = [
        dataclasses.replace(FAST, steps=12, batch_size=5, **changes),
        dataclasses.replace(FAST, steps=12, batch_size=5, seed=3, denoise=0.3, **changes),
    ]
    sizes = count_unet_calls(tiny_model)
    engine.render_many(audio, takes)
    counted = count_unet_work(
        SpectrogramParams().num_frames(audio.frames - round(takes[0].start_s * SR)),
        takes,
        5,
        tiny_model.vae_scale,
        tiny_model.unet_multiple,
    )
    assert counted["full_calls"] == len(sizes)  # the hook sees whole evaluations only
    assert counted["full_items"] == sum(sizes)
    if changes.get("feature_reuse", 1) == 1:
        assert counted["unet_calls"] == counted["full_calls"]


def test_the_lcm_scheduler_renders_a_few_step_draft(engine):
    audio = song(6.0)
    draft = dataclasses.replace(FAST, scheduler="lcm", steps=8, denoise=0.5, guidance=1.0)
    first = engine.render(audio, draft)
    again = engine.render(audio, draft)
    assert first.audio.frames == audio.frames
    np.testing.assert_array_equal(first.audio.samples, again.audio.samples)
    assert np.isfinite(first.audio.samples).all()
    assert not np.allclose(first.output_image, first.input_image, atol=1e-3)  # it did something


def test_calibration_measures_every_stage_on_one_windows_probe(tiny_model):
    engine = Engine(tiny_model)
    audio = song(30.0)
    assert engine.estimate_s(audio, [FAST]) is None  # nothing measured on this machine yet
    sizes = count_unet_calls(tiny_model)
    engine.calibrate(FAST)
    assert sum(sizes) == 2  # one window, one denoising step, the guidance pair
    estimate = engine.estimate_s(audio, [FAST])
    assert estimate is not None and estimate > 0
    assert engine.estimate_s(audio, [FAST, dataclasses.replace(FAST, seed=2)]) > estimate


def test_the_auto_batch_fills_a_share_of_free_memory_within_its_limits():
    from neurochip.engine import MAX_AUTO_BATCH, MEMORY_SHARE, batch_for_memory

    gib = 2**30
    item = int(0.35 * gib)  # one SD 1.5 item in fp16
    # An 8 GB card with the weights loaded: ~5.8 GiB free.
    assert batch_for_memory(int(5.8 * gib), item, 2) == int(5.8 * gib * MEMORY_SHARE // item)
    assert batch_for_memory(80 * gib, item, 2) == MAX_AUTO_BATCH  # a big card: capped
    assert batch_for_memory(0, item, 2) == 2  # never less than one guided window


def test_a_compiled_unet_renders_the_same_takes(tiny_model_dir):
    from neurochip.model import load_model

    audio = song(6.0)
    plain = Engine(load_model(tiny_model_dir, device="cpu"))
    model = load_model(tiny_model_dir, device="cpu")
    model.compile_unet(backend="eager")  # the wiring; inductor itself is for the GPU bench
    compiled = Engine(model)
    assert model.compiled
    for settings in (FAST, dataclasses.replace(FAST, steps=12, feature_reuse=2)):
        expected = plain.render(audio, settings).output_image
        np.testing.assert_allclose(
            compiled.render(audio, settings).output_image, expected, atol=1e-5
        )


def test_compile_modes_are_checked_and_reach_torch_compile(tiny_model_dir, monkeypatch):
    from neurochip.model import load_model

    model = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(NeuroChipError, match="reduce-overhead"):
        model.compile_unet(mode="fastest")
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: seen.append(kw) or m)
    model.compile_unet(mode="reduce-overhead")  # CUDA graphs of the window shape
    model.compile_unet()
    assert [kw["mode"] for kw in seen] == ["reduce-overhead", None]


def test_a_compiled_unet_compiles_the_feature_reuse_paths_alike(tiny_model_dir, monkeypatch):
    from neurochip.model import load_model

    model = load_model(tiny_model_dir, device="cpu")
    seen = []

    def compile(fn, **options):
        seen.append((getattr(fn, "__name__", type(fn).__name__), options))
        return fn

    monkeypatch.setattr(torch, "compile", compile)
    model.compile_unet(mode="reduce-overhead")
    Engine(model).render(song(3.0), dataclasses.replace(FAST, steps=12, feature_reuse=2))
    options = {"backend": "inductor", "mode": "reduce-overhead"}
    assert seen[1:] == [("written_out_unet", options), ("shallow_unet", options)]  # drafts too


def test_channels_last_weights_render_the_same_takes(tiny_model_dir):
    from neurochip.model import load_model

    audio = song(6.0)
    expected = Engine(load_model(tiny_model_dir, device="cpu")).render(audio, FAST)
    model = load_model(tiny_model_dir, device="cpu")
    model.use_channels_last()
    conv = model.unet.conv_in.weight
    assert model.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    take = Engine(model).render(audio, FAST)
    np.testing.assert_allclose(take.output_image, expected.output_image, atol=1e-4)


@pytest.mark.parametrize("windows", ["overlap", "shifted"])
def test_nothing_in_the_denoising_loop_waits_on_the_host(engine, windows):
    """Host round trips a GPU would wait on (a scalar read back, a tensor made from a Python
    list), counted by the profiler on the CPU: none grow with the steps."""
    import collections

    from torch.profiler import ProfilerActivity, profile

    audio = song(12.0)  # three windows; shifted ones wrap round the end
    waits = ("aten::_local_scalar_dense", "aten::lift_fresh", "aten::nonzero")

    def counted(steps: int) -> dict[str, int]:
        settings = RenderSettings(prompt="x", steps=steps, denoise=1.0, windows=windows)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            engine.render(audio, settings)
        seen = collections.Counter(event.name for event in profiler.events())
        return {name: seen[name] for name in waits}

    counted(4)  # the prompt's embedding and the song's picture: made once, then kept
    assert counted(4) == counted(8)


def test_the_denoising_loop_runs_in_inference_mode(engine, tiny_model):
    modes = []
    hook = tiny_model.unet.register_forward_pre_hook(
        lambda module, args: modes.append(torch.is_inference_mode_enabled())
    )
    try:
        engine.render(song(3.0), FAST)
    finally:
        hook.remove()
    assert modes and all(modes)


def test_a_gpus_render_lock_holds_across_processes(tmp_path):
    """The app and `neurochip serve` side by side take turns on a GPU (a file lock)."""
    import subprocess
    import sys

    from neurochip.engine import DeviceLock, device_lock_file

    path = tmp_path / "cuda-0.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.readline()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # another process renders
        lock = DeviceLock(path)
        assert not lock.acquire(blocking=False)
        assert not lock.locked()  # this process's threads are not left holding it
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
    assert lock.acquire(blocking=False)  # its turn came when the other let go
    lock.release()
    assert device_lock("cpu").lock_file is None  # a CPU: within this process only
    assert device_lock_file("cuda:0").name.endswith("-cuda-0.lock")


def test_apple_gpus_fall_back_to_the_cpu_for_missing_kernels():
    """MPS has no kernel for some complex-number steps of the phase rebuild: the package asks
    PyTorch to run those on the CPU (before torch is imported), unless someone chose."""
    import subprocess
    import sys

    code = "import os, neurochip, torch; print(os.environ['PYTORCH_ENABLE_MPS_FALLBACK'])"
    clean = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    said = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True)
    assert said.stdout.strip() == "1", said.stderr
    chosen = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTORCH_ENABLE_MPS_FALLBACK": "0"},
        capture_output=True,
        text=True,
    )
    assert chosen.stdout.strip() == "0", chosen.stderr


def test_progress_stages_are_said_in_a_composers_words():
    from neurochip.engine import STAGES
    from neurochip.stage_words import STAGE_WORDS, stage_words

    assert set(STAGE_WORDS) == set(STAGES)  # every stage the engine reports has its words
    assert stage_words("denoise step 3 of 17") == "denoising: step 3 of 17"
    assert stage_words("phase") == "rebuilding the sound"
    assert stage_words("measuring note faithfulness") == "measuring note faithfulness"


class _FakeCuda:
    """CUDA's memory counters as the allocator keeps them, driven by the test."""

    def __init__(self, allocated: int, peak: int) -> None:
        self.allocated, self.peak, self.resets = allocated, peak, 0

    def use(self, extra: int) -> None:  # a call that holds ``extra`` bytes at its peak
        self.peak = max(self.peak, self.allocated + extra)

    def install(self, monkeypatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda device=None: self.peak)

        def reset(device=None) -> None:
            self.resets += 1
            self.peak = self.allocated

        monkeypatch.setattr(cuda, "reset_peak_memory_stats", reset)


@pytest.mark.parametrize("earlier_peak", [1_000, 50_000])
def test_the_memory_probe_measures_a_call_and_keeps_the_whole_renders_peak(
    monkeypatch, earlier_peak
):
    """A probe that sets a new peak is read without resetting CUDA's counter; one hidden
    under an earlier peak (a big encode before it) is measured on a reset counter, and the
    peak from before the reset is kept: either way the call's own bytes are measured, and
    the render's peak (what bench/render.py reports) covers everything."""
    from neurochip.engine.device import MemoryProbe

    cuda = _FakeCuda(allocated=10_000, peak=earlier_peak)
    cuda.install(monkeypatch)
    probe = MemoryProbe(torch.device("cuda"))
    assert probe.bytes_of(("unet", 64, 64), lambda: cuda.use(2_000)) == 2_000
    assert cuda.resets == (0 if earlier_peak < 12_000 else 1)
    assert probe.peak_bytes() == max(earlier_peak, 12_000)
    # Measured once per shape.
    assert probe.bytes_of(("unet", 64, 64), lambda: cuda.use(9_999_999)) == 2_000
