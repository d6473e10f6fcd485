"""Comp: one take built from the best bars of several takes of the same span.

Takes of one span are sample-aligned (every render has exactly its span's length), so a comp
needs no time-stretching or alignment: it plays take X up to a bar line and take Y after it,
switching with a short equal-power crossfade centred on the line (default 30 ms, as a DAW's
comping lane does). Away from the switches every sample is its take's own.

:func:`comp_audio` is the arithmetic; :func:`comp_takes` makes a comp of takes in the library
and keeps it as a take of kind ``"comp"``, whose metadata lists its parts::

    "comp": {"parts": [{"take": "3f2a...", "from": "A", "start_s": 0.0, "end_s": 7.2,
                        "bars": [1, 4]}, ...], "crossfade_s": 0.03}

and whose ``"takes"`` holds the settings of each take it draws on, keyed "A", "B", ... in the
order they first play.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurochip.bars import BarGrid
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import midi_bar_times
from neurochip.io.audio import Audio
from neurochip.library.metadata import take_metadata
from neurochip.library.store import Take, TakeLibrary
from neurochip.library.thumbnails import read_png

#: The switch between two takes at a bar line: an equal-power crossfade this long, centred
#: on the line (short enough to keep the downbeat's attack, long enough not to click).
COMP_CROSSFADE_S = 0.03

#: Most takes one comp draws on (one letter each in its metadata).
MAX_COMP_TAKES = 8


@dataclass(frozen=True)
class CompPart:
    """Take ``take`` plays from ``start_s`` to ``end_s`` of the span (``bars``: as said)."""

    take: str
    start_s: float
    end_s: float
    bars: tuple[int, int] | None = None


def comp_audio(
    takes: Sequence[Audio],
    choice: Sequence[int],
    switches: Sequence[int],
    crossfade: int,
) -> Audio:
    """Segment ``i`` plays ``takes[choice[i]]``; segments meet at the ``switches`` (samples).

    ``switches`` has one fewer entry than ``choice``, increasing, inside the takes. At each
    switch to another take: an equal-power crossfade of ``crossfade`` samples centred on it
    (shortened where segments are shorter); elsewhere the chosen take's samples, untouched.
    """
    if not takes:
        raise NeuroChipError("A comp needs at least one take.")
    first = takes[0]
    for take in takes[1:]:
        if (take.frames, take.sample_rate, take.channels) != (
            first.frames,
            first.sample_rate,
            first.channels,
        ):
            raise NeuroChipError(
                "The takes of a comp must be of one span: the same length, sample rate and "
                "channels (render them from the same start and duration)."
            )
    if len(choice) != len(switches) + 1:
        raise ValueError("One more segment than switches")
    edges = [0, *[int(s) for s in switches], first.frames]
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise NeuroChipError("The parts of a comp must follow each other, each at least a sample.")
    out = takes[choice[0]].samples.copy()
    for k, (a, b) in enumerate(zip(edges, edges[1:], strict=False)):
        if k > 0:
            out[:, a:b] = takes[choice[k]].samples[:, a:b]
    for k, at in enumerate(edges[1:-1], start=1):
        before, after = choice[k - 1], choice[k]
        half = min(crossfade // 2, at - edges[k - 1], edges[k + 1] - at)
        if before == after or half < 1:  # the same take, or a hard cut asked for
            continue
        lo, hi = at - half, at + half
        theta = (np.arange(lo, hi) - lo + 0.5) / (hi - lo) * (math.pi / 2)
        old, new = takes[before].samples[:, lo:hi], takes[after].samples[:, lo:hi]
        out[:, lo:hi] = old * np.cos(theta) + new * np.sin(theta)
    return Audio(out, first.sample_rate)


def take_bar_times(library: TakeLibrary, take: Take) -> list[float] | None:
    """Where the bars of a take's song start, in song seconds: the bar grid the take was
    rendered on (audio), else its MIDI sketch's, kept in the library; None if neither."""
    settings = take.settings()
    grid = BarGrid.from_dict(take.metadata.get("bar_grid"))
    if grid is not None:
        return grid.bar_times(settings.start_s + take.duration_s)
    key = take.metadata.get("sketch_key")
    source = library.source(key) if isinstance(key, str) else None
    if source is not None and source.decode_as.lower().endswith(".mid"):
        return midi_bar_times(source.data, source.name)
    return None


def parts_from_bars(
    picks: Sequence[tuple[str, int, int]],
    bar_times_s: Sequence[float],
    span_start_s: float,
    span_duration_s: float,
) -> list[CompPart]:
    """``(take id, first bar, last bar)`` picks, in song bars, -> parts of the span.

    The picks must follow each other bar by bar. The first part starts at the span's start
    (a pickup before bar 1 goes with it) and the last ends at the span's end; each switch
    falls on its bar's line.

    Raises:
        NeuroChipError: For bars the song does not have, or picks that skip or repeat bars.
    """
    if not picks:
        raise NeuroChipError("Pick at least one bar of a take for the comp.")
    count = len(bar_times_s)
    parts = []
    for i, (take_id, first, last) in enumerate(picks):
        if not 1 <= first <= last <= count:
            raise NeuroChipError(f"Bars {first}-{last}: the song has bars 1 to {count}.")
        if i and first != picks[i - 1][2] + 1:
            raise NeuroChipError(
                f"Bar {picks[i - 1][2] + 1} has no take: each pick must start the bar after "
                f"the last one ends (got {picks[i - 1][2]} then {first})."
            )
        start = 0.0 if i == 0 else float(bar_times_s[first - 1]) - span_start_s
        end = span_duration_s if i == len(picks) - 1 else float(bar_times_s[last]) - span_start_s
        if not 0 <= start < end <= span_duration_s + 1e-6:
            raise NeuroChipError(
                f"Bars {first}-{last} are not inside the takes' span "
                f"({span_start_s:.2f}-{span_start_s + span_duration_s:.2f} s of the song)."
            )
        parts.append(CompPart(take_id, start, min(end, span_duration_s), (first, last)))
    return parts


def comp_takes(
    library: TakeLibrary,
    parts: Sequence[CompPart],
    crossfade_s: float = COMP_CROSSFADE_S,
    name: str | None = None,
) -> Take:
    """Make a comp of library takes and keep it in the library (kind ``"comp"``).

    ``parts`` must cover the span from 0 to its end, in order, without gaps; neighbouring
    parts of one take merge. Returns the new take.

    Raises:
        NeuroChipError: For unknown or damaged takes, takes of different spans, parts that
            leave a gap or overlap, or more than :data:`MAX_COMP_TAKES` takes.
    """
    if not parts:
        raise NeuroChipError("Pick at least one bar of a take for the comp.")
    if not 0 <= crossfade_s <= 1:
        raise NeuroChipError(f"The crossfade must be 0 to 1 s, not {crossfade_s:g} s.")
    ids = list(dict.fromkeys(part.take for part in parts))
    if len(ids) > MAX_COMP_TAKES:
        raise NeuroChipError(f"A comp draws on at most {MAX_COMP_TAKES} takes.")
    takes = [library.get(take_id) for take_id in ids]
    audio = [library.load_audio(take_id) for take_id in ids]
    spans = {(round(t.settings().start_s, 3), round(t.duration_s, 3)) for t in takes}
    if len(spans) > 1:
        raise NeuroChipError(
            "These takes cover different parts of the song: a comp needs takes of one span "
            "(the same start and duration)."
        )
    rate, duration = audio[0].sample_rate, audio[0].duration_s
    ends = [0.0, *[p.end_s for p in parts]]
    for part, start in zip(parts, ends, strict=False):
        if abs(part.start_s - start) > 1e-3 or part.end_s <= part.start_s:
            raise NeuroChipError(
                f"The comp's parts must follow each other with no gap: one starts at "
                f"{part.start_s:.2f} s where the last ended at {start:.2f} s."
            )
    if abs(parts[-1].end_s - duration) > 1e-3:
        raise NeuroChipError(
            f"The comp's parts end at {parts[-1].end_s:.2f} s; the takes are "
            f"{duration:.2f} s: pick a take for every bar."
        )
    choice = [ids.index(part.take) for part in parts]
    switches = [round(part.end_s * rate) for part in parts[:-1]]
    mix = comp_audio(audio, choice, switches, round(crossfade_s * rate))
    letters = string.ascii_uppercase
    metadata = take_metadata(
        "comp",
        {letters[i]: take.settings() for i, take in enumerate(takes)},
        takes[0].source_name,
        _shared_provenance(takes),
        comp={
            "parts": [
                {
                    "take": part.take,
                    "from": letters[ids.index(part.take)],
                    "start_s": round(part.start_s, 4),
                    "end_s": round(part.end_s, 4),
                    **({"bars": list(part.bars)} if part.bars else {}),
                }
                for part in parts
            ],
            "crossfade_s": crossfade_s,
        },
        faithfulness=_faithfulness(takes, parts),
    )
    thumbnail = read_png(takes[0].thumbnail_path) if takes[0].thumbnail_path else None
    return library.add(mix, metadata, name=name, thumbnail=thumbnail)


def _shared_provenance(takes: Sequence[Take]) -> dict[str, Any]:
    """What all the takes agree on: model (its spec too), device, song."""
    keys = ("model", "model_spec", "device", "sketch_key", "bar_grid")
    first = takes[0].metadata
    return {
        k: first[k]
        for k in keys
        if k in first and all(t.metadata.get(k) == first[k] for t in takes)
    }


def _faithfulness(takes: Sequence[Take], parts: Sequence[CompPart]) -> dict[str, Any] | None:
    """The comp's score, estimated: its parts' takes' scores, weighted by how long each plays
    (each take was measured whole, and the bars picked are usually its better ones)."""
    by_id = {t.id: t.faithfulness for t in takes}
    weighted = [(by_id[p.take], p.end_s - p.start_s) for p in parts]
    if any(score is None for score, _ in weighted):
        return None
    total = sum(length for _, length in weighted)
    score = sum(score * length for score, length in weighted) / total
    return {"score": round(score, 4), "estimated_from": "its takes' scores, by time played"}
