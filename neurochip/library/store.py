"""The take store: every take a composer renders, kept in folders on disk and indexed.

:class:`TakeLibrary` keeps every take a composer renders, so that a refresh, a second browser
tab or a killed server loses nothing. It stores what it is given (audio, the settings from
:func:`~neurochip.library.metadata.take_metadata`, a thumbnail) and depends on neither the
engine nor the mixer: :mod:`neurochip.takeset` renders, pairs and hands the results over. It
lives in ``$NEUROCHIP_HOME`` (default ``~/.neurochip``): ``library.sqlite3``, the index, and
``takes/``, one folder per take.

One source of truth
-------------------

The folders are the truth. The index is a cache of them, for fast listing, search and sort,
that also holds the edits (star, rename, note), each mirrored into the take's ``entry.json`` in
the same transaction; :meth:`TakeLibrary.recover` rebuilds it from the folders alone (and a
damaged index is set aside and rebuilt the same way). Text a user typed or uploaded (file
names, take names) is stored as text in the index and in JSON, and never becomes part of a
path.

:class:`TakeLibrary` is the one way in; each part is explained where it is done:

* :mod:`~neurochip.library.folders`: the folders' layout, the order of every write, and why a
  crash leaves them consistent;
* :mod:`~neurochip.library.sync`: recovery, and how listing notices folders added or deleted
  behind its back without looking at every folder;
* :mod:`~neurochip.library.index`: connections, transactions and concurrency; a damaged or
  deleted index set aside and rebuilt;
* :mod:`~neurochip.library.schema`: the columns, what is derived for them, and the migrations;
* :mod:`~neurochip.library.query`: search, sort and paging;
* :mod:`~neurochip.library.edits`: star, rename, note, delete;
* :mod:`~neurochip.library.record` and :mod:`~neurochip.library.damage`: the :class:`Take`
  a listing gives, and how it tells (cheaply) that its audio file is damaged.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3  # noqa: F401  (tests patch store.sqlite3.connect)
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import describe_os_error
from neurochip.library.damage import _refuse_damaged
from neurochip.library.edits import delete_take, update_row, write_faithfulness
from neurochip.library.folders import (
    AUDIO_FILE,
    ENTRY_FILE,
    ENTRY_FORMAT,
    STALE_AFTER_S,
    THUMBNAIL_FILE,
    TakeFolders,
)
from neurochip.library.folders import _scan as _scan
from neurochip.library.index import BUSY_TIMEOUT_S, Index, _DamagedIndex, _heals_index
from neurochip.library.metadata import METADATA_FORMAT, save_take
from neurochip.library.names import clean_name, clean_note, default_take_name, take_filename
from neurochip.library.query import _REVERSE as _REVERSE
from neurochip.library.query import _SORTS as _SORTS
from neurochip.library.query import SONGS_QUERY, SORTS, count_query, listing_query
from neurochip.library.record import Take, listed_columns, new_take
from neurochip.library.schema import _COLUMNS as _COLUMNS
from neurochip.library.schema import _MIGRATIONS as _MIGRATIONS
from neurochip.library.schema import SCHEMA_VERSION, _indexed, _insert
from neurochip.library.sources import SourceFile, keep_source, source_file
from neurochip.library.sync import RACY_S, FolderSync
from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch

# The names other modules import from here. The tests and bench/library.py also read (or
# patch) the private "X as X" re-exports above, _insert, sf and sqlite3 here.
__all__ = [
    "AUDIO_FILE",
    "BUSY_TIMEOUT_S",
    "DEFAULT_HOME",
    "ENTRY_FILE",
    "ENTRY_FORMAT",
    "EXPORT_SUFFIXES",
    "RACY_S",
    "SCHEMA_VERSION",
    "SORTS",
    "STALE_AFTER_S",
    "THUMBNAIL_FILE",
    "Take",
    "TakeLibrary",
    "default_home",
]

EXPORT_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")
"""File types :meth:`TakeLibrary.export` writes."""

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


class TakeLibrary:
    """Every take a composer renders: kept on disk, indexed, searched, starred, exported.

    Safe to share between threads and to open from several processes at once; see
    :mod:`~neurochip.library.folders` for the layout and the invariants that make it crash-safe.

    Args:
        root: The library's folder; :func:`default_home` when ``None``. Created if missing.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        home = default_home() if root is None or str(root) == "" else Path(root).expanduser()
        self.root: Path = home.absolute()
        self._folders = TakeFolders(self.root)
        self.takes_dir: Path = self._folders.takes_dir
        # A new or rebuilt index is filled from the folders, as recover() does.
        self._index = Index(self.root, self.takes_dir, refill=lambda: self._sync.recover())
        self.index_path: Path = self._index.path
        self._sync = FolderSync(self._folders, self._index)
        try:
            self.takes_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NeuroChipError(
                f"Cannot create the take library in {self.root}: {describe_os_error(err)}. "
                "Set NEUROCHIP_HOME to a folder you can write to."
            ) from err
        self._index.open()
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
        # Its folder first, complete, then its row: see invariants 1 and 2 in folders.py.
        entry, audio_size = self._folders.write_new(
            audio, metadata, title, source_name, thumbnail, bit_depth
        )
        record = {
            "id": entry["id"],
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
                with self._index.transaction() as conn:
                    _insert(conn, record)
            except _DamagedIndex as err:
                # The rebuild indexes this take's folder with the others': it is complete.
                self._index.rebuild(err)
        except NeuroChipError as err:
            raise NeuroChipError(
                f"The take was saved in {self._folders.folder(entry['id'])}, but the library's "
                f"index could not be updated ({err}). It will be listed once the index can be "
                "written again."
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
                or prompt after Z), "notes_kept" (most of the sketch's notes kept first,
                the chroma score breaking ties; takes whose notes were not counted after,
                by their chroma score; never measured last; "faithfulness" is its old
                name). Ties go newest first.
            descending: ``True`` for Z to A (or newest first), ``False`` for A to Z (oldest
                first); by default as above. The other direction is the same list reversed.
            limit: At most this many takes (all when ``None``), after skipping ``offset``.

        Raises:
            ValueError: For an unknown sort, or a negative limit or offset.
        """
        query, params = listing_query(starred_only, song, text, sort, descending, limit, offset)
        self._sync.refresh()
        with self._index.connect() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: the fastest rows to unpack
            return [self._new_take(*row) for row in cursor.execute(query, params)]

    @_heals_index
    def count(
        self, starred_only: bool = False, *, song: str | None = None, text: str | None = None
    ) -> int:
        """How many takes :meth:`list` would give with these filters (to page through them)."""
        query, params = count_query(starred_only, song, text)
        self._sync.refresh()
        with self._index.connect() as conn:
            return int(conn.execute(query, params).fetchone()[0])

    @_heals_index
    def songs(self) -> builtins.list[str]:
        """The songs the takes were rendered from (``source_name``), A to Z, once each."""
        self._sync.refresh()
        with self._index.connect() as conn:
            rows = conn.execute(SONGS_QUERY).fetchall()
        return [row[0] for row in rows]

    @_heals_index
    def get(self, take_id: str) -> Take:
        """The take with this id.

        Raises:
            NeuroChipError: If there is no such take (any more).
        """
        take = self._get(take_id)
        if take is None and self._folders.folder(take_id, check=False).is_dir():
            self._sync.reconcile()  # its folder is there but its row is not: index it
            take = self._get(take_id)
        elif take is not None and not take.audio_path.is_file():
            self._sync.reconcile(check_audio=True)  # deleted by another tab, or by hand
            take = self._get(take_id)
        if take is None:
            raise self._folders.unknown(take_id)
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
        engine = take.metadata.get("engine")
        file_name = take_filename(
            take.source_name,
            settings,
            take.kind,
            ext,
            seeds,
            engine if isinstance(engine, str) else "",
        )
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

    @_heals_index
    def set_faithfulness(self, take_id: str, faithfulness: Mapping[str, Any], audio: Audio) -> Take:
        """Write a take's note faithfulness measured again (``"faithfulness"``, notes
        counted) into the metadata its file carries and its row (``audio``: the take's own,
        as :meth:`load_audio` gave it). :func:`~neurochip.library.notes.count_notes` measures
        it; see :func:`~neurochip.library.edits.write_faithfulness` for how it is written.
        """
        measured = _plain_json(faithfulness)
        return self._take(write_faithfulness(self._index, self._folders, take_id, measured, audio))

    def delete(self, take_id: str) -> None:
        """Delete a take: its row and its folder, for good.

        The folder is renamed to ``<id>.deleted`` inside the transaction that deletes the row
        and removed after it commits (see :mod:`~neurochip.library.folders` for why).
        """
        try:
            delete_take(self._index, self._folders, take_id)
            return
        except _DamagedIndex as err:
            self._index.rebuild(err)
        if not self._folders.folder(take_id).is_dir():
            # Renamed to .deleted before the index failed (at the commit): the rebuild
            # removed that folder and indexed no row for it. Deleted, as asked.
            return
        try:
            delete_take(self._index, self._folders, take_id)
        except _DamagedIndex as err:
            raise self._index.damaged_again(err) from err

    # -- recovery -----------------------------------------------------------------------------

    @_heals_index
    def recover(self, stale_after_s: float = STALE_AFTER_S) -> int:
        """Bring the folders and the index back in line after a crash; see
        :mod:`~neurochip.library.folders`.

        Removes ``.deleted`` folders, and ``.partial`` folders and temporary files nothing has
        touched for ``stale_after_s``; indexes complete folders that have no row; drops rows
        whose folder or audio is gone. Safe to run while other processes use the library.

        Returns:
            How many takes were indexed again.
        """
        return self._sync.recover(stale_after_s)

    # -- internals ----------------------------------------------------------------------------

    def _get(self, take_id: str) -> Take | None:
        with self._index.connect() as conn:
            row = conn.execute("SELECT * FROM takes WHERE id = ?", (str(take_id),)).fetchone()
        return None if row is None else self._take(row)

    @_heals_index
    def _update(self, take_id: str, column: str, value: object) -> Take:
        return self._take(update_row(self._index, self._folders, take_id, column, value))

    def _take(self, record: Mapping[str, Any]) -> Take:
        return self._new_take(*listed_columns(record))

    def _new_take(self, *columns: Any) -> Take:
        """A take from a listed row (:func:`~neurochip.library.record.new_take`)."""
        return new_take(self.takes_dir, *columns)
