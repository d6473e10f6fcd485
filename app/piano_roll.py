"""The piano roll of a take's notes against its sketch's: what "notes kept" counted, drawn.

Time runs in the song's seconds, pitch upwards with note names. Each sketch note is a bar:
solid where the take kept it, hatched with a red outline where it was lost. The take's own
notes are drawn thinner on top: light grey where they are the sketch's, orange where they
are extra. Numbered bar lines as the other figures draw them.

One horizontal bar trace per kind of note (``base`` = onset, ``x`` = length), not a shape
per note: a song's ~2,000 notes stay quick to draw and to zoom. Colours are ``rgb(...)``
(never hex: see :mod:`app.figures`) and read on Streamlit's light and dark themes alike.
The page shows it under the preview's spectrogram; :func:`draw_piano_roll` is the section
(a toggle, the figure and the lost notes as text) any page can use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.figures import COLOURS, bar_lines
from neurochip.notes_kept import NotesKept
from neurochip.transcription import note_name

#: One trace per kind of note, in the legend's order: name, colours, bar height (semitones).
KEPT, LOST, MATCHED, EXTRA = "kept", "lost", "matched", "extra"
LEGEND = {
    KEPT: "sketch notes kept",
    LOST: "sketch notes lost",
    MATCHED: "take notes, the sketch's",
    EXTRA: "take notes, extra",
}
KEPT_COLOUR = "rgb(31, 119, 180)"
LOST_FILL = "rgba(214, 39, 40, 0.18)"
MATCHED_COLOUR = "rgba(150, 150, 150, 0.75)"
EXTRA_COLOUR = COLOURS["orange"]
ROLL_BAR_LINE = "rgba(128, 128, 128, 0.6)"  # seen on white and on Streamlit's dark grey
SKETCH_HEIGHT, TAKE_HEIGHT = 0.8, 0.36
MARGIN_SEMITONES = 3
MOST_LOST_LISTED = 40


def piano_roll_figure(
    notes_kept: NotesKept,
    start_s: float = 0.0,
    bar_times_s: Sequence[float] | None = None,
    duration_s: float | None = None,
) -> go.Figure:
    """The sketch's notes and the take's, as matched by :func:`~neurochip.notes_kept.notes_kept`.

    Args:
        notes_kept: The match (its notes are timed from the span's start).
        start_s: Where the span starts in the song: the x axis is the song's seconds.
        bar_times_s: The song's bar starts, in the song's seconds (bar 1 first), drawn
            where they fall; ``None``: the match's own bars (its ``times_s``, numbered from
            ``first_bar``), or none when it was counted per second.
        duration_s: The span's length (the x range); ``None``: up to the last note.
    """
    found = notes_kept
    bar_of = _bar_numbers(found, start_s, bar_times_s)
    sketch, take = found.sketch, found.take
    kinds = (
        (KEPT, sketch, found.kept),
        (LOST, sketch, ~found.kept),
        (MATCHED, take, found.matched),
        (EXTRA, take, ~found.matched),
    )
    traces = []
    for kind, notes, which in kinds:
        starts = notes.starts_s[which] + start_s
        lengths = notes.ends_s[which] - notes.starts_s[which]
        pitches = notes.pitches[which]
        hover = [
            _hover(int(p), s, bar_of(s), kind)
            for s, p in zip(starts.tolist(), pitches.tolist(), strict=True)
        ]
        traces.append(_trace(kind, starts, lengths, pitches, hover))

    end = start_s + (
        duration_s
        if duration_s is not None
        else float(max(sketch.ends_s.max(initial=0.0), take.ends_s.max(initial=0.0), 1.0))
    )
    low, high = _pitch_range(sketch.pitches, take.pitches)
    tickvals = [p for p in range(low, high + 1) if _labelled(p, high - low)]
    figure = go.Figure(traces)
    figure.update_layout(
        barmode="overlay",
        bargap=0,
        height=int(min(480, max(240, 12 * (high - low) + 110))),
        margin=dict(l=10, r=10, t=52, b=10),
        dragmode="zoom",
        legend=dict(orientation="h", x=0, y=1.05, xanchor="left", yanchor="bottom"),
        hoverlabel=dict(namelength=0),
    )
    figure.update_xaxes(title_text="seconds", range=[start_s, end])
    figure.update_yaxes(
        title_text="note",
        range=[low - 0.5, high + 0.5],
        tickmode="array",
        tickvals=tickvals,
        ticktext=[note_name(p) for p in tickvals],
        zeroline=False,
    )
    shapes, labels = _bar_lines(found, start_s, bar_times_s, end)
    figure.update_layout(shapes=shapes, annotations=labels)
    if len(sketch) == 0 and len(take) == 0:
        figure.add_annotation(
            text="No notes here", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False
        )
    return figure


def lost_notes_text(notes_kept: NotesKept, start_s: float = 0.0) -> str:
    """The lost notes as lines of markdown, "bar 12 · E5 · 23.45 s", in time order (the
    first :data:`MOST_LOST_LISTED`, then how many more): findable and read by screen readers,
    where the figure is not."""
    lost = notes_kept.lost()
    if not lost:
        return "No sketch notes lost." if len(notes_kept.sketch) else "No sketch notes here."
    lines = [
        "- "
        + (f"bar {place.bar} · " if place.bar is not None else "")
        + f"{place.name} · {place.start_s + start_s:.2f} s"
        for place in lost[:MOST_LOST_LISTED]
    ]
    more = len(lost) - MOST_LOST_LISTED
    if more > 0:
        lines.append(f"- and {more} more")
    return f"**{len(lost)} lost** (sketch notes the take does not play):\n\n" + "\n".join(lines)


def draw_piano_roll(
    notes_kept: NotesKept | None,
    start_s: float,
    bar_times_s: Sequence[float] | None,
    duration_s: float | None,
    key: str,
    figures: dict | None = None,
    shown: str = "view.piano_roll",
) -> None:
    """A "Piano roll" toggle; on, the figure with the lost notes listed beside it.

    ``figures``: where to keep the figure between page runs (e.g. a memo per result);
    ``key`` names the chart; ``shown``: the session's view field the toggle shows (a
    composer's choice: it outlives a refresh and a trip to another page).
    """
    import streamlit as st  # the figure functions above need no Streamlit

    from app import state

    if notes_kept is None:
        return
    if not state.toggle(
        st,
        shown,
        "Piano roll",
        help="The sketch's notes and the take's, as counted: kept, lost (red), the take's "
        "own (grey) and extra (orange). Drag to zoom in; double-click to zoom out.",
    ):
        return
    bars_key = ("piano_roll", tuple(bar_times_s or ()))
    figure = None if figures is None else figures.get(bars_key)
    if figure is None:
        figure = piano_roll_figure(notes_kept, start_s, bar_times_s, duration_s)
        if figures is not None:
            figures[bars_key] = figure
    chart, listed = st.columns([4, 1])
    chart.plotly_chart(figure, width="stretch", key=f"{key}_chart")
    with listed.container(height=min(480, figure.layout.height or 300), border=False):
        st.markdown(lost_notes_text(notes_kept, start_s))


# --- helpers -----------------------------------------------------------------------------------


def _trace(kind: str, starts, lengths, pitches, hover: list[str]) -> go.Bar:
    sketch_note = kind in (KEPT, LOST)
    colour = {KEPT: KEPT_COLOUR, LOST: LOST_FILL, MATCHED: MATCHED_COLOUR, EXTRA: EXTRA_COLOUR}
    marker: dict = dict(color=colour[kind], line=dict(width=0))
    if kind == LOST:
        marker = dict(
            color=LOST_FILL,
            line=dict(color=COLOURS["red"], width=1.5),
            pattern=dict(shape="/", fgcolor=COLOURS["red"], size=6, solidity=0.3),
        )
    return go.Bar(
        name=f"{LEGEND[kind]} ({len(starts)})",
        orientation="h",
        base=np.asarray(starts, dtype=float),
        x=np.asarray(lengths, dtype=float),
        y=np.asarray(pitches, dtype=int),
        width=SKETCH_HEIGHT if sketch_note else TAKE_HEIGHT,
        marker=marker,
        hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>",
        textposition="none",
        meta=kind,
    )


def _hover(pitch: int, start_s: float, bar: int | None, kind: str) -> str:
    """ "A4 · bar 1 · 12.35 s · lost": the note, its bar (where there are bars) and onset in
    the song's seconds, what became of it."""
    where = (f"bar {bar} · " if bar is not None else "") + f"{start_s:.2f} s"
    what = {KEPT: "kept", LOST: "lost", MATCHED: "take · the sketch's", EXTRA: "take · extra"}
    return f"{note_name(pitch)} · {where} · {what[kind]}"


def _bar_numbers(found: NotesKept, start_s: float, bar_times_s: Sequence[float] | None):
    """song seconds -> the song's bar number there (None before bar 1, or without bars)."""
    if bar_times_s:
        starts, first = np.asarray(bar_times_s, dtype=float), 1
    elif found.segment == "bar" and len(found.times_s):
        starts, first = np.asarray(found.times_s, dtype=float) + start_s, found.first_bar
    else:
        return lambda _: None

    def bar(at: float) -> int | None:
        # As NotesKept places notes: a hair before a bar line is in that bar.
        index = int(np.searchsorted(starts, at + 1e-3, side="right")) - 1
        return index + first if index >= 0 else None

    return bar


def _bar_lines(
    found: NotesKept, start_s: float, bar_times_s: Sequence[float] | None, end: float
) -> tuple[list, list]:
    if bar_times_s:
        shapes, labels = bar_lines(bar_times_s, start_s, end)
    elif found.segment == "bar":
        starts = [float(t) + start_s for t in found.times_s]
        shapes, labels = bar_lines(starts, start_s, end, found.first_bar)
    else:
        return [], []
    for shape in shapes:
        shape["line"] = dict(color=ROLL_BAR_LINE, width=1, dash="dot")
    return shapes, labels


def _pitch_range(*pitches: np.ndarray) -> tuple[int, int]:
    present = np.concatenate([np.asarray(p, dtype=int) for p in pitches])
    if present.size == 0:
        return 60 - 12, 60 + 12
    return int(present.min()) - MARGIN_SEMITONES, int(present.max()) + MARGIN_SEMITONES


def _labelled(pitch: int, span: int) -> bool:
    """Which pitches the axis names: all on a narrow roll, C E G# on a wider, Cs on a wide."""
    if span <= 16:
        return True
    if span <= 40:
        return pitch % 4 == 0
    return pitch % 12 == 0
