"""Notes kept, counted as notes: a take's transcription matched against the sketch's notes.

The chroma meter (:mod:`neurochip.faithfulness`) says whether the pitch-class energy is
alike; a take that smears every note into a chord pad of the right key scores nearly as high
there as a note-for-note cover. This measure counts notes, as transcription research does
(mir_eval's note matching, the metric of MIREX and of YuE's published evaluation):

* a sketch note is **kept** when the take has a note of the same pitch (within a quarter
  tone: the same semitone) starting within 50 ms of it; offsets are ignored (a new
  instrument may hold a note longer or shorter);
* **recall** (the headline, "notes kept") is the share of the sketch's notes kept;
  **precision** the share of the take's notes that are the sketch's; F1 their harmonic mean;
* a **pitch-class** variant folds octaves and allows 100 ms, for covers an octave away;
* per bar (or second): the share of the bar's sketch notes kept; the **lost** notes (sketch
  notes without a match) and **extra** ones (take notes without one) with bar and name.

Calibration, on material the tests make (``tests/test_notes_kept.py``): the sketch itself and
the chip synth's rendering of a MIDI against that MIDI keep nearly all notes; the same notes
on other chip voices still most; the tune a fifth up and another tune almost none; a chord pad
of the right key few notes while its chroma score stays high.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from neurochip.transcription import TRANSCRIBER, Notes, note_name

__all__ = [
    "ONSET_TOLERANCE_S",
    "PITCH_CLASS_ONSET_TOLERANCE_S",
    "NoteScore",
    "NotesKept",
    "Placed",
    "notes_kept",
]

ONSET_TOLERANCE_S = 0.05
PITCH_CLASS_ONSET_TOLERANCE_S = 0.1
PITCH_TOLERANCE_CENTS = 50.0
"""A quarter tone either way: the same semitone (mir_eval's default)."""


class NoteScore(NamedTuple):
    """Note precision, recall and F1 of one matching, with the counts behind them."""

    precision: float
    recall: float
    f1: float
    matched: int
    sketch: int  # notes in the sketch (what recall divides by)
    take: int  # notes in the take (what precision divides by)

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self._asdict().items()}


class Placed(NamedTuple):
    """A lost or extra note where the composer finds it: bar (or ``None``), time, name."""

    bar: int | None  # the song's bar number (1 = first), None without bars
    start_s: float  # from the take's start
    pitch: int

    @property
    def name(self) -> str:
        return note_name(self.pitch)


@dataclass(frozen=True, eq=False)
class NotesKept:
    """A take's notes against its sketch's (see :func:`notes_kept`).

    Attributes:
        notes: Exact matching (same semitone, onset within 50 ms).
        pitch_classes: Octaves folded, onset within 100 ms.
        sketch: The sketch's notes over the take's span, timed from its start.
        take: The take's transcribed notes.
        kept: For each sketch note, whether it was kept (exact matching).
        matched: For each take note, whether it is one of the sketch's.
        times_s: Where each segment (bar or second) starts, from the take's start.
        strip: Share of each segment's sketch notes kept; ``nan`` where it has none.
        segment: ``"bar"`` or ``"second"``.
        first_bar: The song's number of the first bar (1 = the song's first).
        heard: For a MIDI sketch, whether each of its notes is heard in the sketch's own
            audio (its transcription matched the same way); ``None`` for an audio sketch,
            whose notes are what is heard. A note the transcriber misses in the sketch
            itself cannot be kept in a take: :attr:`ceiling` is the share heard.
    """

    notes: NoteScore
    pitch_classes: NoteScore
    sketch: Notes
    take: Notes
    kept: np.ndarray
    matched: np.ndarray
    times_s: np.ndarray
    strip: np.ndarray
    segment: str
    first_bar: int = 1
    heard: np.ndarray | None = None

    @property
    def ceiling(self) -> float | None:
        """Notes kept by the sketch itself: the most a take can score here (``None``: 1)."""
        if self.heard is None or self.heard.size == 0:
            return None
        return float(self.heard.mean())

    @property
    def score(self) -> float:
        """Notes kept: the share of the sketch's notes the take plays (recall)."""
        return self.notes.recall

    def _place(self, starts: np.ndarray, pitches: np.ndarray) -> list[Placed]:
        which = _segment_of(self.times_s, starts)
        return [
            Placed(
                int(w) + self.first_bar if self.segment == "bar" and w >= 0 else None,
                float(s),
                int(p),
            )
            for w, s, p in zip(which, starts, pitches, strict=True)
        ]

    def lost(self, heard_only: bool = False) -> list[Placed]:
        """The sketch notes the take does not play, in time order; with ``heard_only``,
        only those the transcriber hears in the sketch itself (the take's real losses)."""
        gone = ~self.kept
        if heard_only and self.heard is not None:
            gone &= self.heard
        return self._place(self.sketch.starts_s[gone], self.sketch.pitches[gone])

    def extra(self) -> list[Placed]:
        """The take notes that are not the sketch's, in time order."""
        new = ~self.matched
        return self._place(self.take.starts_s[new], self.take.pitches[new])

    def headline(self, names: int = 3) -> str:
        """One line: "Notes kept: 86% · 4 notes lost, most in bar 12 (E5, G5, A5...) · 2
        extra". For a MIDI sketch whose own audio the transcriber does not fully hear, that
        share follows ("(the sketch itself: 92%)"), and only notes heard there count as lost.
        """
        if self.notes.sketch == 0:
            return "Notes kept: no sketch notes here"
        text = f"Notes kept: {self.score:.0%}"
        if self.ceiling is not None and self.ceiling < 0.995:
            text += f" (the sketch itself: {self.ceiling:.0%})"
        lost = self.lost(heard_only=True)
        if lost:
            text += f" · {_count(len(lost), 'note')} lost"
            bars = [p.bar for p in lost if p.bar is not None]
            if bars:
                worst = max(set(bars), key=lambda b: (bars.count(b), -b))
                where = [p for p in lost if p.bar == worst]
                text += " in bar" if len(where) == len(lost) else ", most in bar"
                text += f" {worst} ({_names(where, names)})"
            else:
                text += f" ({_names(lost, names)})"
        elif self.lost():
            text += " · every note heard in the sketch kept"
        extra = int((~self.matched).sum())
        if extra:
            text += f" · {extra} extra"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON and take metadata (``from_dict`` reads them back)."""
        return {
            "score": round(self.score, 4),
            "transcriber": TRANSCRIBER,
            "notes": self.notes.to_dict(),
            "pitch_classes": self.pitch_classes.to_dict(),
            "segment": self.segment,
            "first_bar": self.first_bar,
            "ceiling": None if self.ceiling is None else round(self.ceiling, 4),
            "heard": None if self.heard is None else [bool(h) for h in self.heard],
            "times_s": [round(float(t), 3) for t in self.times_s],
            "strip": [None if math.isnan(v) else round(float(v), 4) for v in self.strip],
            "lost": [_placed_dict(p) for p in self.lost()],
            "extra": [_placed_dict(p) for p in self.extra()],
            "sketch_notes": self.sketch.to_dict(),
            "take_notes": self.take.to_dict(),
            "kept": [bool(k) for k in self.kept],
            "matched": [bool(m) for m in self.matched],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotesKept:
        """What :meth:`to_dict` wrote; ``ValueError`` for anything else."""
        try:
            sketch = Notes.from_dict(data["sketch_notes"])
            take = Notes.from_dict(data["take_notes"])
            kept = np.asarray(data["kept"], dtype=bool)
            matched = np.asarray(data["matched"], dtype=bool)
            if kept.size != len(sketch) or matched.size != len(take):
                raise ValueError("kept/matched do not fit the notes")
            return cls(
                notes=NoteScore(**data["notes"]),
                pitch_classes=NoteScore(**data["pitch_classes"]),
                sketch=sketch,
                take=take,
                kept=kept,
                matched=matched,
                times_s=np.asarray(data["times_s"], dtype=np.float64),
                strip=np.array(
                    [np.nan if v is None else float(v) for v in data["strip"]], dtype=np.float64
                ),
                segment=str(data["segment"]),
                first_bar=int(data.get("first_bar", 1)),
                heard=_heard(data.get("heard"), len(sketch)),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a notes-kept record: {err}") from err


def notes_kept(
    sketch: Notes,
    take: Notes,
    duration_s: float,
    bar_times_s: Sequence[float] | None = None,
    first_bar: int = 1,
    sketch_heard: Notes | None = None,
) -> NotesKept:
    """Match ``take``'s notes against ``sketch``'s over ``duration_s`` (see the module).

    Args:
        sketch: The sketch's notes over the take's span, timed from its start.
        take: The take's notes (:func:`~neurochip.transcription.transcribe`).
        duration_s: The length compared; notes starting later are left out of both.
        bar_times_s: Bar starts from the take's start (as the chroma strip takes them);
            ``None`` or empty: one segment per second.
        first_bar: The song's number of the first of those bars.
        sketch_heard: The sketch's own audio transcribed, for a MIDI sketch: which of its
            notes the transcriber hears at all (:attr:`NotesKept.heard`).
    """
    sketch, take = sketch.span(0.0, duration_s), take.span(0.0, duration_s)
    exact = _match(sketch, take, ONSET_TOLERANCE_S, octaves=False)
    folded = _match(sketch, take, PITCH_CLASS_ONSET_TOLERANCE_S, octaves=True)
    heard = None
    if sketch_heard is not None:
        heard = np.zeros(len(sketch), dtype=bool)
        for i, _ in _match(sketch, sketch_heard.span(0.0, duration_s), ONSET_TOLERANCE_S, False):
            heard[i] = True
    kept = np.zeros(len(sketch), dtype=bool)
    matched = np.zeros(len(take), dtype=bool)
    for i, j in exact:
        kept[i], matched[j] = True, True

    if bar_times_s:
        starts = np.asarray(bar_times_s, dtype=np.float64)
        starts = starts[starts < duration_s]
        segment = "bar"
    else:
        starts = np.arange(max(math.ceil(duration_s), 1), dtype=np.float64)
        segment = "second"
    which = _segment_of(starts, sketch.starts_s)
    inside = which >= 0
    totals = np.bincount(which[inside], weights=kept[inside], minlength=starts.size)
    counts = np.bincount(which[inside], minlength=starts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        strip = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    return NotesKept(
        notes=_score(len(exact), len(sketch), len(take)),
        pitch_classes=_score(len(folded), len(sketch), len(take)),
        sketch=sketch,
        take=take,
        kept=kept,
        matched=matched,
        times_s=starts,
        strip=strip,
        segment=segment,
        first_bar=first_bar,
        heard=heard,
    )


def _match(sketch: Notes, take: Notes, onset_s: float, octaves: bool) -> list[tuple[int, int]]:
    """mir_eval's maximum matching on onset and pitch (offsets ignored)."""
    if len(sketch) == 0 or len(take) == 0:
        return []
    import mir_eval  # imported on first use, as librosa is for chroma

    def hertz(notes: Notes) -> np.ndarray:
        pitches = notes.pitches % 12 + 60 if octaves else notes.pitches
        return 440.0 * 2.0 ** ((pitches - 69) / 12)

    return mir_eval.transcription.match_notes(
        np.stack([sketch.starts_s, sketch.ends_s], axis=1),
        hertz(sketch),
        np.stack([take.starts_s, take.ends_s], axis=1),
        hertz(take),
        onset_tolerance=onset_s,
        pitch_tolerance=PITCH_TOLERANCE_CENTS,
        offset_ratio=None,
    )


def _segment_of(segment_starts: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Which segment each time is in (-1: before the first); a note a hair before a bar line
    (MIDI ticks and the tempo map round differently) is in that bar."""
    return np.searchsorted(segment_starts, times_s + 1e-3, side="right") - 1


def _heard(data: Any, notes: int) -> np.ndarray | None:
    if data is None:
        return None
    heard = np.asarray(data, dtype=bool)
    if heard.shape != (notes,):
        raise ValueError("heard does not fit the notes")
    return heard


def _score(matched: int, sketch: int, take: int) -> NoteScore:
    precision = matched / take if take else 0.0
    recall = matched / sketch if sketch else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return NoteScore(precision, recall, f1, matched, sketch, take)


def _placed_dict(place: Placed) -> dict[str, Any]:
    return {
        "bar": place.bar,
        "start_s": round(place.start_s, 3),
        "pitch": place.pitch,
        "name": place.name,
    }


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _names(places: Sequence[Placed], most: int) -> str:
    shown = ", ".join(p.name for p in places[:most])
    return shown + ("..." if len(places) > most else "")
