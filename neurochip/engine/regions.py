"""Where a render acts: spans, preview regions, loops and re-roll regions, in samples.

Model-free: the engine cuts and wraps songs with these before a backend renders them, and
splices what comes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from neurochip.engine.backend import Render
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, fade_ramp, limit_peak
from neurochip.spectrogram import SpectrogramParams, amplitudes_to_float_image, mel_amplitudes

#: Length of a preview, in seconds: one model window.
PREVIEW_SECONDS = 5.12

#: How far a re-rolled region blends into the take around it, on each side (seconds): the
#: latents move from the parent take's to the new ones over it, and so does the audio.
REROLL_MARGIN_S = 0.25

#: The shortest region a re-roll renders (seconds): a few picture columns.
MIN_REROLL_S = 0.1

#: The loop's first moments crossfade from what the model rendered just after its end (the
#: same music, on repeat) into its own start, so the last sample flows into the first.
LOOP_CROSSFADE_S = 0.25

#: The shortest loop (seconds).
MIN_LOOP_S = 1.0

#: Where the sketch wraps round (its end into its start) its waveform jumps, and the sketch's
#: phase would carry the jump into the take: a crossfade this long smooths it first.
LOOP_INPUT_FADE_S = 0.02


def wrap_loop(samples: np.ndarray, pad: int, fade: int) -> np.ndarray:
    """A loop's samples (channels, L) repeated: ``pad`` before and after, round the circle.

    At every point where the loop's end meets its start the waveform would jump (the
    oscillators' phases differ): there the end crossfades into the start over ``fade``
    samples, each side extended past its edge by reflection, so the result is continuous.
    """
    length = samples.shape[-1]
    u = np.arange(-pad, length + pad)
    out = samples[..., u % length].copy()
    half = min(fade // 2, length // 4)
    if half < 1:
        return out
    d = np.arange(-half, half)  # position round a wrap point
    outgoing = np.where(d < 0, length + d, length - 1 - d)  # the end, reflected past it
    incoming = np.where(d >= 0, d, -d - 1)  # the start, reflected before it
    w = fade_ramp(2 * half, samples.dtype)
    joined = samples[..., outgoing] + w * (samples[..., incoming] - samples[..., outgoing])
    for wrap in range(-(pad // length) * length, length + pad, length):  # the wrap points
        at = wrap + pad + d
        inside = (at >= 0) & (at < out.shape[-1])
        out[..., at[inside]] = joined[..., inside]
    return out


@dataclass(frozen=True)
class RerollBounds:
    """Where a re-roll acts, in samples of the span: the region, the blend margin on each
    side of it, and what is rendered anew (the region and two margins each side, within the
    span: the outer margin lets the rebuilt phase settle before the crossfade reaches it)."""

    region: tuple[int, int]
    margin: int
    total: int  # the span's length
    # A seamless loop's take: its ends stay as they were (each flows into the other), the
    # region's blend coming back to the take within a margin of either end.
    loop: bool = False

    @property
    def rendered(self) -> tuple[int, int]:
        r0, r1 = self.region
        return max(0, r0 - 2 * self.margin), min(self.total, r1 + 2 * self.margin)

    def weight_at(self, at: np.ndarray) -> np.ndarray:
        """At sample positions ``at``: 1 inside the region, 0 past its margins (exactly), a
        raised-cosine ramp between; 0 keeps the parent's, 1 takes the new one's."""
        r0, r1 = self.region
        outside = np.maximum(r0 - at, at - r1)  # how far past the region (negative inside)
        x = np.clip(1.0 - outside / max(1, self.margin), 0.0, 1.0)
        if self.loop:
            # From the first and last samples' centres: exactly 0 there.
            edge = np.minimum(at - 0.5, self.total - 0.5 - at)
            x = np.minimum(x, np.clip(edge / max(1, self.margin), 0.0, 1.0))
        return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)

    def latent_mask(self, a: int, b: int, scale: int, hop: int) -> torch.Tensor:
        """(1, 1, 1, b - a): the same weight for latent columns a..b, at their centres."""
        centres = (np.arange(a, b) * scale + scale / 2) * hop
        return torch.from_numpy(self.weight_at(centres)).view(1, 1, 1, -1)

    def describe(self, sample_rate: int) -> dict[str, Any]:
        r0, r1 = self.region
        return {
            "region_s": [round(r0 / sample_rate, 4), round(r1 / sample_rate, 4)],
            "margin_s": round(self.margin / sample_rate, 4),
        }


def reroll_bounds(
    frames: int, sample_rate: int, region_s: tuple[float, float], margin_s: float
) -> RerollBounds:
    """Check a re-roll's region (seconds from the span's start) and margin against a span of
    ``frames`` samples, and put them in samples.

    Raises:
        NeuroChipError: For a region outside the take, too short, or a bad margin.
    """
    start, end = (float(v) for v in region_s)
    duration = frames / sample_rate
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise NeuroChipError(
            f"The region to re-roll must start at 0 s or later and end after it starts "
            f"(got {start:g} s to {end:g} s)."
        )
    if start >= duration - 1e-6:
        raise NeuroChipError(
            f"The region starts at {start:g} s, past the take's end ({duration:.2f} s)."
        )
    end = min(end, duration)  # "to the end" may be said with any larger number
    if end - start < MIN_REROLL_S:
        raise NeuroChipError(
            f"The region to re-roll is {end - start:.3f} s: choose at least {MIN_REROLL_S} s "
            "(a bar, or a few beats)."
        )
    if not math.isfinite(margin_s) or not 0 <= margin_s <= 2.0:
        raise NeuroChipError(f"The blend margin must be 0 to 2 s, not {margin_s:g} s.")
    return RerollBounds(
        (round(start * sample_rate), round(end * sample_rate)),
        round(margin_s * sample_rate),
        frames,
    )


def preview_region(
    song: Audio,
    start_s: float,
    duration_s: float = PREVIEW_SECONDS,
    params: SpectrogramParams = SpectrogramParams(),
) -> tuple[int, int]:
    """(first sample, length) of a preview region of ``song``, at ``params.sample_rate``.

    Seconds become samples at the rate the engine works at (a 48 kHz song's 10 s are sample
    441,000 after resampling, not 480,000), and the start snaps to a picture column (10 ms).
    """
    if song.sample_rate != params.sample_rate:
        raise ValueError("preview_region() takes the song at the engine's sample rate")
    hop = params.hop_length
    first = min(int(round(start_s * song.sample_rate / hop)), max(0, song.frames - 1) // hop)
    start = first * hop
    length = min(int(round(duration_s * song.sample_rate)), song.frames - start)
    if length < params.min_samples:
        raise NeuroChipError("The preview region is too short: choose an earlier start.")
    return start, length


def region_picture(
    song: Audio,
    start_s: float,
    duration_s: float = PREVIEW_SECONDS,
    params: SpectrogramParams = SpectrogramParams(),
) -> tuple[torch.Tensor, float]:
    """The float picture the model sees of a preview region (no model needed), and its start.

    Its columns are exactly the preview's input picture's (the level differs: this is scaled
    to the region alone).
    """
    mono = song.to_mono().resample(params.sample_rate)
    start, length = preview_region(mono, start_s, duration_s, params)
    region = torch.from_numpy(mono.samples[:, start : start + length])
    picture, _ = amplitudes_to_float_image(mel_amplitudes(region, params))
    return picture, start / params.sample_rate


# --- the engine -----------------------------------------------------------------------------------


def snapped_s(start_s: float, sample_rate: int) -> float:
    """``start_s`` on the sample it lands on at ``sample_rate`` (where a span really starts)."""
    return round(start_s * sample_rate) / sample_rate


def finish_loop(
    result: Render, mono: Audio, pad: int, params: SpectrogramParams = SpectrogramParams()
) -> Render:
    """A loop's take from the render of its wrapped span (:func:`wrap_loop`, ``pad`` each side).

    The loop's first :data:`LOOP_CROSSFADE_S` crossfade from what was rendered just after its
    end (the same music, on repeat) into its own start: its last sample flows into its first
    as into the next. ``mono`` is the loop's own span.
    """
    rate, length = mono.sample_rate, mono.frames
    fade = min(round(LOOP_CROSSFADE_S * rate), length // 2, pad)
    ramp = fade_ramp(fade)  # the same music on both sides: gains summing to one
    first, frames = pad // params.hop_length, params.num_frames(length)
    rendered = result.audio.samples
    loop = rendered[:, pad : pad + length].copy()
    after = rendered[:, pad + length : pad + length + fade]
    loop[:, :fade] = after + ramp * (loop[:, :fade] - after)
    return replace(
        result,
        audio=Audio(limit_peak(loop), rate),
        source=Audio(mono.samples.copy(), rate),
        input_image=result.input_image[..., first : first + frames],
        output_image=result.output_image[..., first : first + frames],
        start_s=0.0,
        info={**result.info, "loop": {"crossfade_s": round(fade / rate, 4)}},
    )


def check_loop(mono: Audio) -> None:
    if mono.frames < MIN_LOOP_S * mono.sample_rate:
        raise NeuroChipError(
            f"A loop of {mono.duration_s:.2f} s is too short: make it at least "
            f"{MIN_LOOP_S:g} s (a bar or more)."
        )


def check_parent(parent: Audio, span: Audio) -> None:
    """A re-roll's parent is one take of exactly its span's length."""
    if parent.channels != 1:
        raise NeuroChipError(
            "Re-roll a single take (A or B), not a stereo pair or a comparison: then pair "
            "the new take again."
        )
    if parent.frames != span.frames:
        raise NeuroChipError(
            f"The take is {parent.duration_s:.3f} s long, but the span it should come from "
            f"is {span.duration_s:.3f} s: re-roll with the take's own start and duration."
        )
