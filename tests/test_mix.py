from __future__ import annotations

import numpy as np
import pytest

from neurochip.audio import Audio
from neurochip.errors import NeuroChipError
from neurochip.mix import crossfade_compare, level_match, rms, stereo_pair

SR = 44100
rng = np.random.default_rng(0)


def take(scale: float = 0.1, frames: int = SR * 4) -> Audio:
    return Audio((rng.standard_normal((1, frames)) * scale).astype(np.float32), SR)


def test_width_one_is_hard_left_and_right():
    a, b = take(), take()
    mix = stereo_pair(a, b, width=1.0)
    assert mix.channels == 2
    np.testing.assert_allclose(mix.samples[0], a.samples[0], atol=1e-6)
    np.testing.assert_allclose(mix.samples[1], b.samples[0], atol=1e-6)


def test_width_zero_is_the_mono_sum_in_the_middle():
    a, b = take(), take()
    mix = stereo_pair(a, b, width=0.0)
    np.testing.assert_allclose(mix.samples[0], mix.samples[1])
    np.testing.assert_allclose(mix.samples[0], (a.samples[0] + b.samples[0]) / 2, atol=1e-6)


@pytest.mark.parametrize("width", [0.0, 0.3, 0.7, 1.0])
def test_pair_is_mono_compatible_at_any_width(width):
    a, b = take(0.2), take(0.2)
    mix = stereo_pair(a, b, width)
    np.testing.assert_allclose(mix.samples.sum(axis=0), a.samples[0] + b.samples[0], atol=1e-5)


def test_pair_never_clips():
    mix = stereo_pair(take(2.0), take(2.0), 1.0)
    assert np.abs(mix.samples).max() <= 0.99 + 1e-6


def test_pair_checks_inputs():
    with pytest.raises(NeuroChipError, match="width"):
        stereo_pair(take(), take(), 1.5)
    with pytest.raises(NeuroChipError, match="line up"):
        stereo_pair(take(), take(frames=SR))


def test_crossfade_starts_as_the_original_and_ends_as_the_level_matched_render():
    original, render = take(0.1), take(0.4)
    mix = crossfade_compare(original, render, fade_at_s=1.0, fade_s=1.0)
    assert np.array_equal(mix.samples[:, :SR], original.samples[:, :SR])
    matched = level_match(render, original)
    np.testing.assert_allclose(mix.samples[:, 2 * SR :], matched.samples[:, 2 * SR :], atol=1e-6)
    assert rms(matched.samples) == pytest.approx(rms(original.samples), rel=1e-4)


def test_crossfade_keeps_power_through_the_fade():
    original, render = take(0.2), take(0.2)
    mix = crossfade_compare(original, render, fade_at_s=1.0, fade_s=2.0)
    middle = mix.samples[:, int(1.9 * SR) : int(2.1 * SR)]
    assert rms(middle) == pytest.approx(0.2, rel=0.1)  # equal-power: no dip mid-fade


def test_crossfade_back_returns_to_the_original():
    original, render = take(), take()
    mix = crossfade_compare(original, render, fade_at_s=0.5, fade_s=0.5, back_at_s=2.5)
    assert np.array_equal(mix.samples[:, int(3.1 * SR) :], original.samples[:, int(3.1 * SR) :])


def test_crossfade_matches_channels_and_checks_times():
    stereo = Audio(np.vstack([take().samples, take().samples]), SR)
    assert crossfade_compare(stereo, take(), 1.0).channels == 2
    with pytest.raises(NeuroChipError, match="within the song"):
        crossfade_compare(take(), take(), 10.0)
    with pytest.raises(NeuroChipError, match="fade back"):
        crossfade_compare(take(), take(), 1.0, 1.0, back_at_s=1.5)
