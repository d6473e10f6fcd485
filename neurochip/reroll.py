"""Fix that bar: render one region of a take again, everything else kept as it was.

The workflow around :meth:`Engine.reroll_many <neurochip.engine.Engine.reroll_many>`, for
every front end (the CLI's ``neurochip reroll``; the app next):

1. the region is said in the song's own terms, bars (``"9-12"``: bars 9 to 12 inclusive) or
   seconds of the song (``"12.5-20"``), and put in seconds from the take's start
   (:func:`region_of_take`);
2. each candidate's settings are the parent's with the changes asked for (a new seed, more
   denoise...), :func:`candidate_settings`;
3. the engine renders the candidates in one denoising loop; each new take is the parent's
   length, sample for sample the parent outside the region and its blend margins;
4. each is measured for note faithfulness, and carries its lineage in its metadata:
   ``"reroll": {"parent": the parent's take id or file name, "region_s": [start, end] from
   the take's start, "margin_s": ..., "bars": [first, last] where said in bars}``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neurochip.engine import REROLL_MARGIN_S, Engine, ProgressCallback, Render
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.library.metadata import checked_metadata, take_metadata
from neurochip.library.names import reroll_text
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch
from neurochip.takeset import measure_take, song_provenance, take_thumbnail


@dataclass(frozen=True)
class RerollRegion:
    """A region of a take: seconds from the take's start, and the bars it was said in."""

    start_s: float
    end_s: float
    bars: tuple[int, int] | None = None  # first and last bar (1 = the song's first)


@dataclass(frozen=True)
class Rerolled:
    """A candidate for the region: the engine's render and its file's metadata."""

    render: Render
    metadata: dict[str, Any]
    take_id: str | None = None  # where the library kept it


def parse_range(text: str, what: str) -> tuple[float, float]:
    """``"9-12"`` or ``"12.5-20"`` -> (9.0, 12.0); a single number is a range of itself."""
    parts = [p.strip() for p in str(text).split("-")]
    try:
        if len(parts) == 1:
            low = high = float(parts[0])
        elif len(parts) == 2:
            low, high = float(parts[0]), float(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise NeuroChipError(
            f"Write the {what} as FIRST-LAST, e.g. " + ("9-12" if what == "bars" else "12.5-20")
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        raise NeuroChipError(f"The {what} {text!r} end before they start.")
    return low, high


def region_of_take(
    take_start_s: float,
    take_duration_s: float,
    *,
    bars: str | None = None,
    seconds: str | None = None,
    bar_times_s: Sequence[float] | None = None,
) -> RerollRegion:
    """The region said in bars or seconds of the song, in seconds from the take's start.

    Args:
        take_start_s, take_duration_s: Where the take sits in the song.
        bars: ``"9-12"``: bars 9 to 12 inclusive (needs ``bar_times_s``).
        seconds: ``"12.5-20"``: seconds of the song.
        bar_times_s: Where each bar of the song starts (bar 1 first).

    Raises:
        NeuroChipError: For both or neither, bars unknown, or a region outside the take.
    """
    if (bars is None) == (seconds is None):
        raise NeuroChipError("Say which part to re-roll: bars (e.g. 9-12) or seconds (12.5-20).")
    bar_range = None
    if bars is not None:
        first, last = (int(v) for v in parse_range(bars, "bars"))
        if not bar_times_s:
            raise NeuroChipError(
                "This song's bars are not known (its sketch is audio, not MIDI): give the "
                "region in seconds instead."
            )
        count = len(bar_times_s)
        if first < 1 or first > count:
            raise NeuroChipError(f"The song has bars 1 to {count}; there is no bar {first}.")
        start = float(bar_times_s[first - 1])
        end = float(bar_times_s[last]) if last < count else take_start_s + take_duration_s
        bar_range = (first, min(last, count))
    else:
        start, end = parse_range(seconds or "", "seconds")
    take_end = take_start_s + take_duration_s
    if end <= take_start_s or start >= take_end:
        raise NeuroChipError(
            f"That part ({start:.2f}-{end:.2f} s of the song) lies outside the take, which "
            f"covers {take_start_s:.2f}-{take_end:.2f} s."
        )
    return RerollRegion(
        max(0.0, start - take_start_s), min(take_duration_s, end - take_start_s), bar_range
    )


def candidate_settings(
    parent: RenderSettings, seeds: Sequence[int], **changes: Any
) -> list[RenderSettings]:
    """The parent's settings with a new seed each (and ``changes``: denoise, prompt...).

    The span stays the parent's: a re-roll renders inside the take.
    """
    if not seeds:
        raise NeuroChipError("Give at least one seed for the re-rolled region.")
    changed = dataclasses.replace(parent, **{k: v for k, v in changes.items() if v is not None})
    return [dataclasses.replace(changed, seed=int(seed)) for seed in seeds]


def reroll_take(
    engine: Engine,
    sketch: Sketch,
    parent: Audio,
    parent_metadata: dict[str, Any],
    region: RerollRegion,
    candidates: Sequence[RenderSettings],
    *,
    parent_ref: str | None = None,
    margin_s: float = REROLL_MARGIN_S,
    library: TakeLibrary | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Rerolled]:
    """Re-roll ``region`` of the take ``parent`` once per candidate, in one denoising loop.

    Args:
        engine: The engine to render with.
        sketch: The song the parent was rendered from.
        parent: The parent take's audio (one take: A or B, not a pair).
        parent_metadata: Its metadata (:func:`~neurochip.library.metadata.take_metadata`).
        region: Where, from :func:`region_of_take`.
        candidates: Settings of each candidate, from :func:`candidate_settings`.
        parent_ref: How the lineage names the parent (its take id, or its file name).
        margin_s: The blend into the take on each side of the region.
        library: Keep each new take here as soon as it exists.

    Raises:
        NeuroChipError: For a pair, a take of another length, a region outside it.
    """
    # Before the engine: metadata read from a file anyone may have edited.
    parent_metadata = checked_metadata(parent_metadata, parent_ref or "The parent take")
    if parent_metadata.get("kind", "take") not in ("take", "comp"):
        raise NeuroChipError(
            f"This is a {parent_metadata.get('kind')}: re-roll one of its takes (A or B), then "
            "pair them again."
        )
    renders = engine.reroll_many(
        sketch.audio,
        parent,
        list(candidates),
        (region.start_s, region.end_s),
        margin_s,
        progress,
        cancel,
    )
    bars = sketch_bar_times(sketch)
    name = next(iter(parent_metadata.get("takes") or {"A": None}))
    provenance = song_provenance(sketch)
    results = []
    for settings, render in zip(candidates, renders, strict=True):
        lineage = {**render.info["reroll"], "parent": parent_ref}
        if region.bars is not None:
            lineage["bars"] = list(region.bars)
        info = {**render.info, **provenance, "reroll": lineage}
        metadata = take_metadata(
            "take",
            {name: settings},
            sketch.name,
            info,
            faithfulness=measure_take(render, bars, sketch),
        )
        take_id = None
        if library is not None:
            name = _child_name(library, parent_ref, metadata, settings.seed)
            thumbnail = take_thumbnail(render)
            take_id = library.add(render.audio, metadata, name=name, thumbnail=thumbnail).id
        results.append(Rerolled(render, metadata, take_id))
    return results


def _child_name(
    library: TakeLibrary, parent_ref: str | None, metadata: dict[str, Any], seed: int
) -> str | None:
    """ "<the parent's name> · re-rolled bars 3–4, seed 147": a re-roll is known by its
    parent (None, the default name, where the parent is not a take in the library)."""
    try:
        parent = library.get(parent_ref) if parent_ref else None
    except NeuroChipError:
        parent = None
    if parent is None:
        return None
    return f"{parent.name} · {reroll_text(metadata)}, seed {seed}"
