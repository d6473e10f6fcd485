"""Mixing takes: stereo pairs and original-vs-render crossfades.

Composers double a part by rendering it twice and panning the takes left and right; they show
off a render by crossfading from the raw chip sketch into it. Both are built in here, working
on :class:`~neurochip.io.audio.Audio` of equal length (renders are sample-aligned with their
input).
"""

from __future__ import annotations

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, limit_peak


def _mono(audio: Audio) -> np.ndarray:
    return audio.to_mono().samples[0]


def _check_aligned(*takes: Audio) -> None:
    rates = {t.sample_rate for t in takes}
    lengths = {t.frames for t in takes}
    if len(rates) != 1 or len(lengths) != 1:
        raise NeuroChipError(
            "These takes do not line up (different lengths or sample rates): mix takes "
            "rendered from the same song span."
        )


def check_width(width: float) -> None:
    """A stereo pair's width is 0 (both in the middle) to 1 (hard left and right)."""
    if not 0.0 <= width <= 1.0:  # NaN fails too
        raise NeuroChipError(f"Stereo width must be between 0 and 1, not {width}.")


def stereo_pair(take_a: Audio, take_b: Audio, width: float = 1.0) -> Audio:
    """Pan two takes apart: A to the left, B to the right.

    ``width`` 0 is both takes in the middle (their mono sum), 1 is hard left/right. The pan law
    is linear, so left + right is A + B: the mix collapses to mono without either take getting
    louder or quieter than the other, whatever the width. When the pair would clip, the
    limiter scales the whole mix down, so left + right is then A + B times that one gain.
    """
    check_width(width)
    _check_aligned(take_a, take_b)
    a, b = _mono(take_a), _mono(take_b)
    near, far = (1 + width) / 2, (1 - width) / 2
    left = near * a + far * b
    right = far * a + near * b
    mix = np.stack([left, right]).astype(np.float32)
    return Audio(limit_peak(mix), take_a.sample_rate)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def level_match(audio: Audio, reference: Audio) -> Audio:
    """``audio`` scaled to the RMS level of ``reference`` (a fair A/B needs equal loudness)."""
    level = rms(audio.samples)
    if level == 0:
        return audio
    return Audio(audio.samples * np.float32(rms(reference.samples) / level), audio.sample_rate)


def check_crossfade(
    duration_s: float, fade_at_s: float, fade_s: float, back_at_s: float | None
) -> None:
    """Raise if a comparison's fades do not fit a render of ``duration_s`` seconds.

    Separate from :func:`crossfade_compare` so a front end can check before rendering.
    """
    if not 0 <= fade_at_s < duration_s:
        raise NeuroChipError(
            f"The crossfade must start within the render (0 to {duration_s:.1f} s), not at "
            f"{fade_at_s} s."
        )
    if fade_s <= 0:
        raise NeuroChipError("The crossfade length must be more than 0 s.")
    if back_at_s is not None and not fade_at_s + fade_s <= back_at_s < duration_s:
        raise NeuroChipError(
            "The fade back to the original must start after the first fade has finished "
            f"({fade_at_s + fade_s:.1f} s) and before the end ({duration_s:.1f} s)."
        )


def crossfade_compare(
    original: Audio,
    render: Audio,
    fade_at_s: float,
    fade_s: float = 2.0,
    back_at_s: float | None = None,
) -> Audio:
    """The original, crossfading into the render at ``fade_at_s`` (and back at ``back_at_s``).

    The render is level-matched to the original first, and the fades are equal-power (the two
    are different performances, so their sum should keep constant power, not amplitude).
    Until the first fade begins the output is the original, sample for sample; where the
    level-matched render would push the mix over full scale, the render alone is turned down.
    """
    if render.channels != original.channels:
        render = render.to_stereo() if original.channels == 2 else render.to_mono()
    _check_aligned(original, render)
    rate, frames = original.sample_rate, original.frames
    check_crossfade(frames / rate, fade_at_s, fade_s, back_at_s)
    matched = level_match(render, original)
    t = np.arange(frames) / rate
    # 0 = all original, 1 = all render
    position = np.clip((t - fade_at_s) / fade_s, 0, 1)
    if back_at_s is not None:
        position = np.minimum(position, np.clip(1 - (t - back_at_s) / fade_s, 0, 1))
    gain_render = np.sin(0.5 * np.pi * position).astype(np.float32)
    gain_original = np.cos(0.5 * np.pi * position).astype(np.float32)
    # A level-matched render can peak higher than the sketch (same loudness, other shape):
    # turn the render alone down until the mix fits, so the sketch's part stays sample for
    # sample what the listener compares against and nothing clips at save time.
    sketch_part = original.samples * gain_original
    render_gain = 1.0
    for _ in range(8):
        mix = sketch_part + matched.samples * (gain_render * render_gain)
        peak = float(np.abs(mix).max(initial=0.0))
        if peak <= 0.99:
            break
        render_gain *= 0.99 / peak
    return Audio(mix.astype(np.float32), rate)
