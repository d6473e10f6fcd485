"""Keeping the index in line with the take folders: recovery, reconciling, and when to look.

The folders are the truth (:mod:`~neurochip.library.folders` says why a crash leaves them
consistent); :meth:`FolderSync.reconcile` makes the index agree with them: it indexes complete
folders without a row (from their files, :func:`record_from_folder`) and drops rows whose
folder is gone. :meth:`FolderSync.recover` does that after removing a crash's leftovers, and
is how a new or damaged index is filled.

Listing does not look at every folder either. Every change that can put the folders and the
index out of line adds, renames or removes an entry of ``takes/`` itself (an add's or a
delete's rename, a folder copied in or deleted by hand), and so changes the modification time
of ``takes/``. A library remembers that time (``st_mtime_ns``) as it was before it last
compared the folders with the index, and :meth:`~neurochip.library.store.TakeLibrary.list`
compares again only when it has changed (:meth:`FolderSync.refresh`): then a listing of
``takes/`` and of the index's ids, and a reconcile under the write lock if they differ. A time
less than :data:`RACY_S` old is never trusted (timestamps are coarse: a change in the same
tick could leave it as it was), so for a moment after each change every listing compares.
Hence a take whose index insert failed, in this process or another, still shows up without a
restart, and a take folder deleted by hand disappears. Not noticed by listing: files removed
from inside a take's folder (its ``takes/`` entry stays);
:meth:`~neurochip.library.store.TakeLibrary.get` notices a missing audio file, and
:meth:`~neurochip.library.store.TakeLibrary.recover` checks every take's audio. A folder that
holds no readable take is reported once and skipped until it changes, or until recovery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.library.damage import _expected_size, _soundfile_reason
from neurochip.library.folders import (
    ENTRY_FILE,
    STALE_AFTER_S,
    THUMBNAIL_FILE,
    TakeFolders,
    _read_json,
    audio_of,
)
from neurochip.library.index import Index
from neurochip.library.metadata import read_take_metadata
from neurochip.library.names import clean_name, clean_note, default_take_name
from neurochip.library.schema import _indexed, _insert

log = logging.getLogger(__name__)

RACY_S = 2.0
"""A folder modification time younger than this is not trusted to reveal the next change.

File systems stamp times from a coarse clock (a few ms on Linux, 2 s on FAT), so a change made
in the same tick as the time a library remembered would leave it unchanged. Once the current
time is past the stamp by a full tick, any later change gets a different one.
"""


class FolderSync:
    """Brings a library's index in line with its folders, and remembers when it last did."""

    def __init__(self, folders: TakeFolders, index: Index) -> None:
        self._folders = folders
        self._index = index
        self.takes_dir = folders.takes_dir
        # Folders that hold no readable take (damaged, or half-copied by hand): id -> the
        # folder's st_mtime_ns when it was read (None: too recent to trust). Reported once,
        # then skipped until the folder changes; recover() tries them all again.
        self._unreadable: dict[str, int | None] = {}
        # The st_mtime_ns of takes/ before the index was last found in line with the folders
        # (None: not yet, or too recent to trust).
        self._synced_mtime: int | None = None
        self._lock = threading.Lock()

    def recover(self, stale_after_s: float = STALE_AFTER_S) -> int:
        """Remove a crash's leftovers and reconcile, checking every take's audio; how many
        takes were indexed again."""
        with self._lock:
            self._unreadable.clear()
            self._synced_mtime = None
        self._folders.remove_leftovers(stale_after_s)
        return self.reconcile(check_audio=True)

    def refresh(self) -> None:
        """Bring the index in line with the folders, unless nothing can have changed.

        Nothing has when the modification time of ``takes/`` (and of any unreadable folder)
        is still the one remembered before the index was last found in line. Otherwise the
        folders' ids are compared with the index's, and only a difference takes the write lock
        to reconcile.
        """
        if self._in_sync():
            return
        stamp = self._stamp()  # before looking: a change from now on changes the time
        with self._index.connect() as conn:
            known = {row[0] for row in conn.execute("SELECT id FROM takes")}
        on_disk = set(self._folders.ids())
        if known != on_disk - self._still_unreadable(on_disk):
            # A take whose index insert failed, one deleted behind our back, or an unreadable
            # folder that changed: reconcile looks again, under the write lock.
            self.reconcile()
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
        with self._lock:
            self._synced_mtime = stamp[0] if trusted and stamp is not None else None

    def _in_sync(self) -> bool:
        """Whether ``takes/`` and every unreadable folder is as when last compared."""
        with self._lock:
            synced = self._synced_mtime
            unreadable = list(self._unreadable.items())
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
        with self._lock:
            unreadable = list(self._unreadable.items())
        still = set()
        for take_id, mtime in unreadable:
            if take_id in on_disk and mtime is not None:
                with contextlib.suppress(OSError):
                    if os.stat(self.takes_dir / take_id).st_mtime_ns == mtime:
                        still.add(take_id)
        return still

    def reconcile(self, check_audio: bool = False) -> int:
        """Index complete folders without a row and drop rows whose folder is gone.

        With ``check_audio``, also drop rows whose audio file is gone (one ``stat`` per
        take: recovery does it, listing does not), and record the size of the complete
        file for rows that have none (those of an index older than version 3; one header read
        each, once). Runs under the write lock, so no
        delete or add is half-way through while it looks: a delete renames its folder before
        it commits, and an add's folder is complete before its row is inserted.
        """
        stamp = self._stamp()
        added = 0
        folder_of = self._folders.folder
        with self._index.transaction() as conn:
            rows = conn.execute("SELECT id, audio_file, audio_size FROM takes").fetchall()
            on_disk = set(self._folders.ids())
            gone = [
                (row["id"],)
                for row in rows
                if row["id"] not in on_disk
                or (
                    check_audio
                    and not (folder_of(row["id"], check=False) / row["audio_file"]).is_file()
                )
            ]
            conn.executemany("DELETE FROM takes WHERE id = ?", gone)
            if check_audio:
                dropped = {take_id for (take_id,) in gone}
                sizes = []
                for row in rows:
                    if row["audio_size"] is None and row["id"] not in dropped:
                        path = folder_of(row["id"], check=False) / Path(row["audio_file"]).name
                        size = _expected_size(path)
                        if size is not None:  # else: damaged; Take.damage reads it each time
                            sizes.append((size, row["id"]))
                conn.executemany("UPDATE takes SET audio_size = ? WHERE id = ?", sizes)
            known = {row["id"] for row in rows}
            skip = self._still_unreadable(on_disk)
            with self._lock:
                for take_id in list(self._unreadable):
                    if take_id not in on_disk:
                        del self._unreadable[take_id]
            for take_id in sorted(on_disk - known - skip):
                folder = folder_of(take_id)
                before = _stamp_of(folder)
                record = record_from_folder(folder, warn=take_id not in self._unreadable)
                with self._lock:
                    if record is None:
                        self._unreadable[take_id] = before
                    else:
                        self._unreadable.pop(take_id, None)
                if record is not None:
                    added += _insert(conn, record)
        self._mark_synced(stamp)
        if gone or added:
            log.info(
                "Take library %s: dropped %d rows, indexed %d",
                self._folders.root,
                len(gone),
                added,
            )
        return added


def _stamp_of(folder: Path) -> int | None:
    """A folder's ``st_mtime_ns``, or ``None`` if too recent to trust (or unreadable)."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return None
    return mtime if time.time() - mtime / 1e9 >= RACY_S else None


def record_from_folder(folder: Path, warn: bool = True) -> dict[str, Any] | None:
    """A row for a complete take folder, from its files; ``None`` if it holds no take."""
    report = log.warning if warn else log.debug
    audio = audio_of(folder)
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
