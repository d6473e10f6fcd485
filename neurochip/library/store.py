"""The take store: every take a composer renders, kept in folders on disk and indexed.

:class:`TakeLibrary` keeps every take a composer renders, so that a refresh, a second browser
tab or a killed server loses nothing. It stores what it is given (audio, the settings from
:func:`~neurochip.library.metadata.take_metadata`, a thumbnail) and depends on neither the
engine nor the mixer: :mod:`neurochip.takeset` renders, pairs and hands the results over. It
lives in ``$NEUROCHIP_HOME`` (default ``~/.neurochip``)::

    library.sqlite3        the index: one row per take, with the columns lists search and sort
    takes/<id>/            one folder per take; <id> is random hex, never text from a user
        take.wav           the audio (24-bit WAV) with its settings embedded (save_take)
        take.json          the same settings, as a sidecar
        entry.json         the take's own row (created, name, source, star, note), mirrored so
                           the index can be rebuilt from the folders alone
        thumb.png          a small spectrogram picture, when there is one
    takes/<id>.partial/    a take being written, or one a crash interrupted
    takes/<id>.deleted/    a take being deleted, or one a crash interrupted

One source of truth
-------------------

The folders are the truth. The index is a cache of them, for fast listing, search and sort,
that also holds the edits (star, rename, note), each mirrored into the take's ``entry.json`` in
the same transaction; :meth:`TakeLibrary.recover` rebuilds it from the folders alone (and a
damaged index is set aside and rebuilt the same way; see "Damage" below). Text a user typed or
uploaded (file names, take names) is stored as text in the index and in JSON, and never
becomes part of a path.

Invariants, kept by the order of every write:

1. A bare ``<id>`` folder is always a complete take. Files are written into ``<id>.partial``,
   flushed to disk, and the folder is then renamed to ``<id>`` in one atomic step.
2. A row is inserted only after its folder is complete, so a row never points at half a take.
   Inserts are ``INSERT OR IGNORE``: indexing a folder twice (recovery racing an add) is
   harmless.
3. A delete renames ``<id>`` to ``<id>.deleted`` inside the transaction that deletes the row,
   and removes the folder after the commit. A bare folder without a row is therefore never one
   the user deleted, and a crash leaves a deleted take on its way out (a ``.deleted`` folder,
   or a row whose folder is gone), never half-deleted and brought back.

So after a crash :meth:`TakeLibrary.recover` (run whenever a library is opened) restores a
consistent state from names alone:

* ``<id>.partial``: unfinished; removed once nothing in it has changed for
  :data:`STALE_AFTER_S` (a take another process is writing right now is left alone);
* ``<id>.deleted``: removed;
* ``<id>`` without a row: a take whose insert never happened; indexed again from its files;
* a row whose folder or audio is gone: dropped;
* hidden temporary files of an interrupted atomic write (``.take.wav.tmp-...``) inside a take's
  folder: removed once stale.

A fast index
------------

:meth:`TakeLibrary.list` filters (starred, song, text in the name, prompt or note), sorts (by
date, name, song, prompt, star, note faithfulness) and pages with one SQL query on the index
(:meth:`~TakeLibrary.count` counts what it would list, for paging). What it sorts and
searches by is stored in columns when a row is written (``prompt``; ``search``, the name,
prompts and note case-folded; ``name_key``, ``song_key``, ``prompt_key``, which sort ignoring
case and accents; ``faithfulness``, the score the note-faithfulness meter gave when the take
was rendered, from its metadata), and each sort has an index in its order, so SQLite walks an
index instead of sorting, and no row's metadata JSON is parsed to list it: a :class:`Take`
parses its metadata, and builds its paths, only when they are first asked for.

Listing does not look at every folder either. Every change that can put the folders and the
index out of line adds, renames or removes an entry of ``takes/`` itself (an add's or a
delete's rename, a folder copied in or deleted by hand), and so changes the modification time
of ``takes/``. A library remembers that time (``st_mtime_ns``) as it was before it last
compared the folders with the index, and :meth:`~TakeLibrary.list` compares again only when
it has changed: then a listing of ``takes/`` and of the index's ids, and a reconcile under the
write lock if they differ. A time less than :data:`RACY_S` old is never trusted (timestamps
are coarse: a change in the same tick could leave it as it was), so for a moment after each
change every listing compares. Hence a take whose index insert failed, in this process or
another, still shows up without a restart, and a take folder deleted by hand disappears. Not
noticed by listing: files removed from inside a take's folder (its ``takes/`` entry stays);
:meth:`~TakeLibrary.get` notices a missing audio file, and :meth:`~TakeLibrary.recover`
checks every take's audio. A folder that holds no readable take is reported once and skipped
until it changes, or until :meth:`~TakeLibrary.recover`. To copy a take in by hand, copy it
under a name that is not an id (``incoming``) and rename it to ``<id>``, as the library does
with ``.partial``, so that it is never seen half-copied.

Damage
------

A damaged index (a failing disk, a torn copy, a file edited by another program) is found when
a library is opened, by ``PRAGMA quick_check`` (every page, about 25 ms for 10,000 takes), or
when SQLite reports it in use ("database disk image is malformed", "file is not a
database"). Either way it is moved aside, with its ``-wal`` and ``-shm``, as
``library.sqlite3.damaged-<time>`` (kept, never deleted) and rebuilt from the folders; a call
that found it runs again once, on the new index (:func:`_heals_index`). Nothing is lost: the
rows are made from the folders, and the edits in them (name, star, note) are in
``entry.json``.
An index deleted while a library is open (by hand, with or without its ``-wal`` and ``-shm``)
is noticed at the next call, by one ``stat`` before each connection, and made again from the
folders the same way (a ``-wal`` left without its database is set aside, never replayed into
the new one). Other index errors (locked, read-only) are reported as they are; a full or
failing disk in the words every file write uses ("the disk is full: free some space...").
Another thread or process that meets the damaged file later (a connection opened before the
move) sees that the file is no longer there and does not set the new one aside.

A take's audio file can be damaged too (cut off by hand, a full disk, a bad copy). The index
records the size of each complete file (``audio_size``), so :attr:`Take.damage` tells with one
``stat`` when first asked for, reading the file's header only when the size differs (a file
put back or edited by hand is whole if its header says it is complete). A damaged take is
still listed, and indexed again from its folder if its settings can be read (from the file,
else its sidecar), so that a composer sees it, and can delete it or put the file back;
:meth:`~TakeLibrary.load_audio` and :meth:`~TakeLibrary.export` refuse it with a clear error
instead of handing out a cut-off file.

Schema changes are migrations (:data:`_MIGRATIONS`, ``PRAGMA user_version``): each version's
steps turn the previous one into it, and may backfill new columns from every row's metadata
JSON (version 2 added the search and sort columns that way; version 4 the note-faithfulness
score, and the note). A later column is added the same way: ``ALTER TABLE`` + an index + a
backfill step, the value in :func:`_indexed`, and a sort key in :data:`_SORTS`.

A take's note is an edit, like its name: kept in ``entry.json`` and the index, not in the
settings its audio file carries (rewriting a whole take's audio for a note would be slow, and
the settings say how it was made, not what a composer thinks of it).

Concurrency: every call opens its own SQLite connection, so one library object can be shared
by all of Streamlit's session threads; the database is in WAL mode (readers never wait for a
writer) with a busy timeout (writers from other tabs or processes queue instead of failing).
Changes that must agree with the folders (reconciling, deleting, starring, renaming, notes) run
in
``BEGIN IMMEDIATE`` transactions, which take the write lock before they look at anything.
WAL needs a local disk: keep the library off network shares.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import describe_os_error, write_text_atomically
from neurochip.library.metadata import (
    METADATA_FORMAT,
    faithfulness_score,
    read_take_metadata,
    save_take,
    settings_in,
)
from neurochip.library.names import (
    clean_name,
    clean_note,
    default_take_name,
    take_filename,
    take_label,
)
from neurochip.library.sources import SourceFile, keep_source, source_file
from neurochip.library.thumbnails import write_png
from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch

log = logging.getLogger(__name__)

# --- the take library ---------------------------------------------------------------------------

SCHEMA_VERSION = 4
"""``PRAGMA user_version`` of the index; :data:`_MIGRATIONS` brings older ones up to it."""

STALE_AFTER_S = 15 * 60.0
"""A ``.partial`` folder or temporary file untouched this long belongs to no live writer.

Writers touch their files every few milliseconds (and a 20-minute song saves in seconds), so
this is very conservative: it only delays the clean-up of a crash's leftovers, which are never
listed anyway.
"""

RACY_S = 2.0
"""A folder modification time younger than this is not trusted to reveal the next change.

File systems stamp times from a coarse clock (a few ms on Linux, 2 s on FAT), so a change made
in the same tick as the time a library remembered would leave it unchanged. Once the current
time is past the stamp by a full tick, any later change gets a different one.
"""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another tab or process holding the index's write lock."""

EXPORT_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")
"""File types :meth:`TakeLibrary.export` writes."""

AUDIO_FILE = "take.wav"
THUMBNAIL_FILE = "thumb.png"
ENTRY_FILE = "entry.json"
ENTRY_FORMAT = "neurochip-take-entry"

# New ids are 12 hex digits; accept a range so a later version may lengthen them.
_ID = re.compile(r"[0-9a-f]{8,32}")
# Leftovers of save_audio (".take.wav.tmp-1a2b3c4d") and write_text_atomically
# (".take.json.x8k2j1.tmp").
_TEMPORARY_FILE = re.compile(r"\..+\.tmp(-[0-9a-f]+)?")
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
_COLUMNS = (
    "id",
    "created",
    "name",
    "kind",
    "source_name",
    "audio_file",
    "thumbnail_file",
    "metadata",
    "starred",
    "frames",
    "sample_rate",
    "channels",
    "prompt",
    "search",
    "name_key",
    "song_key",
    "prompt_key",
    "audio_size",
    "faithfulness",
    "note",
)
# What a listing reads, in the order Take's fields take it (see TakeLibrary._new_take).
_LISTED = (
    "id, created, name, kind, source_name, starred, frames, sample_rate, channels, prompt, "
    "audio_file, thumbnail_file, metadata, audio_size, faithfulness, note"
)

_SORTS: dict[str, tuple[tuple[str, str], ...]] = {
    # sort -> its ORDER BY terms in the default direction; the other direction reverses every
    # term, so it is the same list backwards. Each matches an index of _MIGRATIONS[2] or [4]
    # (the implicit rowid at the end included), which SQLite walks forwards or backwards
    # instead of sorting. Ties go newest first. Takes without a faithfulness score (NULL) sort
    # after every score, most faithful first (and first when reversed).
    "created": (("created", "DESC"), ("rowid", "DESC")),
    "starred": (("starred", "DESC"), ("created", "DESC"), ("rowid", "DESC")),
    "name": (("name_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "song": (("song_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "prompt": (("prompt_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "faithfulness": (("faithfulness", "DESC"), ("created", "DESC"), ("rowid", "DESC")),
}
_REVERSE = {"ASC": "DESC", "DESC": "ASC"}
SORTS: tuple[str, ...] = tuple(_SORTS)
"""What :meth:`TakeLibrary.list` sorts by."""


def _backfill_v2(conn: sqlite3.Connection) -> None:
    """Fill version 2's columns of the rows a version-1 index already holds."""
    rows = conn.execute("SELECT id, name, source_name, metadata FROM takes").fetchall()
    updates = []
    for take_id, name, source_name, text in rows:
        try:
            metadata = json.loads(text)
        except (TypeError, ValueError):
            metadata = {}
        updates.append({"id": take_id, **_indexed(name, source_name, metadata)})
    conn.executemany(
        "UPDATE takes SET prompt = :prompt, search = :search, name_key = :name_key, "
        "song_key = :song_key, prompt_key = :prompt_key WHERE id = :id",
        updates,
    )


def _backfill_v4(conn: sqlite3.Connection) -> None:
    """Fill version 4's faithfulness scores from the metadata of the rows already there."""
    updates = []
    for take_id, text in conn.execute("SELECT id, metadata FROM takes").fetchall():
        try:
            metadata = json.loads(text)
        except (TypeError, ValueError):
            continue
        score = faithfulness_score(metadata) if isinstance(metadata, dict) else None
        if score is not None:
            updates.append((score, take_id))
    conn.executemany("UPDATE takes SET faithfulness = ? WHERE id = ?", updates)


# One list of steps per schema version; version n's turns n - 1 into n. A step is an SQL
# statement, or a function of the connection (to backfill a new column from the metadata).
# They run in one transaction, so an index is at one version or the next, never in between.
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    1: (
        """
        CREATE TABLE IF NOT EXISTS takes (
            id TEXT PRIMARY KEY,        -- random hex; also the folder name
            created REAL NOT NULL,      -- unix time
            name TEXT NOT NULL,         -- display title (user text: never used in a path)
            kind TEXT NOT NULL,         -- "take", "stereo pair", "crossfade comparison"
            source_name TEXT,           -- the song's file name as uploaded (user text)
            audio_file TEXT NOT NULL,   -- file name inside the take's folder
            thumbnail_file TEXT,        -- file name inside the take's folder, or NULL
            metadata TEXT NOT NULL,     -- the take_metadata() JSON
            starred INTEGER NOT NULL DEFAULT 0,
            frames INTEGER NOT NULL,
            sample_rate INTEGER NOT NULL,
            channels INTEGER NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS takes_by_created ON takes (created)",
    ),
    2: (
        # Derived from the name, song and metadata whenever a row is written; see _indexed().
        # prompt: the prompts of the takes in it, A's first, " / " between (for display).
        "ALTER TABLE takes ADD COLUMN prompt TEXT NOT NULL DEFAULT ''",
        # search: name and prompts, NFKC-normalised and case-folded, for text search.
        "ALTER TABLE takes ADD COLUMN search TEXT NOT NULL DEFAULT ''",
        # Sort keys (see _sort_key): case-folded, accents dropped, so "Élan" sorts with
        # "elan", not after "z"; a take without a song or prompt sorts after every one with.
        "ALTER TABLE takes ADD COLUMN name_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE takes ADD COLUMN song_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE takes ADD COLUMN prompt_key TEXT NOT NULL DEFAULT ''",
        # One index per sort in _SORTS (ordered as it orders), and one for the song filter.
        "CREATE INDEX IF NOT EXISTS takes_by_starred ON takes (starred, created)",
        "CREATE INDEX IF NOT EXISTS takes_by_name ON takes (name_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_song ON takes (song_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_prompt ON takes (prompt_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_source ON takes (source_name, created)",
        _backfill_v2,
    ),
    3: (
        # The size in bytes of the complete audio file, so that a listing can tell a file cut
        # off (by hand, a full disk, a bad copy) with one stat. NULL: not known; the rows of
        # older indexes get theirs from the files' headers in recover(), as it looks at every
        # take's audio anyway (a migration sees the index only, not the folders).
        "ALTER TABLE takes ADD COLUMN audio_size INTEGER",
    ),
    4: (
        # The note-faithfulness score the take was rendered with (metadata "faithfulness",
        # see faithfulness_score()); NULL for takes made before the meter, or not measured.
        "ALTER TABLE takes ADD COLUMN faithfulness REAL",
        # The composer's note (user text; mirrored in entry.json). Searched with the name and
        # prompts: a note is in the search column (see _indexed); none before version 4.
        "ALTER TABLE takes ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX IF NOT EXISTS takes_by_faithfulness ON takes (faithfulness, created)",
        _backfill_v4,
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION

# The library's home, read from $NEUROCHIP_HOME whenever DEFAULT_HOME is looked up (see
# __getattr__ below), so a test or app that sets the variable after import is obeyed.
DEFAULT_HOME: Path


def default_home() -> Path:
    """Where the take library lives: ``$NEUROCHIP_HOME``, else ``~/.neurochip``."""
    return Path(os.environ.get("NEUROCHIP_HOME") or "~/.neurochip").expanduser()


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_HOME":
        return default_home()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, eq=False)
class Take:
    """One take in the library, as listed. Change it through :class:`TakeLibrary`.

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
    faithfulness: float | None  # note-faithfulness score, 0 to 1; None: not measured
    note: str  # the composer's note ("" for none)
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
        faithfulness 0.93" (:func:`~neurochip.library.names.take_label`)."""
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


# --- the library -------------------------------------------------------------------------------


class _DamagedIndex(NeuroChipError):
    """SQLite found the index damaged ("database disk image is malformed", "file is not a
    database") while a library used it: :func:`_heals_index` sets it aside and rebuilds it."""

    def __init__(self, message: str, reason: str, index_id: tuple[int, int] | None) -> None:
        super().__init__(message)
        self.reason = reason  # SQLite's words
        self.index_id = index_id  # the file the failing connection had open (see _file_id)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _heals_index(method: _Method) -> _Method:
    """A library method that, if the index turns out damaged, rebuilds it once and runs again.

    Only for methods that can run twice: they change nothing, or nothing a second run would
    do differently (a star, a rename). A second failure is a plain error, so a healing method
    called by another rebuilds at most once. :meth:`TakeLibrary.add` and
    :meth:`~TakeLibrary.delete` heal their own way.
    """

    @functools.wraps(method)
    def healing(self: TakeLibrary, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _DamagedIndex as err:
            self._rebuild_index(err)
        try:
            return method(self, *args, **kwargs)
        except _DamagedIndex as err:
            raise self._damaged_again(err) from err

    return cast(_Method, healing)


class TakeLibrary:
    """Every take a composer renders: kept on disk, indexed, searched, starred, exported.

    Safe to share between threads and to open from several processes at once; see the module
    docstring for the layout and the invariants that make it crash-safe.

    Args:
        root: The library's folder; :func:`default_home` when ``None``. Created if missing.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        home = default_home() if root is None or str(root) == "" else Path(root).expanduser()
        self.root: Path = home.absolute()
        self.takes_dir: Path = self.root / "takes"
        self.index_path: Path = self.root / "library.sqlite3"
        # Folders that hold no readable take (damaged, or half-copied by hand): id -> the
        # folder's st_mtime_ns when it was read (None: too recent to trust). Reported once,
        # then skipped until the folder changes; recover() tries them all again.
        self._unreadable: dict[str, int | None] = {}
        # The st_mtime_ns of takes/ before the index was last found in line with the folders
        # (None: not yet, or too recent to trust). See "A fast index" in the module docstring.
        self._synced_mtime: int | None = None
        self._sync_lock = threading.Lock()
        # Held while a damaged or deleted index is rebuilt, so threads do it once. Reentrant:
        # a rebuild's own connections may find the file deleted again.
        self._rebuild_lock = threading.RLock()
        try:
            self.takes_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NeuroChipError(
                f"Cannot create the take library in {self.root}: {describe_os_error(err)}. "
                "Set NEUROCHIP_HOME to a folder you can write to."
            ) from err
        self._open_index()
        self.recover()

    def __repr__(self) -> str:
        return f"TakeLibrary({str(self.root)!r})"

    # -- adding -------------------------------------------------------------------------------

    def keep_source(self, sketch: Sketch) -> None:
        """Keep a copy of the sketch takes are made from, so Open can bring it back."""
        keep_source(self.root / "sources", sketch)

    def source(self, key: str) -> SourceFile | None:
        """The kept copy of the sketch with this key (a take's ``sketch_key``), or None."""
        return source_file(self.root / "sources", key)

    def add(
        self,
        audio: Audio,
        metadata: dict[str, Any],
        name: str | None = None,
        thumbnail: Image.Image | None = None,
        bit_depth: str = "24",
    ) -> Take:
        """Keep a take: its audio, settings (from :func:`take_metadata`) and a thumbnail.

        ``name`` is the display title (made from the song, prompt and seed when not given);
        the source file name is ``metadata["source"]``. Returns the take as listed.

        Raises:
            ValueError: If ``metadata`` was not made by :func:`take_metadata`.
            NeuroChipError: If the files cannot be written (disk full, no permission). Nothing
                is left behind then. If only the index update fails, the take is kept on disk
                and shows up in the list as soon as the index can be written again.
        """
        metadata = _plain_json(metadata)
        if metadata.get("format") != METADATA_FORMAT:
            raise ValueError("Take metadata must be made by take_metadata().")
        source = metadata.get("source")
        source_name = None if source is None else str(source)
        title = clean_name(name or "") or default_take_name(metadata)
        take_id, partial = self._new_partial_folder()
        entry = {
            "format": ENTRY_FORMAT,
            "id": take_id,
            "created": time.time(),
            "name": title,
            "source_name": source_name,
            "starred": False,
            "note": "",
        }
        folder = self._folder(take_id)
        try:
            save_take(partial / AUDIO_FILE, audio, metadata, bit_depth=bit_depth)
            if thumbnail is not None:
                write_png(partial / THUMBNAIL_FILE, thumbnail)
            write_text_atomically(partial / ENTRY_FILE, _entry_json(entry))
            audio_size = (partial / AUDIO_FILE).stat().st_size  # what Take.damage checks
            _fsync_folder(partial)
            os.rename(partial, folder)  # the take appears complete, or not at all
            _fsync_folder(self.takes_dir)
        except BaseException as err:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(err, OSError):
                raise NeuroChipError(
                    f"Could not save the take in {self.takes_dir}: {describe_os_error(err)}."
                ) from err
            raise
        record = {
            "id": take_id,
            "created": entry["created"],
            "name": title,
            "kind": str(metadata.get("kind") or "take"),
            "source_name": source_name,
            "audio_file": AUDIO_FILE,
            "thumbnail_file": THUMBNAIL_FILE if thumbnail is not None else None,
            "metadata": json.dumps(metadata, ensure_ascii=False),
            "starred": 0,
            "frames": audio.frames,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            **_indexed(title, source_name, metadata),
            "audio_size": audio_size,
        }
        try:
            try:
                with self._transaction() as conn:
                    _insert(conn, record)
            except _DamagedIndex as err:
                # The rebuild indexes this take's folder with the others': it is complete.
                self._rebuild_index(err)
        except NeuroChipError as err:
            raise NeuroChipError(
                f"The take was saved in {folder}, but the library's index could not be "
                f"updated ({err}). It will be listed once the index can be written again."
            ) from err
        return self._take(record)

    # -- reading ------------------------------------------------------------------------------

    @_heals_index
    def list(
        self,
        starred_only: bool = False,
        *,
        song: str | None = None,
        text: str | None = None,
        sort: str = "created",
        descending: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Take]:
        """The takes, newest first; or those asked for, in the order asked for.

        Args:
            starred_only: Only the starred takes.
            song: Only the takes of this song (their ``source_name``, exactly).
            text: Only the takes whose name, prompt or note contains this text, ignoring case
                ("ß" matches "SS") and runs of spaces. Empty: every take.
            sort: One of :data:`SORTS`: "created" (newest first), "starred" (starred
                first), "name", "song", "prompt" (A to Z, ignoring case and accents; no song
                or prompt after Z), "faithfulness" (most faithful to the sketch's notes
                first; takes never measured last). Ties go newest first.
            descending: ``True`` for Z to A (or newest first), ``False`` for A to Z (oldest
                first); by default as above. The other direction is the same list reversed.
            limit: At most this many takes (all when ``None``), after skipping ``offset``.

        Raises:
            ValueError: For an unknown sort, or a negative limit or offset.
        """
        if sort not in _SORTS:
            raise ValueError(f"Takes can be sorted by {', '.join(SORTS)}, not {sort!r}.")
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError(f"limit and offset cannot be negative ({limit}, {offset}).")
        terms = _SORTS[sort]
        if descending is not None and descending != (terms[0][1] == "DESC"):
            terms = tuple((term, _REVERSE[way]) for term, way in terms)
        where, params = _filters(starred_only, song, text)
        query = "SELECT {} FROM takes {} ORDER BY {} LIMIT ? OFFSET ?".format(
            _LISTED, where, ", ".join(f"{term} {way}" for term, way in terms)
        )
        params += [-1 if limit is None else int(limit), int(offset)]
        self._refresh()
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: the fastest rows to unpack
            return [self._new_take(*row) for row in cursor.execute(query, params)]

    @_heals_index
    def count(
        self, starred_only: bool = False, *, song: str | None = None, text: str | None = None
    ) -> int:
        """How many takes :meth:`list` would give with these filters (to page through them)."""
        where, params = _filters(starred_only, song, text)
        self._refresh()
        with self._connect() as conn:
            return int(conn.execute(f"SELECT count(*) FROM takes {where}", params).fetchone()[0])

    @_heals_index
    def songs(self) -> builtins.list[str]:
        """The songs the takes were rendered from (``source_name``), A to Z, once each."""
        self._refresh()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT source_name FROM takes WHERE source_name IS NOT NULL "
                "ORDER BY song_key, source_name"
            ).fetchall()
        return [row[0] for row in rows]

    @_heals_index
    def get(self, take_id: str) -> Take:
        """The take with this id.

        Raises:
            NeuroChipError: If there is no such take (any more).
        """
        take = self._get(take_id)
        if take is None and self._folder(take_id, check=False).is_dir():
            self._reconcile()  # its folder is there but its row is not: index it
            take = self._get(take_id)
        elif take is not None and not take.audio_path.is_file():
            self._reconcile(check_audio=True)  # deleted by another tab, or by hand
            take = self._get(take_id)
        if take is None:
            raise self._unknown(take_id)
        return take

    def load_audio(self, take_id: str) -> Audio:
        """A take's audio, exactly as stored.

        Raises:
            NeuroChipError: For an unknown id, or a take whose audio is damaged (see
                :attr:`Take.damage`).
        """
        take = self.get(take_id)
        _refuse_damaged(take)
        try:
            samples, rate = sf.read(take.audio_path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise NeuroChipError(
                f"The audio of “{take.name}” ({take.audio_path}) could not be read: {err}."
            ) from err
        return Audio(samples.T, rate)

    def export(self, take_id: str, suffix: str = ".wav") -> tuple[bytes, str]:
        """A take as the bytes of a ``.wav``, ``.flac``, ``.mp3`` or ``.ogg`` file, and a name.

        The file embeds the take's settings (see :func:`read_take_metadata`); the name comes
        from :func:`take_filename` with the settings of take "A". A WAV is the stored file
        itself; other types are encoded on the fly (24-bit FLAC; MP3 and OGG at libsndfile's
        default quality).

        Raises:
            NeuroChipError: For an unknown id, an unsupported suffix, or a take whose audio is
                damaged (see :attr:`Take.damage`): never a cut-off file.
        """
        with tempfile.TemporaryDirectory(prefix="neurochip-export-") as folder:
            path, file_name = self.export_file(take_id, suffix, Path(folder))
            try:
                return path.read_bytes(), file_name
            except OSError as err:
                raise NeuroChipError(
                    f"Could not prepare {file_name} for download: {err.strerror or err}."
                ) from err

    def export_file(self, take_id: str, suffix: str, folder: Path) -> tuple[Path, str]:
        """:meth:`export` as a file to stream from: the stored file itself where it is of
        that type (read it, never change it), else one encoded into ``folder``."""
        ext = "." + suffix.lower().lstrip(".") if isinstance(suffix, str) else ""
        if ext not in EXPORT_SUFFIXES:
            raise NeuroChipError(
                f"Takes can be downloaded as {', '.join(EXPORT_SUFFIXES)}, not {suffix!r}."
            )
        take = self.get(take_id)
        _refuse_damaged(take)
        try:
            settings: RenderSettings | None = take.settings()
        except NeuroChipError:
            settings = None
        takes = take.metadata.get("takes")
        seeds = [
            t["seed"]
            for t in (takes.values() if isinstance(takes, dict) else ())
            if isinstance(t, dict) and isinstance(t.get("seed"), int)
        ]  # a stereo pair's file holds both takes: its name says both seeds
        file_name = take_filename(take.source_name, settings, take.kind, ext, seeds)
        if take.audio_path.suffix.lower() == ext:
            return take.audio_path, file_name  # already has everything
        try:
            audio = self.load_audio(take.id)
            return save_take(folder / f"take{ext}", audio, take.metadata, "24"), file_name
        except OSError as err:
            raise NeuroChipError(
                f"Could not prepare “{take.name}” for download: {err.strerror or err}."
            ) from err

    # -- changing -----------------------------------------------------------------------------

    def star(self, take_id: str, starred: bool = True) -> Take:
        """Star a keeper (or unstar it with ``starred=False``)."""
        return self._update(take_id, "starred", int(bool(starred)))

    def rename(self, take_id: str, name: str) -> Take:
        """Give a take a new display title.

        Raises:
            NeuroChipError: If the name is empty (or only spaces), or the id unknown.
        """
        title = clean_name(name if isinstance(name, str) else "")
        if not title:
            raise NeuroChipError("A take's name cannot be empty.")
        return self._update(take_id, "name", title)

    def set_note(self, take_id: str, note: str) -> Take:
        """Write a note on a take ("the bass drifts in bar 12"); an empty one removes it.

        Free text (lines kept, see :func:`~neurochip.library.names.clean_note`), searched
        with the take's name and prompts, kept in the take's ``entry.json`` like its name.

        Raises:
            NeuroChipError: If the id is unknown.
        """
        return self._update(take_id, "note", clean_note(note if isinstance(note, str) else ""))

    def delete(self, take_id: str) -> None:
        """Delete a take: its row and its folder, for good.

        The folder is renamed to ``<id>.deleted`` inside the transaction that deletes the row
        and removed after it commits (see the module docstring for why).
        """
        try:
            self._delete(take_id)
            return
        except _DamagedIndex as err:
            self._rebuild_index(err)
        if not self._folder(take_id).is_dir():
            # Renamed to .deleted before the index failed (at the commit): the rebuild
            # removed that folder and indexed no row for it. Deleted, as asked.
            return
        try:
            self._delete(take_id)
        except _DamagedIndex as err:
            raise self._damaged_again(err) from err

    def _delete(self, take_id: str) -> None:
        with self._transaction() as conn:
            if conn.execute("DELETE FROM takes WHERE id = ?", (take_id,)).rowcount == 0:
                raise self._unknown(take_id)
            folder = self._folder(take_id)
            doomed = folder.with_name(f"{take_id}.deleted")
            try:
                os.rename(folder, doomed)
            except FileNotFoundError:
                return  # its files were already gone: dropping the row (on commit) is all
            except OSError as err:  # e.g. a file in it open elsewhere, on Windows
                raise NeuroChipError(
                    f"Could not delete the take in {folder}: {err.strerror or err}."
                ) from err
        shutil.rmtree(doomed, ignore_errors=True)  # whatever is left is recover()'s job

    # -- recovery -----------------------------------------------------------------------------

    @_heals_index
    def recover(self, stale_after_s: float = STALE_AFTER_S) -> int:
        """Bring the folders and the index back in line after a crash; see the module docstring.

        Removes ``.deleted`` folders, and ``.partial`` folders and temporary files nothing has
        touched for ``stale_after_s``; indexes complete folders that have no row; drops rows
        whose folder or audio is gone. Safe to run while other processes use the library.

        Returns:
            How many takes were indexed again.
        """
        return self._recover(stale_after_s)

    def _recover(self, stale_after_s: float = STALE_AFTER_S) -> int:
        now = time.time()
        with self._sync_lock:
            self._unreadable.clear()
            self._synced_mtime = None
        for entry in _scan(self.takes_dir):
            stem, _, state = entry.name.partition(".")
            if not _ID.fullmatch(stem) or not entry.is_dir(follow_symlinks=False):
                continue  # not ours: leave it alone
            path = Path(entry.path)
            # A .deleted folder is gone in intent already; a .partial one may be a live
            # writer's, in another process, until it has been still for a while.
            stale_partial = state == "partial" and now - _last_change(path) >= stale_after_s
            if state == "deleted" or stale_partial:
                shutil.rmtree(path, ignore_errors=True)
            elif state == "":
                for item in _scan(path):
                    if _TEMPORARY_FILE.fullmatch(item.name) and item.is_file():
                        with contextlib.suppress(OSError):
                            if now - item.stat().st_mtime >= stale_after_s:
                                os.unlink(item.path)
        return self._reconcile(check_audio=True)

    # -- internals ----------------------------------------------------------------------------

    def _folder(self, take_id: str, check: bool = True) -> Path:
        """The folder of a take. Only ids shaped like ours ever become paths."""
        if not isinstance(take_id, str) or not _ID.fullmatch(take_id):
            if check:
                raise self._unknown(take_id)
            return self.takes_dir / "-"  # a name no take has
        return self.takes_dir / take_id

    def _take_folders(self) -> builtins.list[str]:
        """Ids of the complete takes on disk (bare ``<id>`` folders)."""
        return [
            e.name
            for e in _scan(self.takes_dir)
            if _ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def _unknown(self, take_id: object) -> NeuroChipError:
        return NeuroChipError(
            f"No take with id {take_id!r} in {self.root}: it was deleted, perhaps in another "
            "tab. Refresh the list."
        )

    def _new_partial_folder(self) -> tuple[str, Path]:
        for _ in range(16):
            take_id = uuid.uuid4().hex[:12]
            folder = self._folder(take_id)
            if folder.exists() or folder.with_name(f"{take_id}.deleted").exists():
                continue  # 48 random bits: never, in practice
            partial = folder.with_name(f"{take_id}.partial")
            try:
                partial.mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError as err:
                raise NeuroChipError(
                    f"Could not save the take in {self.takes_dir}: {describe_os_error(err)}."
                ) from err
            return take_id, partial
        raise NeuroChipError(f"Could not find a free take id in {self.takes_dir}.")

    def _get(self, take_id: str) -> Take | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM takes WHERE id = ?", (str(take_id),)).fetchone()
        return None if row is None else self._take(row)

    @_heals_index
    def _update(self, take_id: str, column: str, value: object) -> Take:
        if column not in ("starred", "name", "note"):  # it is spliced into the SQL below
            raise ValueError(f"Cannot update {column!r}.")
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
            if row is None:
                raise self._unknown(take_id)
            record = {**dict(row), column: value}
            if column in ("name", "note"):
                metadata = json.loads(row["metadata"])
                record.update(
                    _indexed(record["name"], row["source_name"], metadata, record["note"])
                )
            conn.execute(
                f"UPDATE takes SET {column} = ?, search = ?, name_key = ? WHERE id = ?",
                (value, record["search"], record["name_key"], take_id),
            )
            # Mirrored inside the transaction, so concurrent edits reach the file in the
            # order they reach the index.
            self._write_entry(record)
        return self._take(record)

    def _write_entry(self, record: Mapping[str, Any]) -> None:
        """Mirror a row into its folder's entry.json (best effort: the index is what counts)."""
        entry = {
            "format": ENTRY_FORMAT,
            "id": record["id"],
            "created": record["created"],
            "name": record["name"],
            "source_name": record["source_name"],
            "starred": bool(record["starred"]),
            "note": record["note"],
        }
        try:
            write_text_atomically(self._folder(record["id"]) / ENTRY_FILE, _entry_json(entry))
        except OSError as err:
            log.warning("Could not update %s of take %s: %s", ENTRY_FILE, record["id"], err)

    def _take(self, record: Mapping[str, Any]) -> Take:
        return self._new_take(*(record[c] for c in _LISTED.split(", ")))

    def _new_take(
        self,
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
                "_takes_dir": self.takes_dir,
                "_audio_file": audio_file,
                "_thumbnail_file": thumbnail_file,
                "_metadata_json": metadata,
                "_audio_size": audio_size,
            },
        )
        return take

    # -- keeping the index in line with the folders -------------------------------------------

    def _refresh(self) -> None:
        """Bring the index in line with the folders, unless nothing can have changed.

        Nothing has when the modification time of ``takes/`` (and of any unreadable folder)
        is still the one remembered before the index was last found in line. Otherwise the
        folders' ids are compared with the index's, and only a difference takes the write lock
        to reconcile.
        """
        if self._in_sync():
            return
        stamp = self._stamp()  # before looking: a change from now on changes the time
        with self._connect() as conn:
            known = {row[0] for row in conn.execute("SELECT id FROM takes")}
        on_disk = set(self._take_folders())
        if known != on_disk - self._still_unreadable(on_disk):
            # A take whose index insert failed, one deleted behind our back, or an unreadable
            # folder that changed: _reconcile looks again, under the write lock.
            self._reconcile()
        else:
            self._mark_synced(stamp)

    def _stamp(self) -> tuple[int, float] | None:
        """The modification time of ``takes/`` and when it was read, or ``None``."""
        try:
            return os.stat(self.takes_dir).st_mtime_ns, time.time()
        except OSError:
            return None

    def _mark_synced(self, stamp: tuple[int, float] | None) -> None:
        """Remember ``stamp`` (taken before the folders were last compared), if trustworthy."""
        trusted = stamp is not None and stamp[1] - stamp[0] / 1e9 >= RACY_S
        with self._sync_lock:
            self._synced_mtime = stamp[0] if trusted and stamp is not None else None

    def _in_sync(self) -> bool:
        """Whether ``takes/`` and every unreadable folder is as when last compared."""
        with self._sync_lock:
            synced = self._synced_mtime
            unreadable = builtins.list(self._unreadable.items())
        if synced is None:
            return False
        try:
            if os.stat(self.takes_dir).st_mtime_ns != synced:
                return False
            for take_id, mtime in unreadable:
                if mtime is None or os.stat(self.takes_dir / take_id).st_mtime_ns != mtime:
                    return False
        except OSError:
            return False
        return True

    def _still_unreadable(self, on_disk: set[str]) -> set[str]:
        """The unreadable folders of ``on_disk`` that have not changed since they were read."""
        with self._sync_lock:
            unreadable = builtins.list(self._unreadable.items())
        still = set()
        for take_id, mtime in unreadable:
            if take_id in on_disk and mtime is not None:
                with contextlib.suppress(OSError):
                    if os.stat(self.takes_dir / take_id).st_mtime_ns == mtime:
                        still.add(take_id)
        return still

    def _reconcile(self, check_audio: bool = False) -> int:
        """Index complete folders without a row and drop rows whose folder is gone.

        With ``check_audio``, also drop rows whose audio file is gone (one ``stat`` per
        take: :meth:`recover` does it, listing does not), and record the size of the complete
        file for rows that have none (those of an index older than version 3; one header read
        each, once). Runs under the write lock, so no
        delete or add is half-way through while it looks: a delete renames its folder before
        it commits, and an add's folder is complete before its row is inserted.
        """
        stamp = self._stamp()
        added = 0
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, audio_file, audio_size FROM takes").fetchall()
            on_disk = set(self._take_folders())
            gone = [
                (row["id"],)
                for row in rows
                if row["id"] not in on_disk
                or (
                    check_audio
                    and not (self._folder(row["id"], check=False) / row["audio_file"]).is_file()
                )
            ]
            conn.executemany("DELETE FROM takes WHERE id = ?", gone)
            if check_audio:
                dropped = {take_id for (take_id,) in gone}
                sizes = []
                for row in rows:
                    if row["audio_size"] is None and row["id"] not in dropped:
                        folder = self._folder(row["id"], check=False)
                        path = folder / Path(row["audio_file"]).name
                        size = _expected_size(path)
                        if size is not None:  # else: damaged; Take.damage reads it each time
                            sizes.append((size, row["id"]))
                conn.executemany("UPDATE takes SET audio_size = ? WHERE id = ?", sizes)
            known = {row["id"] for row in rows}
            skip = self._still_unreadable(on_disk)
            with self._sync_lock:
                for take_id in builtins.list(self._unreadable):
                    if take_id not in on_disk:
                        del self._unreadable[take_id]
            for take_id in sorted(on_disk - known - skip):
                folder = self._folder(take_id)
                before = self._stamp_of(folder)
                record = self._record_from_folder(folder, warn=take_id not in self._unreadable)
                with self._sync_lock:
                    if record is None:
                        self._unreadable[take_id] = before
                    else:
                        self._unreadable.pop(take_id, None)
                if record is not None:
                    added += _insert(conn, record)
        self._mark_synced(stamp)
        if gone or added:
            log.info("Take library %s: dropped %d rows, indexed %d", self.root, len(gone), added)
        return added

    @staticmethod
    def _stamp_of(folder: Path) -> int | None:
        """A folder's ``st_mtime_ns``, or ``None`` if too recent to trust (or unreadable)."""
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        return mtime if time.time() - mtime / 1e9 >= RACY_S else None

    def _record_from_folder(self, folder: Path, warn: bool = True) -> dict[str, Any] | None:
        """A row for a complete take folder, from its files; ``None`` if it holds no take."""
        report = log.warning if warn else log.debug
        audio = next(
            (folder / f"take{s}" for s in _AUDIO_SUFFIXES if (folder / f"take{s}").is_file()),
            None,
        )
        if audio is None:
            report("Take folder %s holds no take audio; skipped", folder)
            return None
        try:
            metadata = read_take_metadata(audio)  # the sidecar, if the audio lost them
        except (NeuroChipError, OSError) as err:
            report("Take folder %s could not be indexed: %s", folder, err)
            return None
        kind = str(metadata.get("kind") or "take")
        try:
            info = sf.info(str(audio))
            frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
            readable = True
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            # Its settings are here and its audio is not (cut off before the first samples):
            # listed all the same, marked damaged (Take.damage), so that a composer sees it
            # and can delete it or put the file back. Its length is not known.
            report("Take %s: its audio cannot be read (%s)", folder, _soundfile_reason(err))
            frames, rate, channels = 0, 44100, 2 if kind == "stereo pair" else 1
            readable = False
        entry = _read_json(folder / ENTRY_FILE)
        if entry.get("id") != folder.name:
            entry = {}  # missing, damaged, or copied from another take's folder
        created = entry.get("created")
        if not isinstance(created, (int, float)) or not math.isfinite(created):
            created = audio.stat().st_mtime
        source = entry.get("source_name", metadata.get("source"))
        name = entry.get("name")
        title = (clean_name(name) if isinstance(name, str) else "") or default_take_name(metadata)
        source_name = None if source is None else str(source)
        note = entry.get("note")
        note = clean_note(note) if isinstance(note, str) else ""
        return {
            "id": folder.name,
            "created": float(created),
            "name": title,
            "kind": kind,
            "source_name": source_name,
            "audio_file": audio.name,
            "thumbnail_file": THUMBNAIL_FILE if (folder / THUMBNAIL_FILE).is_file() else None,
            "metadata": json.dumps(metadata, ensure_ascii=False),
            "starred": int(entry.get("starred") is True),
            "frames": frames,
            "sample_rate": rate,
            "channels": channels,
            **_indexed(title, source_name, metadata, note),
            "audio_size": _expected_size(audio, readable),
        }

    # -- the index ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of our own (sqlite3 connections must not cross threads)."""
        if _file_id(self.index_path) is None:
            self._index_gone()  # else connecting would make an empty file, with no takes
        try:
            conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise self._index_error(err) from err
        index_id = _file_id(self.index_path)  # which file: another may replace it meanwhile
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.Error as err:
            # No table: the file was deleted and made again, empty, between the check above
            # and the connection (here or in another process). Rebuilt like a damaged one.
            if _is_damage(err) or "no such table" in str(err):
                raise _DamagedIndex(str(self._index_error(err)), str(err), index_id) from err
            raise self._index_error(err) from err
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock first (``BEGIN IMMEDIATE``).

        What it reads of the folders then stays true until it commits, because every change
        that must agree with the folders happens under this lock.
        """
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _index_error(self, err: sqlite3.Error) -> NeuroChipError:
        problem = _disk_problem(err)
        if problem is not None:  # said as for every file NeuroChip writes
            return NeuroChipError(f"The take library's index {self.index_path} failed: {problem}.")
        hint = (
            " Another NeuroChip is busy writing to it; try again."
            if "locked" in str(err) or "busy" in str(err)
            else ""
        )
        return NeuroChipError(f"The take library's index {self.index_path} failed: {err}.{hint}")

    def _index_gone(self) -> None:
        """The index file was deleted while the library is open (by hand, by a clean-up):
        make it again and fill it from the folders, as opening a library does. Nothing is
        lost: the rows are made from the folders, the edits (star, name, note) are in each
        take's ``entry.json``."""
        with self._rebuild_lock:
            if _file_id(self.index_path) is not None:
                return  # made again meanwhile, by another thread or process
            log.warning("Take index %s is gone; rebuilt from the take folders", self.index_path)
            leftovers = [Path(f"{self.index_path}{end}") for end in ("-wal", "-shm")]
            if any(path.exists() for path in leftovers):
                # A write-ahead log left without its database would be replayed into the new
                # one, and damage it: kept aside, as a damaged index is.
                self._set_aside("its file was deleted, its -wal and -shm left behind")
            self._open_index()
            self._recover()

    def _open_index(self) -> None:
        """Create, check and migrate the index; set a damaged one aside (the folders rebuild it).

        The check is ``PRAGMA quick_check``: it reads every page of the index and checks its
        structure (not that each index agrees with the table, which integrity_check also does
        at five times the cost), about 25 ms for 10,000 takes. Damage found later, while the
        library is in use, is handled by :func:`_heals_index`.
        """
        try:
            problem = self._migrate()
        except sqlite3.Error as err:
            if isinstance(err, sqlite3.OperationalError) and not _is_damage(err):
                raise self._index_error(err) from err  # locked, read-only, disk full: say so
            problem = str(err)  # "file is not a database", "database disk image is malformed"
        if problem is None:
            return
        self._set_aside(problem)
        try:
            problem = self._migrate()
        except sqlite3.Error as err:
            raise self._index_error(err) from err
        if problem is not None:
            raise NeuroChipError(
                f"The take library's index {self.index_path} is damaged as soon as it is made "
                f"({problem}): check the disk. The takes themselves are in {self.takes_dir}."
            )

    def _set_aside(self, reason: str) -> None:
        """Move a damaged index (and its -wal and -shm) to ``library.sqlite3.damaged-<time>``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.index_path.with_name(f"{self.index_path.name}.damaged-{stamp}")
        for n in range(2, 100):
            if not aside.exists():
                break
            aside = self.index_path.with_name(f"{self.index_path.name}.damaged-{stamp}-{n}")
        log.warning(
            "Take index %s is damaged (%s); moved to %s and rebuilt from the take folders",
            self.index_path,
            reason,
            aside,
        )
        for extra in ("", "-wal", "-shm"):
            source = self.index_path.with_name(self.index_path.name + extra)
            try:
                os.replace(source, aside.with_name(aside.name + extra))
            except FileNotFoundError:
                pass
            except OSError as err:  # e.g. open in another program, on Windows
                raise NeuroChipError(
                    f"The take library's index {self.index_path} is damaged ({reason}) and "
                    f"could not be moved aside: {err.strerror or err}. Close every NeuroChip "
                    f"and delete it; the takes themselves are safe in {self.takes_dir}."
                ) from err

    def _rebuild_index(self, damaged: _DamagedIndex) -> None:
        """Set a damaged index aside and rebuild it from the folders, as :meth:`recover` does.

        Unless it is no longer the file that failed: another thread or process has set that
        one aside already (its rebuild is then finished here, or merely checked).
        """
        with self._rebuild_lock:
            if damaged.index_id is not None and damaged.index_id == _file_id(self.index_path):
                self._set_aside(damaged.reason)
            try:
                self._open_index()
                self._recover()
            except _DamagedIndex as again:
                raise self._damaged_again(again) from again

    def _damaged_again(self, err: _DamagedIndex) -> NeuroChipError:
        return NeuroChipError(
            f"The take library's index {self.index_path} was rebuilt from the take folders "
            f"and is damaged again ({err.reason}): check the disk. The takes themselves are "
            f"in {self.takes_dir}."
        )

    def _migrate(self) -> str | None:
        """Check the index and bring it to :data:`SCHEMA_VERSION`; what is wrong with it, if
        the check fails (and then nothing is changed)."""
        conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                return f"quick_check: {problem}"
            # Persistent: every later connection, from any process, uses the write-ahead log.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise NeuroChipError(
                    f"The take library in {self.root} was written by a newer NeuroChip "
                    f"(index version {version}, this one knows {SCHEMA_VERSION}). Upgrade "
                    "NeuroChip, or set NEUROCHIP_HOME to another folder."
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return None


# --- file helpers --------------------------------------------------------------------------------


def _is_damage(err: sqlite3.Error) -> bool:
    """Whether SQLite says the index file is damaged, rather than busy, read-only or full."""
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int):  # SQLITE_CORRUPT, SQLITE_NOTADB (and their extended codes)
        return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(err).lower()
    return any(words in text for words in ("malformed", "not a database", "disk image"))


def _disk_problem(err: sqlite3.Error) -> str | None:
    """A full or failing disk as :func:`~neurochip.io.write.describe_os_error` says it (as
    for every file NeuroChip writes), or ``None`` for any other index error."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(err).lower()
    if primary == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in text:
        return describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    if primary == getattr(sqlite3, "SQLITE_IOERR", 10) or "disk i/o error" in text:
        return (
            "the disk could not be read or written (an input/output error): check the disk, "
            "or move NEUROCHIP_HOME to another one"
        )
    return None


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device and inode), or ``None``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _refuse_damaged(take: Take) -> None:
    if take.damage is not None:
        raise NeuroChipError(
            f"The audio of “{take.name}” is damaged ({take.damage}): it cannot be played or "
            "exported; delete it or restore the file."
        )


def _audio_damage(audio: str, recorded: int | None) -> str | None:
    """What is wrong with a take's audio file (see :attr:`Take.damage`), or ``None``.

    ``recorded``: the size of the complete file, as the index has it (``None``: not known).
    """
    try:
        size = os.stat(audio).st_size
    except FileNotFoundError:
        return "its file is missing"
    except OSError as err:
        return f"its file cannot be read: {err.strerror or err}"
    if size == recorded:
        return None  # as it was added: whole
    path = Path(audio)
    whole = recorded
    if path.suffix.lower() == ".wav":
        # A WAV's header says how long the file is; it is right for a file put back or
        # edited by hand, and still there in one cut off (unless cut inside the header).
        declared = _declared_size(path)
        whole = recorded if declared is None else declared
    if whole is not None and size < whole:
        return f"cut off at {_size_text(size)} of {_size_text(whole)}"
    problem = _unreadable(path)
    return None if problem is None else f"its file cannot be read: {problem}"


def _declared_size(path: Path) -> int | None:
    """The size of the whole file, as a WAV's RIFF header says; ``None`` if it says none.

    ``None`` for a file that is not a RIFF WAVE file (any more), is shorter than the header,
    or was streamed and never had its size filled in (0 or 0xFFFFFFFF).
    """
    try:
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError:
        return None
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    size = int.from_bytes(header[4:8], "little")
    return None if size in (0, 0xFFFFFFFF) else size + 8


def _expected_size(path: Path, readable: bool | None = None) -> int | None:
    """The size of a take's complete audio file, judged from the file alone.

    What a WAV's header declares (or its size, if larger); otherwise its size if the file can
    be read (``readable``, when the caller knows); ``None`` when neither tells.
    """
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    declared = _declared_size(path)
    if declared is not None:
        return max(declared, size)
    if readable is None:
        readable = _unreadable(path) is None
    return size if readable else None


def _unreadable(path: Path) -> str | None:
    """Why libsndfile cannot open an audio file, or ``None`` if it can."""
    try:
        sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        return _soundfile_reason(err)
    return None


def _soundfile_reason(err: BaseException) -> str:
    detail = getattr(err, "error_string", None) or getattr(err, "strerror", None) or str(err)
    return str(detail).strip().rstrip(".")


def _size_text(size: int) -> str:
    """A file size for people: "100 bytes", "66.3 KB", "1.2 MB"."""
    if size < 1000:
        return f"{size} byte{'' if size == 1 else 's'}"
    for unit, scale in (("KB", 1e3), ("MB", 1e6)):
        if round(size / scale, 1) < 1000:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e9:.1f} GB"


def _insert(conn: sqlite3.Connection, record: Mapping[str, Any]) -> int:
    """Insert a row unless its id is there already; returns 1 if it was inserted."""
    columns = ", ".join(_COLUMNS)
    values = ", ".join(f":{c}" for c in _COLUMNS)
    cursor = conn.execute(f"INSERT OR IGNORE INTO takes ({columns}) VALUES ({values})", record)
    return cursor.rowcount


def _indexed(
    name: str, source_name: str | None, metadata: Mapping[str, Any], note: str = ""
) -> dict[str, Any]:
    """The columns the index derives from a take's name, song, metadata and note, to sort and
    search (and the note itself).

    Written with every row (add, recovery, rename, note, and the migrations that added them),
    so a listing reads them and parses no JSON.
    """
    takes = metadata.get("takes")
    prompts: builtins.list[str] = []
    if isinstance(takes, Mapping):
        for key in sorted(takes, key=str):  # "A" before "B"
            settings = takes[key]
            prompt = settings.get("prompt") if isinstance(settings, Mapping) else None
            if isinstance(prompt, str) and prompt.strip() and prompt.strip() not in prompts:
                prompts.append(prompt.strip())
    prompt_text = " / ".join(prompts)
    # A newline between them, which a folded query never holds: no match spans two. (No note:
    # no third line, so rows of older versions, which had none, need no backfill.)
    search = f"{_fold(name)}\n{_fold(prompt_text)}" + (f"\n{_fold(note)}" if note else "")
    return {
        "prompt": prompt_text,
        "search": search,
        "name_key": _sort_key(name),
        "song_key": _sort_key(source_name),
        "prompt_key": _sort_key(prompt_text),
        "faithfulness": faithfulness_score(metadata),
        "note": note,
    }


def _filters(
    starred_only: bool, song: str | None, text: str | None
) -> tuple[str, builtins.list[object]]:
    """The WHERE clause of a listing (or "") and its parameters."""
    where: builtins.list[str] = []
    params: builtins.list[object] = []
    if starred_only:
        where.append("starred = 1")
    if song is not None:
        where.append("source_name = ?")
        params.append(str(song))
    needle = _fold(text) if text is not None else ""
    if needle:
        where.append("instr(search, ?) > 0")
        params.append(needle)
    return ("WHERE " + " AND ".join(where) if where else ""), params


def _fold(text: str) -> str:
    """Text as search compares it: NFKC-normalised, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _sort_key(text: str | None) -> str:
    """Text as sorting compares it: case-folded, without accents ("Élan" -> "0elan").

    The "0" in front puts no text ("1") after all text, A to Z.
    """
    if not text or not text.strip():
        return "1"
    decomposed = unicodedata.normalize("NFKD", _fold(text))
    return "0" + "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _plain_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` as it will read back from JSON (numpy numbers -> floats, paths -> text)."""

    def fallback(value: object) -> object:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        return str(value)

    if not isinstance(metadata, Mapping):
        raise ValueError("Take metadata must be made by take_metadata().")
    return json.loads(json.dumps(dict(metadata), ensure_ascii=False, default=fallback))


def _entry_json(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, indent=2) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fsync_folder(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable."""
    if os.name == "nt":
        return  # folders cannot be opened on Windows; NTFS journals renames itself
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def _scan(path: Path) -> list[os.DirEntry[str]]:
    """A folder's entries; none if it cannot be read (e.g. removed meanwhile)."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def _last_change(folder: Path) -> float:
    """The newest modification time of a folder and the files in it."""
    times = []
    for path in (folder, *(Path(e.path) for e in _scan(folder))):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)
