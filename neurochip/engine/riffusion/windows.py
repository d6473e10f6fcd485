"""Where the model's windows sit on the song, how their predictions blend, and what they cost.

Riffusion was trained on 512-column pictures (5.12 s); a song is one latent image far wider.
Every denoising step the UNet sees windows of it, and their predictions are blended into one
for the whole song (MultiDiffusion), weights tapering near window edges. Takes rendered
together share the calls; :func:`count_unet_work` counts them without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neurochip.engine.backend import WINDOW_COLUMNS
from neurochip.feature_reuse import check_supported as check_feature_reuse
from neurochip.feature_reuse import full_unet, shallow_unet, written_out_unet
from neurochip.settings import RenderSettings
from neurochip.spectrogram import SpectrogramParams

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


class WindowPlan:
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
        self._wrapped: dict[int, torch.Tensor] = {}

    def columns(self, start: int) -> slice | torch.Tensor:
        """The columns of the window at ``start``: a slice, or for one wrapping past the end
        its index, made on the device (never copied from the host inside the loop) and kept."""
        size = self.weight.shape[0]
        if start + size <= self.width:
            return slice(start, start + size)
        index = self._wrapped.get(start)
        if index is None:
            device = self.weight.device
            index = torch.arange(start, start + size, device=device) % self.width
            self._wrapped[start] = index
        return index

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
            for start in starts:
                columns = self.columns(start)
                if isinstance(columns, slice):
                    norm[columns] += self.weight
                else:
                    norm.index_add_(0, columns, self.weight)
            self._norms[tuple(starts)] = norm
        return starts, self.weight, norm


#: Arithmetic of a UNet evaluation that reuses deep features, as a share of a whole one

#: (0.29 counted with torch's FLOP counter on bench/render.py's reduced SD 1.5): for
#: progress estimates only.
SHALLOW_SHARE = 0.3


class FeatureReuse:
    """Which UNet calls run whole and which reuse deep features (:mod:`neurochip.feature_reuse`).

    A call reuses the features its predecessor kept, ``every - 1`` steps out of ``every``,
    when it holds the same windows of the same takes as the call that kept them (a take that
    finished, or guidance that stopped, changes the calls: those run whole).
    """

    def __init__(self, unet: Any, every: int, compile_options: dict | None = None) -> None:
        self.unet, self.every = unet, every
        self.kept: dict[int, tuple[Any, torch.Tensor | None]] = {}
        self.full, self.shallow = full_unet, shallow_unet
        if every > 1 and unet is not None:
            check_feature_reuse(unet)
            if compile_options is not None:
                # A compiled UNet: its reuse paths call the plain modules, so they are
                # compiled alike (else drafts would run eager).
                self.full = torch.compile(written_out_unet, **compile_options)
                self.shallow = torch.compile(shallow_unet, **compile_options)

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
            out, deep = self.full(self.unet, sample, t, context)
            self.keep(number, signature, deep)
            return out
        return self.shallow(self.unet, sample, t, context, self.kept[number][1])

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
    plan = WindowPlan(takes[0], width, window)
    reuse = FeatureReuse(None, takes[0].feature_reuse)
    counts = dict.fromkeys(("unet_items", "unet_calls", "full_calls", "full_items"), 0)
    column_s = vae_scale * SpectrogramParams().hop_length / SpectrogramParams().sample_rate
    start_s = takes[0].start_s if start_s is None else start_s
    heard = [voice_weights(s, 0, width, column_s, start_s) for s in takes]
    guidances = [
        [s.guidance] + [section.resolve(s).guidance for section in s.sections] for s in takes
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
