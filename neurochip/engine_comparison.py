"""Engines compared on one sketch: the same region, the same seeds, each engine's notes kept.

A composer choosing between Riffusion, ACE-Step and Stable Audio 3 renders one region of the
sketch with each of them, a few seeds each, and reads side by side how many of the sketch's
notes each keeps (:attr:`Faithfulness.kept <neurochip.faithfulness.Faithfulness.kept>`) and how
long each took. Each engine's seeds are one :func:`~neurochip.variations.render_variations`
grid (rows of seeds, one column): **one batch per engine**, scored as a grid's cells are.

Engines are loaded one at a time and let go after their row, so only one model is in memory
at once (an engine the caller hands in stays the caller's). An engine that cannot do it (its
weights are not here, the span is longer than it renders, sections it does not follow) gives
a row that says why; the others still render.

Each engine renders with its own defaults for the knobs whose default differs by engine
(:data:`~neurochip.kinds.KIND_DEFAULTS`: ACE-Step's and Stable Audio 3's 8 steps): a value
left at any engine's default becomes this engine's, a value the composer chose stays. ACE-Step
is told the sketch's tempo, metre and key where the settings do not say them
(:mod:`neurochip.song_facts`).

The app's Arrange page (*Compare engines*) and ``neurochip sweep --engines`` call
:func:`compare_engines`.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import io
import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from neurochip.engine import FAITHFUL_PREVIEW, Engine, PreviewQuality, ProgressCallback
from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.io.audio import Audio
from neurochip.kinds import KIND_DEFAULTS, KIND_NAMES, KINDS
from neurochip.model_spec import ModelSpec
from neurochip.settings import RenderSettings, default_of
from neurochip.sketch import Sketch
from neurochip.stage_words import stage_words
from neurochip.variations import (
    Variation,
    VariationGrid,
    notes_kept_of,
    render_variations,
    variation_grid,
)

__all__ = [
    "CSV_FIELDS",
    "EngineRow",
    "best_engine",
    "best_engines",
    "compare_engines",
    "comparison_csv",
    "comparison_summary",
    "engine_grid",
    "engine_settings",
    "parse_kinds",
]

log = logging.getLogger(__name__)

#: Loads an engine from its spec (default: :meth:`Engine.from_pretrained`).
Loader = Callable[[ModelSpec], Engine]


@dataclass
class EngineRow:
    """One engine's part of a comparison: its takes of the region, or why it has none.

    Attributes:
        kind: The engine kind ("riffusion", "ace-step", "stable-audio-3").
        name: What it is, for people: "Stable Audio 3 stabilityai/stable-audio-3-medium".
        spec: What it was loaded from (``None`` for an engine built by hand).
        settings: The settings it rendered with (its own defaults; before the seeds).
        cells: One rendered take per seed, in the seeds' order, each with its note
            faithfulness; empty where it failed.
        seconds: Seconds its takes took, all seeds together, in one batch (rendering and
            scoring; not the load).
        load_s: Seconds its model took to load (``None`` for an engine handed in).
        error: Why it has no takes (the engine's own message), else ``None``.
    """

    kind: str
    name: str
    spec: ModelSpec | None = None
    settings: RenderSettings | None = None
    cells: list[Variation] = field(default_factory=list)
    seconds: float | None = None
    load_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.cells)

    @property
    def kept(self) -> float | None:
        """Its seeds' notes kept, on average (the note measure, else chroma); None without."""
        return statistics.fmean(c.faithfulness.kept for c in self.cells) if self.cells else None

    @property
    def chroma(self) -> float | None:
        """Its seeds' chroma similarity to the sketch, on average; None without takes."""
        return statistics.fmean(c.faithfulness.score for c in self.cells) if self.cells else None

    @property
    def seconds_per_seed(self) -> float | None:
        if self.seconds is None or not self.cells:
            return None
        return self.seconds / len(self.cells)


# --- each engine's settings ----------------------------------------------------------------------


def parse_kinds(text: str | Sequence[str]) -> list[str]:
    """``"riffusion,stable-audio-3"`` (or a list) -> the engine kinds, each once, checked.

    Raises:
        NeuroChipError: For none, an unknown kind, or one named twice.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = [item.strip() for item in items if item.strip()]
    if not kinds:
        raise NeuroChipError(f"Name at least one engine to compare: {', '.join(KINDS)}.")
    for kind in kinds:
        if kind not in KINDS:
            raise NeuroChipError(f"Unknown engine {kind!r}: NeuroChip compares {', '.join(KINDS)}.")
    twice = [kind for kind in dict.fromkeys(kinds) if kinds.count(kind) > 1]
    if twice:
        raise NeuroChipError(f"{twice[0]} is named twice: compare each engine once.")
    return kinds


def engine_settings(
    settings: RenderSettings, kind: str, sketch: Sketch | Audio | None = None
) -> RenderSettings:
    """``settings`` as engine ``kind`` renders them in a comparison.

    Each knob whose default differs by engine (:data:`~neurochip.kinds.KIND_DEFAULTS`) that is
    at some engine's default (50 steps, or 8) takes ``kind``'s own; one the composer chose (4
    steps) stays. For ACE-Step, the sketch's tempo, metre and key where ``settings`` leave
    them empty (a :class:`~neurochip.sketch.Sketch` is needed for them).
    """
    changes: dict[str, Any] = {}
    for name in sorted({name for defaults in KIND_DEFAULTS.values() for name in defaults}):
        generic = default_of(RenderSettings, name)
        defaults = {generic, *(d.get(name, generic) for d in KIND_DEFAULTS.values())}
        if getattr(settings, name) in defaults:
            changes[name] = KIND_DEFAULTS[kind].get(name, generic)
    if kind == "ace-step" and isinstance(sketch, Sketch):
        from neurochip.song_facts import facts_of

        facts = facts_of(sketch)
        changes["bpm"] = settings.bpm or facts.bpm
        changes["time_signature"] = settings.time_signature or facts.beats_per_bar
        changes["key"] = settings.key or facts.key or ""
    return dataclasses.replace(settings, **changes) if changes else settings


def engine_grid(
    settings: RenderSettings,
    kind: str,
    seeds: Sequence[int],
    sketch: Sketch | Audio | None = None,
) -> VariationGrid:
    """The seeds engine ``kind`` renders, as a grid of one column (:func:`engine_settings`).

    Raises:
        NeuroChipError: For no seeds, more than four, or one twice (the grid's message).
    """
    return variation_grid(engine_settings(settings, kind, sketch), seeds)


# --- the comparison ------------------------------------------------------------------------------


def compare_engines(
    engines: Sequence[ModelSpec | Engine],
    sketch: Sketch | Audio,
    settings: RenderSettings,
    seeds: Sequence[int],
    *,
    region: tuple[float, float] | None = None,
    bar_times_s: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    quality: PreviewQuality = FAITHFUL_PREVIEW,
    local_files_only: bool | None = None,
    load: Loader | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[EngineRow]:
    """Render one region (or the settings' span) with each engine, ``seeds`` each, and score
    every take's notes.

    Args:
        engines: What to compare, in the rows' order: specs (loaded here, one at a time, and
            let go after their row) or engines already loaded (left as they are).
        sketch: The sketch (a :class:`~neurochip.sketch.Sketch` for its notes; audio works,
            transcribed).
        settings: The composer's settings (prompt, denoise, ...); each engine takes its own
            defaults (:func:`engine_settings`).
        seeds: 1 to 4 seeds: each engine renders them in one batch.
        region: ``(start_s, duration_s)`` of a preview region; ``None``: the span of
            ``settings`` as full takes.
        bar_times_s: The song's bar starts, for per-bar strips (see
            :func:`~neurochip.variations.render_variations`).
        progress: ``progress(fraction, stage)`` across all engines; the stage names the one
            at work ("denoising: step 3 of 8 · Stable Audio 3, engine 2 of 3").
        cancel: Set it to stop: the comparison raises, and nothing of it is returned.
        quality: How a region is previewed (full takes ignore it).
        local_files_only: Never download weights (default: ``HF_HUB_OFFLINE``).
        load: Loads a spec (default :meth:`Engine.from_pretrained`).
        clock: Seconds, for the times reported (default :func:`time.perf_counter`).

    Returns:
        One :class:`EngineRow` per engine, in ``engines``' order.

    Raises:
        RenderCancelled: When ``cancel`` was set.
        NeuroChipError: For no engines, or bad seeds (before any model loads).
    """
    if not engines:
        raise NeuroChipError("Choose at least one engine to compare.")
    variation_grid(settings, seeds)  # bad seeds: said before any model loads
    if load is None:

        def load(spec: ModelSpec) -> Engine:
            return Engine.from_pretrained(spec, local_files_only=local_files_only)

    rows = []
    for i, item in enumerate(engines):
        spec = item if isinstance(item, ModelSpec) else getattr(item, "spec", None)
        kind = spec.kind if spec is not None else _kind_of(item)
        name = KIND_NAMES.get(kind, kind)
        row = EngineRow(kind, spec.describe() if spec is not None else name, spec)

        def report(fraction: float, stage: str, i: int = i, name: str = name) -> None:
            if progress is not None:
                where = f"{name}, engine {i + 1} of {len(engines)}"
                progress((i + min(1.0, max(0.0, fraction))) / len(engines), f"{stage} · {where}")

        try:
            row.settings = engine_settings(settings, kind, sketch)
            grid = variation_grid(row.settings, seeds)
            engine = item
            if isinstance(item, ModelSpec):
                report(0.0, "loading the model")
                started = clock()
                engine = load(item)
                row.load_s = clock() - started
            started = clock()
            row.cells = _render(engine, sketch, grid, region, bar_times_s, report, cancel, quality)
            row.seconds = clock() - started
        except RenderCancelled:
            raise
        except NeuroChipError as err:
            row.error = str(err)
        except (RuntimeError, MemoryError, OSError) as err:  # out of memory, a file gone
            log.exception("%s failed in an engine comparison", name)
            row.error = f"{name} failed: {err}"
        finally:
            engine = None
            if isinstance(item, ModelSpec):
                _let_go()
        rows.append(row)
    if progress is not None:
        progress(1.0, "done")
    return rows


def _render(engine, sketch, grid, region, bar_times_s, report, cancel, quality) -> list[Variation]:
    def words(fraction: float, stage: str) -> None:
        report(fraction, stage_words(stage))

    return render_variations(
        engine,
        sketch,
        grid,
        region=region,
        bar_times_s=bar_times_s,
        progress=words,
        cancel=cancel,
        quality=quality,
    )


def _kind_of(engine: Any) -> str:
    """An engine built by hand: its kind as its takes record it."""
    try:  # Riffusion's takes say no engine: the default's
        return str(engine.backend.info().get("engine") or KINDS[0])
    except AttributeError:
        return KINDS[0]


def _let_go() -> None:
    """A model loaded here is dropped: its memory back before the next one loads."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _row_notes_kept(row: EngineRow) -> float | None:
    """A row's mean notes kept for a summary; ``None`` unless every cell's notes were counted
    (``row.kept`` then ranks by chroma, which a summary must not call notes kept)."""
    notes = [cell.faithfulness.notes for cell in row.cells]
    if not notes or None in notes:
        return None
    return round(statistics.fmean(n.score for n in notes), 4)


def best_engines(rows: Sequence[EngineRow], decimals: int = 2) -> list[int]:
    """The rows that keep the most notes as scores are shown (ties all marked); [] if none
    rendered, if only one did (nothing to compare it with) or if all read the same."""
    shown = {i: round(row.kept, decimals) for i, row in enumerate(rows) if row.kept is not None}
    if len(shown) < 2:
        return []
    top = max(shown.values())
    best = [i for i, kept in shown.items() if kept == top]
    return [] if len(best) == len(shown) else best


def best_engine(rows: Sequence[EngineRow]) -> int | None:
    """The row that keeps the most notes (the first of equals); None if none rendered."""
    scored = [(row.kept, -i) for i, row in enumerate(rows) if row.kept is not None]
    return -max(scored)[1] if scored else None


# --- summing up ----------------------------------------------------------------------------------

#: The columns of :func:`comparison_csv`.
CSV_FIELDS = (
    "engine",
    "model",
    "seed",
    "file",
    "notes_kept",
    "chroma",
    "seconds",
    "steps",
    "denoise",
    "prompt",
    "error",
    "best",
)


def _cell_rows(rows: Sequence[EngineRow], files: Sequence[Sequence[str]] | None) -> list[dict]:
    best = best_engine(rows)
    out = []
    for i, row in enumerate(rows):
        common = {
            "engine": row.kind,
            "model": row.spec.source if row.spec is not None else row.name,
            "error": row.error or "",
            "best": i == best,
        }
        if not row.cells:
            out.append({**common, "seed": None, "file": None})
            continue
        for k, cell in enumerate(row.cells):
            s = cell.settings
            out.append(
                {
                    **common,
                    "seed": s.seed,
                    "file": None if files is None else files[i][k],
                    "notes_kept": notes_kept_of(cell),
                    "chroma": round(cell.faithfulness.score, 4),
                    "seconds": round(row.seconds_per_seed, 3),
                    "steps": s.steps,
                    "denoise": s.denoise,
                    "prompt": s.prompt,
                }
            )
    return out


def comparison_csv(rows: Sequence[EngineRow], files: Sequence[Sequence[str]] | None = None) -> str:
    """One line per take (an engine with none: one line with its error); ``files[i][k]`` is
    row ``i``'s ``k``-th take's file. ``seconds`` is the engine's time per seed."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(_cell_rows(rows, files))
    return out.getvalue()


def comparison_summary(
    rows: Sequence[EngineRow],
    files: Sequence[Sequence[str]] | None = None,
    source_name: str | None = None,
) -> dict[str, Any]:
    """The comparison as plain JSON data: each engine with its takes and their strips."""
    best = best_engine(rows)
    engines = []
    for i, row in enumerate(rows):
        cells = [
            {
                "seed": cell.settings.seed,
                "file": None if files is None else files[i][k],
                "notes_kept": notes_kept_of(cell),
                "chroma": round(cell.faithfulness.score, 4),
                "faithfulness_detail": cell.faithfulness.to_dict(),
            }
            for k, cell in enumerate(row.cells)
        ]
        engines.append(
            {
                "engine": row.kind,
                "name": row.name,
                "spec": None if row.spec is None else row.spec.to_dict(),
                "settings": None if row.settings is None else row.settings.to_dict(),
                "error": row.error,
                "notes_kept": _row_notes_kept(row),
                "chroma": None if row.chroma is None else round(row.chroma, 4),
                "seconds": None if row.seconds is None else round(row.seconds, 3),
                "load_s": None if row.load_s is None else round(row.load_s, 3),
                "best": i == best,
                "cells": cells,
            }
        )
    first = next((row.cells[0] for row in rows if row.cells), None)
    return {
        "source": source_name,
        "start_s": None if first is None else round(first.render.start_s, 6),
        "duration_s": None if first is None else round(first.render.audio.duration_s, 6),
        "best": None if best is None else {"engine": rows[best].kind, "name": rows[best].name},
        "engines": engines,
    }
