"""The audio-to-audio engine: a whole song through Riffusion img2img, as one piece.

Riffusion's own tools cut a song into 5 s clips and render each alone, so instruments change at
clip borders and crossfades smear the seams. Here the whole song is one latent image:

1. **encode**: the song's mel spectrogram as a float picture (no 8-bit rounding) -> VAE latents;
2. **noise**: one noise tensor for the whole song from one seed, added once (img2img);
3. **denoise**: at every step the UNet sees overlapping 512-column windows (batched, with the
   classifier-free-guidance pair), and their noise predictions are blended into one prediction
   for the whole song (MultiDiffusion), weights tapering near window edges; the scheduler then
   steps the whole song at once. Several takes of one song (a stereo pair, a grid of seeds and
   denoise values) share this loop: their windows go through the same UNet calls, each with
   its own noise, timestep and prompt, and each take comes out as it would alone;
4. **decode**: latents -> picture -> mel amplitudes at the input's level;
5. **phase**: audio rebuilt with the input's own phase (see :mod:`neurochip.phase`).

The output has exactly the input span's length, sample-aligned with it.

Draft options trade faithfulness for less model work (each a ``RenderSettings`` field, off by
default until heard on real weights): windows that do not overlap but shift every step
(``windows="shifted"``, :func:`shifted_windows`), the deep UNet features reused between whole
evaluations (``feature_reuse``, :mod:`neurochip.feature_reuse`), and guidance on the first
steps only (``guidance_until``). :func:`count_unet_work` counts a render's UNet work without a
model, packed as :meth:`Engine._predict_windows` packs it.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl  # the kernel's file locks: renders take turns across processes (POSIX)
except ImportError:  # Windows: within one process only
    fcntl = None

from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.feature_reuse import check_supported as check_feature_reuse
from neurochip.feature_reuse import full_unet, shallow_unet
from neurochip.io.audio import Audio, fade_ramp, limit_peak
from neurochip.model import DEFAULT_MODEL_ID, RiffusionModel, load_model
from neurochip.phase import PhaseSettings, waveform_from_amplitudes
from neurochip.settings import RenderSettings
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_to_float_image,
    float_image_to_amplitudes,
    mel_amplitudes,
)

#: Image columns the model was trained on: its window onto the song.
WINDOW_COLUMNS = 512

#: Image columns the VAE encodes or decodes at once, and how many neighbouring tiles share.
VAE_TILE = 512
VAE_TILE_OVERLAP = 64

#: Memory an engine keeps for the encodings of recent songs (pictures and latents), so that
#: previews of them start at once. A 10-minute song's picture alone is ~370 MB; the newest
#: song is always kept, whatever its size.
DEFAULT_CACHE_BYTES = 1 << 30

#: Length of a preview, in seconds: one model window.
PREVIEW_SECONDS = 5.12

#: Prompt embeddings an engine keeps (prompt and negative prompt of recent takes).
PROMPT_CACHE_SIZE = 16

#: How far a re-rolled region blends into the take around it, on each side (seconds): the
#: latents move from the parent take's to the new ones over it, and so does the audio.
REROLL_MARGIN_S = 0.25

#: The shortest region a re-roll renders (seconds): a few picture columns.
MIN_REROLL_S = 0.1

#: A loop is rendered with this much of itself wrapped round each side (latent columns: half
#: a model window, 2.56 s), so the windows near its ends see the music that follows and
#: precedes them on repeat.
LOOP_CONTEXT_COLUMNS = 32

#: The loop's first moments crossfade from what the model rendered just after its end (the
#: same music, on repeat) into its own start, so the last sample flows into the first.
LOOP_CROSSFADE_S = 0.25

#: The shortest loop (seconds).
MIN_LOOP_S = 1.0

#: Where the sketch wraps round (its end into its start) its waveform jumps, and the sketch's
#: phase would carry the jump into the take: a crossfade this long smooths it first.
LOOP_INPUT_FADE_S = 0.02

#: progress(fraction done 0..1, stage) -- stage is e.g. "encode", "denoise step 3 of 17".
ProgressCallback = Callable[[float, str], None]

#: What each engine stage is, in a composer's words (progress bars show these).
STAGE_WORDS = {
    "encode": "reading the sketch",
    "denoise": "denoising",
    "decode": "drawing the take's spectrogram",
    "phase": "rebuilding the sound",
}


def stage_words(stage: str) -> str:
    """A progress stage as a composer reads it: "denoise step 3 of 17" -> "denoising: step 3
    of 17", "phase" -> "rebuilding the sound"; anything else (a workflow's own words) as is."""
    name, _, rest = stage.partition(" ")
    if name not in STAGE_WORDS:
        return stage
    return STAGE_WORDS[name] + (f": {rest}" if rest else "")


@dataclass(frozen=True)
class PreviewQuality:
    """What a preview spends to sound like the same region of the full render.

    A preview renders its region plus some of the song on each side, so the windows at the
    region's edges see the music around it as they do in the full render; then it rebuilds
    the phase as the take would.
    """

    context_columns: int  # picture columns (10 ms each) rendered on each side of the region
    phase_iterations: int | None  # most Griffin-Lim iterations; None: the take's own
    # Decode with the model's tiny preview VAE where one is attached (neurochip.preview_vae).
    preview_vae: bool = False


#: The default: a whole window of the song on each side, the take's own phase.
FAITHFUL_PREVIEW = PreviewQuality(context_columns=WINDOW_COLUMNS, phase_iterations=None)

#: About twice as fast: a quarter window of context (the windows' overlap, 1.28 s) and at most 2
#: Griffin-Lim iterations; UNet items per preview 136 -> 68. What it costs, measured with the
#: tests' tiny model (random weights, so closeness only, never sound) by `bench/preview.py
#: --accuracy 5`: the region's picture lies 0.065 RMS from the full render's, against 0.054
#: for :data:`FAITHFUL_PREVIEW` and 0.22 for another seed's take (neither kind of preview lines
#: its windows up with the full render's, which is most of the distance). Phase from the
#: sketch with 2 iterations: -16.0 dB spectral convergence on a re-voiced chip tune, against
#: -18.6 dB with the default 8, in half the time. Where the model has a tiny preview VAE
#: attached (``--preview-vae``, the Model page), it decodes too. An option until heard on real
#: weights.
QUICK_PREVIEW = PreviewQuality(
    context_columns=WINDOW_COLUMNS // 4, phase_iterations=2, preview_vae=True
)


@dataclass
class Render:
    """A finished take and what it was made from."""

    audio: Audio  # the take: mono, exactly the source span's length
    source: Audio  # the input span, as the engine heard it (mono mix)
    settings: RenderSettings
    input_image: torch.Tensor  # (3, 512, frames) float picture of the source, on the CPU
    output_image: torch.Tensor  # (3, 512, frames) float picture of the take, on the CPU
    start_s: float = 0.0  # where the span starts in the song
    info: dict[str, Any] = field(default_factory=dict)  # model, device (kept in take files)
    # Seconds the engine call took (shared by the takes made together); not in take files,
    # which stay the same bytes for the same settings.
    seconds: float | None = None


# --- windows -----------------------------------------------------------------------------------


def plan_windows(width: int, window: int, overlap: float) -> list[int]:
    """Start columns of windows of ``window`` columns covering ``width`` columns.

    Neighbours share at least ``overlap`` of a window; starts are spread evenly. A song
    narrower than one window is one window of the song's width. (Starts need no alignment: the
    UNet only needs the window's width to be a multiple of 8.)
    """
    if width <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    count = math.ceil((width - window) / stride) + 1
    return [int(round(s)) for s in np.linspace(0, width - window, count)]


#: How far shifted windows move from one step to the next, as a share of a window: the golden
#: ratio's fraction, so offsets never repeat and no column is a window edge twice in a row.
SHIFT_PER_STEP = (math.sqrt(5) - 1) / 2


def shifted_windows(width: int, window: int, step: int, origin: int = 0, wrap: bool = True):
    """Start columns of non-overlapping windows at denoising step ``step``.

    The grid of window edges sits at ``step * SHIFT_PER_STEP`` of a window, counted in the
    song's columns (``origin`` is where these ``width`` columns start in the song, so a
    preview's windows line up with the full render's). With ``wrap`` the columns are a circle:
    ``ceil(width / window)`` windows, the last one running past the end into the start (a
    start past ``width - window`` wraps). Without, a window over an edge is pushed inside, so
    the region's first and last windows may overlap their neighbours.
    """
    if width <= window:
        return [0]
    offset = (round(step * SHIFT_PER_STEP * window) - origin) % window
    if wrap:
        return [(offset + j * window) % width for j in range(math.ceil(width / window))]
    first = offset - window if offset else 0
    return sorted({min(max(0, s), width - window) for s in range(first, width, window)})


def window_columns(start: int, window: int, width: int) -> slice | list[int]:
    """The columns of a window: a slice, or the index of a window wrapping past the end."""
    if start + window <= width:
        return slice(start, start + window)
    return (torch.arange(start, start + window) % width).tolist()


def window_weight(window: int, overlap: float, device: torch.device) -> torch.Tensor:
    """Blend weight across a window: 1 in the middle, smoothly down towards the edges.

    Never exactly 0, so the song's first and last columns (covered by one window) keep their
    prediction unchanged after normalisation.
    """
    ramp = max(1, int(window * overlap))
    x = torch.arange(window, device=device, dtype=torch.float32) + 0.5
    distance = torch.minimum(x, window - x) / ramp
    weight = torch.sin(0.5 * torch.pi * distance.clamp(max=1.0)) ** 2
    return weight.clamp_min(1e-3)


def pack_calls(sizes: Sequence[int], batch: int) -> list[list[int]]:
    """Indices of work items (of ``sizes`` batch items each) packed, in order, into calls of
    at most ``batch`` items (one item at least, however big)."""
    calls: list[list[int]] = []
    items = 0
    for j, size in enumerate(sizes):
        if not calls or items + size > batch:
            calls.append([])
            items = 0
        calls[-1].append(j)
        items += size
    return calls


class _WindowPlan:
    """Where the model windows sit at each denoising step, and how they are blended."""

    def __init__(
        self,
        settings: RenderSettings,
        width: int,
        window: int,
        origin: int = 0,
        whole: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.width, self.window, self.origin, self.whole = width, window, origin, whole
        self.shifted = settings.windows == "shifted"
        self.reuse = settings.feature_reuse
        self.fixed = None if self.shifted else plan_windows(width, window, settings.overlap)
        size = min(window, width)
        self.weight = (
            torch.ones(size, device=device)
            if self.shifted
            else window_weight(size, settings.overlap, device)
        )
        self._norms: dict[tuple[int, ...], torch.Tensor] = {}

    def starts(self, k: int) -> list[int]:
        if self.fixed is not None:
            return self.fixed
        # With feature reuse the windows move only at full evaluations: reused features belong
        # to the windows they were computed in.
        return shifted_windows(self.width, self.window, k // self.reuse, self.origin, self.whole)

    def at(self, k: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Window starts at step ``k``, the blend weight, and each column's sum of weights."""
        starts = self.starts(k)
        norm = self._norms.get(tuple(starts))
        if norm is None:
            norm = torch.zeros(self.width, device=self.weight.device)
            size = self.weight.shape[0]
            for start in starts:
                columns = window_columns(start, size, self.width)
                if isinstance(columns, slice):
                    norm[columns] += self.weight
                else:
                    norm.index_add_(0, torch.tensor(columns, device=norm.device), self.weight)
            self._norms[tuple(starts)] = norm
        return starts, self.weight, norm


#: Arithmetic of a UNet evaluation that reuses deep features, as a share of a whole one
#: (0.29 counted with torch's FLOP counter on bench/render.py's reduced SD 1.5): for
#: progress estimates only.
SHALLOW_SHARE = 0.3


class _FeatureReuse:
    """Which UNet calls run whole and which reuse deep features (:mod:`neurochip.feature_reuse`).

    A call reuses the features its predecessor kept, ``every - 1`` steps out of ``every``,
    when it holds the same windows of the same takes as the call that kept them (a take that
    finished, or guidance that stopped, changes the calls: those run whole).
    """

    def __init__(self, unet: Any, every: int) -> None:
        self.unet, self.every = unet, every
        self.kept: dict[int, tuple[Any, torch.Tensor | None]] = {}
        if every > 1 and unet is not None:
            check_feature_reuse(unet)

    def whole(self, number: int, signature: Any, k: int) -> bool:
        kept = self.kept.get(number)
        return self.every == 1 or k % self.every == 0 or kept is None or kept[0] != signature

    def predict(
        self,
        number: int,
        signature: Any,
        k: int,
        sample: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
    ) -> torch.Tensor:
        if self.every == 1:
            return self.unet(sample, t, encoder_hidden_states=context).sample
        if self.whole(number, signature, k):
            out, deep = full_unet(self.unet, sample, t, context)
            self.keep(number, signature, deep)
            return out
        return shallow_unet(self.unet, sample, t, context, self.kept[number][1])

    def keep(self, number: int, signature: Any, deep: torch.Tensor | None) -> None:
        """Call ``number``'s deep features (None where only counting) and what it held."""
        self.kept[number] = (signature, deep)

    def forget(self) -> None:
        self.kept.clear()


def voice_weights(
    settings: RenderSettings, origin: int, width: int, column_s: float, start_s: float
) -> torch.Tensor | None:
    """How much each voice of a prompt timeline (the take's own, then each section's) sounds
    in latent columns ``origin`` .. ``+ width`` of a span starting ``start_s`` into the song:
    (voices, width), summing to one per column, ramping over ``settings.transition_s`` at a
    boundary. None without sections (the take's own voice everywhere)."""
    if not settings.sections:
        return None
    times = start_s + (origin + torch.arange(width) + 0.5) * column_s
    half = settings.transition_s / 2
    # ramps[j]: how far into voice j + 1 each column is (0 before its section, 1 after).
    ramps = []
    for section in settings.sections:
        if section.start_s <= 0:  # from the song's start: nothing to change from
            ramps.append(torch.ones(width))
        elif half > 0:
            ramps.append(((times - section.start_s + half) / (2 * half)).clamp(0, 1))
        else:
            ramps.append((times >= section.start_s).float())
    ramps.append(torch.zeros(width))
    weights = [1 - ramps[0]] + [ramps[j] - ramps[j + 1] for j in range(len(ramps) - 1)]
    return torch.stack(weights).clamp(min=0)


def count_unet_work(
    frames: int,
    takes: Sequence[RenderSettings],
    batch: int,
    vae_scale: int = 8,
    multiple: int = 8,
    start_s: float | None = None,
) -> dict[str, int]:
    """UNet work of rendering ``takes`` of a song ``frames`` picture columns long, counted
    without a model: batch items, calls, and the calls and items that run the whole UNet
    (the rest reuse features). The engine's own loop packs its calls the same way; a window
    across a prompt timeline's boundary is one item (or guidance pair) per voice heard in it.
    ``start_s``: where these columns start in the song (default the takes' ``start_s``)."""
    width = -(-frames // (vae_scale * multiple)) * multiple
    window = WINDOW_COLUMNS // vae_scale
    plan = _WindowPlan(takes[0], width, window)
    reuse = _FeatureReuse(None, takes[0].feature_reuse)
    counts = dict.fromkeys(("unet_items", "unet_calls", "full_calls", "full_items"), 0)
    column_s = vae_scale * SpectrogramParams().hop_length / SpectrogramParams().sample_rate
    start_s = takes[0].start_s if start_s is None else start_s
    heard = [voice_weights(s, 0, width, column_s, start_s) for s in takes]
    guidances = [
        [s.guidance] + [s.guidance if x.guidance is None else x.guidance for x in s.sections]
        for s in takes
    ]

    def voices(i: int, start: int) -> list[int]:
        if heard[i] is None:
            return [0]
        present = heard[i][:, window_columns(start, min(window, width), width)].amax(dim=-1) > 0
        return [int(v) for v in torch.nonzero(present).flatten()]

    for k in range(max(s.denoise_steps for s in takes)):
        active = [i for i, s in enumerate(takes) if k < s.denoise_steps]
        work = [(i, start, v) for i in active for start in plan.starts(k) for v in voices(i, start)]
        sizes = [
            2 if k < takes[i].guided_steps and guidances[i][v] > 1.0 else 1 for i, _, v in work
        ]
        for number, call in enumerate(pack_calls(sizes, batch)):
            signature = tuple((work[j], sizes[j]) for j in call)
            items = sum(sizes[j] for j in call)
            counts["unet_items"] += items
            counts["unet_calls"] += 1
            if reuse.whole(number, signature, k):
                reuse.keep(number, signature, None)
                counts["full_calls"] += 1
                counts["full_items"] += items
    return counts


def blend_windows(
    x: torch.Tensor,
    starts: list[int],
    window: int,
    weight: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    before_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Apply ``predict`` to overlapping windows of ``x`` (..., width) and blend the results.

    ``predict`` takes a batch (n, C, H, window) and returns the same shape; windows are sent
    ``batch_size`` at a time. Each output column is the weighted mean of the windows over it.
    """
    width = min(window, x.shape[-1])
    out = torch.zeros_like(x, dtype=torch.float32)
    norm = torch.zeros(x.shape[-1], device=x.device, dtype=torch.float32)
    weight = weight[:width]
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        if before_call is not None:
            before_call()
        crops = torch.cat([x[..., s : s + width] for s in group], dim=0)
        predictions = predict(crops).float()
        for j, s in enumerate(group):
            out[..., s : s + width] += predictions[j : j + 1] * weight
            norm[s : s + width] += weight
    return out / norm


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


def tile_starts(width: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of :func:`tiled_along_time` start along ``width`` columns.

    Every ``tile - overlap`` columns, the last one flush with the end; one tile (at 0) when
    ``width`` fits in one.
    """
    if width <= tile:
        return [0]
    return list(range(0, width - tile, tile - overlap)) + [width - tile]


def tiled_along_time(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    ratio: float,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` along its last (time) axis and blend them.

    The VAE sees the spectrogram's full height in every tile: square tiles would cut the
    picture into a top part and a thin strip of the lowest bands (bass and kick) with little
    context. ``fn`` maps (1, C, H, tile) to (1, C', H', tile * ratio); tiles overlap by
    ``overlap`` columns, crossfaded with the same tapered weight as the UNet windows.
    """
    width = x.shape[-1]
    if width <= tile:
        return fn(x).float()
    starts = tile_starts(width, tile, overlap)
    out_tile = round(tile * ratio)
    weight = window_weight(out_tile, overlap / tile, x.device)
    out = norm = None
    for start in starts:
        y = fn(x[..., start : start + tile]).float()
        if out is None:
            out = torch.zeros(*y.shape[:-1], round(width * ratio), device=y.device)
            norm = torch.zeros(round(width * ratio), device=y.device)
        a = round(start * ratio)
        out[..., a : a + out_tile] += y * weight.to(y.device)
        norm[a : a + out_tile] += weight.to(y.device)
    return out / norm


# --- preview regions -----------------------------------------------------------------------------


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


class DeviceLock:
    """The render lock of one device.

    Threads of this process queue on a lock; with ``lock_file``, processes of this machine
    queue too, on an exclusive ``flock`` of that file (the app and ``neurochip serve`` side by
    side on one GPU: two renders at once would only run it out of memory). The file lock is
    the kernel's: a process that dies lets go of it.
    """

    def __init__(self, lock_file: Path | None = None) -> None:
        self._threads = threading.Lock()
        self.lock_file = lock_file
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        if not self._threads.acquire(blocking):
            return False
        if self.lock_file is None:
            return True
        try:
            self._fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            self._close()
            self._threads.release()
            return False
        except BaseException:
            self._close()
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        self._close()  # closing the file lets go of its lock
        self._threads.release()

    def locked(self) -> bool:
        return self._threads.locked()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DeviceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_DEVICE_LOCKS: dict[str, DeviceLock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def device_lock(device: torch.device | str) -> DeviceLock:
    """The one render lock of a device.

    Every engine on a device renders under it, so two engines (two models, or the app's old
    and new model while one still renders) never share a GPU at once: that would only run it
    out of memory. On a CUDA device the lock holds across the processes of this machine too
    (a lock file in the temporary folder, per user and device). Engines on different devices
    do not wait for each other.
    """
    device = torch.device(device)
    key = str(device)
    with _DEVICE_LOCKS_GUARD:
        if key not in _DEVICE_LOCKS:
            # An Apple GPU is one per machine, shared by its processes as a CUDA card is.
            shared = device.type in ("cuda", "mps") and fcntl is not None
            _DEVICE_LOCKS[key] = DeviceLock(device_lock_file(key) if shared else None)
        return _DEVICE_LOCKS[key]


def device_lock_file(key: str) -> Path:
    """Where the processes of this machine meet to take turns on a device."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    safe = re.sub(r"[^A-Za-z0-9]+", "-", key)
    return Path(tempfile.gettempdir()) / f"neurochip-{user}-{safe}.lock"


class Engine:
    """Renders songs with one loaded model. Keeps the encodings of recent songs for previews.

    Get one with :meth:`from_pretrained`, or hand it a :class:`RiffusionModel` you built. Its
    methods are safe to call from several threads: renders queue on the device's lock
    (:func:`device_lock`), shared by every engine on that device.
    """

    def __init__(
        self,
        model: RiffusionModel,
        params: SpectrogramParams = SpectrogramParams(),
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clock: Callable[[], float] = time.perf_counter,
        memory_limit: int | None = None,
        decode_batch: int | None = None,
    ) -> None:
        self.model = model
        # Takes the VAE decodes in one batch; None: as many as fit (see _decode_batch).
        self.decode_batch = decode_batch
        self._clock = clock
        # GPU memory (bytes) the automatic batch size keeps the activations within, besides
        # what is free: e.g. 8 GiB, to check that a consumer card's share is enough.
        self.memory_limit = memory_limit
        # Seconds per unit of each stage on this device, learned from every render: progress
        # fractions follow the time a stage will take, so "time left" holds steady.
        self._rates = dict(PRIOR_RATES)
        self._measured: set[str] = set()  # stages whose rate is this device's, not the prior
        self.params = params
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._lock = device_lock(model.device)
        self._last_song: tuple[weakref.ref, int, Audio, str] | None = None
        self._prompts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._measured_item_bytes: dict[tuple[Any, ...], int] = {}
        if model.device.type == "cpu":
            # Denormal floats (from SiLU of large negative activations) make CPU convolutions
            # several times slower; flushing them to zero changes no audible result.
            torch.set_flush_denormal(True)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_MODEL_ID,
        device: str = "auto",
        dtype: str | None = None,
        local_files_only: bool | None = None,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        compile: bool | str = False,
        channels_last: bool = False,
        preview_vae: str | Path | None = None,
    ) -> Engine:
        """An engine with the Riffusion model (or any Stable Diffusion 1.x model) loaded.

        Args:
            source: Hugging Face hub id, local diffusers folder, or one ``.safetensors`` file.
            device: ``auto`` (the best found), ``cuda``, ``mps`` or ``cpu``.
            dtype: ``fp32``, ``fp16`` or ``bf16``; ``None`` is fp16 on CUDA, fp32 elsewhere.
            local_files_only: Never touch the network (default: ``HF_HUB_OFFLINE``).
            lora: A LoRA to fuse into the UNet (file, folder or hub id; see
                :mod:`neurochip.lora`), at strength ``lora_scale``.
            compile: ``torch.compile`` the UNet: True or a mode of
                :data:`~neurochip.model.COMPILE_MODES` (see :meth:`RiffusionModel.compile_unet`).
            channels_last: weights in channels-last memory order (see
                :meth:`RiffusionModel.use_channels_last`).
            preview_vae: a tiny VAE (TAESD) for quick previews: folder or hub id (see
                :mod:`neurochip.preview_vae`).

        Raises:
            ModelNotFoundError: The weights are not here; the message says how to get them.
            ModelLoadError: They are here, but a part cannot be used; the message names it.
        """
        model = load_model(source, device, dtype or "auto", local_files_only)
        if lora:
            from neurochip.lora import apply_lora

            apply_lora(model, lora, lora_scale, local_files_only)
        if preview_vae:
            from neurochip.preview_vae import use_preview_vae

            use_preview_vae(model, preview_vae, local_files_only)
        if channels_last:
            model.use_channels_last()
        if compile:
            model.compile_unet(mode=compile if isinstance(compile, str) else "default")
        return cls(model)

    # -- public --------------------------------------------------------------------------------

    def render(
        self,
        song: Audio,
        settings: RenderSettings,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Render:
        """Render the span ``settings.start_s`` .. ``+duration_s`` of a song as one take."""
        return self.render_many(song, [settings], progress, cancel)[0]

    def render_many(
        self,
        song: Audio | Sequence[Audio],
        takes: Sequence[RenderSettings],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Render]:
        """Render several takes of one span of a song together, in one denoising loop.

        The takes may differ in anything but the span (``start_s``, ``duration_s``): seed,
        denoise, guidance, prompt, steps, scheduler. Their windows share the UNet's calls
        (a GPU does two or sixteen windows in little more time than one) and the song is
        encoded once. Each take equals rendering it alone, up to float rounding.

        ``song`` may also be one song per take, all of one length: a sketch's stems (each
        part played alone, :mod:`neurochip.stems`), each rendered with its own prompt in the
        same shared calls.
        """
        _check_shared(takes, span=True)
        # Cut the span at the working rate: lengths in samples then mean the same on both sides
        # of the resampler (a 48 kHz span's sample count is not the take's).
        songs = self._songs_of(song, takes)
        spans = _each_once(songs, lambda s: s.span(takes[0].start_s, takes[0].duration_s))
        rate = songs[0].sample_rate
        span_start_s = round(takes[0].start_s * rate) / rate
        with self._lock:
            if takes[0].loop:
                monos = _each_once(spans, Audio.to_mono)
                results = self._render_loop(monos, takes, progress, cancel)
            else:
                results = self._render_region(
                    spans, 0, spans[0].frames, takes, progress, cancel, song_start_s=span_start_s
                )
        # The span is rendered as a song of its own; report where it sits in the whole song.
        return [replace(result, start_s=span_start_s) for result in results]

    def _songs_of(self, song: Audio | Sequence[Audio], takes: Sequence[RenderSettings]):
        """One song per take, at the working rate (the same object where it is one song)."""
        if isinstance(song, Audio):
            return [self._at_working_rate(song)] * len(takes)
        if len(song) != len(takes):
            raise ValueError(f"{len(song)} songs for {len(takes)} takes: give one per take")
        songs = _each_once(list(song), self._at_working_rate)
        if len({s.frames for s in songs}) > 1:
            raise NeuroChipError(
                "Songs rendered together must be of one length (the stems of one sketch): "
                "render the others separately."
            )
        return songs

    def calibrate(self, settings: RenderSettings | None = None) -> None:
        """Measure this device's time per unit of each stage on a small probe render.

        One model window of quiet noise, one denoising step with ``settings``' guidance and
        phase: a few seconds on a CPU with the real model, so :meth:`estimate_s` can speak
        before a long render instead of after it.
        """
        settings = settings or RenderSettings()
        rate = self.params.sample_rate
        # Exactly one window of picture columns (a 5.12 s clip would spill into a second).
        noise = np.random.default_rng(0).standard_normal(
            (1, self.params.num_samples(WINDOW_COLUMNS))
        )
        probe = Audio((0.01 * noise).astype(np.float32), rate)
        steps = max(2, settings.steps)
        one_step = replace(settings, steps=steps, denoise=1.0 / steps, start_s=0.0, duration_s=None)
        self.render(probe, one_step)

    def estimate_s(
        self, song: Audio | Sequence[Audio], takes: Sequence[RenderSettings]
    ) -> float | None:
        """Seconds a :meth:`render_many` of ``takes`` would take on this engine's device.

        From the time per unit of each stage this engine measured on its own renders and
        previews (a preview measures them all), so it speaks for this machine and model;
        None before it has measured the model's stages.
        """
        if not {"denoise", "phase"} <= self._measured:
            return None
        songs = len({id(s) for s in song}) if not isinstance(song, Audio) else 1
        song = self._at_working_rate(song if isinstance(song, Audio) else song[0])
        span = song.span(takes[0].start_s, takes[0].duration_s)
        frames = self.params.num_frames(span.frames)
        # The span is a song of its own to the engine: not in the cache (its picture is made).
        # Only its length counts, so no mono mix is made (the app asks on every page run).
        length = span.frames
        start_s = round(takes[0].start_s * song.sample_rate) / song.sample_rate
        if takes[0].loop:  # rendered with its own ends wrapped round each side
            pad = LOOP_CONTEXT_COLUMNS * self.params.hop_length * self.model.vae_scale
            length += 2 * pad
            frames = self.params.num_frames(length)
            start_s -= pad / song.sample_rate  # its own end before its start
        work = self._work(length, None, 0, frames, length, takes, WINDOW_COLUMNS, start_s)
        work["encode"] *= songs  # stems: each part's picture is made and encoded
        return sum(work[stage] * self._rates[stage] for stage in STAGES)

    def preview(
        self,
        song: Audio,
        settings: RenderSettings,
        start_s: float,
        duration_s: float = PREVIEW_SECONDS,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        quality: PreviewQuality = FAITHFUL_PREVIEW,
    ) -> Render:
        """Render a short region fast, reusing the cached encoding of the whole song.

        The region gets the same noise the full render puts there, so a preview sounds like
        that part of the full render (up to the windows' context: see :class:`PreviewQuality`).
        ``start_s`` snaps to 10 ms.
        """
        return self.preview_many(
            song, [settings], start_s, duration_s, progress, cancel, quality=quality
        )[0]

    def preview_many(
        self,
        song: Audio,
        takes: Sequence[RenderSettings],
        start_s: float,
        duration_s: float = PREVIEW_SECONDS,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        quality: PreviewQuality = FAITHFUL_PREVIEW,
    ) -> list[Render]:
        """Previews of one region with several settings (a variation grid), in one loop.

        As :meth:`preview` for each; their span settings are ignored (the region is given).
        """
        _check_shared(takes, span=False)
        mono, key = self._prepared(song)
        start, length = preview_region(mono, start_s, duration_s, self.params)
        with self._lock:
            return self._render_region(
                [mono] * len(takes), start, length, takes, progress, cancel, key, quality=quality
            )

    def reroll_many(
        self,
        song: Audio,
        parent: Audio,
        takes: Sequence[RenderSettings],
        region_s: tuple[float, float],
        margin_s: float = REROLL_MARGIN_S,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Render]:
        """Render one region of a take again, once per settings in ``takes``; the rest stays.

        Blended latent diffusion (RePaint-style, as diffusers' inpainting pipeline does for a
        plain UNet): the region's latents denoise from the sketch's as in any render, and after
        every step the latents around them are replaced by the parent take's, noised to that
        step, through a mask that ramps over ``margin_s`` on each side, so the new bars grow
        out of the music around them. The audio outside the region and its margins is the
        parent's, sample for sample; within the margins it crossfades into the new audio.
        The candidates share one denoising loop (as :meth:`render_many`), each equal to
        re-rolling it alone.

        Args:
            song: The sketch the parent take was rendered from.
            parent: The take (mono; exactly its span's length, as renders are).
            takes: Settings of each candidate (new seeds, denoise, prompts...); the span
                (``start_s``, ``duration_s``) must be the parent's.
            region_s: (start, end) of the region in seconds from the span's start.
            margin_s: The blend on each side of the region, inside the take.

        Returns:
            Whole takes, the parent's length, each with the region rendered anew
            (``info["reroll"]`` says which region and margin).
        """
        _check_shared(takes, span=True)
        song = self._at_working_rate(song)
        span = song.span(takes[0].start_s, takes[0].duration_s)
        parent = self._at_working_rate(parent)
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
        bounds = reroll_bounds(span.frames, span.sample_rate, region_s, margin_s)
        bounds = replace(bounds, loop=bool(takes[0].loop))
        with self._lock:
            results = self._reroll(span.to_mono(), parent, takes, bounds, progress, cancel)
        start_s = round(takes[0].start_s * song.sample_rate) / song.sample_rate
        return [replace(result, start_s=start_s) for result in results]

    # -- steps -----------------------------------------------------------------------------------

    def _render_region(
        self,
        songs: Sequence[Audio],
        start: int,
        length: int,
        takes: Sequence[RenderSettings],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        key: str | None = None,
        quality: PreviewQuality = FAITHFUL_PREVIEW,
        noise_period: tuple[int, int] | None = None,
        song_start_s: float = 0.0,
    ) -> list[Render]:
        """Render ``takes[i]`` from ``songs[i]`` (usually one song, repeated), in one loop.

        ``key`` is the song's content key when the caller has it (one song only).
        """
        began = self._clock()
        hop = self.params.hop_length
        # Each distinct song once: mixed down, hashed and encoded (stems are several).
        monos = _each_once(songs, lambda s: self._at_working_rate(s).to_mono())
        distinct = list({id(m): m for m in monos}.values())
        keys = {id(m): key if key and len(distinct) == 1 else _content_key(m) for m in distinct}
        use_model = [settings.denoise_steps > 0 for settings in takes]
        first, frames = start // hop, self.params.num_frames(length)
        work: dict[str, float] = {}
        for mono in distinct:
            own = [s for s, m in zip(takes, monos, strict=True) if m is mono]
            one = self._work(
                mono.frames,
                keys[id(mono)],
                first,
                frames,
                length,
                own,
                quality.context_columns,
                song_start_s,
            )
            work = {stage: work.get(stage, 0.0) + units for stage, units in one.items()}
        report = _StagedProgress(
            progress, self._rates, self._measured, work, self._clock, self._sync, cancel
        )
        report.stage("encode", 0.0, "encode")
        encodings = {
            id(m): self._song_encoding(m, need_latents=any(use_model), key=keys[id(m)])
            for m in distinct
        }
        cached = [encodings[id(m)] for m in monos]
        input_images = [entry["image"][..., first : first + frames] for entry in cached]

        # No denoising step: the model would change nothing, so such a take is the input.
        output_images = list(input_images)
        used = [i for i, use in enumerate(use_model) if use]
        if used:
            rendered = iter(
                self._img2img_region(
                    [cached[i] for i in used],
                    first,
                    frames,
                    [takes[i] for i in used],
                    report,
                    cancel,
                    quality.context_columns,
                    noise_period,
                    song_start_s,
                    vae=self.model.preview_vae if quality.preview_vae else None,
                )
            )
            for i in used:
                output_images[i] = next(rendered)

        sources = [torch.from_numpy(mono.samples[:, start : start + length]) for mono in monos]
        phases = [settings.phase_settings for settings in takes]
        if quality.phase_iterations is not None:
            most = quality.phase_iterations
            phases = [replace(p, iterations=min(p.griffin_lim_iterations, most)) for p in phases]
        waveforms = self._waveforms(
            output_images,
            [float(entry["max_value"]) for entry in cached],
            sources,
            phases,
            length,
            report,
        )
        info: dict[str, Any] = {"model": self.model.source, "device": str(self.model.device)}
        if quality.preview_vae and self.model.preview_vae is not None:
            info["preview_vae"] = self.model.preview_vae_source  # its pictures are TAESD's
        results = []
        for i, (settings, output_image) in enumerate(zip(takes, output_images, strict=True)):
            mono, source = monos[i], sources[i]
            waveform = limit_peak(waveforms[i])  # a take never clips, and is never turned up
            results.append(
                Render(
                    audio=Audio(waveform.cpu().numpy(), mono.sample_rate),
                    source=Audio(source.numpy().copy(), mono.sample_rate),
                    settings=settings,
                    input_image=input_images[i].cpu(),
                    output_image=output_image.cpu(),
                    start_s=start / mono.sample_rate,
                    info=dict(info),
                )
            )
        report.finish()
        seconds = round(self._clock() - began, 3)
        return [replace(result, seconds=seconds) for result in results]

    def _waveforms(
        self,
        images: Sequence[torch.Tensor],
        max_values: Sequence[float],
        sources: Sequence[torch.Tensor],
        phases: Sequence[PhaseSettings],
        length: int,
        report: _StagedProgress,
    ) -> list[torch.Tensor]:
        """Each take's waveform (1, length) from its picture, its phase from its source.

        Takes with the same phase settings are reconstructed in one call, stacked as channels
        (on a GPU in one pass over large chunks; see :func:`waveform_from_amplitudes`);
        each equals its own reconstruction up to float rounding.
        """
        device = self.model.device
        groups: dict[PhaseSettings, list[int]] = {}
        for i, phase in enumerate(phases):
            # Random starts are seeded per take (the seed, not seed + channel): one at a time.
            key = phase if phase.mode == "source" else (phase, i)
            groups.setdefault(key, []).append(i)
        waveforms: list[torch.Tensor | None] = [None] * len(images)
        done = 0
        report.stage("phase", 0.0, "phase")
        for members in groups.values():

            def phase_progress(f: float, done: int = done, n: int = len(members)) -> None:
                report.stage("phase", (done + f * n) / len(images), "phase")

            amplitudes = torch.cat(
                [
                    float_image_to_amplitudes(
                        images[i].mean(dim=0, keepdim=True).expand(3, -1, -1),
                        max_values[i],
                        stereo=False,
                    )
                    for i in members
                ]
            )
            together = waveform_from_amplitudes(
                amplitudes.to(device).float(),
                self.params,
                length,
                phases[members[0]],
                source=torch.cat([sources[i] for i in members]).to(device),
                progress=phase_progress,
            )
            for row, i in enumerate(members):
                waveforms[i] = together[row : row + 1]
            done += len(members)
        return waveforms  # type: ignore[return-value]

    def _render_loop(
        self,
        monos: Sequence[Audio],
        takes: Sequence[RenderSettings],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[Render]:
        """Render a span as a seamless loop (``settings.loop``).

        The span is rendered with its own end wrapped round before its start and its start
        after its end (:data:`LOOP_CONTEXT_COLUMNS`), with noise that repeats with the span's
        period, so the music on both sides of the loop point is what it is on repeat. The
        loop's first :data:`LOOP_CROSSFADE_S` then crossfade from what was rendered just after
        its end into its own start: its last sample flows into its first as into the next.
        ``monos[i]`` is the span of ``takes[i]`` (one span, repeated, but for stems).
        """
        rate, length = monos[0].sample_rate, monos[0].frames
        if length < MIN_LOOP_S * rate:
            raise NeuroChipError(
                f"A loop of {length / rate:.2f} s is too short: make it at least "
                f"{MIN_LOOP_S:g} s (a bar or more)."
            )
        model, hop = self.model, self.params.hop_length
        unit = hop * model.vae_scale  # samples per latent column
        pad = LOOP_CONTEXT_COLUMNS * unit
        fade_in = round(LOOP_INPUT_FADE_S * rate)
        wrapped = _each_once(monos, lambda m: Audio(wrap_loop(m.samples, pad, fade_in), rate))
        period = (LOOP_CONTEXT_COLUMNS, max(1, round(length / unit)))
        results = self._render_region(
            wrapped,
            0,
            wrapped[0].frames,
            takes,
            progress,
            cancel,
            noise_period=period,
            song_start_s=round(takes[0].start_s * rate) / rate - pad / rate,
        )
        fade = min(round(LOOP_CROSSFADE_S * rate), length // 2, pad)
        ramp = fade_ramp(fade)  # the same music on both sides: gains summing to one
        first, frames = pad // hop, self.params.num_frames(length)
        looped = []
        for mono, result in zip(monos, results, strict=True):
            rendered = result.audio.samples
            loop = rendered[:, pad : pad + length].copy()
            after = rendered[:, pad + length : pad + length + fade]
            loop[:, :fade] = after + ramp * (loop[:, :fade] - after)
            looped.append(
                replace(
                    result,
                    audio=Audio(limit_peak(loop), rate),
                    source=Audio(mono.samples.copy(), rate),
                    input_image=result.input_image[..., first : first + frames],
                    output_image=result.output_image[..., first : first + frames],
                    start_s=0.0,
                    info={**result.info, "loop": {"crossfade_s": round(fade / rate, 4)}},
                )
            )
        return looped

    def _reroll(
        self,
        mono: Audio,
        parent: Audio,
        takes: Sequence[RenderSettings],
        bounds: RerollBounds,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[Render]:
        began = self._clock()
        model, params = self.model, self.params
        scale, multiple = model.vae_scale, model.unet_multiple
        hop = params.hop_length
        # What is rendered anew: the region, its margins, and as much again for the phase
        # to settle in before the crossfade reaches it.
        a_s, b_s = bounds.rendered
        a_s -= a_s % hop  # on a picture column, as every render's span is
        first, frames = a_s // hop, params.num_frames(b_s - a_s)
        key = _content_key(mono)
        report = _StagedProgress(
            progress,
            self._rates,
            self._measured,
            self._work(
                mono.frames,
                key,
                first,
                frames,
                b_s - a_s,
                takes,
                WINDOW_COLUMNS,
                round(takes[0].start_s * mono.sample_rate) / mono.sample_rate,
            ),
            self._clock,
            self._sync,
            cancel,
        )
        report.stage("encode", 0.0, "encode")
        cached = self._song_encoding(mono, need_latents=True, key=key)
        song_latents = cached["latents"]
        a, b = _region_columns(
            song_latents.shape[-1], first, frames, scale, multiple, WINDOW_COLUMNS
        )
        # The parent take as the model sees it: its picture at the sketch's level, encoded
        # only where the denoised columns reach.
        wave = torch.from_numpy(parent.samples).to(model.device)
        parent_image, _ = amplitudes_to_float_image(
            mel_amplitudes(wave, params), float(cached["max_value"])
        )
        parent_latents = self._encode(parent_image).columns(a, b)
        mask = bounds.latent_mask(a, b, scale, hop).to(model.device)

        latents = song_latents.columns(a, b)
        noises = [self._song_noise(song_latents.shape, s.seed)[..., a:b] for s in takes]
        whole = (a, b) == (0, song_latents.shape[-1])
        denoised = self._denoise(
            latents,
            noises,
            takes,
            report,
            cancel,
            origin=a,
            whole=whole,
            known=(parent_latents, mask),
            song_start_s=round(takes[0].start_s * mono.sample_rate) / mono.sample_rate,
        )
        offset = first - a * scale
        weight = torch.from_numpy(bounds.weight_at(np.arange(a_s, b_s) + 0.5)).to(model.device)
        frame_weight = torch.from_numpy(bounds.weight_at(a_s + np.arange(frames) * hop))
        source = torch.from_numpy(mono.samples[:, a_s:b_s])
        parent_wave = wave[:, a_s:b_s]
        images = [i[..., offset : offset + frames] for i in self._decode_many(denoised, report)]
        news = self._waveforms(
            images,
            [float(cached["max_value"])] * len(takes),
            [source] * len(takes),
            [settings.phase_settings for settings in takes],
            b_s - a_s,
            report,
        )
        results = []
        for settings, image, new in zip(takes, images, news, strict=True):
            new = limit_peak(new)  # as a take: never clips
            spliced = wave.clone()
            # Outside the region and its margins the weight is 0: the parent's samples, as
            # they were (x + 0 * y is x, exactly).
            spliced[:, a_s:b_s] = parent_wave + weight * (new - parent_wave)
            picture = parent_image.clone()
            cut = picture[..., first : first + frames]
            cut += frame_weight * (image.cpu() - cut)
            results.append(
                Render(
                    audio=Audio(spliced.cpu().numpy(), mono.sample_rate),
                    source=Audio(mono.samples.copy(), mono.sample_rate),
                    settings=settings,
                    input_image=cached["image"].cpu(),
                    output_image=picture.cpu(),
                    info={
                        "model": model.source,
                        "device": str(model.device),
                        "reroll": bounds.describe(mono.sample_rate),
                    },
                )
            )
        report.finish()
        seconds = round(self._clock() - began, 3)
        return [replace(result, seconds=seconds) for result in results]

    def _work(
        self,
        song_frames: int,
        key: str | None,
        first: int,
        frames: int,
        length: int,
        takes: Sequence[RenderSettings],
        context: int,
        song_start_s: float = 0.0,
    ) -> dict[str, float]:
        """Units of work of each stage of a render (columns, UNet items, seconds of audio).

        ``key`` is the song's in the cache of encodings; None for a song that is not there.
        ``song_start_s``: where the song's column 0 is in the sketch (a prompt timeline's
        sections are in the sketch's seconds).
        """
        model = self.model
        cached = self._cache.get(key) if key is not None else None
        columns = self.params.num_frames(song_frames)
        denoised = [s for s in takes if s.denoise_steps > 0]
        a, b = _region_columns(
            -(-columns // (model.vae_scale * model.unet_multiple)) * model.unet_multiple,
            first,
            frames,
            model.vae_scale,
            model.unet_multiple,
            context,
        )
        if cached is None:
            encode = columns  # the picture, and then the region's tiles
        elif denoised and "latents" in cached:
            encode = cached["latents"].missing(a, b)
        else:
            encode = (b - a) * model.vae_scale if denoised else 0
        items = 0.0
        if denoised:
            column_s = model.vae_scale * self.params.hop_length / self.params.sample_rate
            work = count_unet_work(
                (b - a) * model.vae_scale,
                denoised,
                1 << 30,
                model.vae_scale,
                model.unet_multiple,
                start_s=song_start_s + a * column_s,
            )
            reused = work["unet_items"] - work["full_items"]
            items = work["full_items"] + SHALLOW_SHARE * reused
        return {
            "encode": float(encode),
            "denoise": float(items),
            "decode": float(len(denoised) * (b - a)),
            "phase": len(takes) * length / self.params.sample_rate,
        }

    def _sync(self) -> None:
        # A GPU runs ahead of Python: a stage's time is only its own once the GPU caught up.
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        elif self.model.device.type == "mps":
            torch.mps.synchronize()

    def _at_working_rate(self, song: Audio) -> Audio:
        if song.sample_rate == self.params.sample_rate:
            return song
        return song.resample(self.params.sample_rate)

    def _prepared(self, song: Audio) -> tuple[Audio, str]:
        """The song as the engine hears it (mono, working rate) and its content key.

        The last song's are kept while its samples array lives: previews of one song, one per
        slider change, then skip the resampling, the mix-down and hashing the whole song.
        (Audio is never changed in place in NeuroChip; the key is of the content.)
        """
        last = self._last_song
        if last is not None and last[0]() is song.samples and last[1] == song.sample_rate:
            return last[2], last[3]
        mono = self._at_working_rate(song).to_mono()
        key = _content_key(mono)
        self._last_song = (weakref.ref(song.samples), song.sample_rate, mono, key)
        return mono, key

    def _prompt_embedding(self, prompt: str) -> torch.Tensor:
        """CLIP embedding of a prompt; the last few are kept (a slider change keeps them)."""
        embedding = self._prompts.get(prompt)
        if embedding is None:
            embedding = self.model.encode_prompt(prompt)
            self._prompts[prompt] = embedding
            while len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(prompt)
        return embedding

    def _song_encoding(
        self, mono: Audio, need_latents: bool, key: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Picture (and VAE latents) of a whole song, kept for the next preview of it."""
        key = key or _content_key(mono)
        entry = self._cache.get(key)
        if entry is None:
            waveform = torch.from_numpy(mono.samples).to(self.model.device)
            image, max_value = amplitudes_to_float_image(mel_amplitudes(waveform, self.params))
            entry = {"image": image, "max_value": torch.tensor(max_value)}
            self._cache[key] = entry
        self._cache.move_to_end(key)
        if need_latents and "latents" not in entry:
            entry["latents"] = self._encode(entry["image"])
        self._evict()
        return entry

    def cache_size_bytes(self) -> int:
        """Memory the kept song encodings take (pictures and latents)."""
        return sum(_entry_bytes(entry) for entry in self._cache.values())

    def _evict(self) -> None:
        """Forget the least recently used songs until the cache fits; the newest always stays."""
        total = self.cache_size_bytes()
        while total > self._cache_bytes and len(self._cache) > 1:
            _, entry = self._cache.popitem(last=False)
            total -= _entry_bytes(entry)

    def _encode(self, image: torch.Tensor) -> _SongLatents:
        """Float picture (3, 512, W) -> latents (1, 4, 64, W') with W' * 8 >= W, padded.

        Encoded lazily, tile by tile, as regions ask for them (see :class:`_SongLatents`).
        """
        model = self.model
        width = image.shape[-1] + (-image.shape[-1]) % (model.vae_scale * model.unet_multiple)

        @torch.no_grad()
        def encode(pixels: torch.Tensor) -> torch.Tensor:
            pixels = (pixels * 2 - 1).to(model.device, model.dtype)
            return model.vae.encode(pixels).latent_dist.mode()

        channels = int(getattr(model.vae.config, "latent_channels", 4))
        return _SongLatents(encode, image, width, model.vae_scale, channels, model.latent_scaling)

    def _decode_many(
        self, latents: Sequence[torch.Tensor], report: _StagedProgress, vae: Any = None
    ) -> list[torch.Tensor]:
        """Each take's latents (1, 4, 64, W') -> its float picture (3, 512, W' * 8).

        Takes are decoded together, as many in one batch as :meth:`_decode_batch` allows
        (on a GPU one batch for a pair or a small grid; one at a time on the CPU, where a
        batch gains nothing and costs memory).
        """
        vae = vae if vae is not None else self.model.vae
        size = self._decode_batch(len(latents), latents[0].shape, vae)
        images: list[torch.Tensor] = []
        for first in range(0, len(latents), size):
            report.stage("decode", first / len(latents), "decode")
            pixels = self._decode(torch.cat(list(latents[first : first + size])), vae)
            images.extend(pixels.unbind(0))
        return images

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor, vae: Any) -> torch.Tensor:
        """Latents (n, 4, 64, W') -> float pictures (n, 3, 512, W' * 8), in tiles along time,
        by ``vae`` (the model's own, or a tiny preview VAE with a scaling of its own, 1)."""
        model = self.model
        scale = model.vae_scale
        scaling = float(vae.config.scaling_factor)

        def decode(tile: torch.Tensor) -> torch.Tensor:
            return vae.decode((tile / scaling).to(model.dtype)).sample

        pixels = tiled_along_time(
            decode, latents, VAE_TILE // scale, VAE_TILE_OVERLAP // scale, scale
        )
        if not torch.isfinite(pixels).all():
            raise NeuroChipError(
                "The model produced invalid numbers (NaN), which fp16 can do on some GPUs. "
                "Render again with --dtype fp32 (or bf16), or choose fp32 on the Model page."
            )
        return (pixels / 2 + 0.5).clamp(0, 1)

    def _decode_batch(self, takes: int, latent_shape: torch.Size, vae: Any) -> int:
        """Takes ``vae`` decodes in one batch: ``decode_batch`` if set; on a GPU as many as
        fit :data:`MEMORY_SHARE` of the free memory (one tile's activations measured once by
        a probe); one on the CPU and MPS."""
        if self.decode_batch is not None:
            return max(1, min(takes, self.decode_batch))
        model = self.model
        if model.device.type != "cuda" or takes == 1:
            return 1
        height, width = latent_shape[-2], min(latent_shape[-1], VAE_TILE // model.vae_scale)
        channels = int(getattr(model.vae.config, "latent_channels", 4))

        def probe() -> None:
            vae.decode(
                torch.zeros(1, channels, height, width, device=model.device, dtype=model.dtype)
            )

        item = self._probe_bytes(("decode", id(vae), height, width), probe)
        return max(1, min(takes, int(self._free_bytes() * MEMORY_SHARE // item)))

    @torch.no_grad()
    def _img2img_region(
        self,
        cached: Sequence[dict[str, torch.Tensor]],
        first: int,
        frames: int,
        takes: Sequence[RenderSettings],
        report: _StagedProgress,
        cancel: threading.Event | None,
        context: int,
        noise_period: tuple[int, int] | None = None,
        song_start_s: float = 0.0,
        vae: Any = None,
    ) -> list[torch.Tensor]:
        """The region's denoised pictures, ``takes[i]`` from the song encoded in ``cached[i]``,
        decoded by ``vae`` (None: the model's own)."""
        model = self.model
        scale, multiple = model.vae_scale, model.unet_multiple
        shape = cached[0]["latents"].shape  # every song here is of one length
        a, b = _region_columns(shape[-1], first, frames, scale, multiple, context)
        latents = _each_once(cached, lambda entry: entry["latents"].columns(a, b))
        # Each take's noise is its seed's noise for the whole song, cut where this region is.
        # A loop's repeats itself: (offset, period) in latent columns.
        noises = [self._take_noise(shape, s, noise_period)[..., a:b] for s in takes]

        whole = (a, b) == (0, shape[-1])
        denoised = self._denoise(
            latents, noises, takes, report, cancel, origin=a, whole=whole, song_start_s=song_start_s
        )
        offset = first - a * scale
        images = self._decode_many(denoised, report, vae)
        return [image[..., offset : offset + frames] for image in images]

    def _take_noise(
        self, shape: torch.Size, settings: RenderSettings, period: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """A take's noise for the whole song: its seed's, or on the way (by ``alpha``) to
        another seed's, spherically, as Riffusion interpolates (the noise stays noise)."""
        noise = self._song_noise(shape, settings.seed, period)
        if settings.seed_end is None or settings.alpha == 0.0:
            return noise
        return slerp(settings.alpha, noise, self._song_noise(shape, settings.seed_end, period))

    def _song_noise(
        self, shape: torch.Size, seed: int, period: tuple[int, int] | None = None
    ) -> torch.Tensor:
        # Drawn on the CPU so the same seed gives the same noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        if period is None:
            return torch.randn(tuple(shape), generator=generator).to(self.model.device)
        # Periodic: column c gets the noise of column (c - offset) mod period of one period.
        offset, length = period
        one = torch.randn((*shape[:-1], length), generator=generator)
        columns = (torch.arange(shape[-1]) - offset) % length
        return one[..., columns].to(self.model.device)

    # Inference mode, not only no_grad: no version counters or view tracking on the loop's
    # many small tensors (the latents it returns are read, never changed in place, after).
    @torch.inference_mode()
    def _denoise(
        self,
        latents: torch.Tensor | Sequence[torch.Tensor],
        noises: Sequence[torch.Tensor],
        takes: Sequence[RenderSettings],
        report: _StagedProgress,
        cancel: threading.Event | None,
        origin: int = 0,
        whole: bool = True,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        song_start_s: float = 0.0,
    ) -> list[torch.Tensor]:
        """img2img's denoising loop for several takes of the same latents at once.

        Every step, each take still denoising contributes its windows (and their guidance
        pairs) to shared UNet calls; each take then steps with its own scheduler. Takes with
        fewer denoising steps finish early. ``origin`` is where ``latents`` start in the song
        and ``whole`` says they are the whole song (shifted windows then wrap round).
        ``known`` (latents to keep, mask): where the mask is 0 each step ends on those latents
        noised to the next step's level, and the loop on them exactly (a re-roll).
        ``song_start_s``: where the song these latents are of starts in the sketch (a
        prompt timeline's sections are in the sketch's seconds).
        ``latents`` may be one per take (stems: each take denoises its own song).
        Returns each take's denoised latents.
        """
        model = self.model
        starts = [latents] * len(takes) if isinstance(latents, torch.Tensor) else latents
        lanes = [
            _Lane.start(model, init, noise, s, self._prompt_embedding)
            for s, init, noise in zip(takes, starts, noises, strict=True)
        ]
        latents = starts[0]  # its shape is every take's
        column_s = model.vae_scale * self.params.hop_length / self.params.sample_rate
        for lane, settings in zip(lanes, takes, strict=True):
            lane.place(settings, origin, latents.shape[-1], column_s, song_start_s)
        window = WINDOW_COLUMNS // model.vae_scale
        plan = _WindowPlan(takes[0], latents.shape[-1], window, origin, whole, model.device)
        reuse = _FeatureReuse(model.unet, takes[0].feature_reuse)
        chosen = [s.batch_size for s in takes if s.batch_size]
        batch = min(chosen) if chosen else self._auto_batch(latents.shape, 2)
        smallest = max(lane.items(0) for lane in lanes)  # one window of the most costly take

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled("The render was cancelled.")

        steps = max(len(lane.timesteps) for lane in lanes)
        # The denoising starts here: without this report its first step would be timed as
        # part of the encoding (measured rates, hence progress and estimates, skewed).
        report.stage("denoise", 0.0, "denoise")
        for k in range(steps):
            active = [lane for lane in lanes if k < len(lane.timesteps)]
            inputs = [
                lane.scheduler.scale_model_input(lane.latents, lane.timesteps[k]) for lane in active
            ]
            while True:
                try:
                    predictions = self._predict_windows(
                        active, inputs, k, plan, batch, reuse, check_cancel
                    )
                    break
                except torch.OutOfMemoryError as err:
                    # The free-memory estimate was optimistic (or another program took memory):
                    # halve the batch and redo this step; the result does not depend on it.
                    if batch <= smallest:
                        raise NeuroChipError(
                            "Out of GPU memory even one window at a time: close other programs "
                            "using the GPU, or use fp16 (--dtype fp16)."
                        ) from err
                    batch = max(smallest, batch // 2)
                    reuse.forget()  # its features were kept per call, and the calls change
                    if model.device.type == "cuda":
                        torch.cuda.empty_cache()
            for lane, noise_pred in zip(active, predictions, strict=True):
                lane.step(noise_pred, k)
                if known is not None:
                    lane.keep(*known, k)
            report.stage("denoise", (k + 1) / steps, f"denoise step {k + 1} of {steps}")
        return [lane.latents for lane in lanes]

    def _predict_windows(
        self,
        lanes: Sequence[_Lane],
        inputs: Sequence[torch.Tensor],
        k: int,
        plan: _WindowPlan,
        batch: int,
        reuse: _FeatureReuse,
        before_call: Callable[[], None],
    ) -> list[torch.Tensor]:
        """Each lane's guided noise prediction at its step ``k``, windows blended.

        The windows of all lanes are packed into UNet calls of at most ``batch`` items (a
        guided window is two: the unconditioned and the prompted prediction).
        """
        model = self.model
        total = inputs[0].shape[-1]
        starts, weight, norm = plan.at(k)
        width = weight.shape[0]
        outs = [torch.zeros_like(x, dtype=torch.float32) for x in inputs]
        # One item per window, lane and voice heard there (a prompt timeline's boundary is
        # heard with both sections' prompts; without sections, one voice).
        work = [
            (i, s, v)
            for i in range(len(lanes))
            for s in starts
            for v in lanes[i].voices_in(window_columns(s, width, total))
        ]
        sizes = [lanes[i].items(k, v) for i, _, v in work]
        for number, call in enumerate(pack_calls(sizes, batch)):
            group = [work[j] for j in call]
            signature = tuple((work[j], sizes[j]) for j in call)
            before_call()
            columns = [window_columns(s, width, total) for _, s, _ in group]
            crops = [
                inputs[i][..., c].to(model.dtype)
                for (i, _, _), c in zip(group, columns, strict=True)
            ]
            guided = [j for j, (i, _, v) in enumerate(group) if lanes[i].guided_at(k, v)]
            # The unconditioned halves first, then every window with its prompt (the order
            # diffusers' pipeline uses for one take).
            sample = torch.cat([crops[j] for j in guided] + crops)
            t = torch.stack(
                [lanes[group[j][0]].timesteps[k] for j in guided]
                + [lanes[i].timesteps[k] for i, _, _ in group]
            )
            context = torch.cat(
                [lanes[group[j][0]].negatives[group[j][2]] for j in guided]
                + [lanes[i].positives[v] for i, _, v in group]
            )
            out = reuse.predict(number, signature, k, sample, t, context).float()
            uncond, cond = out[: len(guided)], out[len(guided) :]
            pairs = dict(zip(guided, uncond, strict=True))
            for j, ((i, _, v), c) in enumerate(zip(group, columns, strict=True)):
                lane = lanes[i]
                prediction = cond[j : j + 1]
                if j in pairs:
                    prediction = pairs[j][None] + lane.guidances[v] * (prediction - pairs[j][None])
                blend = weight if lane.weights is None else weight * lane.weights[v, c]
                if isinstance(c, slice):
                    outs[i][..., c] += prediction * blend
                else:
                    outs[i].index_add_(
                        -1, torch.tensor(c, device=outs[i].device), prediction * blend
                    )
        return [out / norm for out in outs]

    def _auto_batch(self, latent_shape: torch.Size, per_window: int) -> int:
        """UNet items per call that fit the device's free memory (see :func:`batch_for_memory`)."""
        if self.model.device.type != "cuda":
            return 2 * per_window  # CPU/MPS: bigger batches gain little and cost memory
        width = min(latent_shape[-1], WINDOW_COLUMNS // self.model.vae_scale)
        item = self._item_bytes(latent_shape[-2], width)
        return batch_for_memory(self._free_bytes(), item, per_window)

    def _item_bytes(self, height: int, width: int) -> int:
        """Activation memory of one UNet item of this window shape, measured once by a probe
        call of two items (halved)."""
        model = self.model
        device, dim = model.device, model.unet.config.cross_attention_dim

        def probe() -> None:
            model.unet(
                torch.zeros(2, 4, height, width, device=device, dtype=model.dtype),
                torch.tensor([500, 500], device=device),
                encoder_hidden_states=torch.zeros(2, 77, dim, device=device, dtype=model.dtype),
            )

        return max(1, self._probe_bytes(("unet", height, width), probe) // 2)

    def _free_bytes(self) -> int:
        """GPU memory free for activations: the device's free memory, within ``memory_limit``."""
        device = self.model.device
        free, _ = torch.cuda.mem_get_info(device)
        if self.memory_limit is not None:
            free = min(free, max(0, self.memory_limit - torch.cuda.memory_allocated(device)))
        return free

    def _probe_bytes(self, key: tuple[Any, ...], probe: Callable[[], object]) -> int:
        """Peak GPU memory ``probe`` allocates above what was allocated before it, measured
        once per ``key`` (a window or tile shape)."""
        if key not in self._measured_item_bytes:
            device = self.model.device
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                probe()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            self._measured_item_bytes[key] = max(1, peak)
        return self._measured_item_bytes[key]


#: Most UNet items per call the automatic batch size picks: past this a bigger batch gains
#: nothing measurable on an H100 (issue 8's bench) and only holds memory.
MAX_AUTO_BATCH = 64

#: Share of the free GPU memory the automatic batch size fills with activations; the rest is
#: headroom (the allocator's fragmentation, the VAE's tiles, other programs).
MEMORY_SHARE = 0.6


def batch_for_memory(free_bytes: int, item_bytes: int, per_window: int) -> int:
    """UNet items per call for ``free_bytes`` of GPU memory at ``item_bytes`` per item:
    a share of the free memory, at least one window (``per_window`` items), at most
    :data:`MAX_AUTO_BATCH`."""
    fits = int(free_bytes * MEMORY_SHARE // max(1, item_bytes))
    return max(per_window, min(MAX_AUTO_BATCH, fits))


def _content_key(mono: Audio) -> str:
    return hashlib.blake2b(mono.samples.tobytes(), digest_size=16).hexdigest()


def _entry_bytes(entry: dict[str, Any]) -> int:
    return sum(
        t.nbytes if isinstance(t, _SongLatents) else t.numel() * t.element_size()
        for t in entry.values()
    )


class _SongLatents:
    """A song's VAE latents, encoded tile by tile as regions ask for them.

    A preview needs the latents under its region and a window of context, not the whole
    song's: the first preview of a 3-minute song encodes 3 or 4 tiles instead of 40. The tiles
    are :func:`tiled_along_time`'s over the whole song, blended with the same weights, so
    every column handed out equals the whole-song encoding's (up to float summation order).
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        image: torch.Tensor,
        width: int,
        scale: int,
        channels: int,
        scaling: float,
    ) -> None:
        # The song's picture (3, H, W), shared with the cache entry; ``width`` is W padded to
        # what the UNet needs, the padding repeating the last column (as the whole-song
        # encoding pads), made only for the tile that reaches it.
        self.encode, self.image, self.scale, self.scaling = encode, image, scale, scaling
        self.tile = min(width, VAE_TILE)
        self.starts = tile_starts(width, VAE_TILE, VAE_TILE_OVERLAP)
        self.shape = torch.Size((1, channels, image.shape[-2] // scale, width // scale))
        self.done = [False] * len(self.starts)
        device = image.device
        self.out = torch.zeros(self.shape, device=device)
        self.norm = torch.zeros(self.shape[-1], device=device)
        out_tile = self.tile // scale
        self.weight = (
            torch.ones(out_tile, device=device)
            if len(self.starts) == 1
            else window_weight(out_tile, VAE_TILE_OVERLAP / VAE_TILE, device)
        )

    def _tiles(self, a: int, b: int) -> list[int]:
        """Tiles that reach latent columns a..b (all of them must be in for exactness)."""
        scale = self.scale
        return [
            i
            for i, start in enumerate(self.starts)
            if start // scale < b and (start + self.tile) // scale > a
        ]

    def missing(self, a: int, b: int) -> int:
        """Picture columns still to encode before latent columns a..b can be handed out."""
        return sum(self.tile for i in self._tiles(a, b) if not self.done[i])

    def columns(self, a: int, b: int) -> torch.Tensor:
        """Latent columns a..b, encoding the tiles they need first."""
        out_tile = self.tile // self.scale
        for i in self._tiles(a, b):
            if self.done[i]:
                continue
            start = self.starts[i]
            pixels = self.image[None, ..., start : start + self.tile]
            short = self.tile - pixels.shape[-1]
            if short:
                pixels = torch.nn.functional.pad(pixels, (0, short, 0, 0), mode="replicate")
            y = self.encode(pixels).float()
            at = start // self.scale
            self.out[..., at : at + out_tile] += y * self.weight
            self.norm[at : at + out_tile] += self.weight
            self.done[i] = True
        return self.out[..., a:b] / self.norm[a:b] * self.scaling

    def full(self) -> torch.Tensor:
        """Every column (encodes what is missing)."""
        return self.columns(0, self.shape[-1])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.out, self.norm))


def _region_columns(
    total: int, first: int, frames: int, scale: int, multiple: int, context: int
) -> tuple[int, int]:
    """The latent columns (a, b) denoised for picture columns ``first`` + ``frames``.

    ``context`` picture columns on each side where the song has it, so the region is denoised
    in the company it has in a full render; the width a multiple of what the UNet needs.
    """
    context = -(-context // scale)
    a = max(0, first // scale - context)
    b = min(total, -(-(first + frames) // scale) + context)
    width = -(-(b - a) // multiple) * multiple
    return (a, a + width) if a + width <= total else (max(0, total - width), total)


#: Seconds per unit of each stage before an engine has measured its own (the tests' tiny model
#: on a 2-core CPU): encode per picture column, denoise per UNet item, decode per latent
#: column, phase per second of audio. Only the ratios matter, and only until the first render.
PRIOR_RATES = {"encode": 2.5e-4, "denoise": 9e-3, "decode": 1.5e-3, "phase": 0.2}
STAGES = ("encode", "denoise", "decode", "phase")


class _StagedProgress:
    """Progress as the share of the render's expected time done, stage by stage.

    Each stage's expected time is its units of work times this engine's measured rate, so a
    stage that is slow on this device (phase on a CPU) gets the share of the bar it takes,
    and a time-left estimate extrapolated from the fraction holds steady. When a stage ends,
    its measured rate updates the engine's, for the next render.
    """

    def __init__(
        self,
        progress: ProgressCallback | None,
        rates: dict[str, float],
        measured: set[str],
        work: dict[str, float],
        clock: Callable[[], float],
        sync: Callable[[], None],
        cancel: threading.Event | None = None,
    ) -> None:
        self.progress, self.rates, self.measured, self.work = progress, rates, measured, work
        self.cancel = cancel
        self.clock, self.sync = clock, sync
        expected = {stage: work.get(stage, 0.0) * rates[stage] for stage in STAGES}
        total = sum(expected.values()) or 1.0
        self.starts, self.shares, done = {}, {}, 0.0
        for stage in STAGES:
            self.starts[stage], self.shares[stage] = done / total, expected[stage] / total
            done += expected[stage]
        self.current: str | None = None
        self.began = clock()
        self.done = 0.0

    def stage(self, stage: str, within: float, label: str) -> None:
        """Report progress within a stage; stops the render here once cancelled.

        Every stage reports often (the denoising loop every step, decoding every take, phase
        rebuilding every chunk), so a cancel takes effect within one of those.
        """
        if self.cancel is not None and self.cancel.is_set():
            raise RenderCancelled("The render was cancelled.")
        if stage != self.current:
            self._end_stage()
            self.current, self.began = stage, self.clock()
        fraction = self.starts[stage] + self.shares[stage] * min(1.0, max(0.0, within))
        self._report(fraction, label)

    def finish(self) -> None:
        self._end_stage()
        self._report(1.0, "done")

    def _end_stage(self) -> None:
        stage, units = self.current, self.work.get(self.current or "", 0.0)
        if stage is None or units <= 0:
            return
        self.sync()
        rate = (self.clock() - self.began) / units
        if rate <= 0:
            return
        # The first measurement replaces the prior (a guess from another machine); later
        # ones are averaged in, so one disturbed render does not throw the estimate.
        known = stage in self.measured
        self.rates[stage] = 0.5 * self.rates[stage] + 0.5 * rate if known else rate
        self.measured.add(stage)

    def _report(self, fraction: float, label: str) -> None:
        self.done = min(1.0, max(self.done, fraction))  # never backwards
        if self.progress is not None:
            self.progress(self.done, label)


@dataclass
class _Lane:
    """One take in a shared denoising loop: its schedule, prompts and latents.

    A take with a prompt timeline (``settings.sections``) has several *voices*: its own
    conditioning and each section's (prompt, negative prompt, guidance, denoise). Each latent
    column follows the voices by ``weights`` (a row per voice, summing to one per column:
    one voice inside a section, two across a boundary's transition). A column whose denoise
    is below the strongest joins the loop later (differential diffusion): until its step it
    is held at the sketch's latents noised to the current level.
    """

    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    positives: list[torch.Tensor]  # (1, 77, dim) prompt embedding per voice
    negatives: list[torch.Tensor | None]  # the negative prompt's, where guidance is on
    guidances: list[float]
    strengths: list[float]  # denoise per voice
    guided_steps: int  # the first steps follow the prompt with guidance
    step_options: dict[str, Any]
    noise: torch.Tensor  # what was added to the latents at the start
    init: torch.Tensor  # the sketch's latents, before any noise
    steps: int  # the schedule's full length (denoise 1)
    weights: torch.Tensor | None = None  # (voices, columns); None: the one voice everywhere
    joins: torch.Tensor | None = None  # (columns,) the step each column joins; None: all at 0

    def guided_at(self, k: int, voice: int = 0) -> bool:
        return self.negatives[voice] is not None and k < self.guided_steps

    def items(self, k: int, voice: int = 0) -> int:
        """UNet batch items per window at step ``k``: the guidance pair is two."""
        return 2 if self.guided_at(k, voice) else 1

    def voices_in(self, columns: slice | list[int]) -> list[int]:
        """The voices with any weight in these columns."""
        if self.weights is None:
            return [0]
        present = self.weights[:, columns].amax(dim=-1) > 0
        return [int(v) for v in torch.nonzero(present).flatten()]

    def place(
        self, settings: RenderSettings, origin: int, width: int, column_s: float, start_s: float
    ) -> None:
        """Lay the prompt timeline over latent columns ``origin`` .. ``+ width`` of a span
        starting ``start_s`` into the song (``column_s`` seconds a column)."""
        weights = voice_weights(settings, origin, width, column_s, start_s)
        if weights is None:
            return
        device = self.latents.device
        self.weights = weights.to(device)
        strength = (self.weights * torch.tensor(self.strengths, device=device)[:, None]).sum(0)
        own = torch.floor(self.steps * strength + 1e-6).clamp(max=len(self.timesteps))
        self.joins = (len(self.timesteps) - own).long()

    @classmethod
    def start(
        cls,
        model: RiffusionModel,
        latents: torch.Tensor,
        noise: torch.Tensor,
        settings: RenderSettings,
        embed: Callable[[str], torch.Tensor],
    ) -> _Lane:
        scheduler = model.make_scheduler(settings.scheduler)
        scheduler.set_timesteps(settings.steps, device=model.device)
        # img2img: skip the first (1 - denoise) of the schedule, as diffusers' pipeline does
        # (the strongest denoise anywhere in the take: the rest join later).
        t_start = settings.steps - settings.denoise_steps
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        # Ancestral schedulers draw fresh noise each step: seed it too. Not every scheduler's
        # step() takes a generator (PNDM does not), so pass it only where accepted.
        step_options: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_options["generator"] = torch.Generator("cpu").manual_seed(settings.seed + 1)
        voices = [(settings.prompt, settings.negative_prompt, settings.guidance, settings.denoise)]
        for section in settings.sections:
            voices.append(
                (
                    section.prompt,
                    settings.negative_prompt
                    if section.negative_prompt is None
                    else section.negative_prompt,
                    settings.guidance if section.guidance is None else section.guidance,
                    settings.denoise if section.denoise is None else section.denoise,
                )
            )
        return cls(
            scheduler=scheduler,
            timesteps=timesteps,
            latents=scheduler.add_noise(latents, noise, timesteps[:1]),
            positives=[
                _interpolated(embed, prompt, settings) if i == 0 else embed(prompt)
                for i, (prompt, _, _, _) in enumerate(voices)
            ],  # fmt: skip
            negatives=[embed(negative) if g > 1.0 else None for _, negative, g, _ in voices],
            guidances=[g for _, _, g, _ in voices],
            strengths=[d for _, _, _, d in voices],
            guided_steps=settings.guided_steps,
            step_options=step_options,
            noise=noise,
            init=latents,
            steps=settings.steps,
        )

    def step(self, noise_pred: torch.Tensor, k: int) -> None:
        t = self.timesteps[k]
        self.latents = self.scheduler.step(
            noise_pred, t, self.latents, **self.step_options
        ).prev_sample.float()
        if self.joins is not None and bool((self.joins > k + 1).any()):
            # Columns whose denoise is weaker join later: until then, the sketch's latents at
            # the next step's noise level (differential diffusion).
            waiting = (self.joins > k + 1).float().view(1, 1, 1, -1)
            self.keep(self.init, 1 - waiting, k)

    def keep(self, kept: torch.Tensor, mask: torch.Tensor, k: int) -> None:
        """After step ``k``: where ``mask`` is 0, the kept latents at the next step's noise
        level (after the last step, as they are); where it is 1, this take's own."""
        if k + 1 < len(self.timesteps):
            kept = self.scheduler.add_noise(kept, self.noise, self.timesteps[k + 1 : k + 2])
        self.latents = kept + mask * (self.latents - kept)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, parallel: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation from ``v0`` (t = 0) to ``v1`` (t = 1): two noises' mix keeps a
    noise's norm where a straight mix would shrink it; nearly parallel ones mix straight."""
    # In float64 on the CPU: the angle of two long noises needs it, and Apple's GPU has none.
    a = v0.detach().to("cpu", torch.float64).flatten()
    b = v1.detach().to("cpu", torch.float64).flatten()
    dot = float(torch.dot(a, b) / (a.norm() * b.norm()))
    if abs(dot) > parallel:
        return (1 - t) * v0 + t * v1
    theta = math.acos(dot)
    mixed = (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)
    return mixed.reshape(v0.shape).to(v0.device, v0.dtype)


def _interpolated(
    embed: Callable[[str], torch.Tensor], prompt: str, settings: RenderSettings
) -> torch.Tensor:
    """The prompt's embedding, moved by ``alpha`` toward ``prompt_end``'s (Riffusion's
    interpolation is this straight mix of the two)."""
    start = embed(prompt)
    if not settings.prompt_end or settings.alpha == 0.0:
        return start
    return start + settings.alpha * (embed(settings.prompt_end) - start)


def _each_once(items: Sequence[Any], make: Callable[[Any], Any]) -> list[Any]:
    """``[make(x) for x in items]``, made once per distinct object (one song repeated per
    take is mixed down, cut and encoded once)."""
    made: dict[int, Any] = {}
    return [made[id(x)] if id(x) in made else made.setdefault(id(x), make(x)) for x in items]


def _check_shared(takes: Sequence[RenderSettings], span: bool) -> None:
    """Takes rendered together share their windows, and (but for previews) their span."""
    if not takes:
        raise ValueError("Rendering together needs at least one take's settings")
    if len({(s.overlap, s.windows, s.feature_reuse, s.loop) for s in takes}) > 1:
        raise NeuroChipError(
            "Takes rendered together must use the same windows (mode and overlap), feature "
            "reuse and loop setting: render the others separately."
        )
    if span and len({(s.start_s, s.duration_s) for s in takes}) > 1:
        raise NeuroChipError(
            "Takes rendered together must cover the same span (start and duration): render "
            "the others separately."
        )
