"""The take folders: their layout on disk, the order every write follows, and crash safety.

A library lives in ``$NEUROCHIP_HOME`` (default ``~/.neurochip``)::

    library.sqlite3        the index: one row per take, with the columns lists search and sort
    takes/<id>/            one folder per take; <id> is random hex, never text from a user
        take.wav           the audio (24-bit WAV) with its settings embedded (save_take)
        take.json          the same settings, as a sidecar
        entry.json         the take's own row (created, name, source, star, note), mirrored so
                           the index can be rebuilt from the folders alone
        thumb.png          a small spectrogram picture, when there is one
    takes/<id>.partial/    a take being written, or one a crash interrupted
    takes/<id>.deleted/    a take being deleted, or one a crash interrupted

The folders are the truth; the index (:mod:`~neurochip.library.index`) is a cache of them.
Text a user typed or uploaded (file names, take names) is stored as text in the index and in
JSON, and never becomes part of a path.

Invariants, kept by the order of every write:

1. A bare ``<id>`` folder is always a complete take. Files are written into ``<id>.partial``,
   flushed to disk, and the folder is then renamed to ``<id>`` in one atomic step
   (:meth:`TakeFolders.write_new`).
2. A row is inserted only after its folder is complete, so a row never points at half a take.
   Inserts are ``INSERT OR IGNORE``: indexing a folder twice (recovery racing an add) is
   harmless.
3. A delete renames ``<id>`` to ``<id>.deleted`` inside the transaction that deletes the row,
   and removes the folder after the commit (:func:`~neurochip.library.edits.delete_take`). A
   bare folder without a row is therefore never one the user deleted, and a crash leaves a
   deleted take on its way out (a ``.deleted`` folder, or a row whose folder is gone), never
   half-deleted and brought back.

So after a crash :meth:`~neurochip.library.store.TakeLibrary.recover` (run whenever a library
is opened) restores a consistent state from names alone:

* ``<id>.partial``: unfinished; removed once nothing in it has changed for
  :data:`STALE_AFTER_S` (a take another process is writing right now is left alone);
* ``<id>.deleted``: removed;
* ``<id>`` without a row: a take whose insert never happened; indexed again from its files;
* a row whose folder or audio is gone: dropped;
* hidden temporary files of an interrupted atomic write (``.take.wav.tmp-...``) inside a take's
  folder: removed once stale.

The first, second and last are :meth:`TakeFolders.remove_leftovers`; the rows are
:mod:`~neurochip.library.sync`'s. To copy a take in by hand, copy it under a name that is not
an id (``incoming``) and rename it to ``<id>``, as the library does with ``.partial``, so that
it is never seen half-copied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import describe_os_error, write_text_atomically
from neurochip.library.metadata import save_take
from neurochip.library.thumbnails import write_png

log = logging.getLogger(__name__)

STALE_AFTER_S = 15 * 60.0
"""A ``.partial`` folder or temporary file untouched this long belongs to no live writer.

Writers touch their files every few milliseconds (and a 20-minute song saves in seconds), so
this is very conservative: it only delays the clean-up of a crash's leftovers, which are never
listed anyway.
"""

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


class TakeFolders:
    """The ``takes/`` folder of a library: where each take's folder is, and writing them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.takes_dir = root / "takes"

    def folder(self, take_id: str, check: bool = True) -> Path:
        """The folder of a take. Only ids shaped like ours ever become paths."""
        if not isinstance(take_id, str) or not _ID.fullmatch(take_id):
            if check:
                raise self.unknown(take_id)
            return self.takes_dir / "-"  # a name no take has
        return self.takes_dir / take_id

    def unknown(self, take_id: object) -> NeuroChipError:
        return NeuroChipError(
            f"No take with id {take_id!r} in {self.root}: it was deleted, perhaps in another "
            "tab. Refresh the list."
        )

    def ids(self) -> list[str]:
        """Ids of the complete takes on disk (bare ``<id>`` folders)."""
        return [
            e.name
            for e in _scan(self.takes_dir)
            if _ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def write_new(
        self,
        audio: Audio,
        metadata: dict[str, Any],
        name: str,
        source_name: str | None,
        thumbnail: Image.Image | None,
        bit_depth: str,
    ) -> tuple[dict[str, Any], int]:
        """Write a new take's folder (invariant 1); its ``entry.json`` and the size of its
        complete audio file (what :attr:`~neurochip.library.record.Take.damage` checks).

        Nothing is left behind if it fails.
        """
        take_id, partial = self._new_partial()
        entry = {
            "format": ENTRY_FORMAT,
            "id": take_id,
            "created": time.time(),
            "name": name,
            "source_name": source_name,
            "starred": False,
            "note": "",
        }
        try:
            save_take(partial / AUDIO_FILE, audio, metadata, bit_depth=bit_depth)
            if thumbnail is not None:
                write_png(partial / THUMBNAIL_FILE, thumbnail)
            write_text_atomically(partial / ENTRY_FILE, _entry_json(entry))
            audio_size = (partial / AUDIO_FILE).stat().st_size
            _fsync_folder(partial)
            os.rename(partial, self.folder(take_id))  # the take appears complete, or not at all
            _fsync_folder(self.takes_dir)
        except BaseException as err:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(err, OSError):
                raise NeuroChipError(
                    f"Could not save the take in {self.takes_dir}: {describe_os_error(err)}."
                ) from err
            raise
        return entry, audio_size

    def _new_partial(self) -> tuple[str, Path]:
        for _ in range(16):
            take_id = uuid.uuid4().hex[:12]
            folder = self.folder(take_id)
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

    def write_entry(self, record: Mapping[str, Any]) -> None:
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
            write_text_atomically(self.folder(record["id"]) / ENTRY_FILE, _entry_json(entry))
        except OSError as err:
            log.warning("Could not update %s of take %s: %s", ENTRY_FILE, record["id"], err)

    def remove_leftovers(self, stale_after_s: float) -> None:
        """Remove ``.deleted`` folders, and ``.partial`` folders and temporary files nothing
        has touched for ``stale_after_s``."""
        now = time.time()
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


def audio_of(folder: Path) -> Path | None:
    """A take folder's audio file (``take.wav``, or another type copied in by hand)."""
    return next(
        (folder / f"take{s}" for s in _AUDIO_SUFFIXES if (folder / f"take{s}").is_file()),
        None,
    )


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
