"""Variation grids: one span of a sketch rendered across seeds x denoise (or guidance).

A composer who does not yet know which denoise or which seed suits a song renders a small
grid of them and listens: rows are seeds, columns the values of one other setting (denoise
*or* guidance), up to 4 x 4. Every cell is rendered in **one** denoising loop
(:meth:`Engine.render_many` / :meth:`Engine.preview_many`: the cells' windows share the
UNet's calls), and each gets its note faithfulness (:func:`note_faithfulness`), so the grid
shows at once how far each value lets the notes drift.

The app's Arrange page renders a grid of its preview region; ``neurochip sweep`` renders the
whole span and writes one file per cell with a summary. Both call :func:`render_variations`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neurochip.engine import (
    FAITHFUL_PREVIEW,
    Engine,
    PreviewQuality,
    ProgressCallback,
    Render,
)
from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.faithfulness import Faithfulness, span_faithfulness
from neurochip.io.audio import Audio
from neurochip.library.metadata import take_metadata
from neurochip.library.names import default_take_name
from neurochip.library.store import TakeLibrary
from neurochip.library.thumbnails import spectrogram_thumbnail
from neurochip.settings import RenderSettings, describe
from neurochip.sketch import Sketch

__all__ = [
    "COLUMN_AXES",
    "KIND",
    "MAX_CELLS",
    "MAX_VALUES",
    "Variation",
    "VariationGrid",
    "best_variation",
    "best_variations",
    "keep_variations",
    "render_variations",
    "summary",
    "summary_csv",
    "variation_grid",
    "variation_metadata",
]

log = logging.getLogger(__name__)

#: Most cells in a grid: 4 x 4.
MAX_CELLS = 16

#: Most values along one axis.
MAX_VALUES = 4

#: The settings a grid's columns may vary (its rows are always seeds).
COLUMN_AXES = ("denoise", "guidance")

#: What a variation is called in its metadata and in the take library.
KIND = "variation"

#: Share of the progress bar the engine gets; note faithfulness takes the rest.
_ENGINE_SHARE = 0.95


@dataclass(frozen=True)
class VariationGrid:
    """The settings of every cell of a grid: rows are seeds, columns one other setting.

    Attributes:
        base: The settings every cell starts from (prompt, steps, span, ...).
        row_axis: Always ``"seed"``.
        column_axis: ``"denoise"``, ``"guidance"``, or ``None`` for a single column of
            ``base``'s value (a grid of seeds alone).
        rows: The seeds, top to bottom.
        columns: The column axis's values, left to right; empty when ``column_axis`` is
            ``None``.
        cells: Each cell's settings, row by row (``cells[row * n_columns + column]``).
    """

    base: RenderSettings
    row_axis: str
    column_axis: str | None
    rows: tuple[int, ...]
    columns: tuple[float, ...]
    cells: list[RenderSettings]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns): a grid of seeds alone has one column."""
        return len(self.rows), max(1, len(self.columns))

    def __len__(self) -> int:
        return len(self.cells)

    def position(self, i: int) -> tuple[int, int]:
        """(row, column) of cell ``i``."""
        if not 0 <= i < len(self.cells):
            raise IndexError(f"cell {i} is not in a grid of {len(self.cells)} cells")
        return divmod(i, self.shape[1])

    def index(self, row: int, column: int = 0) -> int:
        """The cell at (``row``, ``column``)."""
        rows, columns = self.shape
        if not (0 <= row < rows and 0 <= column < columns):
            raise IndexError(f"({row}, {column}) is not in a {rows} x {columns} grid")
        return row * columns + column

    def column_label(self, column: int) -> str:
        """The header of a column: "denoise 0.35", or "" without a column axis."""
        if self.column_axis is None:
            return ""
        return f"{self.column_axis} {self.columns[column]:g}"

    def row_label(self, row: int) -> str:
        """The header of a row: "seed 2"."""
        return f"{self.row_axis} {self.rows[row]}"

    def label(self, i: int) -> str:
        """What cell ``i`` is: "seed 2 · denoise 0.35" (just "seed 2" without columns)."""
        row, column = self.position(i)
        parts = [self.row_label(row), self.column_label(column)]
        return " · ".join(p for p in parts if p)

    def chosen(self, i: int) -> dict[str, Any]:
        """What cell ``i`` chose of its own: ``{"seed": 2, "denoise": 0.35}``, the settings a
        composer takes from it ("Use this"), whatever else has changed since."""
        row, column = self.position(i)
        values: dict[str, Any] = {self.row_axis: self.rows[row]}
        if self.column_axis is not None:
            values[self.column_axis] = self.columns[column]
        return values

    def changed_settings(self, settings: RenderSettings) -> list[str]:
        """The labels of the settings ``settings`` has other than the grid's base.

        The seed and the column axis are the grid's own (a cell taken with *Use this* has
        them), so they never count: an empty list means the grid still answers for
        ``settings``. E.g. ``["Prompt", "Steps"]``.
        """
        varied = {self.row_axis, self.column_axis}
        return [
            describe(RenderSettings, f.name).label
            for f in dataclasses.fields(RenderSettings)
            if f.name not in varied and getattr(settings, f.name) != getattr(self.base, f.name)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-able values (:meth:`from_dict` makes it again)."""
        return {
            "base": self.base.to_dict(),
            "rows": list(self.rows),
            "column_axis": self.column_axis,
            "columns": list(self.columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariationGrid:
        """The grid :meth:`to_dict` described (its cells made again by :func:`variation_grid`).

        Raises:
            NeuroChipError: For values no grid has (the settings' or the grid's message).
        """
        axis = data.get("column_axis")
        if axis is not None and axis not in COLUMN_AXES:
            raise NeuroChipError(f"A variation grid's columns cannot vary {axis!r}.")
        columns = {axis: list(data["columns"])} if axis is not None else {}
        return variation_grid(RenderSettings.from_dict(data["base"]), list(data["rows"]), **columns)


def variation_grid(
    base: RenderSettings,
    seeds: Sequence[int],
    denoise: Sequence[float] | None = None,
    guidance: Sequence[float] | None = None,
) -> VariationGrid:
    """The grid of ``seeds`` (rows) x ``denoise`` or ``guidance`` values (columns).

    Each cell is ``base`` with its seed and its column's value; everything else (prompt,
    steps, span, ...) is ``base``'s. With neither ``denoise`` nor ``guidance`` the grid has
    one column, at ``base``'s values.

    Raises:
        NeuroChipError: For both ``denoise`` and ``guidance`` given, an axis with no values
            or more than :data:`MAX_VALUES`, more than :data:`MAX_CELLS` cells, the same
            value twice, or a value the settings refuse (the settings' own message).
    """
    if denoise is not None and guidance is not None:
        raise NeuroChipError(
            "A variation grid varies seeds and one other setting: denoise or guidance, not "
            "both. Choose one; set the other for every cell in the base settings."
        )
    rows = _values("seed", seeds)
    column_axis, columns = None, ()
    if denoise is not None:
        column_axis, columns = "denoise", _values("denoise", denoise)
    elif guidance is not None:
        column_axis, columns = "guidance", _values("guidance", guidance)
    if len(rows) * max(1, len(columns)) > MAX_CELLS:  # not reachable at 4 x 4; kept as a guard
        raise NeuroChipError(f"A variation grid has at most {MAX_CELLS} cells.")

    cells: list[RenderSettings] = []
    for seed in rows:
        for value in columns or (None,):
            changes: dict[str, Any] = {"seed": seed}
            if column_axis is not None:
                changes[column_axis] = value
            # replace() runs RenderSettings' own checks: their messages name the setting.
            cells.append(dataclasses.replace(base, **changes))
    return VariationGrid(
        base=base,
        row_axis="seed",
        column_axis=column_axis,
        rows=tuple(int(s) for s in rows),
        columns=tuple(float(v) for v in columns),
        cells=cells,
    )


def _values(axis: str, values: Sequence[Any]) -> tuple[Any, ...]:
    """The values of one axis: 1 to MAX_VALUES of them, each once."""
    if isinstance(values, (str, bytes)):
        raise NeuroChipError(f"Give the {axis} values as a list of numbers, not {values!r}.")
    values = tuple(values)
    plural = "seeds" if axis == "seed" else f"{axis} values"
    if not values:
        raise NeuroChipError(f"A variation grid needs at least one {axis}.")
    if len(values) > MAX_VALUES:
        raise NeuroChipError(
            f"A variation grid takes at most {MAX_VALUES} {plural}, not {len(values)} "
            f"(at most {MAX_VALUES} x {MAX_VALUES} = {MAX_CELLS} cells)."
        )
    seen: list[Any] = []
    for value in values:
        # Only numbers are compared here; RenderSettings says what is wrong with the rest.
        if _is_number(value) and any(_is_number(s) and s == value for s in seen):
            raise NeuroChipError(
                f"The {plural} of a variation grid must differ: {value:g} is there twice."
            )
        seen.append(value)
    return values


def _is_number(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(value)
    except TypeError:
        return False


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class Variation:
    """One rendered cell of a grid.

    Attributes:
        settings: The cell's settings (for "Use this": seed, denoise, guidance).
        render: The engine's result: ``audio`` (the take), ``source`` (the sketch span as
            the engine heard it), ``output_image`` (its spectrogram), ``start_s``.
        faithfulness: Its note faithfulness to the sketch over the same span; the strip's
            times are seconds from the span's start.
        label: "seed 2 · denoise 0.35".
        region: ``(start_s, duration_s)`` for a preview region, ``None`` for the span of
            the settings.
    """

    settings: RenderSettings
    render: Render
    faithfulness: Faithfulness
    label: str
    region: tuple[float, float] | None = None


def render_variations(
    engine: Engine,
    sketch: Sketch | Audio,
    grid: VariationGrid,
    *,
    region: tuple[float, float] | None = None,
    bar_times_s: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    quality: PreviewQuality = FAITHFUL_PREVIEW,
) -> list[Variation]:
    """Render every cell of ``grid`` in one denoising loop and score each one's notes.

    Args:
        engine: The engine to render with.
        sketch: The sketch (or its audio).
        grid: From :func:`variation_grid`.
        region: ``(start_s, duration_s)``: render this preview region
            (:meth:`Engine.preview_many`, fast: the song's encoding is reused). ``None``:
            render the base settings' span (``start_s``, ``duration_s``) as full takes
            (:meth:`Engine.render_many`).
        bar_times_s: Where the song's bars start, in seconds from the song's start (e.g.
            :func:`~neurochip.faithfulness.bar_times` of a MIDI sketch): each cell's
            faithfulness strip then has a score per bar (the first one the bar the span
            starts in), else per second.
        progress: ``progress(fraction, stage)``: the engine's stages, then
            "note faithfulness".
        cancel: Set it to stop.
        quality: How a region is previewed (:data:`~neurochip.engine.QUICK_PREVIEW`: about
            twice as fast). Full takes ignore it.

    Returns:
        One :class:`Variation` per cell, in the grid's order.

    Raises:
        RenderCancelled: When ``cancel`` was set.
        NeuroChipError: For a span or region outside the song (or too short), or a sketch
            silent over it (no notes to compare with).
    """
    audio = sketch.audio if isinstance(sketch, Sketch) else sketch

    def engine_progress(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(_ENGINE_SHARE * fraction, stage)

    if region is not None:
        start_s, duration_s = region
        renders = engine.preview_many(
            audio, grid.cells, start_s, duration_s, engine_progress, cancel, quality=quality
        )
    else:
        # The cells carry the base settings' span.
        renders = engine.render_many(audio, grid.cells, engine_progress, cancel)

    variations = []
    for i, (settings, render) in enumerate(zip(grid.cells, renders, strict=True)):
        if cancel is not None and cancel.is_set():
            raise RenderCancelled("The variation grid was cancelled.")
        if progress is not None:
            progress(_ENGINE_SHARE + (1 - _ENGINE_SHARE) * i / len(renders), "note faithfulness")
        variations.append(
            Variation(
                settings=settings,
                render=render,
                faithfulness=span_faithfulness(
                    sketch, render.source, render.audio, render.start_s, bar_times_s
                ),
                label=grid.label(i),
                region=None if region is None else (float(region[0]), float(region[1])),
            )
        )
    if progress is not None:
        progress(1.0, "done")
    return variations


def best_variation(variations: Sequence[Variation]) -> int:
    """The index of the cell that keeps the notes best (the first of equals): notes kept
    where they were counted, else the chroma score."""
    if not variations:
        raise ValueError("no variations")
    scores = [v.faithfulness.kept for v in variations]
    return scores.index(max(scores))


def best_variations(variations: Sequence[Variation], decimals: int = 2) -> list[int]:
    """Every cell that keeps the notes best as the app shows them: notes kept (a share, to
    ``decimals`` places: whole percent) where notes were counted, else the chroma score;
    the chroma score (to ``decimals`` places) breaks a tie.

    A grid whose cells read 93%, 93% and 93% with one chroma has three best cells, not the
    first of them: marking one would claim a difference nobody can see. And where every
    cell reads the same, none is best: there is nothing to choose between.
    """
    if not variations:
        raise ValueError("no variations")
    shown = [
        (round(v.faithfulness.kept, decimals), round(v.faithfulness.score, decimals))
        for v in variations
    ]
    top = max(shown)
    best = [i for i, score in enumerate(shown) if score == top]
    return [] if len(variations) > 1 and len(best) == len(variations) else best


# --- keeping and summing up ----------------------------------------------------------------------


def variation_metadata(variation: Variation, source_name: str | None = None) -> dict[str, Any]:
    """The metadata a variation's file carries (:func:`take_metadata`, kind "variation").

    Its settings are keyed "A" (a single take); for a preview region its span is the
    region. The cell's label (``"variation"``) and its note faithfulness
    (``"faithfulness"``: :meth:`Faithfulness.to_dict`, as a take set's files carry it) come
    along.
    """
    settings = variation.settings
    if variation.region is not None:
        render = variation.render
        duration_s = render.audio.frames / render.audio.sample_rate
        settings = settings.replace(start_s=round(render.start_s, 6), duration_s=duration_s)
    return take_metadata(
        KIND,
        {"A": settings},
        source_name,
        variation.render.info,
        variation=variation.label,
        faithfulness=variation.faithfulness.to_dict(),
    )


def keep_variations(
    library: TakeLibrary, variations: Sequence[Variation], source_name: str | None = None
) -> list[str]:
    """Keep each variation in the take library (kind "variation"); returns their take ids."""
    ids = []
    for variation in variations:
        metadata = variation_metadata(variation, source_name)
        # "song — variation: funk (seed 2) · denoise 0.35": the seed is there already.
        name = " · ".join([default_take_name(metadata), *variation.label.split(" · ")[1:]])
        ids.append(
            library.add(
                variation.render.audio, metadata, name=name, thumbnail=_thumbnail(variation)
            ).id
        )
    return ids


def _thumbnail(variation: Variation):
    try:
        return spectrogram_thumbnail(variation.render.output_image)
    except (NeuroChipError, RuntimeError, ValueError) as err:
        # A picture is not worth losing the take over.
        log.warning("No thumbnail for this variation: %s", err)
        return None


def summary(
    grid: VariationGrid,
    variations: Sequence[Variation],
    files: Sequence[str] | None = None,
    source_name: str | None = None,
) -> dict[str, Any]:
    """The grid's results as plain JSON data: one entry per cell, with the strips.

    ``files`` names each cell's file (in the grid's order), where they were written.
    """
    rows = _rows(grid, variations, files)
    cells = []
    for row, variation in zip(rows, variations, strict=True):
        cells.append({**row, "faithfulness_detail": variation.faithfulness.to_dict()})
    best = best_variation(variations)
    return {
        "source": source_name,
        "rows": grid.row_axis,
        "columns": grid.column_axis,
        "seeds": list(grid.rows),
        "values": list(grid.columns),
        "start_s": round(variations[0].render.start_s, 6),
        "duration_s": round(variations[0].render.audio.duration_s, 6),
        "best": {"cell": best + 1, "label": variations[best].label},
        "cells": cells,
    }


#: The columns of :func:`summary_csv`.
CSV_FIELDS = (
    "cell",
    "row",
    "column",
    "label",
    "file",
    "seed",
    "denoise",
    "guidance",
    "prompt",
    "negative_prompt",
    "steps",
    "scheduler",
    "faithfulness",
    "notes_kept",
    "best",
)


def summary_csv(
    grid: VariationGrid, variations: Sequence[Variation], files: Sequence[str] | None = None
) -> str:
    """The grid's results as CSV text: a header, then one line per cell in the grid's order."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_rows(grid, variations, files))
    return out.getvalue()


def notes_kept_of(variation: Variation) -> float | None:
    """A cell's notes kept (to 4 places) for a summary; ``None`` where notes were not
    counted (its ``faithfulness.kept`` is then the chroma score, not a share of notes)."""
    notes = variation.faithfulness.notes
    return None if notes is None else round(notes.score, 4)


def _rows(
    grid: VariationGrid, variations: Sequence[Variation], files: Sequence[str] | None
) -> list[dict[str, Any]]:
    if len(variations) != len(grid.cells):
        raise ValueError("one variation per cell of the grid")
    if files is not None and len(files) != len(variations):
        raise ValueError("one file per variation")
    best = best_variation(variations)
    rows = []
    for i, variation in enumerate(variations):
        row, column = grid.position(i)
        s = variation.settings
        rows.append(
            {
                "cell": i + 1,
                "row": row + 1,
                "column": column + 1,
                "label": variation.label,
                "file": None if files is None else files[i],
                "seed": s.seed,
                "denoise": s.denoise,
                "guidance": s.guidance,
                "prompt": s.prompt,
                "negative_prompt": s.negative_prompt,
                "steps": s.steps,
                "scheduler": s.scheduler,
                "faithfulness": round(variation.faithfulness.score, 4),
                "notes_kept": notes_kept_of(variation),
                "best": i == best,
            }
        )
    return rows
