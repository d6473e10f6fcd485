"""The :class:`Take` record: one take as the library lists it, made cheaply from an index row.

Listing thousands of takes must stay fast, so a :class:`Take` is made from the columns of
:data:`_LISTED` in one step (:func:`new_take`), and parses its metadata, and builds its
paths, only when they are first asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from neurochip.library.damage import _audio_damage
from neurochip.library.folders import _ID
from neurochip.library.metadata import settings_in
from neurochip.library.names import take_label
from neurochip.settings import RenderSettings

# What a listing reads, in the order Take's fields take it (see new_take).
_LISTED = (
    "id, created, name, kind, source_name, starred, frames, sample_rate, channels, prompt, "
    "audio_file, thumbnail_file, metadata, audio_size, faithfulness, note, notes_kept"
)


@dataclass(frozen=True, eq=False)
class Take:
    """One take in the library, as listed. Change it through
    :class:`~neurochip.library.store.TakeLibrary`.

    ``metadata``, ``audio_path`` and ``thumbnail_path`` are made from what the index holds
    when first asked for, so listing thousands of takes parses no JSON and builds no paths;
    ``damage`` looks at the audio file when first asked for.
    Two takes are equal when everything they say is (metadata compared as a dict).
    """

    id: str  # random hex (uuid4().hex[:12]), never derived from user input
    created: float  # unix time
    name: str  # display title
    kind: str  # "take", "stereo pair", "crossfade comparison"
    source_name: str | None  # the uploaded song's file name, for display only
    starred: bool
    duration_s: float
    channels: int
    prompt: str  # the prompts of the takes in it, A's first, " / " between
    faithfulness: float | None  # note-faithfulness (chroma) score, 0 to 1; None: not measured
    note: str  # the composer's note ("" for none)
    notes_kept: float | None  # share of the sketch's notes it plays; None: not counted
    # As the index holds them:
    _takes_dir: Path = field(repr=False)
    _audio_file: str = field(repr=False)
    _thumbnail_file: str | None = field(repr=False)
    _metadata_json: str = field(repr=False)
    _audio_size: int | None = field(repr=False)  # of the complete file; None: not known

    @cached_property
    def damage(self) -> str | None:
        """Why the take's audio file cannot be played ("cut off at 100 bytes of 1.2 MB"), or
        ``None`` when it is whole.

        Looked at when first asked for (and then remembered): one ``stat``, compared with the
        size the index recorded; the file's header is read only when the size differs (a file
        put back or edited by hand is whole if its header says it is complete).
        """
        # The path as text, as audio_path makes it: pathlib would triple the cost of a listing
        # that looks at every take (10,000 takes: ~40 ms, of which the stats are most).
        folder = self.id if _ID.fullmatch(self.id) else "-"
        audio = os.path.join(self._takes_dir, folder, os.path.basename(self._audio_file))
        return _audio_damage(audio, self._audio_size)

    @property
    def damaged(self) -> bool:
        """Whether the take's audio file is cut off, unreadable or gone (see :attr:`damage`)."""
        return self.damage is not None

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """take_metadata(): "takes" maps "A" (and "B") to settings."""
        return json.loads(self._metadata_json)

    @cached_property
    def label(self) -> str:
        """What tells it from other takes: "seed 42 · denoise 0.35 · guidance 7 · 50 steps ·
        notes kept 86% · chroma 0.93" (:func:`~neurochip.library.names.take_label`)."""
        return take_label(self.metadata)

    @cached_property
    def audio_path(self) -> Path:
        # Only the final component: a damaged index cannot point outside the folder.
        return self._folder / Path(self._audio_file).name

    @cached_property
    def thumbnail_path(self) -> Path | None:
        if not self._thumbnail_file:
            return None
        return self._folder / Path(self._thumbnail_file).name

    @property
    def _folder(self) -> Path:
        return self._takes_dir / (self.id if _ID.fullmatch(self.id) else "-")

    def _key(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.created,
            self.name,
            self.kind,
            self.source_name,
            self.starred,
            self.duration_s,
            self.channels,
            self.prompt,
            self.faithfulness,
            self.note,
            self.notes_kept,
            self.audio_path,
            self.thumbnail_path,
            self.metadata,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Take):
            return NotImplemented
        return self._key() == other._key()

    # The metadata dict is unhashable; the id alone identifies a take.
    def __hash__(self) -> int:
        return hash(self.id)

    def settings(self, take: str | None = None) -> RenderSettings:
        """The settings that made take ``take`` ("A" or "B"; default: A, or its only take)."""
        return settings_in(self.metadata, take, f"“{self.name}”")


def listed_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's (or record's) columns of :data:`_LISTED`, in order, for :func:`new_take`."""
    return tuple(record[c] for c in _LISTED.split(", "))


def new_take(
    takes_dir: Path,
    take_id: str,
    created: float,
    name: str,
    kind: str,
    source_name: str | None,
    starred: int,
    frames: int,
    sample_rate: int,
    channels: int,
    prompt: str,
    audio_file: str,
    thumbnail_file: str | None,
    metadata: str,
    audio_size: int | None,
    faithfulness: float | None,
    note: str,
    notes_kept: float | None = None,
) -> Take:
    """A take from the columns of :data:`_LISTED`.

    Runs once per listed take, so it fills the frozen dataclass's ``__dict__`` in one step
    rather than through ``__init__`` (a field at a time): a third of the time, same take.
    """
    take = object.__new__(Take)
    object.__setattr__(
        take,
        "__dict__",
        {
            "id": take_id,
            "created": float(created),
            "name": name,
            "kind": kind,
            "source_name": source_name,
            "starred": bool(starred),
            "duration_s": frames / sample_rate,
            "channels": int(channels),
            "prompt": prompt,
            "faithfulness": None if faithfulness is None else float(faithfulness),
            "note": note,
            "notes_kept": None if notes_kept is None else float(notes_kept),
            "_takes_dir": takes_dir,
            "_audio_file": audio_file,
            "_thumbnail_file": thumbnail_file,
            "_metadata_json": metadata,
            "_audio_size": audio_size,
        },
    )
    return take
