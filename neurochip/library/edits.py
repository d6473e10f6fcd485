"""A composer's edits to kept takes: star, name, note, deleting, and a measure added later.

An edit changes the take's row and mirrors it into its ``entry.json`` in the same
``BEGIN IMMEDIATE`` transaction, so that the index can be rebuilt from the folders with every
edit in it. A take's note is an edit, like its name: kept in ``entry.json`` and the index, not
in the settings its audio file carries (rewriting a whole take's audio for a note would be
slow, and the settings say how it was made, not what a composer thinks of it).

A measure of the take made after it was kept (notes counted on demand,
:mod:`~neurochip.library.notes`) is different: it belongs with the settings, in the metadata
its file carries, so :func:`write_faithfulness` writes the file again (atomically: the new
file replaces the old in one rename, its samples bit for bit the same) and updates the row.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import describe_os_error
from neurochip.library.folders import TakeFolders
from neurochip.library.index import Index
from neurochip.library.metadata import save_take
from neurochip.library.schema import _indexed

#: The files a measure may be written into again without losing a bit of their audio (a
#: lossy file would be encoded again), with the bit depth of each sample format.
_LOSSLESS = {".wav": ("PCM_16", "PCM_24", "FLOAT"), ".flac": ("PCM_16", "PCM_24")}
_BIT_DEPTH = {"PCM_16": "16", "PCM_24": "24", "FLOAT": "float"}


def update_row(
    index: Index, folders: TakeFolders, take_id: str, column: str, value: object
) -> dict[str, Any]:
    """Set a take's ``starred``, ``name`` or ``note``; its whole row as it now is."""
    if column not in ("starred", "name", "note"):  # it is spliced into the SQL below
        raise ValueError(f"Cannot update {column!r}.")
    with index.transaction() as conn:
        row = conn.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
        if row is None:
            raise folders.unknown(take_id)
        record = {**dict(row), column: value}
        if column in ("name", "note"):
            metadata = json.loads(row["metadata"])
            record.update(_indexed(record["name"], row["source_name"], metadata, record["note"]))
        conn.execute(
            f"UPDATE takes SET {column} = ?, search = ?, name_key = ? WHERE id = ?",
            (value, record["search"], record["name_key"], take_id),
        )
        # Mirrored inside the transaction, so concurrent edits reach the file in the
        # order they reach the index.
        folders.write_entry(record)
    return record


def delete_take(index: Index, folders: TakeFolders, take_id: str) -> None:
    """Delete a take's row and its folder (invariant 3 of :mod:`~neurochip.library.folders`).

    The folder is renamed to ``<id>.deleted`` inside the transaction that deletes the row
    and removed after it commits.
    """
    with index.transaction() as conn:
        if conn.execute("DELETE FROM takes WHERE id = ?", (take_id,)).rowcount == 0:
            raise folders.unknown(take_id)
        folder = folders.folder(take_id)
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


def write_faithfulness(
    index: Index,
    folders: TakeFolders,
    take_id: str,
    faithfulness: Mapping[str, Any],
    audio: Audio,
) -> dict[str, Any]:
    """Write a take's ``"faithfulness"`` (measured again, with its notes counted) into the
    metadata its file carries and into its row; its whole row as it now is.

    ``audio`` is the take's audio as :meth:`~neurochip.library.store.TakeLibrary.load_audio`
    read it: written back at the file's own sample format, bit for bit the same samples. All
    under the index's write lock, so no delete or other measure is half-way through: the file
    is replaced in one rename (its sidecar after it; the embedded copy is the one read first),
    then the row. If the row cannot be written, the file already says the new measure: the
    folders are the truth, and a rebuilt index reads it from there.

    Raises:
        NeuroChipError: For an unknown take, a file that cannot hold it again without loss
            (MP3, OGG), or one that cannot be written (the take is then as it was).
    """
    with index.transaction() as conn:
        row = conn.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
        if row is None:
            raise folders.unknown(take_id)
        folder = folders.folder(take_id)
        path = folder / os.path.basename(row["audio_file"])
        if not path.is_file():
            raise folders.unknown(take_id)  # deleted by hand, or by another tab meanwhile
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise NeuroChipError(f"The audio of this take ({path}) cannot be read: {err}.") from err
        subtype = str(info.subtype)
        if subtype not in _LOSSLESS.get(path.suffix.lower(), ()):
            raise NeuroChipError(
                f"{path.name} is stored as {info.format} {subtype}: the measure cannot be "
                "written into it without encoding its audio again. Export it as WAV and "
                "measure that with `neurochip faithfulness SKETCH TAKE`."
            )
        if (audio.frames, audio.sample_rate, audio.channels) != (
            int(info.frames),
            int(info.samplerate),
            int(info.channels),
        ):
            raise NeuroChipError(
                f"The audio of this take ({path}) changed while it was measured: measure it again."
            )
        metadata = {**json.loads(row["metadata"]), "faithfulness": dict(faithfulness)}
        try:
            save_take(path, audio, metadata, bit_depth=_BIT_DEPTH[subtype])  # type: ignore[arg-type]
            size = path.stat().st_size
        except OSError as err:
            raise NeuroChipError(
                f"Could not write the measure into {path}: {describe_os_error(err)}. The take "
                "is as it was."
            ) from err
        record = {
            **dict(row),
            "metadata": json.dumps(metadata, ensure_ascii=False),
            **_indexed(row["name"], row["source_name"], metadata, row["note"]),
            "audio_size": size,
        }
        conn.execute(
            "UPDATE takes SET metadata = ?, faithfulness = ?, notes_kept = ?, audio_size = ? "
            "WHERE id = ?",
            (record["metadata"], record["faithfulness"], record["notes_kept"], size, take_id),
        )
    return record
