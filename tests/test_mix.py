from __future__ import annotations

import numpy as np
import pytest

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.mix import crossfade_compare, level_match, rms, stereo_pair

SR = 44100


@pytest.fixture
def take():
    """Makes takes of seeded noise: the same data in every test, whatever runs before it."""
    rng = np.random.default_rng(0)

    def make(scale: float = 0.1, frames: int = SR * 4) -> Audio:
        return Audio((rng.standard_normal((1, frames)) * scale).astype(np.float32), SR)

    return make


def test_width_one_is_hard_left_and_right(take):
    a, b = take(), take()
    mix = stereo_pair(a, b, width=1.0)
    assert mix.channels == 2
    np.testing.assert_allclose(mix.samples[0], a.samples[0], atol=1e-6)
    np.testing.assert_allclose(mix.samples[1], b.samples[0], atol=1e-6)


def test_width_zero_is_the_mono_sum_in_the_middle(take):
    a, b = take(), take()
    mix = stereo_pair(a, b, width=0.0)
    np.testing.assert_allclose(mix.samples[0], mix.samples[1])
    np.testing.assert_allclose(mix.samples[0], (a.samples[0] + b.samples[0]) / 2, atol=1e-6)


@pytest.mark.parametrize("width", [0.0, 0.3, 0.7, 1.0])
def test_pair_is_mono_compatible_at_any_width(take, width):
    a, b = take(0.1), take(0.1)
    # Each channel is a weighted mean of A and B, so it cannot peak above the louder take:
    # with both below the limiter's ceiling the limiter cannot act.
    assert max(np.abs(a.samples).max(), np.abs(b.samples).max()) < 0.99
    mix = stereo_pair(a, b, width)
    np.testing.assert_allclose(mix.samples.sum(axis=0), a.samples[0] + b.samples[0], atol=1e-5)


@pytest.mark.parametrize("width", [0.0, 0.5, 1.0])
def test_limited_pair_sums_to_a_scaled_mono_mix(take, width):
    a, b = take(2.0), take(2.0)
    mix = stereo_pair(a, b, width)
    mono, total = a.samples[0] + b.samples[0], mix.samples.sum(axis=0)
    assert np.abs(mix.samples).max() == pytest.approx(0.99, abs=1e-6)  # the limiter acted
    gain = float(np.dot(total, mono) / np.dot(mono, mono))
    assert 0 < gain < 0.9
    np.testing.assert_allclose(total, gain * mono, atol=1e-5)


def test_pair_never_clips(take):
    mix = stereo_pair(take(2.0), take(2.0), 1.0)
    assert np.abs(mix.samples).max() <= 0.99 + 1e-6


def test_pair_checks_inputs(take):
    with pytest.raises(NeuroChipError, match="width"):
        stereo_pair(take(), take(), 1.5)
    with pytest.raises(NeuroChipError, match="line up"):
        stereo_pair(take(), take(frames=SR))


def test_crossfade_starts_as_the_original_and_ends_as_the_level_matched_render(take):
    original, render = take(0.1), take(0.4)
    mix = crossfade_compare(original, render, fade_at_s=1.0, fade_s=1.0)
    assert np.array_equal(mix.samples[:, :SR], original.samples[:, :SR])
    matched = level_match(render, original)
    np.testing.assert_allclose(mix.samples[:, 2 * SR :], matched.samples[:, 2 * SR :], atol=1e-6)
    assert rms(matched.samples) == pytest.approx(rms(original.samples), rel=1e-4)


def test_crossfade_keeps_power_through_the_fade(take):
    original, render = take(0.2), take(0.2)
    mix = crossfade_compare(original, render, fade_at_s=1.0, fade_s=2.0)
    middle = mix.samples[:, int(1.9 * SR) : int(2.1 * SR)]
    assert rms(middle) == pytest.approx(0.2, rel=0.1)  # equal-power: no dip mid-fade


def test_crossfade_back_returns_to_the_original(take):
    original, render = take(), take()
    mix = crossfade_compare(original, render, fade_at_s=0.5, fade_s=0.5, back_at_s=2.5)
    assert np.array_equal(mix.samples[:, int(3.1 * SR) :], original.samples[:, int(3.1 * SR) :])


def test_crossfade_matches_channels_and_checks_times(take):
    stereo = Audio(np.vstack([take().samples, take().samples]), SR)
    assert crossfade_compare(stereo, take(), 1.0).channels == 2
    with pytest.raises(NeuroChipError, match="within the render"):
        crossfade_compare(take(), take(), 10.0)
    with pytest.raises(NeuroChipError, match="fade back"):
        crossfade_compare(take(), take(), 1.0, 1.0, back_at_s=1.5)


def test_a_comparison_never_clips_and_keeps_the_sketch_part_exact():
    rate = 1000
    t = np.arange(4 * rate) / rate
    # A quiet, smooth sketch and a peaky render of the same loudness: matched, it would clip.
    sketch = Audio((0.5 * np.sin(2 * np.pi * 5 * t)).astype(np.float32), rate)
    spikes = np.zeros_like(t)
    spikes[::100] = 1.0
    render = Audio(spikes.astype(np.float32), rate)
    mix = crossfade_compare(sketch, render, fade_at_s=1.0, fade_s=1.0)
    assert np.abs(mix.samples).max() <= 0.99
    np.testing.assert_array_equal(mix.samples[:, :rate], sketch.samples[:, :rate])
    assert np.abs(mix.samples[:, 3 * rate :]).max() > 0.5  # the render is still there
