"""Interactive spectrogram views: time in seconds, frequency in Hz, zoomable."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from neurochip.spectrogram import SpectrogramParams, mel_band_centers

MAX_COLUMNS = 1600  # more than a screen shows; keeps long songs quick to draw


def _levels(image: torch.Tensor) -> np.ndarray:
    """Picture (3, 512, W) in [0, 1] -> loudness 0..1 with low bands first (row 0 = bass)."""
    gray = image.float().mean(dim=0)
    return (1.0 - gray).flip(0).numpy()


def _shrink(levels: np.ndarray) -> tuple[np.ndarray, int]:
    step = max(1, int(np.ceil(levels.shape[1] / MAX_COLUMNS)))
    if step == 1:
        return levels, 1
    width = levels.shape[1] // step * step
    return levels[:, :width].reshape(levels.shape[0], -1, step).max(axis=2), step


def spectrogram_figure(
    images: dict[str, torch.Tensor],
    start_s: float = 0.0,
    params: SpectrogramParams = SpectrogramParams(),
    difference: bool = True,
) -> go.Figure:
    """One row per picture (e.g. input, output), plus output minus input when both exist."""
    names = list(images)
    rows = [(name, _levels(images[name])) for name in names]
    if difference and len(rows) >= 2:
        rows.append((f"{names[1]} - {names[0]}", rows[1][1] - rows[0][1]))
    hz = mel_band_centers(params)
    figure = make_subplots(
        rows=len(rows),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        subplot_titles=[name for name, _ in rows],
    )
    for i, (name, levels) in enumerate(rows, start=1):
        shrunk, step = _shrink(levels)
        seconds = (
            start_s + np.arange(shrunk.shape[1]) * step * params.hop_length / params.sample_rate
        )
        is_difference = " - " in name
        figure.add_trace(
            go.Heatmap(
                z=shrunk,
                x=seconds,
                y=hz,
                colorscale="RdBu_r" if is_difference else "Magma",
                zmid=0 if is_difference else None,
                zmin=None if is_difference else 0,
                zmax=None if is_difference else 1,
                showscale=False,
                hovertemplate="%{x:.2f} s · %{y:.0f} Hz · %{z:.2f}<extra>" + name + "</extra>",
            ),
            row=i,
            col=1,
        )
        # Log frequency, as the mel picture spreads pitch: bass gets room, not a sliver.
        figure.update_yaxes(
            title_text="Hz",
            type="log",
            range=[np.log10(40), np.log10(params.max_frequency)],
            row=i,
            col=1,
        )
    figure.update_xaxes(title_text="seconds", row=len(rows), col=1)
    figure.update_layout(
        height=210 * len(rows) + 40, margin=dict(l=10, r=10, t=30, b=10), dragmode="zoom"
    )
    return figure
