"""Interactive spectrogram views: time in seconds, frequency in Hz, zoomable.

Three things shape the figure:

- Colours are written as ``rgb(...)``, never as hex. Streamlit's chart code (with any ``theme``,
  ``None`` included) replaces the hex strings ``#000001`` to ``#000040`` anywhere in a figure's
  JSON with its palette's colours, and Magma's darkest colour is ``#000004``: silence came out
  red (purple with ``theme=None``). See ``_rgb``.
- Rows are display rows, two per semitone (a log frequency axis), not the picture's 512 mel
  bands: a 210 px tall plot cannot show more, and the rows carry note names for the hover
  ("A4 446 Hz"). The y axis is a category axis of those names, evenly spaced, so it reads as a
  log axis; its ticks are plain Hz (50, 100, ..., 1k, ..., 10k).
- Levels are whole percents in one byte (``uint8``, the difference ``int8``): Plotly sends them
  as base64, a quarter of float32's weight, and a 1 % step is below what a colour scale shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import torch

from neurochip.spectrogram import SpectrogramParams, mel_band_centers

MAX_COLUMNS = 1600  # more than a screen shows; keeps long songs quick to draw
ROWS_PER_SEMITONE = 2  # ~190 rows from 40 Hz to 10 kHz: a row is about a pixel at 210 px
LOWEST_HZ = 40.0  # below this is rumble, not notes
ROW_HEIGHT_PX = 210
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
HZ_TICKS = (20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def _rgb(color: str) -> str:
    """``"#000004"`` -> ``"rgb(0, 0, 4)"``: a colour Streamlit's chart code leaves alone."""
    if color.startswith("#"):
        red, green, blue = plotly.colors.hex_to_rgb(color)
        return f"rgb({red}, {green}, {blue})"
    return color


def _colorscale(colors: list[str]) -> list[list]:
    return [[i / (len(colors) - 1), _rgb(c)] for i, c in enumerate(colors)]


LEVEL_COLORS = _colorscale(plotly.colors.sequential.Magma)  # silence black, loud pale yellow
DIFFERENCE_COLORS = _colorscale(plotly.colors.diverging.RdBu_r)  # quieter blue, louder red
BAR_LINE_COLOUR = "rgba(255, 255, 255, 0.55)"  # seen on black silence and on the loudest yellow


def midi_number(hz: float | np.ndarray) -> float | np.ndarray:
    """MIDI note number (69 = A4 = 440 Hz), fractional between notes."""
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)


def note_name(hz: float) -> str:
    """The nearest note, with sharps: ``note_name(440) == "A4"``, ``note_name(277.2) == "C#4"``."""
    if not hz > 0:
        raise ValueError(f"A note needs a positive frequency, not {hz} Hz.")
    midi = int(round(float(midi_number(hz))))
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def _hz_text(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


class _Rows:
    """The display rows: ``ROWS_PER_SEMITONE`` per semitone from ``LOWEST_HZ`` to the top."""

    def __init__(self, params: SpectrogramParams) -> None:
        low = max(LOWEST_HZ, float(params.min_frequency))
        first, last = math.ceil(midi_number(low)), math.floor(midi_number(params.max_frequency))
        self.first_midi = first
        count = (last - first + 1) * ROWS_PER_SEMITONE
        # Row k covers [edge k, edge k+1]; a note's rows share its name, not its pitch.
        edges_midi = first - 0.5 + np.arange(count + 1) / ROWS_PER_SEMITONE
        centers_midi = (edges_midi[:-1] + edges_midi[1:]) / 2
        self.edges_hz = 440.0 * 2.0 ** ((edges_midi - 69.0) / 12.0)
        self.centers_hz = 440.0 * 2.0 ** ((centers_midi - 69.0) / 12.0)
        self.labels = self._labels()
        self.band_hz = mel_band_centers(params)

    def _labels(self) -> list[str]:
        names = [note_name(hz) for hz in self.centers_hz]
        for decimals in range(3):  # whole Hz tell rows apart from ~35 Hz up
            labels = [
                f"{n} {hz:.{decimals}f} Hz" for n, hz in zip(names, self.centers_hz, strict=True)
            ]
            if len(set(labels)) == len(labels):
                break
        return labels

    def position(self, hz: float) -> float:
        """Where ``hz`` lies on the category axis (row k is centred on k)."""
        return (float(midi_number(hz)) - self.first_midi + 0.5) * ROWS_PER_SEMITONE - 0.5

    def ticks(self) -> tuple[list[float], list[str]]:
        low, high = self.edges_hz[0], self.edges_hz[-1]
        hz = [f for f in HZ_TICKS if low <= f <= high]
        return [round(self.position(f), 3) for f in hz], [_hz_text(f) for f in hz]

    def pool(self, levels: np.ndarray) -> np.ndarray:
        """Mel bands (bass first, ascending Hz) -> display rows.

        A row holding band centres takes their loudest (a thin harmonic stays bright); a row
        between two bands (the bass, where mel bands are wider than a semitone) interpolates.
        """
        rows = len(self.centers_hz)
        out = np.empty((rows, levels.shape[1]), dtype=np.float32)
        row_of_band = np.searchsorted(self.edges_hz, self.band_hz, side="right") - 1
        inside = np.flatnonzero((row_of_band >= 0) & (row_of_band < rows))
        filled = np.zeros(rows, dtype=bool)
        if len(inside):
            groups = row_of_band[inside]
            starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            out[groups[starts]] = np.maximum.reduceat(levels[inside], starts, axis=0)
            filled[groups[starts]] = True
        empty = np.flatnonzero(~filled)
        if len(empty):
            hz = self.centers_hz[empty]
            upper = np.clip(np.searchsorted(self.band_hz, hz), 1, len(self.band_hz) - 1)
            lo_hz, hi_hz = self.band_hz[upper - 1], self.band_hz[upper]
            weight = np.clip((hz - lo_hz) / (hi_hz - lo_hz), 0.0, 1.0)[:, None]
            out[empty] = (1.0 - weight) * levels[upper - 1] + weight * levels[upper]
        return out


def _levels(image: torch.Tensor, step: int) -> np.ndarray:
    """Picture (3, 512, W) in [0, 1] (white = silent) -> loudness 0..1, row 0 = bass, each
    column the loudest of ``step`` picture columns (the last may hold fewer).

    In NumPy: torch's mean over channels is ~50x slower on a CPU here."""
    pixels = image.detach().cpu().float().numpy()
    gray = pixels.sum(axis=0) / pixels.shape[0] if pixels.ndim == 3 else pixels
    if step > 1:  # the loudest column is the palest: pool by min before inverting
        gray = np.minimum.reduceat(gray, np.arange(0, gray.shape[1], step), axis=1)
    return 1.0 - gray[::-1]


def _percent(levels: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(levels, 0.0, 1.0) * 100.0).astype(np.uint8)


def _colorbar(domain: tuple[float, float], **kwargs) -> dict:
    return dict(
        x=1.005,
        xanchor="left",
        xpad=4,
        y=domain[0],
        yanchor="bottom",
        len=0.75 * (domain[1] - domain[0]),  # below its title
        thickness=10,
        outlinewidth=0,
        tickfont=dict(size=10),
        **kwargs,
    )


def spectrogram_figure(
    images: dict[str, torch.Tensor],
    start_s: float = 0.0,
    params: SpectrogramParams = SpectrogramParams(),
    difference: bool = True,
    bars_s: Sequence[float] = (),
) -> go.Figure:
    """One row per picture (e.g. input, output), plus output minus input when both exist.

    Time runs from ``start_s`` over the pictures' span; silence is black, loud is pale yellow;
    in the difference, red is louder in the second picture, blue quieter. ``bars_s``: where
    the song's bars start (bar 1 first), drawn as numbered lines where they fall in the span.
    """
    grid = _Rows(params)
    width = max(image.shape[-1] for image in images.values())
    step = max(1, math.ceil(width / MAX_COLUMNS))  # at most MAX_COLUMNS columns
    rows = [(name, _percent(grid.pool(_levels(image, step)))) for name, image in images.items()]
    columns = min(levels.shape[1] for _, levels in rows)
    span_s = (width - 1) * params.hop_length / params.sample_rate
    diff_name = None
    if difference and len(rows) >= 2:
        (first, a), (second, b) = rows[0], rows[1]
        diff_name = f"{second} - {first}"
        change = b[:, :columns].astype(np.int16) - a[:, :columns]
        rows.append((diff_name, change.astype(np.int8)))

    count = len(rows)
    gap = 30 / (ROW_HEIGHT_PX * count)  # room for the next plot's title
    height = (1.0 - gap * (count - 1)) / count
    domains = [(1.0 - (i + 1) * height - i * gap, 1.0 - i * height - i * gap) for i in range(count)]
    seconds_per_column = step * params.hop_length / params.sample_rate
    tickvals, ticktext = grid.ticks()
    layout: dict = dict(
        height=ROW_HEIGHT_PX * count + 50,
        margin=dict(l=10, r=10, t=24, b=10),
        dragmode="zoom",
        xaxis=dict(
            title=dict(text="seconds", standoff=4),
            range=[start_s, start_s + span_s],
            anchor=f"y{count}" if count > 1 else "y",
            domain=[0.0, 1.0],
        ),
        annotations=[],
    )
    traces = []
    for i, (name, z) in enumerate(rows):
        axis = "y" if i == 0 else f"y{i + 1}"
        domain = domains[i]
        layout["yaxis" if i == 0 else f"yaxis{i + 1}"] = dict(
            type="category",
            domain=list(domain),
            anchor="x",
            range=[-0.5, len(grid.labels) - 0.5],
            tickmode="array",
            tickvals=tickvals,
            ticktext=ticktext,
            title=dict(text="Hz", standoff=2),
            showgrid=False,
        )
        layout["annotations"].append(
            dict(
                text=name,
                x=0.5,
                y=domain[1],
                xref="paper",
                yref="paper",
                xanchor="center",
                yanchor="bottom",
                showarrow=False,
                font=dict(size=13),
            )
        )
        common = dict(
            z=z,
            x0=start_s + (step - 1) / 2 * params.hop_length / params.sample_rate,
            dx=seconds_per_column,
            y=grid.labels,
            xaxis="x",
            yaxis=axis,
        )
        if name == diff_name:
            top = max(1, int(np.abs(z.astype(np.int16)).max()))
            second = rows[1][0]
            trace = dict(
                type="heatmap",
                **common,
                colorscale=DIFFERENCE_COLORS,
                zmin=-top,
                zmax=top,
                colorbar=_colorbar(
                    domain,
                    title=dict(text=f"in {second}", side="top", font=dict(size=11)),
                    tickmode="array",
                    tickvals=[-top, 0, top],
                    ticktext=["quieter", "same", "louder"],
                ),
                hovertemplate="%{x:.2f} s<br>%{y}<br>level %{z:+d}<extra>" + name + "</extra>",
            )
        else:
            trace = dict(
                type="heatmap",
                **common,
                colorscale=LEVEL_COLORS,
                zmin=0,
                zmax=100,
                colorbar=_colorbar(
                    domain,
                    title=dict(text="level", side="top", font=dict(size=11)),
                    tickmode="array",
                    tickvals=[0, 100],
                    ticktext=["silent", "loud"],
                ),
                hovertemplate="%{x:.2f} s<br>%{y}<br>level %{z}%<extra>" + name + "</extra>",
            )
        traces.append(trace)
    shapes, labels = bar_lines(bars_s, start_s, start_s + span_s)
    layout["shapes"] = shapes
    layout["annotations"] += labels
    return go.Figure(data=traces, layout=layout)


def bar_lines(
    bars_s: Sequence[float], low: float, high: float, first: int = 1
) -> tuple[list, list]:
    """Plotly shapes and labels for the bar lines between ``low`` and ``high`` seconds;
    ``bars_s[0]`` is bar ``first``."""
    shapes, labels = [], []
    for number, at in enumerate(bars_s, start=first):
        if not low <= at <= high:
            continue
        shapes.append(
            dict(
                type="line",
                x0=at,
                x1=at,
                xref="x",
                y0=0,
                y1=1,
                yref="paper",
                line=dict(color=BAR_LINE_COLOUR, width=1, dash="dot"),
            )
        )
        labels.append(
            dict(
                text=str(number),
                x=at,
                y=1.0,
                xref="x",
                yref="paper",
                xanchor="left",
                yanchor="bottom",
                showarrow=False,
                font=dict(size=10, color="rgb(140, 140, 140)"),
            )
        )
    return shapes, labels


#: Notes kept from here up: the take keeps the sketch's notes (green); from DRIFTING, some
#: notes changed (orange); below, other notes (red). The Takes page's badges use the same.
FAITHFUL, DRIFTING = 0.85, 0.65
COLOURS = {"green": "rgb(44, 160, 44)", "orange": "rgb(255, 127, 14)", "red": "rgb(214, 39, 40)"}


def faithfulness_colour(score: float) -> str:
    """green, orange or red for a notes-kept score (see FAITHFUL, DRIFTING)."""
    return "green" if score >= FAITHFUL else "orange" if score >= DRIFTING else "red"


def faithfulness_figure(
    times_s,
    strip,
    ends_s,
    score: float,
    start_s: float = 0.0,
    bars_s: Sequence[float] = (),
    label: str = "notes kept",
) -> go.Figure:
    """The note-faithfulness strip: one bar per bar (or second), coloured by its score.

    Colours as the Takes page's badges (:func:`faithfulness_colour`); a bar more than 0.15
    below the take's own score is red too: the place to listen first. Silent segments (NaN:
    no sketch notes there) are left out. ``label``: what the scores are ("notes kept",
    a share shown in percent; "chroma", a similarity 0-1).
    """
    times = np.asarray(times_s, dtype=float) + start_s
    widths = np.asarray(ends_s, dtype=float) + start_s - times
    values = np.asarray(strip, dtype=float)
    colours = [
        COLOURS["red" if value < score - 0.15 else faithfulness_colour(value)]
        for value in np.nan_to_num(values, nan=1.0)
    ]
    figure = go.Figure(
        go.Bar(
            x=times + widths / 2,
            y=np.nan_to_num(values, nan=0.0),
            width=widths * 0.92,
            marker_color=colours,
            hovertemplate="%{x:.1f} s · "
            + ("%{y:.0%}" if label == "notes kept" else "%{y:.2f}")
            + f" {label}<extra></extra>",
        )
    )
    figure.add_hline(y=score, line_dash="dot", line_color="rgb(128, 128, 128)")
    figure.update_yaxes(range=[0, 1], title_text=label, fixedrange=True)
    figure.update_xaxes(title_text="seconds")
    figure.update_layout(height=150, margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    if len(times):
        shapes, _ = bar_lines(bars_s, float(times[0]), float(times[-1] + widths[-1]))
        figure.update_layout(shapes=shapes)
    return figure
