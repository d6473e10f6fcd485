"""Re-rolling a region of a take (issue 12): the rest of the take stays exactly as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from neurochip.cli import main
from neurochip.engine import REROLL_MARGIN_S, RerollBounds, reroll_bounds
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.library.metadata import read_take_metadata, settings_from_take
from neurochip.library.store import TakeLibrary
from neurochip.reroll import region_of_take
from neurochip.settings import RenderSettings
from neurochip.sketch import load_sketch
from tests.chiptune import make_chiptune

SR = 44100
FAST = RenderSettings(prompt="a string quartet", steps=6, denoise=0.5, phase_iterations=0)


def spectral_convergence_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """How far ``estimate``'s magnitude spectrogram lies from ``reference``'s (dB)."""
    window = torch.hann_window(1024)

    def spec(x: np.ndarray) -> torch.Tensor:
        return torch.stft(torch.from_numpy(x), 1024, 256, window=window, return_complex=True).abs()

    ref, est = spec(reference), spec(estimate)
    error = torch.linalg.norm(ref - est) / max(float(torch.linalg.norm(ref)), 1e-12)
    return 20 * float(np.log10(max(float(error), 1e-12)))


@pytest.fixture(scope="module")
def song() -> Audio:
    return Audio(make_chiptune(8.0, seed=3), SR)


@pytest.fixture(scope="module")
def parent(tiny_model, song):
    from neurochip.engine import Engine

    return Engine(tiny_model).render(song, FAST)


def test_a_reroll_keeps_the_take_outside_its_region_and_margins_and_changes_the_region(
    engine, song, parent
):
    region = (3.0, 5.0)
    [child] = engine.reroll_many(song, parent.audio, [dataclasses.replace(FAST, seed=7)], region)
    assert child.audio.frames == parent.audio.frames  # sample for sample the take's length
    assert child.audio.sample_rate == parent.audio.sample_rate
    margin = round(REROLL_MARGIN_S * SR)
    before = slice(0, round(region[0] * SR) - margin)
    after = slice(round(region[1] * SR) + margin, None)
    old, new = parent.audio.samples[0], child.audio.samples[0]
    for outside in (before, after):
        np.testing.assert_array_equal(new[outside], old[outside])  # exactly as it was
        assert spectral_convergence_db(old[outside], new[outside]) <= -30
    inside = slice(round(region[0] * SR), round(region[1] * SR))
    assert spectral_convergence_db(old[inside], new[inside]) > -10  # another seed: new bars
    assert child.info["reroll"] == {"region_s": [3.0, 5.0], "margin_s": REROLL_MARGIN_S}
    # The picture shows the new region over the take's own.
    assert child.output_image.shape == parent.output_image.shape


def test_the_same_seed_and_settings_give_back_the_region_nearly_as_it_was(engine, song, parent):
    # The region's own latents denoise as they did in the parent (same noise, same
    # settings); only the blend at its edges, and the parent's picture re-encoded for the
    # context, differ. A sanity check on the plumbing: nothing is shifted or scaled.
    [same] = engine.reroll_many(song, parent.audio, [FAST], (3.0, 5.0))
    [other] = engine.reroll_many(
        song, parent.audio, [dataclasses.replace(FAST, seed=7)], (3.0, 5.0)
    )
    inside = slice(round(3.2 * SR), round(4.8 * SR))
    old = parent.audio.samples[0, inside]
    close = spectral_convergence_db(old, same.audio.samples[0, inside])
    far = spectral_convergence_db(old, other.audio.samples[0, inside])
    assert close < far - 3


def test_candidates_rerolled_together_equal_each_rerolled_alone(engine, song, parent):
    seeds = [dataclasses.replace(FAST, seed=s) for s in (11, 12)]
    together = engine.reroll_many(song, parent.audio, seeds, (2.0, 3.5))
    for settings, result in zip(seeds, together, strict=True):
        [alone] = engine.reroll_many(song, parent.audio, [settings], (2.0, 3.5))
        np.testing.assert_allclose(result.audio.samples, alone.audio.samples, atol=1e-4)


def test_a_region_at_the_takes_edges_reaches_them(engine, song, parent):
    [start] = engine.reroll_many(song, parent.audio, [dataclasses.replace(FAST, seed=9)], (0, 1))
    [end] = engine.reroll_many(song, parent.audio, [dataclasses.replace(FAST, seed=9)], (7, 99))
    old = parent.audio.samples[0]
    cut = round((1 + REROLL_MARGIN_S) * SR)
    np.testing.assert_array_equal(start.audio.samples[0, cut:], old[cut:])
    assert not np.array_equal(start.audio.samples[0, :SR], old[:SR])
    cut = round((7 - REROLL_MARGIN_S) * SR)
    np.testing.assert_array_equal(end.audio.samples[0, :cut], old[:cut])
    assert not np.array_equal(end.audio.samples[0, 7 * SR :], old[7 * SR :])


def test_a_span_of_a_longer_song_is_rerolled_in_place(engine, song):
    span = dataclasses.replace(FAST, start_s=2.0, duration_s=5.0)
    parent = engine.render(song, span)
    [child] = engine.reroll_many(
        song, parent.audio, [dataclasses.replace(span, seed=4)], (1.0, 2.0)
    )
    assert child.start_s == 2.0 and child.audio.frames == 5 * SR
    np.testing.assert_array_equal(
        child.audio.samples[0, 3 * SR :], parent.audio.samples[0, 3 * SR :]
    )


@pytest.mark.parametrize(
    ("region", "margin", "message"),
    [
        ((5.0, 4.0), 0.25, "end after it starts"),
        ((-1.0, 2.0), 0.25, "0 s or later"),
        ((9.0, 10.0), 0.25, "past the take's end"),
        ((1.0, 1.05), 0.25, "at least"),
        ((1.0, 2.0), -1.0, "margin"),
        ((1.0, float("nan")), 0.25, "end after it starts"),
    ],
)
def test_regions_outside_the_take_are_refused_in_words(region, margin, message):
    with pytest.raises(NeuroChipError, match=message):
        reroll_bounds(8 * SR, SR, region, margin)


def test_a_take_of_another_length_or_a_pair_is_refused(engine, song, parent):
    short = Audio(parent.audio.samples[:, : 4 * SR], SR)
    with pytest.raises(NeuroChipError, match="take's own start and duration"):
        engine.reroll_many(song, short, [FAST], (1.0, 2.0))
    pair = Audio(np.concatenate([parent.audio.samples] * 2), SR)
    with pytest.raises(NeuroChipError, match="single take"):
        engine.reroll_many(song, pair, [FAST], (1.0, 2.0))


def test_the_blend_weight_is_one_inside_zero_outside_and_smooth_between():
    bounds = RerollBounds((1000, 2000), 100, 5000)
    at = np.arange(5000) + 0.5
    w = bounds.weight_at(at)
    assert (w[1000:2000] == 1).all() and (w[:900] == 0).all() and (w[2100:] == 0).all()
    assert np.all(np.diff(w[900:1000]) >= 0) and np.all(np.diff(w[2000:2100]) <= 0)
    assert np.abs(np.diff(w)).max() < 0.02  # no jump anywhere
    assert bounds.rendered == (800, 2200)


# --- the workflow and the CLI ---------------------------------------------------------------

DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


def test_regions_said_in_bars_or_seconds_of_the_song_land_in_the_take():
    bars = [0.0, 1.8, 3.6, 5.4, 7.2, 9.0]
    # Bars 3-4 of the song, in a take that starts at 1 s.
    region = region_of_take(1.0, 10.0, bars="3-4", bar_times_s=bars)
    assert (region.start_s, region.end_s, region.bars) == (2.6, 6.2, (3, 4))
    region = region_of_take(1.0, 10.0, seconds="2.5-4", bar_times_s=None)
    assert (region.start_s, region.end_s, region.bars) == (1.5, 3.0, None)
    last = region_of_take(0.0, 10.0, bars="6-6", bar_times_s=bars)  # to the take's end
    assert (last.start_s, last.end_s) == (9.0, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bars": "3-4"}, "not known"),
        ({"bars": "3-4", "bar_times_s": [0.0, 2.0]}, "no bar 3"),
        ({"seconds": "20-30"}, "outside the take"),
        ({"seconds": "four-five"}, "FIRST-LAST"),
        ({}, "bars .* or seconds"),
        ({"bars": "1-2", "seconds": "1-2"}, "bars .* or seconds"),
    ],
)
def test_regions_that_cannot_be_placed_are_refused_in_words(kwargs, message):
    with pytest.raises(NeuroChipError, match=message):
        region_of_take(0.0, 10.0, **kwargs)


def test_reroll_on_the_command_line_keeps_the_take_and_records_its_lineage(
    tmp_path, tiny_model_dir
):
    model = ["--model", str(tiny_model_dir)]
    take = tmp_path / "take.wav"
    render = ["render", str(DEMO_MIDI), "-o", str(take), "--prompt", "a funk band"]
    assert main([*render, "--steps", "4", "--duration", "9", "--stereo-pair", *model]) == 0
    fixed = tmp_path / "fixed.wav"
    reroll = ["reroll", str(DEMO_MIDI), str(tmp_path / "take-A.wav"), "--bars", "3-4"]
    assert main([*reroll, "--seed", "5", "--candidates", "2", "-o", str(fixed), *model]) == 0
    parent, rate = sf.read(tmp_path / "take-A.wav")
    bars = sketch_bar_times(load_sketch(DEMO_MIDI))
    start, end = round(bars[2] * rate), round(bars[4] * rate)
    margin = round(REROLL_MARGIN_S * rate)
    for i, seed in ((1, 5), (2, 6)):
        path = tmp_path / f"fixed-{i}.wav"
        child, child_rate = sf.read(path)
        assert child_rate == rate and child.shape == parent.shape
        np.testing.assert_array_equal(child[: start - margin], parent[: start - margin])
        np.testing.assert_array_equal(child[end + margin :], parent[end + margin :])
        assert not np.array_equal(child[start:end], parent[start:end])
        meta = read_take_metadata(path)
        assert meta["reroll"]["parent"] == "take-A.wav" and meta["reroll"]["bars"] == [3, 4]
        assert settings_from_take(path).seed == seed
    # Kept in the library too, with the lineage.
    kept = [t for t in TakeLibrary().list() if "reroll" in t.metadata]
    assert len(kept) == 2


def test_reroll_refuses_a_pair_and_counts_an_audio_sketchs_bars_by_its_beat(
    tmp_path, tiny_model_dir, capsys
):
    model = ["--model", str(tiny_model_dir)]
    song = tmp_path / "song.wav"
    sf.write(song, make_chiptune(6.0, seed=1).T, SR, subtype="PCM_16")
    take = tmp_path / "take.wav"
    render = ["render", str(song), "-o", str(take), "--prompt", "a funk band", "--steps", "3"]
    assert main([*render, "--stereo-pair", "--no-library", *model]) == 0
    out = ["-o", str(tmp_path / "x.wav"), "--no-library", *model]
    assert main(["reroll", str(song), str(take), "--seconds", "1-2", *out]) == 2
    assert "re-roll one of its takes" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    # An audio sketch's bars: found by beat tracking (said), or as corrected.
    take_a = str(tmp_path / "take-A.wav")
    assert main(["reroll", str(song), take_a, "--bars", "2-2", "--seed", "3", *out]) == 0
    said = capsys.readouterr().err
    assert "Bars from beat tracking: 132" in said  # tests/chiptune.py plays at 132 BPM
    out[1] = str(tmp_path / "y.wav")
    fixed = ["--bars", "2-2", "--bpm", "60", "--downbeat", "0.5", "--beats-per-bar", "2"]
    assert main(["reroll", str(song), take_a, *fixed, *out]) == 0
    assert read_take_metadata(tmp_path / "y.wav")["reroll"]["region_s"] == [2.5, 4.5]
    # Silence has no beat to count bars by: seconds it must be.
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros((3 * SR, 1)), SR, subtype="PCM_16")
    assert main(["reroll", str(quiet), take_a, "--bars", "1-1", *out]) == 2
    assert "No steady beat" in capsys.readouterr().err
